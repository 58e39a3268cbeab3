//! What the worker runtime records in Redis so that `bbb queue` and the status page can show
//! throughput and live workers from any host: per-minute outcome counters per job kind, and a
//! registry of the running apalis workers with their concurrency.
//!
//! Keys (all under the configured Redis prefix):
//! - `<prefix>:stats:<kind>:<outcome>:<epoch minute>`: counter, expires after two hours;
//!   `outcome` is `done` (finished, successfully or not, for good), `failed` (dead-lettered)
//!   or `retried` (failed, re-queued with backoff).
//! - `<prefix>:workers`: hash, field = worker name, value = [`WorkerInfo`] as JSON. An entry
//!   is removed when its worker stops; one whose apalis heartbeat (`<queue>:workers` zset) is
//!   gone or stale belongs to a dead worker and is ignored by readers.
use chrono::{DateTime, Utc};
use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

/// How long the per-minute counters are kept: the window readers look at, plus margin.
pub const COUNTER_TTL_SECS: i64 = 2 * 3600;

/// An outcome counted per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed,
    Retried,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Done, Outcome::Failed, Outcome::Retried];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Retried => "retried",
        }
    }
}

/// The minute a time falls in, as minutes since the Unix epoch.
pub fn epoch_minute(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

/// The counter key of one kind, outcome and minute.
pub fn counter_key(prefix: &str, kind: &str, outcome: Outcome, minute: i64) -> String {
    format!("{prefix}:stats:{kind}:{}:{minute}", outcome.as_str())
}

/// The hash of live workers.
pub fn workers_key(prefix: &str) -> String {
    format!("{prefix}:workers")
}

/// Counts one job outcome in the current minute.
pub async fn record(
    conn: &mut ConnectionManager,
    prefix: &str,
    kind: &str,
    outcome: Outcome,
) -> redis::RedisResult<()> {
    let key = counter_key(prefix, kind, outcome, epoch_minute(Utc::now()));
    redis::pipe()
        .incr(&key, 1)
        .ignore()
        .expire(&key, COUNTER_TTL_SECS)
        .ignore()
        .query_async(conn)
        .await
}

/// A running apalis worker, as registered by the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The job kind it takes.
    pub kind: String,
    /// Jobs it runs at once.
    pub concurrency: usize,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
}

/// Registers a worker (on start) in the live-worker hash.
pub async fn register_worker(
    conn: &mut ConnectionManager,
    prefix: &str,
    name: &str,
    info: &WorkerInfo,
) -> redis::RedisResult<()> {
    let json = serde_json::to_string(info).unwrap_or_default();
    conn.hset(workers_key(prefix), name, json).await
}

/// Removes a worker (on stop) from the live-worker hash.
pub async fn unregister_worker(
    conn: &mut ConnectionManager,
    prefix: &str,
    name: &str,
) -> redis::RedisResult<()> {
    conn.hdel(workers_key(prefix), name).await
}

/// Every registered worker, by name; entries that do not parse are skipped.
pub async fn registered_workers(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<Vec<(String, WorkerInfo)>> {
    let raw: Vec<(String, String)> = conn.hgetall(workers_key(prefix)).await?;
    Ok(raw
        .into_iter()
        .filter_map(|(name, json)| serde_json::from_str(&json).ok().map(|i| (name, i)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_kind_outcome_and_minute() {
        let t = DateTime::parse_from_rfc3339("2025-12-03T10:00:59Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(epoch_minute(t), 1_764_756_000 / 60);
        assert_eq!(
            counter_key("bbb", "task-pending", Outcome::Failed, 7),
            "bbb:stats:task-pending:failed:7"
        );
    }
}
