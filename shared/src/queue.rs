//! Jobs on Redis: idempotent enqueueing through apalis-redis, retries, dead letters.
//!
//! Each job kind has its own apalis queue `<prefix>:<kind>`. A job is stored as an
//! [`Envelope`]: the typed job plus what the runtime needs to retry it (attempt count, lock
//! waits, last error).
//!
//! Invariants:
//! - **Idempotent enqueue.** apalis-redis's push script claims the idempotency key
//!   (`SETNX` + `EXPIRE`) and stores the job in the same Lua script, so a crash can neither
//!   record a key without its job nor let a duplicate through. The retention window must be
//!   set: with no TTL apalis-redis expires the key at once and duplicates pass.
//! - **Deterministic re-push ids.** A retry or a lock-busy re-queue is pushed under an id
//!   derived from the original job id and the attempt; the push script's `HSETNX` makes a
//!   repeated re-push (after a crash between re-push and completion) one job.
//! - **Nothing is lost.** A job that fails for good, or crashes its worker too often, lands in
//!   the dead-letter list `<prefix>:dead-letters` with its error and its envelope, from which
//!   an operator can requeue it. Unparseable Pulse messages land there too, with their raw body.
use std::time::Duration;

use apalis_core::task::{builder::TaskBuilder, task_id::TaskId};
use apalis_redis::{Config as ApalisConfig, ConnectionManager};
use chrono::{DateTime, Utc};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::jobs::Job;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis (apalis): {0}")]
    Apalis(#[from] apalis_redis::Error),
    #[error("encoding a job: {0}")]
    Encode(#[from] serde_json::Error),
}

impl QueueError {
    /// True for connection-level failures worth retrying after a backoff.
    pub fn is_transient(&self) -> bool {
        !matches!(self, QueueError::Encode(_))
    }
}

/// What the runtime stores for a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<J> {
    pub job: J,
    /// The idempotency key of the original enqueue (kept for logs and dead letters).
    pub key: String,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempt: u32,
    /// Times the job found its task locked and was re-queued.
    #[serde(default)]
    pub lock_waits: u32,
    /// The id the job was first enqueued under: re-push ids derive from it.
    pub origin_id: String,
    pub enqueued_at: DateTime<Utc>,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Whether an enqueue stored a new job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    New,
    Duplicate,
}

/// Settings shared by producers and workers of the queues.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub prefix: String,
    pub idempotency_ttl: Duration,
    /// apalis worker heartbeat; a worker silent for `heartbeat * missed_heartbeats` is dead
    /// and its in-flight jobs are re-queued by the others.
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// Jobs fetched per round trip. apalis-redis fetches one batch at a time per worker, so
    /// this bounds throughput (measured: 1 -> ~320 jobs/s, 8 -> ~830 jobs/s for a pool). Jobs
    /// of a batch that wait for a free slot send no heartbeat: keep batches small next to the
    /// concurrency, and jobs short next to the orphan timeout (the per-task lock covers the rest).
    pub fetch_batch: usize,
}

/// The Redis keys of one job kind's queue under `prefix`, as apalis-redis names them: what
/// readers (`bbb queue`) need, without the producer and worker settings.
pub fn queue_keys(prefix: &str, kind: &str) -> ApalisConfig {
    ApalisConfig::default().queue(format!("{prefix}:{kind}"))
}

/// The dead-letter list under `prefix`.
pub fn dead_letter_key(prefix: &str) -> String {
    format!("{prefix}:dead-letters")
}

impl QueueSettings {
    pub fn queue_name(&self, kind: &str) -> String {
        format!("{}:{kind}", self.prefix)
    }

    /// The apalis-redis configuration of one job kind's queue.
    pub fn apalis_config(&self, kind: &str) -> ApalisConfig {
        ApalisConfig::default()
            .queue(self.queue_name(kind))
            .idempotency_ttl(Some(self.idempotency_ttl))
            .heartbeat_interval(self.heartbeat)
            .missed_heartbeats(self.missed_heartbeats)
            .batch_size(self.fetch_batch.max(1))
            .emit_events(false)
    }

    pub fn dead_letter_key(&self) -> String {
        dead_letter_key(&self.prefix)
    }
}

/// A dead letter: a message or job that could not be processed, kept with everything needed
/// to understand and requeue it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    /// `ingest` (an unparseable Pulse message) or `job` (a job that failed for good).
    pub source: String,
    /// The job kind, or the Pulse queue purpose for ingest dead letters.
    pub queue: String,
    pub reason: String,
    pub failed_at: DateTime<Utc>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub exchange: Option<String>,
    #[serde(default)]
    pub routing_key: Option<String>,
    /// The raw body (lossy UTF-8), cut at the configured limit.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub body_truncated: bool,
    /// The job envelope, for requeueing.
    #[serde(default)]
    pub envelope: Option<serde_json::Value>,
}

/// Frees the storage of finished jobs: apalis-redis keeps data and meta of done jobs forever.
const JANITOR: &str = r#"
local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('DEL', KEYS[3] .. ':' .. id)
end
return #ids
"#;

/// The producer side of the job queues.
#[derive(Clone)]
pub struct JobQueue {
    conn: ConnectionManager,
    settings: QueueSettings,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue")
            .field("settings", &self.settings)
            .finish()
    }
}

impl JobQueue {
    pub fn new(conn: ConnectionManager, settings: QueueSettings) -> Self {
        Self { conn, settings }
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Enqueues `job` unless a job with the same idempotency key was enqueued within the
    /// retention window.
    pub async fn enqueue<J: Job>(&self, job: J) -> Result<Enqueued, QueueError> {
        self.enqueue_after(job, Duration::ZERO).await
    }

    pub async fn enqueue_after<J: Job>(
        &self,
        job: J,
        delay: Duration,
    ) -> Result<Enqueued, QueueError> {
        let key = job.idempotency_key();
        let id = ulid::Ulid::generate().to_string();
        let envelope = Envelope {
            job,
            key: key.clone(),
            attempt: 0,
            lock_waits: 0,
            origin_id: id.clone(),
            enqueued_at: Utc::now(),
            last_error: None,
        };
        let stored = self
            .push_raw(J::NAME, &id, Some(&key), &envelope, delay)
            .await?;
        Ok(if stored {
            Enqueued::New
        } else {
            Enqueued::Duplicate
        })
    }

    /// Pushes an envelope under an explicit id (re-push after a retry or a busy lock): the
    /// same id pushed twice is one job.
    pub async fn push_envelope<J: Job>(
        &self,
        id: &str,
        envelope: &Envelope<J>,
        delay: Duration,
    ) -> Result<bool, QueueError> {
        self.push_raw(J::NAME, id, None, envelope, delay).await
    }

    async fn push_raw<T: Serialize>(
        &self,
        kind: &str,
        id: &str,
        idempotency_key: Option<&str>,
        value: &T,
        delay: Duration,
    ) -> Result<bool, QueueError> {
        let bytes = serde_json::to_vec(value)?;
        let mut builder = TaskBuilder::new(bytes).task_id(TaskId::from_string(id));
        if let Some(key) = idempotency_key {
            builder = builder.idempotency_key(key);
        }
        if !delay.is_zero() {
            builder = builder.run_after(delay);
        }
        let config = self.settings.apalis_config(kind);
        let mut conn = self.conn.clone();
        let (now, later) =
            apalis_redis::queries::push_tasks(&mut conn, &config, &[builder.build()]).await?;
        Ok(now + later > 0)
    }

    /// Records a dead letter and counts it.
    pub async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        let json = serde_json::to_string(letter)?;
        let mut conn = self.conn.clone();
        let _: () = conn.lpush(self.settings.dead_letter_key(), json).await?;
        metrics::counter!("bbb_dead_letters_total", "source" => letter.source.clone(), "queue" => letter.queue.clone())
            .increment(1);
        Ok(())
    }

    /// Dead letters, newest first.
    pub async fn dead_letters(&self, limit: isize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = conn
            .lrange(self.settings.dead_letter_key(), 0, limit - 1)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// Pushes the envelope of a dead-lettered job back on its kind's queue as a fresh job: a
    /// new job id (also its origin id), attempt and lock-wait counters reset, the last error
    /// cleared, enqueued now, and no idempotency key (the original key may still be held).
    /// `envelope` is [`DeadLetter::envelope`]; the job inside is kept as stored. Returns the
    /// new job id.
    pub async fn requeue_dead_job(
        &self,
        kind: &str,
        envelope: &serde_json::Value,
    ) -> Result<String, QueueError> {
        let mut env: Envelope<serde_json::Value> = serde_json::from_value(envelope.clone())?;
        let id = ulid::Ulid::generate().to_string();
        env.attempt = 0;
        env.lock_waits = 0;
        env.origin_id = id.clone();
        env.enqueued_at = Utc::now();
        env.last_error = None;
        self.push_raw(kind, &id, None, &env, Duration::ZERO).await?;
        Ok(id)
    }

    /// Removes one dead letter, given exactly as stored (its JSON text): safe while others
    /// append or remove entries, unlike removal by index. Returns whether it was there.
    pub async fn remove_dead_letter(&self, raw: &str) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let removed: u64 = conn.lrem(self.settings.dead_letter_key(), 1, raw).await?;
        Ok(removed > 0)
    }

    /// Deletes the data of up to `max` finished jobs of one kind; returns how many.
    pub async fn vacuum(&self, kind: &str, max: usize) -> Result<usize, QueueError> {
        let config = self.settings.apalis_config(kind);
        let mut conn = self.conn.clone();
        let n: usize = Script::new(JANITOR)
            .key(config.done_jobs_set())
            .key(config.job_data_hash())
            .key(config.job_meta_hash())
            .arg(max)
            .invoke_async(&mut conn)
            .await?;
        Ok(n)
    }

    /// Jobs of a kind not yet finished: waiting (due or delayed), active, or in flight.
    pub async fn pending_count(&self, kind: &str) -> Result<u64, QueueError> {
        let config = self.settings.apalis_config(kind);
        let mut conn = self.conn.clone();
        let (scheduled, active): (u64, u64) = redis::pipe()
            .zcard(config.scheduled_jobs_set())
            .llen(config.active_jobs_list())
            .query_async(&mut conn)
            .await?;
        let inflight: Vec<String> = conn
            .keys(format!("{}:*", config.inflight_jobs_set()))
            .await?;
        let mut total = scheduled + active;
        for key in inflight {
            let n: u64 = conn.scard(key).await?;
            total += n;
        }
        Ok(total)
    }
}

/// Connects a Redis connection manager (reconnects by itself after errors).
pub async fn connect(url: &crate::secret::SecretUrl) -> Result<ConnectionManager, QueueError> {
    let client = redis::Client::open(url.expose())?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_number_of_retries(3);
    Ok(client.get_connection_manager_with_config(config).await?)
}

impl QueueSettings {
    /// The queue settings every process derives from the same configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let w = &config.worker;
        let heartbeat = Duration::from_millis(w.heartbeat_ms.max(100));
        let missed = (w.orphan_after_ms / heartbeat.as_millis().max(1) as u64).max(2);
        Self {
            prefix: config.redis.prefix.clone(),
            idempotency_ttl: Duration::from_secs(config.redis.idempotency_ttl_secs.max(1)),
            heartbeat,
            missed_heartbeats: usize::try_from(missed).unwrap_or(usize::MAX),
            fetch_batch: (w.concurrency / 2).clamp(1, 8),
        }
    }
}
