//! Test support shared by the master and self-serve emulator tests: a fresh scheduler DB per
//! test, a Pulse consumer on the test's own exchange, and waiting on conditions.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bbb_sandbox::{
    buildbot::{Master, MasterSettings, Masters, PulseFaults, builder_dir},
    clock::Clock,
    pulse::Publisher,
};
use bbb_shared::{
    dburl::{DbUrl, Engine},
    schedulerdb::{Build, BuildRequest, BuildRequestSpec, SchedulerDb, create_buildbot08_schema},
    secret::SecretUrl,
};
use futures::StreamExt as _;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection as _};

pub const ENGINES: [Engine; 2] = [Engine::MySql, Engine::Sqlite];
pub const BUILDER: &str = "Linux x86-64 mozilla-inbound build";
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh scheduler DB for one test: `bbbtest_<random>` on the MariaDB server, or a
/// temporary SQLite file. Removed when dropped.
pub struct TestDb {
    pub url: DbUrl,
    pub server: Option<(String, String)>,
    pub file: Option<PathBuf>,
}

impl TestDb {
    pub async fn create(engine: Engine) -> TestDb {
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
pub async fn scalars(url: &DbUrl, sql: &str, id: i64) -> Vec<Option<String>> {
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

pub async fn scalar(url: &DbUrl, sql: &str, id: i64) -> Option<String> {
    scalars(url, sql, id).await.pop().flatten()
}

/// The results of a buildset, once it is complete (a master completes it after its requests).
pub async fn buildset_results(url: &DbUrl, id: i64) -> Option<String> {
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
pub struct Received {
    pub routing_key: String,
    pub body: Value,
}

impl Received {
    pub fn kind(&self) -> &str {
        self.routing_key.rsplit('.').next().unwrap_or("")
    }
    pub fn payload(&self) -> &Value {
        &self.body["payload"]
    }
    pub fn build(&self) -> &Value {
        &self.body["payload"]["build"]
    }
    /// `request_ids` of the payload, or postrun's property in log_uploaded.
    pub fn request_ids(&self) -> Vec<i64> {
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
pub fn property(build: &Value, name: &str) -> Option<(Value, String)> {
    build["properties"].as_array()?.iter().find_map(|p| {
        (p[0] == name).then(|| (p[1].clone(), p[2].as_str().unwrap_or("").to_owned()))
    })
}

/// A private exchange on the real broker and a queue bound to `build.#` on it.
pub struct Bus {
    pub exchange: String,
    pub conn: lapin::Connection,
    pub channel: lapin::Channel,
    pub received: Arc<std::sync::Mutex<Vec<Received>>>,
    pub publisher: Publisher,
}

pub fn pulse_url() -> String {
    std::env::var("BBB_TEST_PULSE_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

impl Bus {
    pub async fn new() -> Bus {
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

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Messages of one kind that concern `brid`.
    pub fn of(&self, kind: &str, brid: i64) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|m| m.kind() == kind && m.request_ids().contains(&brid))
            .collect()
    }

    pub async fn close(self) {
        let _ = self
            .channel
            .exchange_delete(self.exchange.as_str().into(), Default::default())
            .await;
        let _ = self.conn.close(0, "done".into()).await;
    }
}

/// Polls `check` until it gives a value; panics after [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
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

pub fn task_id() -> String {
    let u = ulid::Ulid::generate().to_string();
    u[u.len() - 22..].to_owned()
}

pub fn spec(task_id: &str, revision: &str, submitted_at: i64, extra: Value) -> BuildRequestSpec {
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

pub fn settings(name: &str, bus: &Bus, build_duration: Duration) -> MasterSettings {
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
pub struct World {
    pub db: TestDb,
    pub sched: SchedulerDb,
    pub bus: Bus,
    pub clock: Clock,
    pub engine: Engine,
}

impl World {
    pub async fn new(engine: Engine) -> World {
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

    pub async fn master(&self, settings: MasterSettings) -> Master {
        Master::start(
            settings,
            &self.db.url,
            self.clock.clone(),
            self.bus.publisher.clone(),
        )
        .await
        .unwrap()
    }

    pub async fn inject(&self, spec: &BuildRequestSpec) -> i64 {
        self.sched.inject_buildrequest(spec).await.unwrap()
    }

    pub async fn request(&self, brid: i64) -> BuildRequest {
        self.sched.buildrequest(brid).await.unwrap().unwrap()
    }

    pub async fn builds(&self, brid: i64) -> Vec<Build> {
        self.sched.builds_for(&[brid]).await.unwrap()
    }

    pub async fn complete(&self, brid: i64) -> BuildRequest {
        let what = format!("request {brid} to complete on {}", self.engine);
        eventually(&what, || async {
            let r = self.request(brid).await;
            r.complete.then_some(r)
        })
        .await
    }

    pub async fn message(&self, kind: &str, brid: i64, count: usize) -> Vec<Received> {
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

    pub async fn close(self) {
        self.sched.close().await;
        self.bus.close().await;
    }
}
