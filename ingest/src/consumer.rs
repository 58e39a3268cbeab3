//! The AMQP consumers: one durable named queue per purpose, each bound to its exchange.
use std::time::Duration;

use bbb_shared::{
    config::Config,
    queue::{DeadLetter, JobQueue, QueueError},
    secret::SecretUrl,
};
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::FieldTable,
};
use tokio::sync::watch;

use crate::parse::{Parsed, Purpose, parse};

/// One bridge queue: where it reads from and what it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub purpose: Purpose,
    pub exchange: String,
    pub routing_keys: Vec<String>,
    /// Durable queue `<pulse_queue_basename>/<purpose>`.
    pub queue: String,
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub pulse_url: SecretUrl,
    pub bindings: Vec<Binding>,
    pub prefetch: u16,
    pub max_message_bytes: usize,
    pub dead_letter_body_limit: usize,
    /// Declare the exchanges (development); in production they belong to Taskcluster and the
    /// Buildbot masters and are only checked (passive declare).
    pub declare_exchanges: bool,
    /// Test hook: stop between "job stored" and "ack" and wait to be killed.
    pub pause_before_ack: bool,
    /// The AMQP connection name the broker shows (`rabbitmqctl list_connections name`).
    pub connection_name: String,
    /// Whether every binding is being consumed right now (readiness).
    pub consuming: Consuming,
}

/// Shared flag: `true` while a Pulse session consumes every binding.
#[derive(Debug, Clone, Default)]
pub struct Consuming(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Consuming {
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, v: bool) {
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The three bindings of BRIDGE.md, from the configuration.
pub fn bindings_from_config(config: &Config) -> Vec<Binding> {
    let tc = &config.tclistener;
    let tc_key = format!("*.*.*.*.*.{}.{}.#", tc.provisioner_id, tc.worker_type);
    vec![
        Binding {
            purpose: Purpose::TaskPending,
            exchange: format!("{}/task-pending", tc.pulse_exchange_basename),
            routing_keys: vec![tc_key.clone()],
            queue: config.pulse.queue_name(Purpose::TaskPending.name()),
        },
        Binding {
            purpose: Purpose::TaskException,
            exchange: format!("{}/task-exception", tc.pulse_exchange_basename),
            routing_keys: vec![tc_key],
            queue: config.pulse.queue_name(Purpose::TaskException.name()),
        },
        Binding {
            purpose: Purpose::BuildEvents,
            exchange: config.bblistener.pulse_exchange.clone(),
            routing_keys: vec!["build.*.*.started".into(), "build.*.*.log_uploaded".into()],
            queue: config.pulse.queue_name(Purpose::BuildEvents.name()),
        },
    ]
}

/// Consumes until `shutdown` turns true; reconnects with capped backoff after the broker goes
/// away. Returns once the in-progress message of every consumer has been settled.
pub async fn run(settings: IngestSettings, queue: JobQueue, mut shutdown: watch::Receiver<bool>) {
    // Every exchange's counters exist from the start, at zero, so rates and alerts work at once.
    for b in &settings.bindings {
        metrics::counter!("bbb_pulse_messages_total", "exchange" => b.exchange.clone())
            .increment(0);
        metrics::counter!("bbb_pulse_dead_lettered_total", "exchange" => b.exchange.clone())
            .increment(0);
    }
    metrics::counter!("bbb_pulse_ignored_total").increment(0);
    metrics::counter!("bbb_ingest_reconnects_total").increment(0);
    let mut backoff = Duration::from_millis(250);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        match session(&settings, &queue, shutdown.clone()).await {
            Ok(()) => return,
            Err(e) => {
                metrics::counter!("bbb_ingest_reconnects_total").increment(1);
                tracing::warn!(
                    "pulse session on {} ended: {e:#}; reconnecting in {backoff:?}",
                    settings.pulse_url
                );
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(250);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = bbb_shared::process::stopped(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// One connection's life: declare, bind, consume. `Ok` only on shutdown.
async fn session(
    settings: &IngestSettings,
    queue: &JobQueue,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let properties = ConnectionProperties::default()
        .with_connection_name(settings.connection_name.as_str().into());
    let conn = Connection::connect(settings.pulse_url.expose(), properties)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", settings.pulse_url))?;
    tracing::info!("connected to pulse at {}", settings.pulse_url);
    let mut consumers = tokio::task::JoinSet::new();
    for binding in &settings.bindings {
        let channel = conn.create_channel().await?;
        prepare(&conn, &channel, binding, settings).await?;
        consumers.spawn(consume(
            channel,
            binding.clone(),
            settings.clone(),
            queue.clone(),
            shutdown.clone(),
        ));
    }
    settings.consuming.set(true);
    // The first consumer to end decides: all of them end on shutdown, any error reconnects.
    let mut result = Ok(());
    while let Some(r) = consumers.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                result = Err(e);
                consumers.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                result = Err(anyhow::anyhow!("consumer task failed: {e}"));
                consumers.abort_all();
            }
        }
    }
    settings.consuming.set(false);
    let _ = conn.close(200, "bbb-ingest stopping".into()).await;
    result
}

async fn prepare(
    conn: &Connection,
    channel: &Channel,
    b: &Binding,
    settings: &IngestSettings,
) -> anyhow::Result<()> {
    if settings.declare_exchanges {
        channel
            .exchange_declare(
                b.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
    } else {
        // A passive declare of a missing exchange closes its channel: probe on a spare one.
        let probe = conn.create_channel().await?;
        probe
            .exchange_declare(
                b.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("exchange {} is not there ({e}); is the name right? (--declare-exchanges creates it, for development)", b.exchange))?;
        let _ = probe.close(200, "probe done".into()).await;
    }
    channel
        .queue_declare(
            b.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in &b.routing_keys {
        channel
            .queue_bind(
                b.queue.as_str().into(),
                b.exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    tracing::info!(
        "consuming {} from exchange {} ({})",
        b.queue,
        b.exchange,
        b.routing_keys.join(", ")
    );
    Ok(())
}

async fn consume(
    channel: Channel,
    binding: Binding,
    settings: IngestSettings,
    queue: JobQueue,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let tag = format!(
        "bbb-ingest-{}-{}",
        binding.purpose.name(),
        std::process::id()
    );
    let mut consumer = channel
        .basic_consume(
            binding.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        let delivery = tokio::select! {
            d = consumer.next() => d,
            _ = bbb_shared::process::stopped(&mut shutdown) => {
                // Unacked prefetched messages go back to the queue when the channel closes.
                let _ = channel.close(200, "bbb-ingest draining".into()).await;
                return Ok(());
            }
        };
        let Some(delivery) = delivery else {
            anyhow::bail!("consumer of {} was cancelled by the broker", binding.queue);
        };
        let delivery = delivery?;
        handle(&delivery, &binding, &settings, &queue, &mut shutdown).await?;
    }
}

/// Settles one message: ack once its job or dead letter is in Redis, nack with requeue after a
/// backoff when Redis is unavailable.
async fn handle(
    delivery: &Delivery,
    binding: &Binding,
    settings: &IngestSettings,
    queue: &JobQueue,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let exchange = binding.exchange.as_str();
    let routing_key = delivery.routing_key.as_str();
    metrics::counter!("bbb_pulse_messages_total", "exchange" => exchange.to_owned()).increment(1);
    let stored = match parse(
        binding.purpose,
        routing_key,
        &delivery.data,
        settings.max_message_bytes,
    ) {
        Ok(parsed) => store(queue, parsed, routing_key).await,
        Err(rejected) => {
            tracing::warn!(
                exchange,
                routing_key,
                "dead-lettering a message from {exchange} ({routing_key}): {rejected}"
            );
            metrics::counter!("bbb_pulse_dead_lettered_total", "exchange" => exchange.to_owned())
                .increment(1);
            queue
                .dead_letter(&garbage(delivery, binding, settings, rejected.0))
                .await
        }
    };
    match stored {
        Ok(()) => {
            if settings.pause_before_ack {
                eprintln!("bbb-ingest: paused before ack");
                std::future::pending::<()>().await;
            }
            delivery.ack(BasicAckOptions::default()).await?;
        }
        Err(e) => {
            metrics::counter!("bbb_ingest_redis_errors_total").increment(1);
            tracing::warn!(
                exchange,
                routing_key,
                "could not store a message from {exchange} ({routing_key}) in Redis, it goes back to the queue: {e}"
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = bbb_shared::process::stopped(shutdown) => {}
            }
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(())
}

async fn store(queue: &JobQueue, parsed: Parsed, routing_key: &str) -> Result<(), QueueError> {
    let (kind, key, outcome) = match parsed {
        Parsed::TaskPending(j) => job_stored(queue, j).await?,
        Parsed::TaskException(j) => job_stored(queue, j).await?,
        Parsed::BuildStarted(j) => job_stored(queue, j).await?,
        Parsed::BuildFinished(j) => job_stored(queue, j).await?,
        Parsed::Ignored(why) => {
            tracing::debug!(routing_key, "ignoring {routing_key}: {why}");
            metrics::counter!("bbb_pulse_ignored_total").increment(1);
            return Ok(());
        }
    };
    tracing::debug!(routing_key, "{kind} job {key}: {outcome:?}");
    metrics::counter!("bbb_jobs_enqueued_total", "kind" => kind, "outcome" => format!("{outcome:?}").to_lowercase())
        .increment(1);
    Ok(())
}

async fn job_stored<J: bbb_shared::jobs::Job>(
    queue: &JobQueue,
    job: J,
) -> Result<(&'static str, String, bbb_shared::queue::Enqueued), QueueError> {
    let key = job.idempotency_key();
    let outcome = queue.enqueue(job).await?;
    Ok((J::NAME, key, outcome))
}

fn garbage(
    delivery: &Delivery,
    b: &Binding,
    settings: &IngestSettings,
    reason: String,
) -> DeadLetter {
    let limit = settings.dead_letter_body_limit.min(delivery.data.len());
    DeadLetter {
        id: ulid::Ulid::generate().to_string(),
        source: "ingest".into(),
        queue: b.purpose.name().into(),
        reason,
        failed_at: chrono::Utc::now(),
        attempts: 0,
        exchange: Some(b.exchange.clone()),
        routing_key: Some(delivery.routing_key.to_string()),
        body: Some(String::from_utf8_lossy(&delivery.data[..limit]).into_owned()),
        body_truncated: limit < delivery.data.len(),
        envelope: None,
    }
}

/// Publishes a message (used by tests and the sandbox to play a Pulse publisher).
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            Default::default(),
            body,
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2),
        )
        .await?
        .await?;
    Ok(())
}
