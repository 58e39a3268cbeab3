//! BuildAPI self-serve: cancelling Builds and BuildRequests.
//!
//! `DELETE {selfserve_url}/{branch}/request/{brid}` and `.../build/{buildId}`, with the
//! `X-Remote-User` header self-serve requires, asking for JSON. The branch is the last path
//! segment of the sourcestamp branch. A 404 is an answer (already gone, or too fresh: the
//! caller decides whether it is fine); 5xx and transport errors are transient.
use std::time::{Duration, Instant};

use url::Url;

pub const REMOTE_USER: &str = "buildbot-bridge";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// Accepted: self-serve queued the cancellation.
    Accepted,
    /// Self-serve does not know the id on that branch.
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum SelfServeError {
    #[error("self-serve {what}: HTTP {status}: {body}")]
    Http {
        what: String,
        status: u16,
        body: String,
    },
    #[error("self-serve {what}: {message}")]
    Transport { what: String, message: String },
}

impl SelfServeError {
    pub fn is_transient(&self) -> bool {
        match self {
            SelfServeError::Http { status, .. } => *status >= 500 || *status == 429,
            SelfServeError::Transport { .. } => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SelfServe {
    http: reqwest::Client,
    base: Url,
}

/// The self-serve branch of a sourcestamp branch: its last path segment.
pub fn branch_segment(branch: &str) -> &str {
    branch
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(branch)
}

impl SelfServe {
    pub fn new(base: Url) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self { http, base }
    }

    pub async fn cancel_request(
        &self,
        branch: &str,
        brid: i64,
    ) -> Result<Cancelled, SelfServeError> {
        self.delete("request", branch, brid).await
    }

    pub async fn cancel_build(
        &self,
        branch: &str,
        build_id: i64,
    ) -> Result<Cancelled, SelfServeError> {
        self.delete("build", branch, build_id).await
    }

    async fn delete(
        &self,
        kind: &'static str,
        branch: &str,
        id: i64,
    ) -> Result<Cancelled, SelfServeError> {
        let branch = branch_segment(branch);
        let what = format!("cancel {kind} {id} on {branch}");
        let url = format!(
            "{}/{branch}/{kind}/{id}",
            self.base.as_str().trim_end_matches('/')
        );
        let started = Instant::now();
        let result = self
            .http
            .delete(&url)
            .header("X-Remote-User", REMOTE_USER)
            .header("Accept", "application/json")
            .send()
            .await;
        let status_label = match &result {
            Ok(r) => r.status().as_u16().to_string(),
            Err(_) => "transport".to_owned(),
        };
        metrics::histogram!("bbb_selfserve_call_seconds", "call" => kind, "status" => status_label)
            .record(started.elapsed().as_secs_f64());
        let resp = result.map_err(|e| SelfServeError::Transport {
            what: what.clone(),
            message: e.without_url().to_string(),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Cancelled::Accepted);
        }
        if status.as_u16() == 404 {
            return Ok(Cancelled::NotFound);
        }
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Err(SelfServeError::Http {
            what,
            status: status.as_u16(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_serve_branch_is_the_last_path_segment() {
        assert_eq!(
            branch_segment("integration/mozilla-inbound"),
            "mozilla-inbound"
        );
        assert_eq!(branch_segment("mozilla-central"), "mozilla-central");
        assert_eq!(branch_segment("releases/mozilla-beta/"), "mozilla-beta");
    }
}
