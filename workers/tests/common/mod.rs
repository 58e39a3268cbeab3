//! Test bed for the worker runtime: each test gets its own Redis key prefix, so tests run in
//! parallel on the shared Redis server without seeing each other's jobs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use apalis_redis::ConnectionManager;
use bbb_shared::{
    jobs::Probe,
    queue::{JobQueue, QueueSettings},
    secret::SecretUrl,
};
use bbb_workers::{WorkerSetup, jobs::Registration, runtime::RuntimeSettings};
use redis::AsyncCommands;
use tokio::{sync::watch, task::JoinHandle};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

pub struct Bed {
    pub prefix: String,
    pub conn: ConnectionManager,
    pub queue: JobQueue,
    pub settings: QueueSettings,
}

impl Bed {
    pub async fn new() -> Self {
        let prefix = format!(
            "bbbtest-{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let conn = bbb_shared::queue::connect(&SecretUrl::new(REDIS_URL))
            .await
            .unwrap();
        let settings = QueueSettings {
            prefix: prefix.clone(),
            idempotency_ttl: Duration::from_secs(600),
            heartbeat: Duration::from_millis(500),
            missed_heartbeats: 4,
            fetch_batch: 8,
        };
        let queue = JobQueue::new(conn.clone(), settings.clone());
        Self {
            prefix,
            conn,
            queue,
            settings,
        }
    }

    pub fn setup(&self) -> WorkerSetup {
        WorkerSetup {
            queue_settings: self.settings.clone(),
            runtime: RuntimeSettings {
                concurrency: 8,
                max_attempts: 4,
                retry_base: Duration::from_millis(100),
                retry_max: Duration::from_secs(1),
                lock_busy_delay: Duration::from_millis(100),
                max_lock_waits: 600,
                poll_interval: Duration::from_millis(50),
            },
            lock_ttl: Duration::from_secs(3),
            jobs: Registration {
                bridge: false,
                probe: true,
            },
            bridge: None,
        }
    }

    /// Starts an in-process worker pool; returns its shutdown switch and handle.
    pub async fn start_pool(&self, setup: WorkerSetup) -> Pool {
        let conn = bbb_shared::queue::connect(&SecretUrl::new(REDIS_URL))
            .await
            .unwrap();
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(bbb_workers::run(conn.clone(), setup, rx));
        Pool {
            stop: tx,
            handle,
            conn,
        }
    }

    pub fn record_key(&self) -> String {
        format!("{}:probe-record", self.prefix)
    }

    pub fn probe(&self, id: &str, task_id: &str, duration_ms: u64) -> Probe {
        Probe {
            id: id.into(),
            task_id: task_id.into(),
            duration_ms,
            fail_times: 0,
            record_to: self.record_key(),
            crash: false,
        }
    }

    pub async fn records(&self) -> Vec<Record> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = conn.lrange(self.record_key(), 0, -1).await.unwrap();
        raw.iter().map(|r| Record::parse(r)).collect()
    }

    /// Waits until `n` probe runs are recorded, or panics after `timeout`.
    pub async fn wait_records(&self, n: usize, timeout: Duration) -> Vec<Record> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.records().await;
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} probe runs recorded within {timeout:?}",
                r.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn cleanup(&self) {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = conn
            .keys(format!("{}*", self.prefix))
            .await
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = conn.del(chunk).await;
        }
    }
}

/// A `bbb-worker` child process on this bed's prefix, with short heartbeats and lock expiry.
pub fn spawn_worker_process(bed: &Bed, max_attempts: u32) -> std::process::Child {
    let dir = std::env::temp_dir().join(&bed.prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("worker.json");
    let body = serde_json::json!({
        "taskcluster_queue_config": {"rootUrl": "http://127.0.0.1:1", "credentials": {"clientId": "c", "accessToken": "t"}},
        "buildbot_scheduler_db": "sqlite::memory:",
        "bbb_db": "sqlite::memory:",
        "selfserve_url": "http://127.0.0.1:1/self-serve",
        "pulse_url": "amqp://guest:guest@127.0.0.1:5672/%2f",
        "pulse_queue_basename": "queue/unused",
        "redis_url": REDIS_URL,
        "redis": {"prefix": bed.prefix, "idempotency_ttl": 600},
        "tc_worker_group": "g",
        "tc_worker_id": "w",
        "tclistener": {"worker_type": "bb", "provisioner_id": "bb"},
        "bblistener": {"pulse_exchange": "exchange/build/"},
        "worker": {"heartbeat_ms": 500, "orphan_after_ms": 2000, "lock_ttl_ms": 2000,
                   "max_attempts": max_attempts, "retry_base_ms": 100, "lock_busy_delay_ms": 100},
    });
    std::fs::write(&config, body.to_string()).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_bbb-worker"))
        .arg("--config")
        .arg(&config)
        .arg("--probe-jobs")
        .arg("--no-migrate")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
}

pub struct Pool {
    pub stop: watch::Sender<bool>,
    pub handle: JoinHandle<()>,
    pub conn: ConnectionManager,
}

impl Pool {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the pool drains within 30 s")
            .unwrap();
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub start: i64,
    pub end: i64,
    pub id: String,
    pub worker: String,
}

impl Record {
    fn parse(s: &str) -> Self {
        let mut it = s.splitn(4, ',');
        let start = it.next().unwrap().parse().unwrap();
        let end = it.next().unwrap().parse().unwrap();
        let id = it.next().unwrap().to_owned();
        let worker = it.next().unwrap_or("").to_owned();
        Self {
            start,
            end,
            id,
            worker,
        }
    }

    pub fn overlaps(&self, other: &Record) -> bool {
        self.start < other.end && other.start < self.end
    }
}

pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
