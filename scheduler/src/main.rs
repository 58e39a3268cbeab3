//! `bbb-scheduler`: wiring only. See the crate docs for what it does.
use anyhow::Context;
use bbb_shared::{
    config::Config,
    process::{CommonArgs, shutdown_signal},
    queue::{JobQueue, QueueSettings},
    telemetry,
};
use clap::Parser;

/// Enqueues the periodic jobs of the bridge (one per tick across all replicas); the worker
/// pool runs them. Stateless: run as many replicas as you like.
#[derive(Debug, Parser)]
#[command(name = "bbb-scheduler", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.common.log_format);
    let config = Config::load(&args.common.config)?;
    let shutdown = shutdown_signal();
    let conn = bbb_shared::queue::connect(&config.redis.url)
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis.url))?;
    let queue = JobQueue::new(conn, QueueSettings::from_config(&config));
    bbb_scheduler::run(queue, config.reflector.interval, shutdown).await;
    tracing::info!("bbb-scheduler stopped");
    Ok(())
}
