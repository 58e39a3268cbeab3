//! The end-to-end test bed: the three emulators, the ingest and a worker pool, all in process
//! and on the same code paths as production, against the real RabbitMQ, Redis and databases.
//! Every bed has its own exchanges, AMQP queues, Redis prefix and databases, so beds run in
//! parallel.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use bbb_ingest::{IngestSettings, bindings_from_config};
use bbb_sandbox::{
    buildbot::{Master, MasterSettings, Masters, PulseFaults},
    clock::Clock,
    pulse::Publisher,
    selfserve::SelfServe,
    tc::{Call, TcQueue, TcSettings},
};
use bbb_shared::{
    bridgedb::{BridgeDb, TrackedTask},
    config::Config,
    dburl::Engine,
    queue::{JobQueue, QueueSettings},
    schedulerdb::{BuildRequest, SchedulerDb},
    testing::TestDb,
};
use bbb_workers::{WorkerSetup, bridge::Bridge, jobs::Registration, runtime::RuntimeSettings};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS: &str = "redis://127.0.0.1:6379/0";
pub const BUILDER: &str = "Linux x86-64 mozilla-inbound build";
pub const TEST_BUILDER: &str = "Linux x86-64 mozilla-inbound test";
pub const RELEASE_BUILDER: &str = "release-mozilla-beta-firefox_signing";
/// Listed in allthethings.json but served by no master: its requests stay pending.
pub const IDLE_BUILDER: &str = "Windows 7 mozilla-inbound build";
pub const IGNORED_BUILDER: &str = "ignored-builder-nightly";
pub const CLIENT_ID: &str = "bbb-e2e";
pub const ACCESS_TOKEN: &str = "e2e-token";

pub struct Options {
    pub engine: Engine,
    pub ingests: usize,
    pub master_poll: Duration,
    pub build_duration: Duration,
    pub faults: PulseFaults,
    /// Start the Buildbot master at once (else call `start_master`).
    pub master: bool,
    /// A config file shape to start from instead of the new one (its keys are overridden to
    /// point at this bed).
    pub base_config: Option<Value>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            engine: Engine::Sqlite,
            ingests: 1,
            master_poll: Duration::from_millis(50),
            build_duration: Duration::from_millis(300),
            faults: PulseFaults::default(),
            master: true,
            base_config: None,
        }
    }
}

pub struct Bed {
    pub name: String,
    pub clock: Clock,
    pub tc: TcQueue,
    pub masters: Masters,
    pub selfserve: SelfServe,
    pub publisher: Publisher,
    pub config: Config,
    pub bbb: BridgeDb,
    pub sched: SchedulerDb,
    pub queue: JobQueue,
    master_settings: MasterSettings,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _bbb_db: TestDb,
    _sched_db: TestDb,
}

impl Bed {
    pub async fn start(opts: Options) -> Bed {
        bbb_shared::telemetry::init(bbb_shared::telemetry::LogFormat::Human);
        let name = format!(
            "bbbe2e-{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let bbb_db = TestDb::create(opts.engine).await.unwrap();
        let sched_db = TestDb::create(opts.engine).await.unwrap();
        let clock = Clock::new();
        let publisher = Publisher::connect(&bbb_shared::secret::SecretUrl::new(AMQP))
            .await
            .unwrap();
        let tc_exchange = format!("{name}/exchange/taskcluster-queue/v1");
        let bb_exchange = format!("{name}/exchange/build/");
        let tc = TcQueue::start(
            TcSettings {
                exchange_basename: tc_exchange.clone(),
                ..TcSettings::default()
            },
            (CLIENT_ID.into(), ACCESS_TOKEN.into()),
            clock.clone(),
            publisher.clone(),
        )
        .await
        .unwrap();
        let builders: Vec<String> = [BUILDER, TEST_BUILDER, RELEASE_BUILDER, IDLE_BUILDER]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let masters = Masters::new();
        let selfserve = SelfServe::start(
            "127.0.0.1:0".parse().unwrap(),
            "/self-serve",
            "/allthethings.json",
            builders,
            sched_db.url(),
            masters.clone(),
            clock.clone(),
            Duration::ZERO,
        )
        .await
        .unwrap();
        let ss = format!("http://{}", selfserve.addr());
        let mut raw = opts.base_config.clone().unwrap_or_else(|| json!({}));
        let o = raw.as_object_mut().unwrap();
        let mut tcq = o
            .get("taskcluster_queue_config")
            .cloned()
            .unwrap_or_else(|| json!({}));
        tcq["rootUrl"] = json!(tc.root_url());
        tcq["credentials"] = json!({"clientId": CLIENT_ID, "accessToken": ACCESS_TOKEN});
        o.insert("taskcluster_queue_config".into(), tcq);
        o.insert(
            "buildbot_scheduler_db".into(),
            json!(config_url(sched_db.url())),
        );
        o.insert("bbb_db".into(), json!(config_url(bbb_db.url())));
        o.insert("selfserve_url".into(), json!(format!("{ss}/self-serve")));
        o.insert(
            "allowed_builders_url".into(),
            json!(format!("{ss}/allthethings.json")),
        );
        o.insert("pulse_url".into(), json!(AMQP));
        o.insert(
            "pulse_queue_basename".into(),
            json!(format!("{name}/queue")),
        );
        o.insert("redis_url".into(), json!(REDIS));
        o.insert("restricted_builders".into(), json!(["^release-.*"]));
        o.insert(
            "ignored_builders".into(),
            json!([format!("^{IGNORED_BUILDER}$")]),
        );
        if opts.base_config.is_none() {
            o.insert("tc_worker_group".into(), json!("bbb-e2e"));
            o.insert("tc_worker_id".into(), json!("bbb-e2e"));
        }
        let mut tcl = o.get("tclistener").cloned().unwrap_or_else(|| json!({}));
        tcl["pulse_exchange_basename"] = json!(tc_exchange);
        tcl["provisioner_id"] = json!("buildbot-bridge");
        tcl["worker_type"] = json!("buildbot-bridge");
        o.insert("tclistener".into(), tcl);
        let mut bbl = o.get("bblistener").cloned().unwrap_or_else(|| json!({}));
        bbl["pulse_exchange"] = json!(bb_exchange);
        o.insert("bblistener".into(), bbl);
        o.insert(
            "redis".into(),
            json!({"prefix": name, "idempotency_ttl": 3600}),
        );
        o.insert("worker".into(), json!({"heartbeat_ms": 500, "orphan_after_ms": 3000, "lock_ttl_ms": 3000,
            "retry_base_ms": 200, "retry_max_ms": 2000, "lock_busy_delay_ms": 100, "max_attempts": 8}));
        o.insert(
            "ingest".into(),
            json!({"declare_exchanges": true, "prefetch": 32}),
        );
        let config = Config::from_str(&raw.to_string(), Path::new("e2e.json"), &|_| None).unwrap();

        let bbb = BridgeDb::connect(&config.bbb_db).await.unwrap();
        bbb.migrate().await.unwrap();
        let sched = SchedulerDb::connect(&config.buildbot_scheduler_db)
            .await
            .unwrap();
        let conn = bbb_shared::queue::connect(&config.redis.url).await.unwrap();
        let queue = JobQueue::new(conn.clone(), QueueSettings::from_config(&config));
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for i in 0..opts.ingests.max(1) {
            let settings = IngestSettings {
                pulse_url: config.pulse.url.clone(),
                bindings: bindings_from_config(&config),
                prefetch: config.ingest.prefetch,
                max_message_bytes: config.ingest.max_message_bytes,
                dead_letter_body_limit: config.ingest.dead_letter_body_limit,
                declare_exchanges: true,
                pause_before_ack: false,
                connection_name: format!("{name}-ingest-{i}"),
            };
            tasks.push(tokio::spawn(bbb_ingest::run(
                settings,
                queue.clone(),
                rx.clone(),
            )));
        }
        let bed_master = MasterSettings {
            name: format!("{name}-master:/builds/buildbot/e2e/master"),
            builders: vec![BUILDER.into(), TEST_BUILDER.into(), RELEASE_BUILDER.into()],
            poll_interval: opts.master_poll,
            build_duration: opts.build_duration,
            exchange: bb_exchange,
            faults: opts.faults.clone(),
        };
        let mut bed = Bed {
            name,
            clock,
            tc,
            masters,
            selfserve,
            publisher,
            config,
            bbb,
            sched,
            queue,
            master_settings: bed_master,
            stop,
            tasks,
            _bbb_db: bbb_db,
            _sched_db: sched_db,
        };
        bed.wait_for_bindings().await;
        bed.start_pool().await;
        if opts.master {
            bed.start_master().await;
        }
        bed
    }

    /// Starts (another) in-process worker pool with the bridge's jobs.
    pub async fn start_pool(&mut self) {
        let bridge = Bridge::connect(&self.config).await.unwrap();
        let conn = bbb_shared::queue::connect(&self.config.redis.url)
            .await
            .unwrap();
        let w = &self.config.worker;
        let setup = WorkerSetup {
            queue_settings: QueueSettings::from_config(&self.config),
            runtime: RuntimeSettings {
                concurrency: 8,
                max_attempts: w.max_attempts,
                retry_base: Duration::from_millis(w.retry_base_ms),
                retry_max: Duration::from_millis(w.retry_max_ms),
                lock_busy_delay: Duration::from_millis(w.lock_busy_delay_ms),
                max_lock_waits: 600,
                poll_interval: Duration::from_millis(50),
            },
            lock_ttl: Duration::from_millis(w.lock_ttl_ms),
            jobs: Registration {
                bridge: true,
                probe: false,
            },
            bridge: Some(bridge),
        };
        let rx = self.stop.subscribe();
        self.tasks
            .push(tokio::spawn(bbb_workers::run(conn, setup, rx)));
    }

    pub async fn start_master(&self) -> Master {
        self.start_master_with(self.master_settings.clone()).await
    }

    pub async fn start_master_with(&self, settings: MasterSettings) -> Master {
        let master = Master::start(
            settings,
            &self.config.buildbot_scheduler_db,
            self.clock.clone(),
            self.publisher.clone(),
        )
        .await
        .unwrap();
        self.masters.insert(master.clone());
        master
    }

    pub fn master_settings(&self) -> MasterSettings {
        self.master_settings.clone()
    }

    /// Waits until the ingest's queues exist and are bound, so no message published from now
    /// on is lost.
    async fn wait_for_bindings(&self) {
        let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        for b in bindings_from_config(&self.config) {
            let q = b.queue.clone();
            wait_until(
                &format!("queue {q} consumed"),
                Duration::from_secs(30),
                || {
                    let conn = &conn;
                    let q = q.clone();
                    async move {
                        let ch = conn.create_channel().await.unwrap();
                        ch.queue_declare(
                            q.as_str().into(),
                            lapin::options::QueueDeclareOptions {
                                passive: true,
                                ..Default::default()
                            },
                            lapin::types::FieldTable::default(),
                        )
                        .await
                        .is_ok_and(|q| q.consumer_count() > 0)
                    }
                },
            )
            .await;
        }
        let _ = conn.close(200, "bound".into()).await;
    }

    /// A task definition for the bridge's worker type.
    pub fn definition(&self, payload: Value) -> Value {
        let now = self.clock.now();
        let ts = |d: chrono::DateTime<chrono::Utc>| {
            d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        json!({
            "provisionerId": "buildbot-bridge",
            "workerType": "buildbot-bridge",
            "schedulerId": "gecko-level-3",
            "created": ts(now),
            "deadline": ts(now + chrono::Duration::hours(1)),
            "expires": ts(now + chrono::Duration::days(30)),
            "priority": "lowest",
            "retries": 5,
            "scopes": [],
            "payload": payload,
            "metadata": {"name": "e2e", "description": "e2e", "owner": "e2e@example.com", "source": "https://example.com/e2e"},
        })
    }

    /// A valid payload for `builder`, with extra buildset properties (e.g. sandbox scripts).
    pub fn payload(&self, builder: &str, extra: Value) -> Value {
        let mut properties = json!({"product": "firefox"});
        if let Some(map) = extra.as_object() {
            for (k, v) in map {
                properties[k] = v.clone();
            }
        }
        json!({
            "buildername": builder,
            "sourcestamp": {"branch": "https://hg.mozilla.org/integration/mozilla-inbound/", "revision": "bd3d049a39ad16c75357edacf9f0867246012b7c"},
            "properties": properties,
        })
    }

    /// Creates a task; returns its id.
    pub async fn create(&self, definition: Value) -> String {
        let id = bbb_sandbox::tc::slugid();
        self.tc.create_task(&id, definition).await.unwrap();
        id
    }

    /// Creates a task running `builder` with the given Buildbot script (e.g.
    /// `{"sandbox_results": "RETRY,SUCCESS"}`).
    pub async fn create_for(&self, builder: &str, script: Value) -> String {
        self.create(self.definition(self.payload(builder, script)))
            .await
    }

    pub fn status(&self, task_id: &str) -> Value {
        self.tc.status(task_id).expect("the queue knows the task")
    }

    pub fn run_states(&self, task_id: &str) -> Vec<(String, Option<String>)> {
        self.status(task_id)["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["state"].as_str().unwrap().to_owned(),
                    r["reasonResolved"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }

    /// Waits until the task's state is `state` (e.g. "completed").
    pub async fn wait_state(&self, task_id: &str, state: &str) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            last = self.tc.status(task_id).unwrap_or(last);
            if last["state"] == state {
                return last;
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id} never reached {state}: {last:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the bridge forgets the task.
    pub async fn wait_untracked(&self, task_id: &str) {
        wait_until(
            &format!("task {task_id} untracked"),
            Duration::from_secs(60),
            || async { self.bbb.get_task(task_id).await.unwrap().is_none() },
        )
        .await;
    }

    /// Waits until the task is tracked with a BuildRequest; returns the row.
    pub async fn wait_buildrequest(&self, task_id: &str) -> TrackedTask {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(row) = self.bbb.get_task(task_id).await.unwrap()
                && row.buildrequest_id.is_some()
            {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id} never got a BuildRequest"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn buildrequest(&self, brid: i64) -> BuildRequest {
        self.sched.buildrequest(brid).await.unwrap().unwrap()
    }

    /// Requests injected for a task (by its buildset's external id).
    pub async fn buildrequests_of(&self, task_id: &str) -> usize {
        // `buildrequest_for_task` finds the first; count through the buildset property.
        let all: Vec<i64> = (1..=10_000).collect();
        self.sched
            .task_ids_of(&all)
            .await
            .unwrap()
            .iter()
            .filter(|(_, t)| t == task_id)
            .count()
    }

    /// The queue's calls for one task, as `name/run/status`.
    pub fn calls(&self, task_id: &str) -> Vec<String> {
        self.tc
            .calls()
            .into_iter()
            .filter(|c: &Call| c.task_id.as_deref() == Some(task_id))
            .map(|c| {
                format!(
                    "{}/{}/{}",
                    c.name,
                    c.run_id.map_or("-".into(), |r| r.to_string()),
                    c.status
                )
            })
            .collect()
    }

    pub fn count_calls(&self, task_id: &str, name: &str, status: u16) -> usize {
        self.tc
            .calls()
            .iter()
            .filter(|c| {
                c.task_id.as_deref() == Some(task_id) && c.name == name && c.status == status
            })
            .count()
    }

    pub fn artifact_names(&self, task_id: &str, run_id: u32) -> Vec<String> {
        let mut names: Vec<String> = self
            .tc
            .artifacts(task_id, run_id)
            .into_iter()
            .map(|a| a.name)
            .collect();
        names.sort();
        names
    }

    /// The bytes of `public/properties.json`, parsed.
    pub fn properties_artifact(&self, task_id: &str, run_id: u32) -> Value {
        let a = self
            .tc
            .artifacts(task_id, run_id)
            .into_iter()
            .find(|a| a.name == "public/properties.json")
            .expect("properties.json attached");
        serde_json::from_slice(a.bytes.as_deref().expect("properties.json has bytes")).unwrap()
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        self.masters.shutdown().await;
        self.selfserve.shutdown().await;
        self.tc.shutdown().await;
        self.bbb.close().await;
        self.sched.close().await;
        cleanup_redis(&self.name).await;
        cleanup_amqp(&self.config).await;
    }
}

/// A database URL as a config file writes it (SQLAlchemy's four slashes for an absolute
/// SQLite path).
fn config_url(url: &bbb_shared::dburl::DbUrl) -> String {
    match url.expose().strip_prefix("sqlite://") {
        Some(path) if path.starts_with('/') => format!("sqlite:///{path}"),
        _ => url.expose().to_owned(),
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

async fn cleanup_redis(prefix: &str) {
    let Ok(mut conn) = bbb_shared::queue::connect(&bbb_shared::secret::SecretUrl::new(REDIS)).await
    else {
        return;
    };
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, format!("{prefix}*"))
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = redis::AsyncCommands::del(&mut conn, chunk).await;
    }
}

async fn cleanup_amqp(config: &Config) {
    let Ok(conn) = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for b in bindings_from_config(config) {
        let _ = ch
            .queue_delete(b.queue.as_str().into(), Default::default())
            .await;
        let _ = ch
            .exchange_delete(b.exchange.as_str().into(), Default::default())
            .await;
    }
    let base = &config.tclistener.pulse_exchange_basename;
    for ex in [
        "task-defined",
        "task-running",
        "artifact-created",
        "task-completed",
        "task-failed",
    ] {
        let _ = ch
            .exchange_delete(format!("{base}/{ex}").as_str().into(), Default::default())
            .await;
    }
    let _ = conn.close(200, "cleaned".into()).await;
}

/// Shared state some tests need across beds.
pub type Shared<T> = Arc<T>;
