//! What every bbb binary does the same way: its common flags, and the shutdown signal.
use std::path::PathBuf;

use tokio::sync::watch;

use crate::telemetry::LogFormat;

/// Flags shared by `bbb-ingest`, `bbb-worker`, `bbb-scheduler` and `bbb`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Configuration file: the original bridge's config.json shape, JSON or TOML (by
    /// extension). TASKCLUSTER_* and BBB_* environment variables override it.
    #[arg(long, short = 'c', env = "BBB_CONFIG", value_name = "PATH")]
    pub config: PathBuf,

    /// Log format: `human` (default) or `json` (one object per line, for log shippers).
    #[arg(
        long,
        env = "BBB_LOG_FORMAT",
        default_value = "human",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
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
