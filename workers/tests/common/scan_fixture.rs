//! Many tracked tasks for the scan's cost test and benchmark: `n` rows in the bridge DB, each
//! with a running BuildRequest in the scheduler DB, every 1000th one due for a reclaim.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, sync::Arc, time::Duration};

use bbb_shared::{
    bridgedb::BridgeDb,
    config::Config,
    dburl::Engine,
    queue::{JobQueue, QueueSettings},
    schedulerdb::{SchedulerDb, create_buildbot08_schema},
    testing::TestDb,
};
use bbb_workers::bridge::Bridge;
use sqlx::{Connection, SqliteConnection};

pub struct Fixture {
    pub bridge: Arc<Bridge>,
    pub queue: JobQueue,
    pub now: i64,
    pub prefix: String,
    _bbb: TestDb,
    _sched: TestDb,
}

fn config_url(url: &bbb_shared::dburl::DbUrl) -> String {
    match url.expose().strip_prefix("sqlite://") {
        Some(path) if path.starts_with('/') => format!("sqlite:///{path}"),
        _ => url.expose().to_owned(),
    }
}

pub async fn fixture(n: usize) -> Fixture {
    let bbb = TestDb::create(Engine::Sqlite).await.unwrap();
    let sched = TestDb::create(Engine::Sqlite).await.unwrap();
    BridgeDb::connect(bbb.url())
        .await
        .unwrap()
        .migrate()
        .await
        .unwrap();
    create_buildbot08_schema(&SchedulerDb::connect(sched.url()).await.unwrap())
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp();

    let mut conn = SqliteConnection::connect(bbb.url().expose()).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO tasks (taskId, runId, buildrequestId, createdDate, processedDate, takenUntil) ",
        );
        q.push_values(chunk, |mut row, i| {
            let due = i % 1000 == 0;
            row.push_bind(format!("t{i:021}"))
                .push_bind(0)
                .push_bind((*i + 1) as i64)
                .push_bind(now)
                .push_bind(now)
                .push_bind(if due { now + 100 } else { now + 1200 });
        });
        q.build().execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut conn = SqliteConnection::connect(sched.url().expose())
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO buildrequests (id, buildsetid, buildername, priority, claimed_at, claimed_by_name, complete, submitted_at) ",
        );
        q.push_values(chunk, |mut row, i| {
            row.push_bind((*i + 1) as i64)
                .push_bind(1)
                .push_bind("Linux x86-64 mozilla-inbound build")
                .push_bind(0)
                .push_bind(now)
                .push_bind("bm:/builds/master")
                .push_bind(0)
                .push_bind(now);
        });
        q.build().execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    let prefix = format!(
        "bbbtest-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let raw = serde_json::json!({
        "taskcluster_queue_config": {"rootUrl": "http://127.0.0.1:1", "credentials": {"clientId": "c", "accessToken": "t"}},
        "buildbot_scheduler_db": config_url(sched.url()),
        "bbb_db": config_url(bbb.url()),
        "selfserve_url": "http://127.0.0.1:1/self-serve",
        "pulse_url": "amqp://guest:guest@127.0.0.1:5672/%2f",
        "pulse_queue_basename": "queue/unused",
        "redis_url": "redis://127.0.0.1:6379/0",
        "redis": {"prefix": prefix},
        "tc_worker_group": "g",
        "tc_worker_id": "w",
        "tclistener": {"worker_type": "bb", "provisioner_id": "bb"},
        "bblistener": {"pulse_exchange": "exchange/build/"},
        "reflector": {"page_size": 500},
    });
    let config = Config::from_str(&raw.to_string(), Path::new("scan.json"), &|_| None).unwrap();
    let bridge = Bridge::connect(&config).await.unwrap();
    let conn = bbb_shared::queue::connect(&config.redis.url).await.unwrap();
    let mut settings = QueueSettings::from_config(&config);
    settings.idempotency_ttl = Duration::from_secs(600);
    Fixture {
        bridge,
        queue: JobQueue::new(conn, settings),
        now,
        prefix,
        _bbb: bbb,
        _sched: sched,
    }
}

pub async fn cleanup(f: &Fixture) {
    let mut conn = f.queue.connection();
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, format!("{}*", f.prefix))
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = redis::AsyncCommands::del(&mut conn, chunk).await;
    }
}
