//! `bbb-ingest`: wiring only. See the crate docs for what it does.
use anyhow::Context;
use bbb_ingest::{IngestSettings, bindings_from_config};
use bbb_shared::{
    ops::Readiness,
    process::{CommonArgs, OpsArgs, shutdown_signal},
    queue::{JobQueue, QueueSettings},
    telemetry,
};
use clap::Parser;

/// Consumes the Taskcluster task-pending / task-exception exchanges and the Buildbot build
/// exchange through durable queues `<pulse_queue_basename>/<purpose>`, turns each message into
/// an idempotent job on Redis, and acknowledges it only once the job is stored. Messages that
/// cannot be parsed go to the Redis dead-letter list with the reason and their raw body.
/// Run any number of replicas.
#[derive(Debug, Parser)]
#[command(name = "bbb-ingest", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    ops: OpsArgs,

    /// Declare the exchanges (topic, durable) instead of only checking that they exist: for
    /// development brokers. Overrides `ingest.declare_exchanges`.
    #[arg(long)]
    declare_exchanges: bool,

    /// Test hook: stop after storing a job and before acknowledging its message.
    #[arg(long, hide = true, env = "BBB_TEST_PAUSE_BEFORE_ACK")]
    pause_before_ack: bool,
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
    let consuming = bbb_ingest::Consuming::default();
    let settings = IngestSettings {
        pulse_url: config.pulse.url.clone(),
        bindings: bindings_from_config(&config),
        prefetch: config.ingest.prefetch,
        max_message_bytes: config.ingest.max_message_bytes,
        dead_letter_body_limit: config.ingest.dead_letter_body_limit,
        declare_exchanges: args.declare_exchanges || config.ingest.declare_exchanges,
        pause_before_ack: args.pause_before_ack,
        connection_name: format!("bbb-ingest-{}", std::process::id()),
        consuming: consuming.clone(),
    };
    let readiness = Readiness::new().redis(&conn).check("rabbitmq", move || {
        let consuming = consuming.get();
        async move {
            if consuming {
                Ok(())
            } else {
                Err("not consuming the Pulse queues (connecting or reconnecting)")
            }
        }
    });
    args.ops
        .serve("bbb-ingest", readiness, None, &shutdown)
        .await?;
    bbb_ingest::run(settings, queue, shutdown).await;
    tracing::info!("bbb-ingest stopped");
    Ok(())
}
