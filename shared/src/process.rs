//! What every bbb binary does the same way: its common flags, and the shutdown signal.
use std::path::PathBuf;

use tokio::sync::watch;

use crate::telemetry::LogFormat;

/// Flags shared by `bbb-ingest`, `bbb-worker`, `bbb-scheduler` and `bbb`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Configuration file: the original bridge's config.json shape, JSON or TOML (by
    /// extension). TASKCLUSTER_* and BBB_* environment variables override it.
    /// Required; only `bbb demo` runs without one, on embedded defaults.
    #[arg(long, short = 'c', env = "BBB_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format: `human` (default) or `json` (one object per line, for log shippers).
    #[arg(
        long,
        env = "BBB_LOG_FORMAT",
        default_value = "human",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

impl CommonArgs {
    /// The `--config` path, or a clear error when it was not given.
    pub fn config_path(&self) -> anyhow::Result<&std::path::Path> {
        self.config.as_deref().ok_or_else(|| {
            anyhow::anyhow!("no configuration file: pass --config PATH or set BBB_CONFIG")
        })
    }

    /// Loads the configuration file named by `--config`, with environment overrides.
    pub fn load_config(&self) -> anyhow::Result<crate::config::Config> {
        Ok(crate::config::Config::load(self.config_path()?)?)
    }
}

/// The operations endpoint flag of the long-running processes.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// Serve Prometheus `/metrics`, `/healthz` and `/readyz` on this address, e.g.
    /// `0.0.0.0:9102` (conventional ports: ingest 9101, worker 9102, scheduler 9103). Off
    /// when not given.
    #[arg(long, env = "BBB_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl OpsArgs {
    /// Starts the operations endpoint when `--metrics-addr` is given.
    pub async fn serve(
        &self,
        process: &'static str,
        readiness: crate::ops::Readiness,
        routes: Option<axum::Router>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<Option<std::net::SocketAddr>> {
        match self.metrics_addr {
            Some(addr) => crate::ops::serve(addr, process, readiness, routes, shutdown.clone())
                .await
                .map(Some),
            None => Ok(None),
        }
    }
}

/// A receiver that turns `true` on SIGTERM or SIGINT (Ctrl-C): pass it to `run`.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing in-flight work");
        let _ = tx.send(true);
    });
    rx
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Resolves once `shutdown` is true (or its sender is gone). Unlike `wait_for`, it holds no
/// borrow of the value, so it can sit in a `select!` inside a spawned task.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
