//! The ingest on a real RabbitMQ and Redis. Each test has its own exchanges, AMQP queues and
//! Redis key prefix, so tests run in parallel without seeing each other's messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bbb_ingest::{Binding, IngestSettings, consumer::publish, parse::Purpose};
use bbb_shared::{
    queue::{JobQueue, QueueSettings},
    secret::SecretUrl,
};
use lapin::{
    Channel, Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable,
};
use tokio::sync::watch;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS: &str = "redis://127.0.0.1:6379/0";

struct Bed {
    name: String,
    queue: JobQueue,
    channel: Channel,
    _conn: Connection,
}

impl Bed {
    async fn new() -> Self {
        let name = format!(
            "bbbtest-{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let redis = bbb_shared::queue::connect(&SecretUrl::new(REDIS))
            .await
            .unwrap();
        let queue = JobQueue::new(
            redis,
            QueueSettings {
                prefix: name.clone(),
                idempotency_ttl: Duration::from_secs(600),
                heartbeat: Duration::from_secs(1),
                missed_heartbeats: 5,
                fetch_batch: 8,
            },
        );
        let conn = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        Self {
            name,
            queue,
            channel,
            _conn: conn,
        }
    }

    /// Deletes this test's AMQP queues and exchanges and its Redis keys.
    async fn cleanup(&self) {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        for purpose in ["task-pending", "buildbot"] {
            let q = format!("{}/queue/{purpose}", self.name);
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for ex in [self.tc_exchange(), self.bb_exchange()] {
            let _ = self
                .channel
                .exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let mut conn = self.queue.connection();
        let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, format!("{}*", self.name))
            .await
            .unwrap_or_default();
        for k in keys {
            let _: Result<(), _> = redis::AsyncCommands::del(&mut conn, k).await;
        }
    }

    fn tc_exchange(&self) -> String {
        format!("{}/exchange/task-pending", self.name)
    }

    fn bb_exchange(&self) -> String {
        format!("{}/exchange/build/", self.name)
    }

    fn settings(&self) -> IngestSettings {
        let key = "*.*.*.*.*.buildbot-bridge.buildbot-bridge.#".to_owned();
        IngestSettings {
            pulse_url: SecretUrl::new(AMQP),
            bindings: vec![
                Binding {
                    purpose: Purpose::TaskPending,
                    exchange: self.tc_exchange(),
                    routing_keys: vec![key],
                    queue: format!("{}/queue/task-pending", self.name),
                },
                Binding {
                    purpose: Purpose::BuildEvents,
                    exchange: self.bb_exchange(),
                    routing_keys: vec!["build.*.*.started".into(), "build.*.*.log_uploaded".into()],
                    queue: format!("{}/queue/buildbot", self.name),
                },
            ],
            prefetch: 16,
            max_message_bytes: 4096,
            dead_letter_body_limit: 64,
            declare_exchanges: true,
            pause_before_ack: false,
            connection_name: format!("{}-ingest", self.name),
            consuming: Default::default(),
        }
    }

    fn start(
        &self,
        settings: IngestSettings,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        (
            tx,
            tokio::spawn(bbb_ingest::run(settings, self.queue.clone(), rx)),
        )
    }

    /// Messages ready in an AMQP queue (unacked ones come back when their consumer goes).
    async fn ready(&self, purpose: &str) -> u32 {
        let q = self
            .channel
            .queue_declare(
                format!("{}/queue/{purpose}", self.name).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        q.message_count()
    }

    async fn publish_pending(&self, task_id: &str, run_id: u32) {
        let body = pending_body(task_id, run_id);
        let rk =
            format!("primary.{task_id}.{run_id}._._.buildbot-bridge.buildbot-bridge.sched.group._");
        publish(&self.channel, &self.tc_exchange(), &rk, body.as_bytes())
            .await
            .unwrap();
    }

    /// Waits until every binding's exchange is declared and its queue has a consumer, so a
    /// message published afterwards is routed and consumed.
    async fn wait_exchange(&self) {
        for ex in [self.tc_exchange(), self.bb_exchange()] {
            wait_until("the exchanges to be declared", || async {
                let ch = self._conn.create_channel().await.unwrap();
                ch.exchange_declare(
                    ex.as_str().into(),
                    lapin::ExchangeKind::Topic,
                    lapin::options::ExchangeDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .is_ok()
            })
            .await;
        }
        for purpose in ["task-pending", "buildbot"] {
            let q = format!("{}/queue/{purpose}", self.name);
            wait_until("the queue to be bound", || async {
                let ch = self._conn.create_channel().await.unwrap();
                ch.queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .is_ok_and(|q| q.consumer_count() > 0)
            })
            .await;
        }
    }
}

fn pending_body(task_id: &str, run_id: u32) -> String {
    format!(
        r#"{{"version":1,"status":{{"taskId":"{task_id}","provisionerId":"buildbot-bridge","workerType":"buildbot-bridge",
        "taskQueueId":"buildbot-bridge/buildbot-bridge","schedulerId":"sched","projectId":"none","taskGroupId":"{task_id}",
        "deadline":"2026-11-23T05:00:00.000Z","expires":"2027-11-23T05:00:00.000Z","retriesLeft":5,"state":"pending",
        "runs":[{{"runId":{run_id},"state":"pending","reasonCreated":"scheduled","scheduled":"2026-11-22T05:19:58.120Z"}}]}},
        "task":{{"tags":{{}}}},"runId":{run_id}}}"#
    )
}

async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const TASK: &str = "fNdN0Jx9TmKf0yv7uJ3Q1w";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulse_message_becomes_exactly_one_job_and_is_acked() {
    let bed = Bed::new().await;
    let (stop, handle) = bed.start(bed.settings());
    bed.wait_exchange().await;
    bed.publish_pending(TASK, 0).await;
    wait_until("one task-pending job", || async {
        bed.queue.pending_count("task-pending").await.unwrap() == 1
    })
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();
    // Had the message not been acked, it would be back in the queue now that its consumer left.
    assert_eq!(bed.ready("task-pending").await, 0);
    assert_eq!(bed.queue.pending_count("task-pending").await.unwrap(), 1);
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_published_three_times_is_one_job() {
    let bed = Bed::new().await;
    let (stop, handle) = bed.start(bed.settings());
    bed.wait_exchange().await;
    for _ in 0..3 {
        bed.publish_pending(TASK, 0).await;
    }
    // A different run of the same task is a different job.
    bed.publish_pending(TASK, 1).await;
    wait_until("two jobs", || async {
        bed.queue.pending_count("task-pending").await.unwrap() == 2
    })
    .await;
    wait_until("all four messages consumed", || async {
        bed.ready("task-pending").await == 0
    })
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();
    // Every message was settled (an unacked one would be back in the queue): the count is final.
    assert_eq!(bed.ready("task-pending").await, 0);
    assert_eq!(bed.queue.pending_count("task-pending").await.unwrap(), 2);
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_lands_in_the_dead_letter_list_and_the_ingest_keeps_consuming() {
    let bed = Bed::new().await;
    let (stop, handle) = bed.start(bed.settings());
    bed.wait_exchange().await;
    let rk = "primary.x.0._._.buildbot-bridge.buildbot-bridge.s.g._";
    publish(&bed.channel, &bed.tc_exchange(), rk, b"this is not json")
        .await
        .unwrap();
    publish(&bed.channel, &bed.tc_exchange(), rk, br#"{"status": 42}"#)
        .await
        .unwrap();
    publish(&bed.channel, &bed.tc_exchange(), rk, &[b'x'; 5000])
        .await
        .unwrap();
    publish(
        &bed.channel,
        &bed.bb_exchange(),
        "build.b.1.started",
        br#"{"payload":{}}"#,
    )
    .await
    .unwrap();
    bed.publish_pending(TASK, 0).await;
    wait_until("four dead letters", || async {
        bed.queue.dead_letters(10).await.unwrap().len() == 4
    })
    .await;
    wait_until("the good message's job", || async {
        bed.queue.pending_count("task-pending").await.unwrap() == 1
    })
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();
    assert_eq!(bed.ready("task-pending").await, 0);
    assert_eq!(bed.ready("buildbot").await, 0);
    let letters = bed.queue.dead_letters(10).await.unwrap();
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("not JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("wrong shape for a Taskcluster")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("oversized")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("wrong shape for a Buildbot")),
        "{reasons:?}"
    );
    let oversized = letters
        .iter()
        .find(|l| l.reason.starts_with("oversized"))
        .unwrap();
    assert_eq!(oversized.body.as_deref().map(str::len), Some(64));
    assert!(oversized.body_truncated);
    assert_eq!(oversized.routing_key.as_deref(), Some(rk));
    assert_eq!(
        oversized.exchange.as_deref(),
        Some(bed.tc_exchange().as_str())
    );
    let not_json = letters
        .iter()
        .find(|l| l.reason.starts_with("not JSON"))
        .unwrap();
    assert_eq!(not_json.body.as_deref(), Some("this is not json"));
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_ingest_is_killed_before_acking_is_redelivered_and_still_one_job() {
    let bed = Bed::new().await;
    // Declare the topology first, so the message has a queue to wait in.
    let (stop, handle) = bed.start(bed.settings());
    bed.wait_exchange().await;
    stop.send(true).unwrap();
    handle.await.unwrap();

    let dir = std::env::temp_dir().join(&bed.name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(&config, child_config(&bed)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bbb-ingest"))
        .arg("--config")
        .arg(&config)
        .env("BBB_TEST_PAUSE_BEFORE_ACK", "true")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    bed.publish_pending(TASK, 0).await;
    let stderr = child.stderr.take().unwrap();
    let paused = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("paused before ack"))
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(60), paused)
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(bed.queue.pending_count("task-pending").await.unwrap(), 1);
    // kill -9: no chance to ack or to clean up.
    child.kill().unwrap();
    child.wait().unwrap();

    let (stop, handle) = bed.start(bed.settings());
    wait_until("the redelivered message to be consumed", || async {
        bed.ready("task-pending").await == 0
    })
    .await;
    // Give a duplicate job the time to appear if the idempotency key failed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    handle.await.unwrap();
    assert_eq!(
        bed.ready("task-pending").await,
        0,
        "the redelivered message was acked"
    );
    assert_eq!(bed.queue.pending_count("task-pending").await.unwrap(), 1);
    let _ = std::fs::remove_dir_all(dir);
    bed.cleanup().await;
}

fn child_config(bed: &Bed) -> String {
    serde_json::json!({
        "taskcluster_queue_config": {"rootUrl": "http://127.0.0.1:1", "credentials": {"clientId": "c", "accessToken": "t"}},
        "buildbot_scheduler_db": "sqlite::memory:",
        "bbb_db": "sqlite::memory:",
        "selfserve_url": "http://127.0.0.1:1/self-serve",
        "pulse_url": AMQP,
        "pulse_queue_basename": format!("{}/queue", bed.name),
        "redis_url": REDIS,
        "redis": {"prefix": bed.name, "idempotency_ttl": 600},
        "tc_worker_group": "g",
        "tc_worker_id": "w",
        "tclistener": {"pulse_exchange_basename": format!("{}/exchange", bed.name), "worker_type": "buildbot-bridge", "provisioner_id": "buildbot-bridge"},
        "bblistener": {"pulse_exchange": bed.bb_exchange()},
        "ingest": {"declare_exchanges": true},
    })
    .to_string()
}

/// A TCP proxy to Redis that a test can cut (every connection dropped, new ones refused) and
/// restore: Redis "going away" for this test only.
struct CuttableProxy {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl CuttableProxy {
    async fn start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (up2, gen2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let mut cut = gen2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:6379").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_is_down_messages_stay_unacked_and_become_jobs_once_it_is_back() {
    let bed = Bed::new().await;
    let proxy = CuttableProxy::start().await;
    let url = SecretUrl::new(format!("redis://127.0.0.1:{}/0", proxy.port));
    let via_proxy = JobQueue::new(
        bbb_shared::queue::connect(&url).await.unwrap(),
        bed.queue.settings().clone(),
    );
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(bbb_ingest::run(bed.settings(), via_proxy, rx));
    bed.wait_exchange().await;
    bed.publish_pending(TASK, 0).await;
    wait_until("the first job", || async {
        bed.queue.pending_count("task-pending").await.unwrap() == 1
    })
    .await;

    proxy.cut();
    bed.publish_pending(TASK, 1).await;
    bed.publish_pending(TASK, 2).await;
    // The messages are delivered but cannot be stored: nacked back to the queue, again and
    // again, never acked and never lost.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bed.queue.pending_count("task-pending").await.unwrap(), 1);

    proxy.restore();
    wait_until("the two held-back jobs", || async {
        bed.queue.pending_count("task-pending").await.unwrap() == 3
    })
    .await;
    tx.send(true).unwrap();
    handle.await.unwrap();
    assert_eq!(bed.ready("task-pending").await, 0);
    bed.cleanup().await;
}

/// Closes this test's ingest connection from the broker side, as a broker restart would.
fn close_connection_on_the_broker(name: &str) -> bool {
    let out = Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "name", "client_properties"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let Some(line) = listing.lines().find(|l| l.contains(name)) else {
        return false;
    };
    let pid = line.split('\t').next().unwrap();
    Command::new("rabbitmqctl")
        .args(["close_connection", pid, "closed by a test"])
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_reconnects_after_the_broker_closes_its_connection() {
    let bed = Bed::new().await;
    let settings = bed.settings();
    let name = settings.connection_name.clone();
    let (stop, handle) = bed.start(settings);
    bed.wait_exchange().await;
    bed.publish_pending(TASK, 0).await;
    wait_until("the first job", || async {
        bed.queue.pending_count("task-pending").await.unwrap() == 1
    })
    .await;
    assert!(
        close_connection_on_the_broker(&name),
        "the ingest's connection {name} was listed"
    );
    bed.publish_pending(TASK, 1).await;
    wait_until(
        "the job published after the broker closed the connection",
        || async { bed.queue.pending_count("task-pending").await.unwrap() == 2 },
    )
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();
    assert_eq!(bed.ready("task-pending").await, 0);
    bed.cleanup().await;
}
