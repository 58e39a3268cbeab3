//! `bbb serve-status`: the scheduler's status page and its history sampler, standalone, for
//! an installation whose scheduler does not serve it (or for a look from a laptop).
use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use bbb_scheduler::status;
use bbb_shared::{config::Config, inspect::InspectSettings};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve the page on: `/` and `/status` (HTML), `/status.json`.
    #[arg(long, default_value = "127.0.0.1:9180", value_name = "HOST:PORT")]
    addr: SocketAddr,

    /// Seconds between two samples of the page's one-hour history (also kept in Redis for
    /// every other reader of the page).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    sample_every: u64,
}

/// Samples and serves until SIGTERM or Ctrl-C.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    let conn = bbb_shared::queue::connect(&config.redis.url)
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis.url))?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listening on {}", args.addr))?;
    let shutdown = bbb_shared::process::shutdown_signal();
    let sampler = tokio::spawn(status::run_sampler(
        conn.clone(),
        InspectSettings::from_config(config),
        Duration::from_secs(args.sample_every.max(1)),
        shutdown.clone(),
    ));
    let app = status::router(conn, InspectSettings::from_config(config));
    let addr = listener.local_addr().unwrap_or(args.addr);
    tracing::info!("status page on http://{addr}/status");
    let mut stop = shutdown;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { bbb_shared::process::stopped(&mut stop).await })
        .await
        .context("serving the status page")?;
    sampler.await.context("the status sampler panicked")?;
    Ok(())
}
