//! A master's Pulse outbox: like `pulse_publisher.py`'s queue directory, events are queued
//! by the build and published in order by a task of their own, so a slow or failing broker
//! never holds a Build up. `_meta.sent` is stamped when an event is queued (copies of a
//! duplicated message are identical). The faults of [`PulseFaults`] are applied here: drops and
//! duplicates when an event is queued, delay and reordering when it is published.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use super::{PulseFaults, events::EventKind};
use crate::{clock::Clock, pulse::Publisher};

/// How long a message held back for reordering waits for a successor before it goes alone.
const REORDER_HOLD: Duration = Duration::from_millis(300);
/// Publishing attempts before a message is given up (logged).
const PUBLISH_ATTEMPTS: u32 = 6;
/// Longest wait for queued messages at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

struct Outgoing {
    kind: EventKind,
    routing_key: String,
    body: Value,
    due: Instant,
}

/// Counts per event kind, for the every-Nth faults.
#[derive(Default)]
struct Counters {
    queued: HashMap<EventKind, u64>,
    duplicate: u64,
}

pub(crate) struct Outbox {
    tx: Mutex<Option<mpsc::UnboundedSender<Outgoing>>>,
    faults: Arc<Mutex<PulseFaults>>,
    counters: Mutex<Counters>,
    task: Mutex<Option<JoinHandle<()>>>,
    clock: Clock,
}

impl Outbox {
    pub(crate) fn start(
        publisher: Publisher,
        exchange: String,
        faults: PulseFaults,
        clock: Clock,
    ) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let faults = Arc::new(Mutex::new(faults));
        let task = tokio::spawn(publish_loop(rx, publisher, exchange, Arc::clone(&faults)));
        Outbox {
            tx: Mutex::new(Some(tx)),
            faults,
            counters: Mutex::new(Counters::default()),
            task: Mutex::new(Some(task)),
            clock,
        }
    }

    pub(crate) fn set_faults(&self, faults: PulseFaults) {
        *lock(&self.faults) = faults;
    }

    pub(crate) fn faults(&self) -> PulseFaults {
        lock(&self.faults).clone()
    }

    /// Queues an event, unless a fault drops it (or twice, if one duplicates it).
    /// `_meta.sent` is stamped now, once: copies of a duplicated message are identical.
    pub(crate) fn send(&self, kind: EventKind, routing_key: String, mut body: Value) {
        if let Some(meta) = body.get_mut("_meta").and_then(Value::as_object_mut) {
            meta.insert(
                "sent".into(),
                Value::from(super::events::pacific_time(self.clock.now())),
            );
        }
        let faults = self.faults();
        let (drop, copies) = {
            let mut counters = lock(&self.counters);
            let n = counters.queued.entry(kind).or_insert(0);
            *n += 1;
            let (probability, every) = match kind {
                EventKind::Started => (faults.drop_started, faults.drop_started_every),
                EventKind::Finished => (faults.drop_finished, faults.drop_finished_every),
                EventKind::LogUploaded => {
                    (faults.drop_log_uploaded, faults.drop_log_uploaded_every)
                }
            };
            let drop = chance(probability) || (every > 0 && n.is_multiple_of(u64::from(every)));
            let mut copies = 1;
            if !drop {
                counters.duplicate += 1;
                let every = u64::from(faults.duplicate_every);
                if chance(faults.duplicate)
                    || (every > 0 && counters.duplicate.is_multiple_of(every))
                {
                    copies = 2;
                }
            }
            (drop, copies)
        };
        if drop {
            tracing::info!(
                pulse.routing_key = %routing_key,
                "sandbox fault: dropping Pulse message {routing_key}"
            );
            return;
        }
        let due = Instant::now() + Duration::from_millis(faults.delay_ms);
        let guard = lock(&self.tx);
        let Some(tx) = guard.as_ref() else {
            return;
        };
        for copy in 0..copies {
            if copy > 0 {
                tracing::info!(
                    pulse.routing_key = %routing_key,
                    "sandbox fault: duplicating Pulse message {routing_key}"
                );
            }
            let _ = tx.send(Outgoing {
                kind,
                routing_key: routing_key.clone(),
                body: body.clone(),
                due,
            });
        }
    }

    /// Publishes what is queued (bounded wait), then stops.
    pub(crate) async fn drain(&self) {
        drop(lock(&self.tx).take());
        let task = lock(&self.task).take();
        if let Some(mut task) = task
            && tokio::time::timeout(DRAIN_TIMEOUT, &mut task)
                .await
                .is_err()
        {
            tracing::warn!("the Pulse outbox did not drain in time; dropping what is left");
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn chance(probability: f64) -> bool {
    probability > 0.0 && (probability >= 1.0 || rand::random::<f64>() < probability)
}

async fn publish_loop(
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    publisher: Publisher,
    exchange: String,
    faults: Arc<Mutex<PulseFaults>>,
) {
    let mut held: Option<Outgoing> = None;
    loop {
        let next = if held.is_some() {
            match tokio::time::timeout(REORDER_HOLD, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    // Nothing came to swap with: the held message goes alone.
                    if let Some(h) = held.take() {
                        publish(&publisher, &exchange, h).await;
                    }
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(message) = next else {
            break;
        };
        tokio::time::sleep_until(message.due).await;
        let reorder = lock(&faults).reorder;
        match held.take() {
            Some(h) => {
                publish(&publisher, &exchange, message).await;
                publish(&publisher, &exchange, h).await;
            }
            None if reorder => held = Some(message),
            None => publish(&publisher, &exchange, message).await,
        }
    }
    if let Some(h) = held {
        publish(&publisher, &exchange, h).await;
    }
}

async fn publish(publisher: &Publisher, exchange: &str, message: Outgoing) {
    let mut pause = Duration::from_millis(100);
    for attempt in 1..=PUBLISH_ATTEMPTS {
        match publisher
            .publish(exchange, &message.routing_key, &message.body)
            .await
        {
            Ok(()) => {
                tracing::debug!(
                    pulse.exchange = exchange,
                    pulse.routing_key = %message.routing_key,
                    pulse.event = message.kind.as_str(),
                    "published {} on {exchange}",
                    message.routing_key
                );
                return;
            }
            Err(error) if attempt < PUBLISH_ATTEMPTS => {
                tracing::warn!(
                    pulse.routing_key = %message.routing_key,
                    %error,
                    "publishing {} failed (attempt {attempt}); retrying",
                    message.routing_key
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                tracing::error!(
                    pulse.routing_key = %message.routing_key,
                    %error,
                    "publishing {} failed {PUBLISH_ATTEMPTS} times; message lost",
                    message.routing_key
                );
            }
        }
    }
}
