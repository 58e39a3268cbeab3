//! `bbb-worker`: wiring only. See the crate docs for what it does.
use std::time::Duration;

use anyhow::Context;
use bbb_shared::{
    bridgedb::BridgeDb,
    ops::Readiness,
    process::{CommonArgs, OpsArgs, shutdown_signal},
    queue::QueueSettings,
    telemetry,
};
use bbb_workers::{WorkerSetup, bridge::Bridge, jobs::Registration, runtime::RuntimeSettings};
use clap::Parser;

/// Runs bridge jobs from Redis: each job under its task's lock (one job per taskId at a time
/// across every worker host), transient failures retried with capped exponential backoff,
/// jobs that fail for good kept in the dead-letter list. Any number of replicas on any hosts.
/// SIGTERM stops taking jobs and drains the running ones.
#[derive(Debug, Parser)]
#[command(name = "bbb-worker", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    ops: OpsArgs,

    /// Jobs run at once per job kind (default: `worker.concurrency`, 16).
    #[arg(long, env = "BBB_CONCURRENCY")]
    concurrency: Option<usize>,

    /// Do not apply the bridge database's migrations at start-up (run `bbb migrate` instead).
    #[arg(long)]
    no_migrate: bool,

    /// Also run the runtime's probe job kind (diagnostics and tests).
    #[arg(long, hide = true)]
    probe_jobs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.common.log_format);
    let config = args.common.load_config()?;
    let shutdown = shutdown_signal();
    if config.worker.migrate_on_start && !args.no_migrate {
        let db = BridgeDb::connect(&config.bbb_db)
            .await
            .with_context(|| format!("connecting to the bridge DB {}", config.bbb_db))?;
        db.migrate()
            .await
            .with_context(|| format!("migrating the bridge DB {}", config.bbb_db))?;
        tracing::info!("bridge DB {} is migrated", config.bbb_db);
    }
    let conn = bbb_shared::queue::connect(&config.redis.url)
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis.url))?;
    let bridge = Bridge::connect(&config).await?;
    let (for_bbb, for_sched) = (bridge.clone(), bridge.clone());
    let readiness = Readiness::new()
        .redis(&conn)
        .check("bridge-db", move || {
            let b = for_bbb.clone();
            async move { b.bbb.ping().await }
        })
        .check("scheduler-db", move || {
            let b = for_sched.clone();
            async move { b.sched.ping().await }
        });
    args.ops
        .serve("bbb-worker", readiness, None, &shutdown)
        .await?;
    let w = &config.worker;
    let setup = WorkerSetup {
        queue_settings: QueueSettings::from_config(&config),
        runtime: RuntimeSettings {
            concurrency: args.concurrency.unwrap_or(w.concurrency),
            max_attempts: w.max_attempts,
            retry_base: Duration::from_millis(w.retry_base_ms),
            retry_max: Duration::from_millis(w.retry_max_ms),
            lock_busy_delay: Duration::from_millis(w.lock_busy_delay_ms),
            max_lock_waits: 600,
            poll_interval: Duration::from_millis(100),
        },
        lock_ttl: Duration::from_millis(w.lock_ttl_ms),
        jobs: Registration {
            bridge: true,
            probe: args.probe_jobs,
        },
        bridge: Some(bridge),
    };
    bbb_workers::run(conn, setup, shutdown).await;
    tracing::info!("bbb-worker stopped");
    Ok(())
}
