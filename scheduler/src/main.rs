//! `bbb-scheduler`: wiring only. See the crate docs for what it does.
use std::time::Duration;

use anyhow::Context;
use bbb_shared::{
    inspect::InspectSettings,
    ops::Readiness,
    process::{CommonArgs, OpsArgs, shutdown_signal},
    queue::{JobQueue, QueueSettings},
    telemetry,
};
use clap::Parser;

/// Enqueues the periodic jobs of the bridge (one per tick across all replicas); the worker
/// pool runs them. Stateless: run as many replicas as you like. With --metrics-addr it also
/// serves the status page (`/`, `/status`, `/status.json`) and samples the queues every few
/// seconds into the page's history and the `bbb_queue_*` / `bbb_pulse_*` gauges.
#[derive(Debug, Parser)]
#[command(name = "bbb-scheduler", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    ops: OpsArgs,

    /// Seconds between two samples of the queues (status page history and queue gauges).
    #[arg(
        long,
        env = "BBB_SAMPLE_EVERY",
        default_value_t = 10,
        value_name = "SECS"
    )]
    sample_every: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.common.log_format);
    let config = args.common.load_config()?;
    let shutdown = shutdown_signal();
    let conn = bbb_shared::queue::connect(&config.redis.url)
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis.url))?;
    let queue = JobQueue::new(conn.clone(), QueueSettings::from_config(&config));
    let inspect = InspectSettings::from_config(&config);
    let status = bbb_scheduler::status::router(conn.clone(), inspect.clone());
    let served = args
        .ops
        .serve(
            "bbb-scheduler",
            Readiness::new().redis(&conn),
            Some(status),
            &shutdown,
        )
        .await?;
    if served.is_some() {
        tokio::spawn(bbb_scheduler::status::run_sampler(
            conn,
            inspect,
            Duration::from_secs(args.sample_every.max(1)),
            shutdown.clone(),
        ));
    }
    bbb_scheduler::run(queue, config.reflector.interval, shutdown).await;
    tracing::info!("bbb-scheduler stopped");
    Ok(())
}
