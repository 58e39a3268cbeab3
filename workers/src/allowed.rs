//! The allowed-builders list: the keys of `builders` in `allthethings.json`, fetched from
//! `allowed_builders_url` at most every 5 minutes and shared by every job of the process.
//!
//! The last good list is kept when a fetch fails (logged, counted). When there has never been
//! a good list the check cannot be decided: the job fails transiently (it retries with
//! backoff) rather than reporting a good task as malformed. Without a URL the legacy
//! `allowed_builders` patterns of the config decide; with neither, every builder is allowed.
use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use bbb_shared::config::{BuilderPattern, matches_any};
use tokio::sync::Mutex;
use url::Url;

pub const REFRESH_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
#[error("no allowed-builders list yet: fetching {url} failed: {reason}")]
pub struct NoList {
    pub url: String,
    pub reason: String,
}

#[derive(Debug, Default)]
struct Cache {
    builders: Option<Arc<HashSet<String>>>,
    fetched_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct AllowedBuilders {
    url: Option<Url>,
    patterns: Vec<BuilderPattern>,
    http: reqwest::Client,
    cache: Arc<Mutex<Cache>>,
    refresh_every: Duration,
}

impl AllowedBuilders {
    pub fn new(url: Option<Url>, patterns: Vec<BuilderPattern>) -> Self {
        Self {
            url,
            patterns,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            cache: Arc::new(Mutex::new(Cache::default())),
            refresh_every: REFRESH_EVERY,
        }
    }

    /// Is `buildername` allowed? `Err` only when the list is needed and has never been fetched.
    pub async fn allows(&self, buildername: &str) -> Result<bool, NoList> {
        let Some(url) = &self.url else {
            return Ok(self.patterns.is_empty() || matches_any(&self.patterns, buildername));
        };
        let mut cache = self.cache.lock().await;
        let stale = cache
            .fetched_at
            .is_none_or(|t| t.elapsed() >= self.refresh_every);
        if stale {
            // Whatever the outcome, wait a full period before the next try.
            cache.fetched_at = Some(Instant::now());
            match self.fetch(url).await {
                Ok(list) => {
                    tracing::info!("allowed builders: {} from {url}", list.len());
                    cache.builders = Some(Arc::new(list));
                }
                Err(reason) => {
                    metrics::counter!("bbb_allowed_builders_fetch_errors_total").increment(1);
                    match &cache.builders {
                        Some(old) => tracing::warn!(
                            "fetching allowed builders from {url} failed, keeping the last good list ({} builders): {reason}",
                            old.len()
                        ),
                        None => {
                            tracing::error!(
                                "fetching allowed builders from {url} failed and there is no earlier list: {reason}"
                            );
                            // Try again on the next task rather than in 5 minutes.
                            cache.fetched_at = None;
                            return Err(NoList {
                                url: url.to_string(),
                                reason,
                            });
                        }
                    }
                }
            }
        }
        Ok(cache
            .builders
            .as_ref()
            .is_some_and(|b| b.contains(buildername)))
    }

    async fn fetch(&self, url: &Url) -> Result<HashSet<String>, String> {
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let body: serde_json::Value = resp.json().await.map_err(|e| e.without_url().to_string())?;
        let builders = body
            .get("builders")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| "no `builders` object in allthethings.json".to_owned())?;
        Ok(builders.keys().cloned().collect())
    }
}
