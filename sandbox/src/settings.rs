//! The optional `sandbox` section of the bridge's config file: everything emulator-specific.
//! Everything else (URLs, credentials, exchanges, the scheduler DB) comes from the bridge's own
//! keys, so `bbb sandbox --config FILE` serves exactly what the bridge expects.
//!
//! ```json
//! "sandbox": {
//!   "builders": ["Linux x86-64 mozilla-inbound build"],
//!   "masters": 1,
//!   "claim_timeout_secs": 1200,
//!   "master_poll_ms": 200,
//!   "build_duration_ms": 200,
//!   "clients": [{"clientId": "limited", "accessToken": "t", "scopes": ["queue:status:*"]}],
//!   "selfserve_fresh_404_secs": 0
//! }
//! ```
use std::time::Duration;

use serde::Deserialize;

/// A Taskcluster client the queue emulator accepts, besides the bridge's own (full scopes).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClientSpec {
    pub client_id: String,
    pub access_token: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    /// Builders the masters serve and allthethings.json lists.
    pub builders: Vec<String>,
    /// How many emulated masters share the builders (each serves all of them).
    pub masters: usize,
    pub claim_timeout: Duration,
    pub master_poll: Duration,
    /// A Build's duration when its task does not script one (`sandbox_duration_ms`).
    pub build_duration: Duration,
    pub clients: Vec<ClientSpec>,
    /// Self-serve answers 404 to cancellations of requests younger than this (the real one
    /// sometimes did); zero turns it off.
    pub selfserve_fresh_404: Duration,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            builders: vec![
                "Linux x86-64 mozilla-inbound build".into(),
                "Linux x86-64 mozilla-inbound test".into(),
                "release-mozilla-beta-firefox_signing".into(),
            ],
            masters: 1,
            claim_timeout: Duration::from_secs(1200),
            master_poll: Duration::from_millis(200),
            build_duration: Duration::from_millis(200),
            clients: Vec::new(),
            selfserve_fresh_404: Duration::ZERO,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    builders: Option<Vec<String>>,
    masters: Option<usize>,
    claim_timeout_secs: Option<u64>,
    master_poll_ms: Option<u64>,
    build_duration_ms: Option<u64>,
    clients: Option<Vec<ClientSpec>>,
    selfserve_fresh_404_secs: Option<u64>,
}

impl SandboxSettings {
    /// Reads the raw `sandbox` section; absent keys keep their defaults.
    pub fn from_section(section: Option<&serde_json::Value>) -> anyhow::Result<Self> {
        let raw: Raw = match section {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| anyhow::anyhow!("`sandbox` section: {e}"))?,
            None => Raw::default(),
        };
        let d = Self::default();
        Ok(Self {
            builders: raw.builders.unwrap_or(d.builders),
            masters: raw.masters.unwrap_or(d.masters).max(1),
            claim_timeout: raw
                .claim_timeout_secs
                .map_or(d.claim_timeout, Duration::from_secs),
            master_poll: raw
                .master_poll_ms
                .map_or(d.master_poll, Duration::from_millis),
            build_duration: raw
                .build_duration_ms
                .map_or(d.build_duration, Duration::from_millis),
            clients: raw.clients.unwrap_or_default(),
            selfserve_fresh_404: raw
                .selfserve_fresh_404_secs
                .map_or(d.selfserve_fresh_404, Duration::from_secs),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_section_gives_the_defaults_and_keys_override_them() {
        assert_eq!(
            SandboxSettings::from_section(None).unwrap(),
            SandboxSettings::default()
        );
        let s = SandboxSettings::from_section(Some(&serde_json::json!({
            "builders": ["b"], "claim_timeout_secs": 5, "masters": 2
        })))
        .unwrap();
        assert_eq!(
            (s.builders, s.claim_timeout, s.masters),
            (vec!["b".to_owned()], Duration::from_secs(5), 2)
        );
        let e = SandboxSettings::from_section(Some(&serde_json::json!({"bogus": 1}))).unwrap_err();
        assert!(e.to_string().contains("bogus"));
    }
}
