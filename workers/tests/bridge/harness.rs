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
    /// Start the in-process worker pool at once (else call `start_pool`, or run a
    /// `bbb-worker` process on `raw_config`).
    pub pool: bool,
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
            pool: true,
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
    raw_config: Value,
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
                consuming: Default::default(),
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
            raw_config: raw,
            stop,
            tasks,
            _bbb_db: bbb_db,
            _sched_db: sched_db,
        };
        bed.wait_for_bindings().await;
        if opts.pool {
            bed.start_pool().await;
        }
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

// ---- Helpers for the invalid / delivery / faults scenarios. ----

impl Bed {
    /// The raw JSON the bed built its `Config` from (a config file the `bbb` binaries accept).
    pub fn raw_config(&self) -> Value {
        self.raw_config.clone()
    }

    /// Writes [`Bed::raw_config`] to a file of its own and returns its path.
    pub fn write_config(&self) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bbb.json");
        std::fs::write(&path, self.raw_config.to_string()).unwrap();
        path
    }

    /// Starts a `bbb-worker` child process on this bed's configuration (no migration: the bed
    /// migrated). It is killed (SIGKILL) when the handle is dropped.
    pub fn spawn_worker_process(&self) -> WorkerProcess {
        let config = self.write_config();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_bbb-worker"))
            .arg("--config")
            .arg(&config)
            .arg("--no-migrate")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .unwrap();
        WorkerProcess {
            child: Some(child),
            config,
        }
    }

    /// Whether a job of `kind` with this idempotency key was ever enqueued (within the
    /// retention window).
    pub async fn was_enqueued(&self, kind: &str, key: &str) -> bool {
        let config = self.queue.settings().apalis_config(kind);
        let mut conn = self.queue.connection();
        let n: u64 = redis::AsyncCommands::exists(
            &mut conn,
            format!("{}:{key}", config.idempotency_key_set()),
        )
        .await
        .unwrap();
        n > 0
    }

    /// Waits until the job `kind`/`key` was enqueued and every job of that kind is finished
    /// (twice in a row, so a job moving between Redis lists is not missed).
    pub async fn wait_processed(&self, kind: &str, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut idle_checks = 0;
        while idle_checks < 2 {
            if self.was_enqueued(kind, key).await
                && self.queue.pending_count(kind).await.unwrap() == 0
            {
                idle_checks += 1;
            } else {
                idle_checks = 0;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {kind} job {key} to be processed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `<tclistener.pulse_exchange_basename>/<name>`, e.g. `task-pending`.
    pub fn tc_exchange(&self, name: &str) -> String {
        format!("{}/{name}", self.config.tclistener.pulse_exchange_basename)
    }

    /// Publishes a task-pending message as the queue does (FORMATS.md 1.5) for `status`.
    pub async fn publish_task_pending(&self, status: &Value, run_id: u32) {
        let task_id = status["taskId"].as_str().unwrap();
        let field = |k: &str| status[k].as_str().unwrap_or("_").to_owned();
        let key = format!(
            "primary.{task_id}.{run_id}._._.{}.{}.{}.{}._",
            field("provisionerId"),
            field("workerType"),
            field("schedulerId"),
            field("taskGroupId")
        );
        let body = json!({"version": 1, "status": status, "runId": run_id, "task": {"tags": {}}});
        self.publisher
            .publish(&self.tc_exchange("task-pending"), &key, &body)
            .await
            .unwrap();
    }

    /// Publishes a Buildbot `build.<bdir>.<number>.<event>` message on the bed's exchange, as
    /// this bed's master would, with the given payload.
    pub async fn publish_build_event(
        &self,
        builder: &str,
        number: i64,
        event: &str,
        payload: Value,
    ) {
        let key = format!(
            "build.{}.{number}.{event}",
            bbb_sandbox::buildbot::builder_dir(builder)
        );
        let body = json!({
            "_meta": {
                "exchange": self.config.bblistener.pulse_exchange,
                "routing_key": key,
                "serializer": "json",
                "sent": "2015-11-03T11:14:00-08:00",
                "master_name": self.master_settings.name,
                "master_incarnation": "pid1-boot1",
                "message_id": format!("{}-{number}-{event}", self.name),
            },
            "payload": payload,
        });
        self.publisher
            .publish(&self.config.bblistener.pulse_exchange, &key, &body)
            .await
            .unwrap();
    }

    /// Messages ready (not yet delivered to the ingest) in the bridge's Pulse queue whose
    /// exchange ends with `exchange_suffix` (`task-pending`, `task-exception`, or the build
    /// exchange's name).
    pub async fn pulse_ready(&self, exchange_suffix: &str) -> u32 {
        let b = bindings_from_config(&self.config)
            .into_iter()
            .find(|b| b.exchange.ends_with(exchange_suffix))
            .expect("a binding for that exchange");
        let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                b.queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = conn.close(200, "counted".into()).await;
        q.message_count()
    }

    /// The `builds` rows of a request.
    pub async fn builds_of(&self, brid: i64) -> Vec<bbb_shared::schedulerdb::Build> {
        self.sched.builds_for(&[brid]).await.unwrap()
    }
}

/// A Buildbot `started` payload (FORMATS.md 3) for a Build of `builder` serving `request_ids`,
/// with the given `[name, value, source]` properties.
pub fn started_payload(
    builder: &str,
    number: i64,
    request_ids: &[i64],
    properties: Value,
) -> Value {
    json!({
        "request_ids": request_ids,
        "build": {
            "builderName": builder,
            "number": number,
            "sourceStamp": {"branch": "integration/mozilla-inbound", "revision": "bd3d049a39ad16c75357edacf9f0867246012b7c",
                            "repository": "", "project": "", "hasPatch": false, "changes": []},
            "reason": "scheduler",
            "blame": [],
            "properties": properties,
            "times": ["2015-11-03T18:23:44+0000", null],
            "text": [],
            "results": null,
            "slave": "bld-linux64-spot-132",
            "eta": null,
            "steps": [],
            "currentStep": null,
        },
    })
}

/// A `bbb-worker` child process; SIGKILLed when dropped.
pub struct WorkerProcess {
    child: Option<std::process::Child>,
    config: std::path::PathBuf,
}

impl WorkerProcess {
    /// `kill -9`, then reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.config);
    }
}

// ---- Helpers for the result and cancellation scenarios (results.rs, cancel.rs, seeds.rs).

/// The calls that change a task's state in the queue (claims and resolutions).
pub const STATE_CALLS: &[&str] = &[
    "claimTask",
    "reclaimTask",
    "reportCompleted",
    "reportFailed",
    "reportException",
    "rerunTask",
    "cancelTask",
];

impl Bed {
    /// The task's calls whose name is one of `names`, as `name/run/status`, in order.
    pub fn calls_named(&self, task_id: &str, names: &[&str]) -> Vec<String> {
        self.tc
            .calls()
            .into_iter()
            .filter(|c| c.task_id.as_deref() == Some(task_id) && names.contains(&c.name.as_str()))
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

    /// Cancels the task through the queue's HTTP API (`cancelTask`, with the bed's client), as
    /// a user or the task's scheduler would. The call shows in the call log like the bridge's.
    pub async fn cancel_in_tc(&self, task_id: &str) {
        let queue = bbb_shared::tc::TcQueue::from_config(&self.config).unwrap();
        queue.cancel(task_id).await.unwrap();
    }

    /// Waits until `cond` holds on the task's status; returns that status.
    pub async fn wait_status(
        &self,
        task_id: &str,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.tc.status(task_id)
                && cond(&status)
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id}: timed out waiting for {what}: {:#}",
                self.tc.status(task_id).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until run `run_id` of the task is running (claimed).
    pub async fn wait_run_running(&self, task_id: &str, run_id: usize) -> Value {
        self.wait_status(task_id, &format!("run {run_id} running"), |s| {
            s["runs"][run_id]["state"] == "running"
        })
        .await
    }

    /// Waits until the request has at least `n` builds rows; returns the rows.
    pub async fn wait_builds(&self, brid: i64, n: usize) -> Vec<bbb_shared::schedulerdb::Build> {
        wait_until(
            &format!("{n} builds rows for BuildRequest {brid}"),
            Duration::from_secs(60),
            || async move { self.sched.build_ids(brid).await.unwrap().len() >= n },
        )
        .await;
        self.builds(brid).await
    }

    /// The builds rows of one request, by id.
    pub async fn builds(&self, brid: i64) -> Vec<bbb_shared::schedulerdb::Build> {
        self.sched.builds_for(&[brid]).await.unwrap()
    }

    /// Waits until the BuildRequest is complete; returns it.
    pub async fn wait_request_complete(&self, brid: i64) -> BuildRequest {
        wait_until(
            &format!("BuildRequest {brid} complete"),
            Duration::from_secs(60),
            || async move { self.buildrequest(brid).await.complete },
        )
        .await;
        self.buildrequest(brid).await
    }

    /// Waits until self-serve has received `n` jobs and carried them all out; returns them.
    pub async fn wait_selfserve_jobs(&self, n: usize) -> Vec<bbb_sandbox::selfserve::Job> {
        wait_until(
            &format!("{n} self-serve jobs carried out"),
            Duration::from_secs(60),
            || async move {
                let jobs = self.selfserve.jobs();
                jobs.len() >= n && jobs.iter().all(|j| j.outcome.is_some())
            },
        )
        .await;
        self.selfserve.jobs()
    }

    /// Asserts what the bridge attaches to a run it claimed for a Build: `public/properties.json`
    /// (the Build's properties, with the task's id and postrun's `log_url`) and the reference
    /// artifact `public/logs/live_backing.log.gz` pointing at `log_url`, both expiring no later
    /// than the task.
    pub fn assert_build_outputs(&self, task_id: &str, run_id: u32, log_url: &str) {
        assert_eq!(
            self.artifact_names(task_id, run_id),
            vec!["public/logs/live_backing.log.gz", "public/properties.json"],
            "artifacts of run {run_id}: {:?}",
            self.calls(task_id)
        );
        let task_expires: chrono::DateTime<chrono::Utc> = self.status(task_id)["expires"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        for a in self.tc.artifacts(task_id, run_id) {
            assert!(
                a.expires <= task_expires,
                "{} expires after the task: {} > {task_expires}",
                a.name,
                a.expires
            );
            if a.name == "public/logs/live_backing.log.gz" {
                assert_eq!(a.storage_type, "reference");
                assert_eq!(a.content_type, "application/gzip");
                assert_eq!(a.url.as_deref(), Some(log_url));
            } else {
                assert!(a.present, "properties.json uploaded and finished");
                assert_eq!(a.content_type, "application/json");
            }
        }
        let props = self.properties_artifact(task_id, run_id);
        assert_eq!(props["taskId"], json!([task_id, "bbb"]));
        assert_eq!(props["log_url"], json!([log_url, "postrun.py"]));
    }
}

/// Pulse messages held back from the bridge: its queue is unbound from one exchange and a queue
/// of the test's own (exclusive to this connection) collects what the exchange routes, until
/// [`HeldMessages::release`] binds the bridge's queue again and republishes the held messages
/// - a late delivery, as after a Pulse backlog.
pub struct HeldMessages {
    conn: lapin::Connection,
    channel: lapin::Channel,
    holder: String,
    binding: bbb_ingest::Binding,
    publisher: Publisher,
}

/// A held message: routing key and body.
pub type HeldMessage = (String, Vec<u8>);

impl Bed {
    /// Holds back the messages of the Taskcluster exchange `name` (e.g. `task-pending`) from
    /// now on.
    pub async fn hold_tc_messages(&self, name: &str) -> HeldMessages {
        let exchange = format!("{}/{name}", self.config.tclistener.pulse_exchange_basename);
        self.hold_messages(&exchange).await
    }

    /// Holds back the Buildbot masters' messages (the bridge's `started` and `log_uploaded`)
    /// from now on.
    pub async fn hold_build_messages(&self) -> HeldMessages {
        let exchange = self.config.bblistener.pulse_exchange.clone();
        self.hold_messages(&exchange).await
    }

    async fn hold_messages(&self, exchange: &str) -> HeldMessages {
        let binding = bindings_from_config(&self.config)
            .into_iter()
            .find(|b| b.exchange == exchange)
            .unwrap();
        let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let holder = format!("{}/held/{}", self.name, binding.queue);
        channel
            .queue_declare(
                holder.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        // Bind the holder first, so that nothing published meanwhile reaches no queue.
        for key in &binding.routing_keys {
            channel
                .queue_bind(
                    holder.as_str().into(),
                    exchange.into(),
                    key.as_str().into(),
                    Default::default(),
                    lapin::types::FieldTable::default(),
                )
                .await
                .unwrap();
            channel
                .queue_unbind(
                    binding.queue.as_str().into(),
                    exchange.into(),
                    key.as_str().into(),
                    lapin::types::FieldTable::default(),
                )
                .await
                .unwrap();
        }
        HeldMessages {
            conn,
            channel,
            holder,
            binding,
            publisher: self.publisher.clone(),
        }
    }
}

impl HeldMessages {
    /// How many messages are held now.
    pub async fn count(&self) -> u32 {
        self.channel
            .queue_declare(
                self.holder.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    /// Waits until at least `n` messages are held.
    pub async fn wait_held(&self, n: u32) {
        wait_until(
            &format!("{n} messages held from {}", self.binding.exchange),
            Duration::from_secs(60),
            || async { self.count().await >= n },
        )
        .await;
    }

    /// Binds the bridge's queue again and republishes every held message (same exchange,
    /// routing key and body) in the order they came; returns how many.
    pub async fn release(self) -> usize {
        self.release_ordered(|_| {}).await.len()
    }

    /// Binds the bridge's queue again, lets `order` reorder (or drop) the held messages, and
    /// republishes them in that order, one at a time; returns them as republished.
    pub async fn release_ordered(
        self,
        order: impl FnOnce(&mut Vec<HeldMessage>),
    ) -> Vec<HeldMessage> {
        let exchange = self.binding.exchange.as_str();
        for key in &self.binding.routing_keys {
            self.channel
                .queue_bind(
                    self.binding.queue.as_str().into(),
                    exchange.into(),
                    key.as_str().into(),
                    Default::default(),
                    lapin::types::FieldTable::default(),
                )
                .await
                .unwrap();
            self.channel
                .queue_unbind(
                    self.holder.as_str().into(),
                    exchange.into(),
                    key.as_str().into(),
                    lapin::types::FieldTable::default(),
                )
                .await
                .unwrap();
        }
        let mut held: Vec<HeldMessage> = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(
                self.holder.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            held.push((m.delivery.routing_key.to_string(), m.delivery.data));
        }
        order(&mut held);
        for (key, body) in &held {
            self.publisher
                .publish_raw(exchange, key, body)
                .await
                .unwrap();
        }
        let _ = self.conn.close(200, "released".into()).await;
        held
    }
}
