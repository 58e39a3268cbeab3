#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The self-serve emulator (BuildAPI and its agent) and `allthethings.json`, over real HTTP,
//! against real MariaDB and SQLite scheduler DBs, emulated masters and a real RabbitMQ. Every
//! scenario runs on both engines; every wait polls a condition.
use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bbb_sandbox::{
    buildbot::{Master, MasterSettings, Masters, PulseFaults, builder_dir},
    clock::Clock,
    pulse::Publisher,
    selfserve::{Job, JobOutcome, SelfServe, allthethings_router, serve},
};
use bbb_shared::{
    dburl::{DbUrl, Engine},
    schedulerdb::{Build, BuildRequest, BuildRequestSpec, SchedulerDb, create_buildbot08_schema},
    secret::SecretUrl,
};
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection as _};

const ENGINES: [Engine; 2] = [Engine::MySql, Engine::Sqlite];
const BUILDER: &str = "Linux x86-64 mozilla-inbound build";
const OTHER_BUILDER: &str = "release-mozilla-beta-firefox_signing";
const TIMEOUT: Duration = Duration::from_secs(30);
const MASTER: &str = "ss-bm01.bbb.test:/builds/buildbot/build1/master";

// ---------------------------------------------------------------------------------------------
// Test support (the same in tests/selfserve.rs).

/// A fresh scheduler DB for one test: `bbbtest_<random>` on the MariaDB server, or a
/// temporary SQLite file. Removed when dropped.
struct TestDb {
    url: DbUrl,
    server: Option<(String, String)>,
    file: Option<PathBuf>,
}

impl TestDb {
    async fn create(engine: Engine) -> TestDb {
        let name = format!("bbbtest_{:016x}", rand::random::<u64>());
        match engine {
            Engine::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                TestDb {
                    url: DbUrl::parse(&format!("sqlite:///{}", path.display())).unwrap(),
                    server: None,
                    file: Some(path),
                }
            }
            _ => {
                let admin = std::env::var("BBB_TEST_MYSQL_URL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/".to_owned());
                let mut conn = sqlx::MySqlConnection::connect(&admin).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(&format!("/{name}"));
                TestDb {
                    url: DbUrl::parse(url.as_str()).unwrap(),
                    server: Some((admin, name)),
                    file: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(path) = &self.file {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
        if let Some((admin, name)) = self.server.clone() {
            // Not inside the test's runtime: a thread with a runtime of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::MySqlConnection::connect(&admin).await {
                        let drop = format!("DROP DATABASE IF EXISTS {name}");
                        let _ = sqlx::raw_sql(AssertSqlSafe(drop)).execute(&mut conn).await;
                    }
                });
            })
            .join();
        }
    }
}

/// Reads what `SchedulerDb` does not expose.
async fn scalars(url: &DbUrl, sql: &str, id: i64) -> Vec<Option<String>> {
    let sql = AssertSqlSafe(sql.to_owned());
    match url.engine() {
        Engine::MySql => {
            let mut c = sqlx::MySqlConnection::connect(url.expose()).await.unwrap();
            let row: (Option<String>,) = sqlx::query_as(sql)
                .bind(id)
                .fetch_one(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            vec![row.0]
        }
        _ => {
            let mut c = sqlx::SqliteConnection::connect(url.expose()).await.unwrap();
            let row: (Option<String>,) = sqlx::query_as(sql)
                .bind(id)
                .fetch_one(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            vec![row.0]
        }
    }
}

async fn scalar(url: &DbUrl, sql: &str, id: i64) -> Option<String> {
    scalars(url, sql, id).await.pop().flatten()
}

/// The results of a buildset, once it is complete (a master completes it after its requests).
async fn buildset_results(url: &DbUrl, id: i64) -> Option<String> {
    eventually(&format!("buildset {id} to complete"), || async {
        let complete = scalar(
            url,
            "SELECT CAST(complete AS CHAR) FROM buildsets WHERE id = ?",
            id,
        )
        .await;
        (complete.as_deref() == Some("1")).then_some(())
    })
    .await;
    scalar(
        url,
        "SELECT CAST(results AS CHAR) FROM buildsets WHERE id = ?",
        id,
    )
    .await
}

#[derive(Debug, Clone)]
struct Received {
    routing_key: String,
    body: Value,
}

impl Received {
    fn kind(&self) -> &str {
        self.routing_key.rsplit('.').next().unwrap_or("")
    }
    fn payload(&self) -> &Value {
        &self.body["payload"]
    }
    fn build(&self) -> &Value {
        &self.body["payload"]["build"]
    }
    /// `request_ids` of the payload, or postrun's property in log_uploaded.
    fn request_ids(&self) -> Vec<i64> {
        let ids = if self.kind() == "log_uploaded" {
            property(self.build(), "request_ids").map(|(v, _)| v)
        } else {
            self.payload().get("request_ids").cloned()
        };
        ids.and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }
}

/// `(value, source)` of a build's property.
fn property(build: &Value, name: &str) -> Option<(Value, String)> {
    build["properties"].as_array()?.iter().find_map(|p| {
        (p[0] == name).then(|| (p[1].clone(), p[2].as_str().unwrap_or("").to_owned()))
    })
}

/// A private exchange on the real broker and a queue bound to `build.#` on it.
struct Bus {
    exchange: String,
    conn: lapin::Connection,
    channel: lapin::Channel,
    received: Arc<std::sync::Mutex<Vec<Received>>>,
    publisher: Publisher,
}

fn pulse_url() -> String {
    std::env::var("BBB_TEST_PULSE_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

impl Bus {
    async fn new() -> Bus {
        use lapin::options::*;
        let exchange = format!("bbbtest-{}/exchange/build/", ulid::Ulid::generate());
        let conn = lapin::Connection::connect(&pulse_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.as_str().into(),
                "build.#".into(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let body = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
                sink.lock().unwrap().push(Received {
                    routing_key: delivery.routing_key.to_string(),
                    body,
                });
            }
        });
        let publisher = Publisher::connect(&SecretUrl::new(pulse_url()))
            .await
            .unwrap();
        Bus {
            exchange,
            conn,
            channel,
            received,
            publisher,
        }
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Messages of one kind that concern `brid`.
    fn of(&self, kind: &str, brid: i64) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|m| m.kind() == kind && m.request_ids().contains(&brid))
            .collect()
    }

    async fn close(self) {
        let _ = self
            .channel
            .exchange_delete(self.exchange.as_str().into(), Default::default())
            .await;
        let _ = self.conn.close(0, "done".into()).await;
    }
}

/// Polls `check` until it gives a value; panics after [`TIMEOUT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn task_id() -> String {
    let u = ulid::Ulid::generate().to_string();
    u[u.len() - 22..].to_owned()
}

fn spec(task_id: &str, revision: &str, submitted_at: i64, extra: Value) -> BuildRequestSpec {
    let mut properties = serde_json::Map::new();
    properties.insert("product".into(), json!("firefox"));
    if let Value::Object(extra) = extra {
        properties.extend(extra);
    }
    BuildRequestSpec {
        task_id: task_id.to_owned(),
        buildername: BUILDER.to_owned(),
        priority: 0,
        submitted_at,
        branch: Some("https://hg.mozilla.org/integration/mozilla-inbound/".to_owned()),
        revision: Some(revision.to_owned()),
        repository: Some("https://hg.mozilla.org/integration/mozilla-inbound".to_owned()),
        project: None,
        properties,
    }
}

fn settings(name: &str, bus: &Bus, build_duration: Duration) -> MasterSettings {
    MasterSettings {
        name: name.to_owned(),
        builders: vec![BUILDER.to_owned()],
        poll_interval: Duration::from_millis(20),
        build_duration,
        exchange: bus.exchange.clone(),
        faults: PulseFaults::default(),
    }
}

/// A scheduler DB (tables created), a bus and a clock for one engine.
struct World {
    db: TestDb,
    sched: SchedulerDb,
    bus: Bus,
    clock: Clock,
    engine: Engine,
}

impl World {
    async fn new(engine: Engine) -> World {
        let db = TestDb::create(engine).await;
        let sched = SchedulerDb::connect(&db.url).await.unwrap();
        create_buildbot08_schema(&sched).await.unwrap();
        World {
            db,
            sched,
            bus: Bus::new().await,
            clock: Clock::new(),
            engine,
        }
    }

    async fn master(&self, settings: MasterSettings) -> Master {
        Master::start(
            settings,
            &self.db.url,
            self.clock.clone(),
            self.bus.publisher.clone(),
        )
        .await
        .unwrap()
    }

    async fn inject(&self, spec: &BuildRequestSpec) -> i64 {
        self.sched.inject_buildrequest(spec).await.unwrap()
    }

    async fn request(&self, brid: i64) -> BuildRequest {
        self.sched.buildrequest(brid).await.unwrap().unwrap()
    }

    async fn builds(&self, brid: i64) -> Vec<Build> {
        self.sched.builds_for(&[brid]).await.unwrap()
    }

    async fn complete(&self, brid: i64) -> BuildRequest {
        let what = format!("request {brid} to complete on {}", self.engine);
        eventually(&what, || async {
            let r = self.request(brid).await;
            r.complete.then_some(r)
        })
        .await
    }

    async fn message(&self, kind: &str, brid: i64, count: usize) -> Vec<Received> {
        let what = format!(
            "{count} {kind} message(s) for request {brid} on {}",
            self.engine
        );
        eventually(&what, || async {
            let found = self.bus.of(kind, brid);
            (found.len() >= count).then_some(found)
        })
        .await
    }

    async fn close(self) {
        self.sched.close().await;
        self.bus.close().await;
    }
}

// ---------------------------------------------------------------------------------------------

/// A world with self-serve on it, and optionally one master serving [`BUILDER`].
struct Env {
    w: World,
    masters: Masters,
    selfserve: SelfServe,
    http: reqwest::Client,
    base: String,
}

impl Env {
    async fn new(engine: Engine, master: Option<Duration>, fresh_404: Duration) -> Env {
        let w = World::new(engine).await;
        let masters = Masters::new();
        if let Some(duration) = master {
            masters.insert(w.master(settings(MASTER, &w.bus, duration)).await);
        }
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let selfserve = SelfServe::start(
            listen,
            "/buildapi/self-serve/",
            "/builders/allthethings.json",
            vec![BUILDER.to_owned(), OTHER_BUILDER.to_owned()],
            &w.db.url,
            masters.clone(),
            w.clock.clone(),
            fresh_404,
        )
        .await
        .unwrap();
        let base = format!("http://{}/buildapi/self-serve", selfserve.addr());
        Env {
            w,
            masters,
            selfserve,
            http: reqwest::Client::new(),
            base,
        }
    }

    /// `DELETE {base}/{path}`, as the bridge sends it when `user` is set.
    async fn delete(&self, path: &str, user: bool, accept_json: bool) -> (StatusCode, String) {
        let mut request = self.http.delete(format!("{}/{path}", self.base));
        if user {
            request = request.header("X-Remote-User", "buildbot-bridge");
        }
        if accept_json {
            request = request.header("Accept", "application/json");
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn job_done(&self, id: i64) -> Job {
        eventually(&format!("self-serve job {id}"), || async {
            self.selfserve.job(id).filter(|j| j.completed_at.is_some())
        })
        .await
    }

    async fn close(self) {
        self.selfserve.shutdown().await;
        self.masters.shutdown().await;
        self.w.close().await;
    }
}

fn not_found(what: &str, id: i64, branch: &str) -> Value {
    json!({"status": "FAILED", "msg": format!("{what} {id} not found on branch {branch}")})
}

fn accepted_job(body: &str) -> i64 {
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["status"], "OK", "{body}");
    body["request_id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellation_without_a_remote_user_is_denied() {
    for engine in ENGINES {
        let env = Env::new(engine, None, Duration::ZERO).await;
        let brid = env
            .w
            .inject(&spec(&task_id(), "r", env.w.clock.now_secs(), json!({})))
            .await;
        let path = format!("mozilla-inbound/request/{brid}?format=json");
        assert_eq!(
            env.delete(&path, false, true).await,
            (StatusCode::FORBIDDEN, "ACCESS DENIED!".to_owned()),
            "{engine}"
        );
        let (status, body) = env.delete("mozilla-inbound/build/1", false, false).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::FORBIDDEN, "ACCESS DENIED!")
        );
        assert!(env.selfserve.jobs().is_empty());
        assert!(!env.w.request(brid).await.complete);
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_ids_mismatched_branches_and_bad_ids_are_rejected() {
    for engine in ENGINES {
        let env = Env::new(engine, None, Duration::ZERO).await;
        let brid = env
            .w
            .inject(&spec(&task_id(), "r", env.w.clock.now_secs(), json!({})))
            .await;
        let unknown = brid + 1000;

        let (status, body) = env
            .delete(&format!("mozilla-inbound/request/{unknown}"), true, false)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{engine}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            not_found("Request", unknown, "mozilla-inbound")
        );
        let (status, body) = env.delete(&format!("try/request/{brid}"), true, true).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            not_found("Request", brid, "try")
        );
        let (status, body) = env.delete("mozilla-inbound/build/123456", true, true).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            not_found("Build", 123_456, "mozilla-inbound")
        );
        let (status, _) = env.delete("mozilla-inbound/request/abc", true, true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = env.delete("mozilla-inbound/build/1.5", true, true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        assert!(env.selfserve.jobs().is_empty(), "{engine}");
        assert!(!env.w.request(brid).await.complete);
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_pending_request_completes_it_as_failure_without_a_message() {
    for engine in ENGINES {
        // No master yet: the request stays pending.
        let env = Env::new(engine, None, Duration::ZERO).await;
        let w = &env.w;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs() - 100, json!({})))
            .await;
        let (status, body) = env
            .delete(
                &format!("mozilla-inbound/request/{brid}?format=json"),
                true,
                false,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{engine}: {body}");
        let job = env.job_done(accepted_job(&body)).await;
        assert_eq!(job.outcome, Some(JobOutcome::CancelledPending));
        assert_eq!(job.who, "buildbot-bridge");

        let request = w.request(brid).await;
        assert!(request.complete, "{engine}");
        assert_eq!(request.results, Some(2));
        assert_eq!(request.claimed_at, 0);
        assert_eq!(request.claimed_by_name, None);
        assert!(request.complete_at.is_some());
        assert!(w.builds(brid).await.is_empty());
        assert_eq!(
            buildset_results(&w.db.url, request.buildsetid)
                .await
                .as_deref(),
            Some("2")
        );

        // A master now serving the builder builds the next request and never the cancelled one;
        // its messages are the only ones on the exchange.
        env.masters.insert(
            w.master(settings(MASTER, &w.bus, Duration::from_millis(30)))
                .await,
        );
        let sentinel = w
            .inject(&spec(&task_id(), "s", w.clock.now_secs(), json!({})))
            .await;
        w.complete(sentinel).await;
        w.message("log_uploaded", sentinel, 1).await;
        assert!(w.builds(brid).await.is_empty());
        assert!(
            w.bus.all().iter().all(|m| m.request_ids() == [sentinel]),
            "{engine}: nothing published for the cancelled request"
        );
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_running_build_finishes_it_cancelled_with_its_events() {
    for engine in ENGINES {
        let env = Env::new(engine, Some(Duration::from_secs(3600)), Duration::ZERO).await;
        let w = &env.w;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        let build = eventually("a builds row", || async { w.builds(brid).await.pop() }).await;
        let (status, body) = env
            .delete(
                &format!("mozilla-inbound/build/{}?format=json", build.id),
                true,
                false,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{engine}: {body}");
        let job_id = accepted_job(&body);

        let request = w.complete(brid).await;
        assert_eq!(request.results, Some(6), "{engine}");
        assert!(w.builds(brid).await[0].finish_time.is_some());
        let finished = w.message("finished", brid, 1).await;
        assert_eq!(finished[0].payload()["results"], 6);
        let log = w.message("log_uploaded", brid, 1).await;
        assert_eq!(log[0].build()["results"], 6);
        assert_eq!(
            log[0].routing_key,
            format!(
                "build.{}.{}.log_uploaded",
                builder_dir(BUILDER),
                build.number
            )
        );

        let job = env.job_done(job_id).await;
        assert_eq!(
            job.outcome,
            Some(JobOutcome::Stopped {
                master: MASTER.to_owned()
            })
        );
        let status: Value = env
            .http
            .get(format!("{}/jobs/{job_id}", env.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["action"], "cancel_build");
        assert_eq!(status["build_id"], build.id);
        assert_eq!(status["outcome"]["outcome"], "stopped");
        assert!(status["completed_at"].is_i64());
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_claimed_request_stops_its_build() {
    for engine in ENGINES {
        let env = Env::new(engine, Some(Duration::from_secs(3600)), Duration::ZERO).await;
        let w = &env.w;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        eventually("a builds row", || async { w.builds(brid).await.pop() }).await;
        let (status, body) = env
            .delete(&format!("mozilla-inbound/request/{brid}"), true, true)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{engine}: {body}");
        let request = w.complete(brid).await;
        assert_eq!(request.results, Some(6), "{engine}");
        assert_ne!(request.claimed_at, 0);
        let finished = w.message("finished", brid, 1).await;
        assert_eq!(finished[0].payload()["results"], 6);
        w.message("log_uploaded", brid, 1).await;
        let job = env.job_done(accepted_job(&body)).await;
        assert_eq!(
            job.outcome,
            Some(JobOutcome::Stopped {
                master: MASTER.to_owned()
            })
        );
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_complete_request_or_finished_build_changes_nothing() {
    for engine in ENGINES {
        let env = Env::new(engine, Some(Duration::from_millis(30)), Duration::ZERO).await;
        let w = &env.w;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        let before = w.complete(brid).await;
        assert_eq!(before.results, Some(0));
        w.message("log_uploaded", brid, 1).await;
        let builds = w.builds(brid).await;
        let published = w.bus.all().len();

        // No JSON asked: BuildAPI answers with a page.
        let response = env
            .http
            .delete(format!("{}/mozilla-inbound/request/{brid}", env.base))
            .header("X-Remote-User", "buildbot-bridge")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{engine}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(response.text().await.unwrap().contains("job 1"));
        assert_eq!(
            env.job_done(1).await.outcome,
            Some(JobOutcome::AlreadyComplete)
        );

        let (status, _) = env
            .delete(
                &format!("mozilla-inbound/build/{}", builds[0].id),
                true,
                false,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            env.job_done(2).await.outcome,
            Some(JobOutcome::AlreadyComplete)
        );

        assert_eq!(w.request(brid).await, before, "{engine}");
        assert_eq!(w.builds(brid).await, builds);
        assert_eq!(w.bus.all().len(), published);
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_requests_are_not_found_when_configured() {
    for engine in ENGINES {
        let env = Env::new(engine, None, Duration::from_secs(60)).await;
        let w = &env.w;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        let (status, body) = env
            .delete(&format!("mozilla-inbound/request/{brid}"), true, true)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{engine}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            not_found("Request", brid, "mozilla-inbound")
        );
        assert!(env.selfserve.jobs().is_empty());

        w.clock.advance(chrono::Duration::seconds(61));
        // BuildAPI also takes a prefix of the branch.
        let (status, body) = env
            .delete(&format!("integration/request/{brid}"), true, true)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{engine}: {body}");
        let job = env.job_done(accepted_job(&body)).await;
        assert_eq!(job.outcome, Some(JobOutcome::CancelledPending));
        assert_eq!(w.request(brid).await.results, Some(2));
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allthethings_lists_the_builders() {
    for engine in ENGINES {
        let env = Env::new(engine, None, Duration::ZERO).await;
        let url = format!("http://{}/builders/allthethings.json", env.selfserve.addr());
        let doc: Value = env
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut names: Vec<&String> = doc["builders"].as_object().unwrap().keys().collect();
        names.sort_unstable();
        assert_eq!(names, [BUILDER, OTHER_BUILDER], "{engine}");
        let builder = &doc["builders"][BUILDER];
        assert_eq!(builder["shortname"], builder_dir(BUILDER).as_str());
        assert_eq!(builder["slavebuilddir"], builder_dir(BUILDER).as_str());
        assert!(builder["properties"].is_object() && builder["slavepool"].is_string());
        for key in ["schedulers", "master_builders", "slavepools"] {
            assert!(doc[key].is_object(), "{key}");
        }

        // On a port of its own, as a config may put it.
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let other = serve(
            listen,
            allthethings_router("/att/allthethings.json", &[BUILDER.to_owned()]),
        )
        .await
        .unwrap();
        let doc: Value = env
            .http
            .get(format!("http://{}/att/allthethings.json", other.addr()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(doc["builders"][BUILDER].is_object());
        other.shutdown().await;
        env.close().await;
    }
}
