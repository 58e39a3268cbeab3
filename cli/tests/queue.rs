//! Operator inspection end to end on the real services: `inspect::snapshot` and the `bbb`
//! binary (`bbb queue --json`, `bbb dead-letters ...`, `bbb tasks`) against Redis, RabbitMQ
//! (AMQP and the management API) and SQLite databases. Each test has its own Redis key prefix
//! and its own RabbitMQ names, and removes them at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bbb_shared::{
    bridgedb::{BridgeDb, TrackedTask},
    config::ENV_VARS,
    dburl::Engine,
    inspect::{self, InspectSettings, PulseRow, Snapshot},
    jobs::{Job, ReflectScan, TaskException, TaskPending},
    queue::{DeadLetter, Envelope, JobQueue, QueueSettings},
    schedulerdb::{BuildRequestSpec, SchedulerDb, create_buildbot08_schema},
    secret::SecretUrl,
    stats::{self, Outcome, WorkerInfo},
    testing::TestDb,
};
use chrono::Utc;
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use redis::{AsyncCommands, aio::ConnectionManager};
use serde_json::{Value, json};

const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// One test's world: a Redis prefix, RabbitMQ names under it, a config file naming both.
struct Bed {
    prefix: String,
    conn: ConnectionManager,
    queue: JobQueue,
    dir: PathBuf,
}

impl Bed {
    async fn new() -> Self {
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
            fetch_batch: 4,
        };
        let queue = JobQueue::new(conn.clone(), settings);
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            prefix,
            conn,
            queue,
            dir,
        }
    }

    fn pulse_queue(&self, purpose: &str) -> String {
        format!("queue/{}/{purpose}", self.prefix)
    }

    /// Writes a config for this bed (databases as given) and returns its path.
    fn config(&self, bbb_db: &str, scheduler_db: &str) -> PathBuf {
        let path = self.dir.join("bbb.json");
        let body = json!({
            "taskcluster_queue_config": {"rootUrl": "http://127.0.0.1:1", "credentials": {"clientId": "c", "accessToken": "t"}},
            "buildbot_scheduler_db": scheduler_db,
            "bbb_db": bbb_db,
            "selfserve_url": "http://127.0.0.1:1/self-serve",
            "pulse_url": AMQP_URL,
            "pulse_queue_basename": format!("queue/{}", self.prefix),
            "redis_url": REDIS_URL,
            "redis": {"prefix": self.prefix, "idempotency_ttl": 600},
            "tc_worker_group": "g",
            "tc_worker_id": "w",
            "tclistener": {"worker_type": "bb", "provisioner_id": "bb"},
            "bblistener": {"pulse_exchange": format!("exchange/{}/build", self.prefix)},
        });
        std::fs::write(&path, body.to_string()).unwrap();
        path
    }

    fn inspect_settings(&self) -> InspectSettings {
        let config =
            bbb_shared::config::Config::load(&self.config("sqlite::memory:", "sqlite::memory:"))
                .unwrap();
        InspectSettings::from_config(&config)
    }

    async fn dead_letter_count(&self) -> usize {
        let mut conn = self.conn.clone();
        conn.llen(format!("{}:dead-letters", self.prefix))
            .await
            .unwrap()
    }

    async fn cleanup(&self) {
        let mut conn = self.conn.clone();
        let mut keys = Vec::new();
        {
            let mut iter: redis::AsyncIter<String> =
                conn.scan_match(format!("{}:*", self.prefix)).await.unwrap();
            while let Some(key) = iter.next_item().await {
                keys.push(key.unwrap());
            }
        }
        for chunk in keys.chunks(500) {
            let _: () = conn.del(chunk).await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `bbb --config <config> <args>`, without the environment's overrides.
async fn bbb(config: &PathBuf, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bbb"));
    cmd.arg("--config").arg(config).args(args);
    for var in ENV_VARS.iter().chain(&["BBB_CONFIG", "BBB_LOG_FORMAT"]) {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("bbb answers within 60 s")
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn amqp() -> Connection {
    Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap()
}

fn pending(task_id: &str) -> TaskPending {
    TaskPending {
        task_id: task_id.into(),
        run_id: 0,
        scheduled: None,
    }
}

/// The counts a queue row is compared on: waiting, delayed, running, done and failed in the
/// last hour, dead-lettered, live workers.
type Counts = (u64, u64, u64, u64, u64, u64, u64);

fn counts(s: &Snapshot) -> BTreeMap<String, Counts> {
    s.queues
        .iter()
        .map(|q| {
            (
                q.kind.clone(),
                (
                    q.waiting,
                    q.delayed,
                    q.running,
                    q.done_last_hour,
                    q.failed_last_hour,
                    q.dead_lettered,
                    q.workers_alive,
                ),
            )
        })
        .collect()
}

fn row<'a>(s: &'a Snapshot, kind: &str) -> &'a inspect::QueueRow {
    s.queues.iter().find(|q| q.kind == kind).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_and_bbb_queue_json_count_backlogs_failures_dead_letters_workers_and_pulse() {
    const FAILING: usize = 3;
    const WAITING: u64 = 4;
    const DELAYED: u64 = 2;
    const UNACKED: usize = 3;
    const READY: usize = 2;

    let bed = Bed::new().await;
    let settings = bed.inspect_settings();
    let mut conn = bed.conn.clone();

    // A real worker pool without bridge connections: each of its six kinds has a live
    // worker, and every task-exception job fails for good (dead letter + failure counted).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let setup = bbb_workers::WorkerSetup {
        queue_settings: bed.queue.settings().clone(),
        runtime: bbb_workers::runtime::RuntimeSettings {
            concurrency: 8,
            max_attempts: 2,
            retry_base: Duration::from_millis(50),
            retry_max: Duration::from_millis(100),
            lock_busy_delay: Duration::from_millis(50),
            max_lock_waits: 10,
            poll_interval: Duration::from_millis(50),
        },
        lock_ttl: Duration::from_secs(3),
        jobs: bbb_workers::jobs::Registration {
            bridge: true,
            probe: false,
        },
        bridge: None,
    };
    let pool = tokio::spawn(bbb_workers::run(bed.conn.clone(), setup, stopped));
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        let s = inspect::snapshot(&bed.conn, &settings).await.unwrap();
        if s.workers.len() == 6 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the pool's workers never showed: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for q in &live.queues {
        assert_eq!(q.workers_alive, 1, "{q:?}");
    }
    for w in &live.workers {
        assert_eq!((w.concurrency, w.pid), (8, std::process::id()), "{w:?}");
        assert!(w.heartbeat_age_secs < inspect::WORKER_ALIVE_SECS, "{w:?}");
    }
    for i in 0..FAILING {
        bed.queue
            .enqueue(TaskException {
                task_id: format!("exception-{i}"),
                run_id: Some(0),
                reason: Some("canceled".into()),
            })
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while bed.dead_letter_count().await < FAILING {
        assert!(
            Instant::now() < deadline,
            "the failing jobs were not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), pool)
        .await
        .expect("the pool stops within 30 s")
        .unwrap();
    // A stopped worker is out of the registry (stats.rs), whichever way it stopped.
    for (name, _) in stats::registered_workers(&mut conn, &bed.prefix)
        .await
        .unwrap()
    {
        stats::unregister_worker(&mut conn, &bed.prefix, &name)
            .await
            .unwrap();
    }

    // Backlogs with no worker: task-pending jobs waiting (one enqueued five minutes ago) and
    // scheduled for later.
    for i in 0..WAITING - 1 {
        bed.queue
            .enqueue(pending(&format!("waiting-{i}")))
            .await
            .unwrap();
    }
    let old = Envelope {
        job: pending("waiting-old"),
        key: pending("waiting-old").idempotency_key(),
        attempt: 0,
        lock_waits: 0,
        origin_id: "old-job".into(),
        enqueued_at: Utc::now() - chrono::Duration::seconds(300),
        last_error: None,
    };
    bed.queue
        .push_envelope("old-job", &old, Duration::ZERO)
        .await
        .unwrap();
    for i in 0..DELAYED {
        bed.queue
            .enqueue_after(pending(&format!("delayed-{i}")), Duration::from_secs(3600))
            .await
            .unwrap();
    }

    // Dead letters besides the pool's: two build-finished jobs and one Pulse message.
    for i in 0..2 {
        bed.queue
            .dead_letter(&letter(&format!("bf-{i}"), "job", "build-finished"))
            .await
            .unwrap();
    }
    bed.queue
        .dead_letter(&letter("pulse-0", "ingest", "buildbot"))
        .await
        .unwrap();

    // Counters: reflect-scan did 60 jobs in each of the last six minutes; build-started
    // retried twice just now.
    let minute = stats::epoch_minute(Utc::now());
    for back in 0..6 {
        let key = stats::counter_key(&bed.prefix, ReflectScan::NAME, Outcome::Done, minute - back);
        let _: () = conn.incr(&key, 60).await.unwrap();
        let _: () = conn.expire(&key, 7200).await.unwrap();
    }
    for _ in 0..2 {
        stats::record(&mut conn, &bed.prefix, "build-started", Outcome::Retried)
            .await
            .unwrap();
    }

    // A live task-check worker with two jobs in flight, and two dead registrations: one that
    // never sent a heartbeat and started two hours ago, one silent for a minute.
    let info = |kind: &str, started_ago: i64| WorkerInfo {
        kind: kind.into(),
        concurrency: 4,
        host: "test-host".into(),
        pid: 4242,
        started_at: Utc::now() - chrono::Duration::seconds(started_ago),
    };
    let check_q = format!("{}:task-check", bed.prefix);
    stats::register_worker(
        &mut conn,
        &bed.prefix,
        "live-checker",
        &info("task-check", 5),
    )
    .await
    .unwrap();
    stats::register_worker(&mut conn, &bed.prefix, "ghost", &info("task-check", 7200))
        .await
        .unwrap();
    stats::register_worker(&mut conn, &bed.prefix, "silent", &info("task-check", 600))
        .await
        .unwrap();
    let _: () = conn
        .zadd(
            format!("{check_q}:workers"),
            "silent",
            Utc::now().timestamp() - 60,
        )
        .await
        .unwrap();
    let _: () = conn
        .sadd(
            format!("{check_q}:inflight:live-checker"),
            &["job-a", "job-b"],
        )
        .await
        .unwrap();
    let beat = |mut conn: ConnectionManager, q: String| async move {
        let _: () = conn
            .zadd(
                format!("{q}:workers"),
                "live-checker",
                Utc::now().timestamp(),
            )
            .await
            .unwrap();
    };

    // The Pulse backlog: the bridge's task-pending queue with UNACKED messages delivered to a
    // consumer that does not ack, and READY more.
    let rabbit = amqp().await;
    let pulse_q = bed.pulse_queue("task-pending");
    let publisher = rabbit.create_channel().await.unwrap();
    publisher
        .queue_declare(
            pulse_q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..UNACKED + READY {
        publish(
            &publisher,
            "",
            &pulse_q,
            format!("{{\"n\":{i}}}").as_bytes(),
        )
        .await;
    }
    let holder = rabbit.create_channel().await.unwrap();
    holder
        .basic_qos(UNACKED as u16, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = holder
        .basic_consume(
            pulse_q.as_str().into(),
            "inspect-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    while held.len() < UNACKED {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("deliveries within 10 s")
            .unwrap()
            .unwrap();
        held.push(delivery);
    }

    let expected: BTreeMap<String, Counts> = [
        ("task-pending", (WAITING, DELAYED, 0, 0, 0, 0, 0)),
        (
            "task-exception",
            (0, 0, 0, 0, FAILING as u64, FAILING as u64, 0),
        ),
        ("build-started", (0, 0, 0, 0, 2, 0, 0)),
        ("build-finished", (0, 0, 0, 0, 0, 2, 0)),
        ("reflect-scan", (0, 0, 0, 360, 0, 0, 0)),
        ("task-check", (0, 0, 2, 0, 0, 0, 1)),
    ]
    .into_iter()
    .map(|(k, c)| (k.to_owned(), c))
    .collect();
    let expected_pulse = vec![
        PulseRow {
            queue: pulse_q.clone(),
            ready: READY as u64,
            unacked: Some(UNACKED as u64),
            consumers: 1,
            note: None,
        },
        missing(&bed.pulse_queue("task-exception")),
        missing(&bed.pulse_queue("buildbot")),
    ];
    let check = |s: &Snapshot, source: &str| {
        assert_eq!(counts(s), expected, "{source}: {s:#?}");
        assert_eq!(s.dead_letters, FAILING as u64 + 3, "{source}");
        assert_eq!(s.pulse_error, None, "{source}");
        let oldest = row(s, "task-pending").oldest_waiting_secs.unwrap();
        assert!((300..=400).contains(&oldest), "{source}: oldest {oldest}");
        assert_eq!(row(s, "reflect-scan").jobs_per_sec, 1.0, "{source}");
        assert_eq!(s.workers.len(), 1, "{source}: {:?}", s.workers);
        let w = &s.workers[0];
        assert_eq!(
            (
                w.name.as_str(),
                w.kind.as_str(),
                w.host.as_str(),
                w.pid,
                w.concurrency,
                w.in_flight
            ),
            ("live-checker", "task-check", "test-host", 4242, 4, 2),
            "{source}"
        );
        assert!(
            s.diagnosis
                .iter()
                .any(|l| l.starts_with("task-pending: oldest job waiting 5m")
                    && l.ends_with("with 0 workers alive")),
            "{source}: {:?}",
            s.diagnosis
        );
        assert!(
            s.diagnosis
                .contains(&"6 dead letters: see bbb dead-letters list".to_owned()),
            "{source}: {:?}",
            s.diagnosis
        );
    };

    // The management API samples queue statistics every few seconds: poll until it agrees.
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        beat(bed.conn.clone(), check_q.clone()).await;
        let s = inspect::snapshot(&bed.conn, &settings).await.unwrap();
        if s.pulse == expected_pulse {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the Pulse rows never matched: {:#?} {:?}",
            s.pulse,
            s.pulse_error
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    check(&s, "snapshot");
    let registry: Vec<String> = stats::registered_workers(&mut conn, &bed.prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(!registry.contains(&"ghost".to_owned()), "{registry:?}");
    assert!(registry.contains(&"silent".to_owned()), "{registry:?}");

    let config = bed.config("sqlite::memory:", "sqlite::memory:");
    let deadline = Instant::now() + Duration::from_secs(30);
    let from_cli = loop {
        beat(bed.conn.clone(), check_q.clone()).await;
        let out = bbb(&config, &["queue", "--json"]).await;
        assert!(out.status.success(), "bbb queue failed: {}", stderr(&out));
        let s: Snapshot = serde_json::from_str(&stdout(&out)).unwrap();
        if s.pulse == expected_pulse {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "bbb queue's Pulse rows never matched: {:#?}",
            s.pulse
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    check(&from_cli, "bbb queue --json");
    assert_eq!(from_cli.prefix, bed.prefix);

    let out = bbb(&config, &["queue"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("diagnosis:\n"), "{text}");
    assert!(text.contains("live-checker"), "{text}");

    drop(held);
    let _ = holder.close(200, "done".into()).await;
    publisher
        .queue_delete(pulse_q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let _ = rabbit.close(200, "done".into()).await;
    bed.cleanup().await;
}

fn missing(queue: &str) -> PulseRow {
    PulseRow {
        queue: queue.to_owned(),
        ready: 0,
        unacked: Some(0),
        consumers: 0,
        note: Some(inspect::NOT_DECLARED.to_owned()),
    }
}

fn letter(id: &str, source: &str, queue: &str) -> DeadLetter {
    DeadLetter {
        id: id.into(),
        source: source.into(),
        queue: queue.into(),
        reason: format!("{id} failed"),
        failed_at: Utc::now(),
        attempts: 1,
        exchange: None,
        routing_key: None,
        body: None,
        body_truncated: false,
        envelope: None,
    }
}

async fn publish(channel: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_requeued_and_purged_by_id_or_all() {
    let bed = Bed::new().await;
    let config = bed.config("sqlite::memory:", "sqlite::memory:");
    let mut conn = bed.conn.clone();

    // A job that failed five times, a whole Pulse message, a cut one, two more jobs.
    let failed = Envelope {
        job: pending("requeue-me"),
        key: pending("requeue-me").idempotency_key(),
        attempt: 5,
        lock_waits: 2,
        origin_id: "first-id".into(),
        enqueued_at: Utc::now() - chrono::Duration::seconds(900),
        last_error: Some("boom".into()),
    };
    let mut job = letter("01JOBJOBJOBJOBJOBJOBJOBJOB", "job", "task-pending");
    job.attempts = 5;
    job.envelope = Some(serde_json::to_value(&failed).unwrap());
    let exchange = format!("exchange/{}/build", bed.prefix);
    let body = r#"{"payload":{"build":{"number":1}},"_meta":{}}"#;
    let mut message = letter("01MSGMSGMSGMSGMSGMSGMSGMSG", "ingest", "buildbot");
    message.exchange = Some(exchange.clone());
    message.routing_key = Some("build.linux.1.started".into());
    message.body = Some(body.into());
    let mut cut = message.clone();
    cut.id = "01CUTCUTCUTCUTCUTCUTCUTCUT".into();
    cut.body = Some("{\"payload\":".into());
    cut.body_truncated = true;
    let junk = [
        letter("01JUNKAAAAAAAAAAAAAAAAAAAA", "job", "build-started"),
        letter("01JUNKBBBBBBBBBBBBBBBBBBBB", "job", "build-finished"),
    ];
    for l in [&job, &message, &cut, &junk[0], &junk[1]] {
        bed.queue.dead_letter(l).await.unwrap();
    }

    // Somewhere for the republished message to land.
    let rabbit = amqp().await;
    let channel = rabbit.create_channel().await.unwrap();
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let sink = format!("queue/{}/republished", bed.prefix);
    channel
        .queue_declare(
            sink.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            sink.as_str().into(),
            exchange.as_str().into(),
            "build.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let out = bbb(&config, &["dead-letters", "list", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<DeadLetter> = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<&str> = listed.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(
        ids,
        [&junk[1].id, &junk[0].id, &cut.id, &message.id, &job.id].map(String::as_str)
    );
    let out = bbb(&config, &["dead-letters", "list", "--limit", "2"]).await;
    let text = stdout(&out);
    assert!(
        text.contains(&junk[1].id) && !text.contains(&cut.id),
        "{text}"
    );
    assert!(text.contains("2 of 5 shown"), "{text}");

    let out = bbb(&config, &["dead-letters", "show", "01MSG"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains(body) && text.contains("build.linux.1.started"),
        "{text}"
    );
    let out = bbb(&config, &["dead-letters", "show", "01JUNK"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("2 dead letters have ids starting with 01JUNK"),
        "{}",
        stderr(&out)
    );

    // The job goes back on its queue as a fresh job.
    let out = bbb(&config, &["dead-letters", "requeue", &job.id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let new_id = text
        .trim()
        .strip_prefix(&format!(
            "requeued dead letter {} as task-pending job ",
            job.id
        ))
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned();
    let data: Option<String> = conn
        .hget(format!("{}:task-pending:data", bed.prefix), &new_id)
        .await
        .unwrap();
    let requeued: Envelope<TaskPending> = serde_json::from_str(&data.unwrap()).unwrap();
    assert_eq!(requeued.job, failed.job);
    assert_eq!(
        (
            requeued.attempt,
            requeued.lock_waits,
            requeued.last_error,
            requeued.origin_id.as_str()
        ),
        (0, 0, None, new_id.as_str())
    );
    assert!(requeued.enqueued_at > failed.enqueued_at);
    let s = inspect::snapshot(&bed.conn, &bed.inspect_settings())
        .await
        .unwrap();
    assert_eq!(row(&s, "task-pending").waiting, 1);

    // The whole message is republished; the cut one cannot be.
    let out = bbb(&config, &["dead-letters", "requeue", &message.id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let got = channel
        .basic_get(
            sink.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the republished message");
    assert_eq!(got.delivery.data, body.as_bytes());
    assert_eq!(got.delivery.routing_key.as_str(), "build.linux.1.started");
    let out = bbb(&config, &["dead-letters", "requeue", &cut.id]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot be republished"),
        "{}",
        stderr(&out)
    );

    // --all requeues what it can and keeps the rest: a message whose exchange is gone fails
    // (and closes its channel) without stopping the next one.
    let mut second = message.clone();
    second.id = "01SECONDSECONDSECONDSECOND".into();
    second.body = Some("{\"second\":true}".into());
    let mut lost = message.clone();
    lost.id = "01LOSTLOSTLOSTLOSTLOSTLOST".into();
    lost.exchange = Some(format!("exchange/{}/missing", bed.prefix));
    bed.queue.dead_letter(&second).await.unwrap();
    bed.queue.dead_letter(&lost).await.unwrap();
    let out = bbb(&config, &["dead-letters", "requeue", "--all"]).await;
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains(&format!("republished dead letter {}", second.id)),
        "{text}\n{}",
        stderr(&out)
    );
    assert!(text.contains("requeued 1, kept 4"), "{text}");
    assert!(
        stderr(&out).contains(&format!("kept dead letter {}", lost.id)),
        "{}",
        stderr(&out)
    );
    let got = channel
        .basic_get(
            sink.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the second republished message");
    assert_eq!(got.delivery.data, b"{\"second\":true}");
    let ids =
        |letters: Vec<DeadLetter>| -> Vec<String> { letters.into_iter().map(|l| l.id).collect() };
    assert_eq!(
        ids(bed.queue.dead_letters(100).await.unwrap()),
        [&lost.id, &junk[1].id, &junk[0].id, &cut.id].map(String::clone)
    );

    // Purging needs an id or --all; an id removes that entry only, even with entries pushed
    // after it.
    let out = bbb(&config, &["dead-letters", "purge"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--all"), "{}", stderr(&out));
    let out = bbb(&config, &["dead-letters", "purge", &junk[0].id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ids(bed.queue.dead_letters(100).await.unwrap()),
        [&lost.id, &junk[1].id, &cut.id].map(String::clone)
    );

    let out = bbb(&config, &["dead-letters", "purge", "--all"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "purged 3 dead letters");
    assert_eq!(bed.dead_letter_count().await, 0);

    let _ = channel
        .queue_delete(sink.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = rabbit.close(200, "done".into()).await;
    bed.cleanup().await;
}

/// `sqlite:////abs/path.db` (the config's form) for a test database.
fn sqlite_config_url(db: &TestDb) -> String {
    let exposed = db.url().expose();
    let path = exposed
        .strip_prefix("sqlite://")
        .and_then(|p| p.split('?').next())
        .unwrap();
    format!("sqlite:///{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bbb_tasks_shows_pending_running_and_awaiting_result_with_filters() {
    let bed = Bed::new().await;
    let bridge_db = TestDb::create(Engine::Sqlite).await.unwrap();
    let scheduler_db = TestDb::create(Engine::Sqlite).await.unwrap();
    let bridge = BridgeDb::connect(bridge_db.url()).await.unwrap();
    bridge.migrate().await.unwrap();
    let scheduler = SchedulerDb::connect(scheduler_db.url()).await.unwrap();
    create_buildbot08_schema(&scheduler).await.unwrap();
    let spec = |task_id: &str| BuildRequestSpec {
        task_id: task_id.into(),
        buildername: "linux-build".into(),
        priority: 0,
        submitted_at: 1_700_000_000,
        branch: Some("integration/mozilla-inbound".into()),
        revision: None,
        repository: None,
        project: None,
        properties: serde_json::Map::new(),
    };
    let running_brid = scheduler.inject_buildrequest(&spec("B")).await.unwrap();
    let done_brid = scheduler.inject_buildrequest(&spec("D")).await.unwrap();
    let raw = sqlx::SqlitePool::connect(scheduler_db.url().expose())
        .await
        .unwrap();
    sqlx::query("UPDATE buildrequests SET complete = 1, results = 0 WHERE id = ?")
        .bind(done_brid)
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    scheduler.close().await;

    let now = Utc::now().timestamp();
    let tasks = [
        ("AAAAAAAAAAAAAAAAAAAAAA", None, None, "linux-build"),
        (
            "BBBBBBBBBBBBBBBBBBBBBB",
            Some(running_brid),
            Some(now + 3600),
            "linux-test",
        ),
        (
            "CCCCCCCCCCCCCCCCCCCCCC",
            Some(12345),
            Some(now - 10),
            "win-build",
        ),
        (
            "DDDDDDDDDDDDDDDDDDDDDD",
            Some(done_brid),
            Some(now + 3600),
            "linux-build",
        ),
    ];
    for (task_id, brid, taken_until, builder) in tasks {
        bridge
            .insert_task(&TrackedTask {
                task_id: task_id.into(),
                run_id: 1,
                buildrequest_id: brid,
                created_date: now - 100,
                processed_date: now - 90,
                taken_until,
                buildername: Some(builder.into()),
                branch: None,
                claimed_by: None,
                task_expires: None,
            })
            .await
            .unwrap();
    }
    bridge.close().await;

    let config = bed.config(
        &sqlite_config_url(&bridge_db),
        &sqlite_config_url(&scheduler_db),
    );
    let states = |out: &std::process::Output| -> Vec<(String, String)> {
        assert!(out.status.success(), "{}", stderr(out));
        let lines: Vec<Value> = serde_json::from_str(&stdout(out)).unwrap();
        lines
            .iter()
            .map(|l| {
                (
                    l["task_id"].as_str().unwrap()[..1].to_owned(),
                    l["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };

    let all = bbb(&config, &["tasks", "--json"]).await;
    assert_eq!(
        states(&all),
        pairs(&[
            ("A", "pending"),
            ("B", "running"),
            ("C", "awaiting-result"),
            ("D", "awaiting-result"),
        ])
    );
    let lines: Vec<Value> = serde_json::from_str(&stdout(&all)).unwrap();
    assert_eq!(lines[1]["buildrequest_id"], json!(running_brid));
    assert_eq!(lines[1]["builder"], json!("linux-test"));
    assert_eq!(lines[1]["run_id"], json!(1));
    assert_eq!(lines[3]["buildrequest_complete"], json!(true));

    let out = bbb(&config, &["tasks", "--builder", "^linux-build$", "--json"]).await;
    assert_eq!(
        states(&out),
        pairs(&[("A", "pending"), ("D", "awaiting-result")])
    );
    let out = bbb(
        &config,
        &[
            "tasks",
            "--state",
            "awaiting-result",
            "--limit",
            "1",
            "--json",
        ],
    )
    .await;
    assert_eq!(states(&out), pairs(&[("C", "awaiting-result")]));
    let out = bbb(
        &config,
        &["tasks", "--task", "BBBBBBBBBBBBBBBBBBBBBB", "--json"],
    )
    .await;
    assert_eq!(states(&out), pairs(&[("B", "running")]));
    let out = bbb(&config, &["tasks", "--task", "nope", "--json"]).await;
    assert_eq!(states(&out), pairs(&[]));

    let out = bbb(&config, &["tasks"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let running_line = text.lines().find(|l| l.contains("BBBBBB")).unwrap();
    assert!(running_line.contains("running until 20"), "{text}");
    assert!(running_line.contains(&running_brid.to_string()), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("CCCCCC") && l.ends_with("awaiting result")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("AAAAAA") && l.ends_with("pending")),
        "{text}"
    );

    bed.cleanup().await;
}
