//! The queue emulator driven by the official `taskcluster` 114 client (and `taskcluster-upload`
//! for object artifacts), so Hawk, URL encoding and bodies are exactly what the bridge sends,
//! with its messages read back from a real RabbitMQ. Each test has its own exchanges and a
//! server on a free port, so tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::VecDeque,
    time::{Duration, Instant, SystemTime},
};

use bbb_sandbox::tc::EXCHANGES;
use bbb_sandbox::{
    clock::Clock,
    pulse::Publisher,
    settings::ClientSpec,
    tc::{Fault, TcQueue, TcSettings, slugid},
};
use bbb_shared::secret::SecretUrl;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt as _;
use lapin::{
    Channel, Connection, ConnectionProperties, Consumer, ExchangeKind,
    options::{
        BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};
use serde_json::{Value, json};
use taskcluster::{ClientBuilder, Credentials, Object, Queue, Retry};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const BRIDGE_ID: &str = "bridge";
const BRIDGE_TOKEN: &str = "bridge-token";
const WAIT: Duration = Duration::from_secs(10);

/// A message as a consumer bound to every queue exchange received it.
#[derive(Debug, Clone)]
struct Received {
    /// The exchange name after the basename (`task-pending`, ...).
    exchange: String,
    routing_key: String,
    body: Value,
}

struct Bed {
    tc: TcQueue,
    basename: String,
    channel: Channel,
    consumer: Consumer,
    seen: VecDeque<Received>,
    _conn: Connection,
}

impl Bed {
    async fn new() -> Bed {
        Bed::with(|_| {}).await
    }

    async fn with(adjust: impl FnOnce(&mut TcSettings)) -> Bed {
        let name = format!(
            "bbbtest-{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let basename = format!("{name}/exchange/taskcluster-queue/v1");
        let mut settings = TcSettings {
            exchange_basename: basename.clone(),
            clients: vec![
                ClientSpec {
                    client_id: "limited".into(),
                    access_token: "limited-token".into(),
                    scopes: vec!["queue:status:*".into(), "queue:get-task:*".into()],
                },
                ClientSpec {
                    client_id: "nobody".into(),
                    access_token: "nobody-token".into(),
                    scopes: vec![],
                },
            ],
            ..TcSettings::default()
        };
        adjust(&mut settings);
        let conn = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let queue = format!("{name}/queue/all");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        for ex in EXCHANGES {
            let exchange = format!("{basename}/{ex}");
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "tc-queue-test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let publisher = Publisher::connect(&SecretUrl::new(AMQP)).await.unwrap();
        let tc = TcQueue::start(
            settings,
            (BRIDGE_ID.into(), BRIDGE_TOKEN.into()),
            Clock::new(),
            publisher,
        )
        .await
        .unwrap();
        Bed {
            tc,
            basename,
            channel,
            consumer,
            seen: VecDeque::new(),
            _conn: conn,
        }
    }

    /// Stops the emulator and deletes this test's exchanges.
    async fn finish(self) {
        self.tc.clone().shutdown().await;
        for ex in EXCHANGES {
            let exchange = format!("{}/{ex}", self.basename);
            let _ = self
                .channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }

    fn client(&self) -> ClientBuilder {
        ClientBuilder::new(self.tc.root_url())
    }

    fn queue(&self) -> Queue {
        self.queue_as(BRIDGE_ID, BRIDGE_TOKEN)
    }

    fn queue_as(&self, id: &str, token: &str) -> Queue {
        Queue::new(self.client().credentials(Credentials::new(id, token))).unwrap()
    }

    fn now(&self) -> DateTime<Utc> {
        self.tc.clock().now()
    }

    fn definition(&self) -> Value {
        let now = self.now();
        json!({
            "provisionerId": "buildbot-bridge",
            "workerType": "buildbot-bridge",
            "schedulerId": "gecko-level-3",
            "routes": ["index.bbb.test"],
            "created": time(now),
            "deadline": time(now + chrono::Duration::hours(1)),
            "payload": {"buildername": "Linux x86-64 mozilla-inbound build", "properties": {"product": "firefox"}},
            "metadata": {"name": "t", "description": "d", "owner": "bbb@example.com", "source": "https://example.com/bbb"},
            "tags": {"kind": "test"},
        })
    }

    /// Creates a task through the API; returns its id.
    async fn create(&self) -> String {
        let task_id = slugid();
        self.queue()
            .createTask(&task_id, &self.definition())
            .await
            .unwrap();
        task_id
    }

    /// Creates a task and claims run 0 as `group/worker`.
    async fn create_claimed(&self) -> String {
        let task_id = self.create().await;
        self.queue()
            .claimTask(&task_id, "0", &claim("worker"))
            .await
            .unwrap();
        task_id
    }

    /// The first message (received now or before, not yet taken) that `pred` accepts.
    async fn message(&mut self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let delivery = tokio::time::timeout(left, self.consumer.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {what} message within {WAIT:?}; other messages: {:#?}",
                        self.seen
                    )
                })
                .unwrap()
                .unwrap();
            let received = Received {
                exchange: delivery
                    .exchange
                    .as_str()
                    .trim_start_matches(&format!("{}/", self.basename))
                    .to_owned(),
                routing_key: delivery.routing_key.as_str().to_owned(),
                body: serde_json::from_slice(&delivery.data).unwrap(),
            };
            if pred(&received) {
                return received;
            }
            self.seen.push_back(received);
        }
    }

    /// The primary-key message on `exchange` about `task_id` (and `run_id` when given).
    async fn event(&mut self, exchange: &str, task_id: &str, run_id: Option<u64>) -> Received {
        let what = format!("{exchange} of {task_id}");
        self.message(&what, |m| {
            m.exchange == exchange
                && m.routing_key.starts_with("primary.")
                && m.body["status"]["taskId"] == task_id
                && run_id.is_none_or(|r| m.body["runId"] == r)
        })
        .await
    }

    /// A request signed with the hawk crate at a chosen time (bodies are JSON).
    async fn signed(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        ts: SystemTime,
    ) -> reqwest::Response {
        let addr = self.tc.addr();
        let host = addr.ip().to_string();
        let creds = hawk::Credentials {
            id: BRIDGE_ID.into(),
            key: hawk::Key::new(BRIDGE_TOKEN, hawk::SHA256).unwrap(),
        };
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let hash = bytes
            .as_ref()
            .map(|b| hawk::PayloadHasher::hash("application/json", hawk::SHA256, b).unwrap());
        let mut builder = hawk::RequestBuilder::new(method, &host, addr.port(), path);
        if let Some(h) = &hash {
            builder = builder.hash(&h[..]);
        }
        let header = builder
            .request()
            .make_header_full(&creds, ts, "nonce1")
            .unwrap();
        let client = reqwest::Client::new();
        let mut req = client
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.tc.root_url()),
            )
            .header("Authorization", format!("Hawk {header}"));
        if let Some(b) = bytes {
            req = req.header("Content-Type", "application/json").body(b);
        }
        req.send().await.unwrap()
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse(s: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// The HTTP status of a client error.
fn code(r: anyhow::Result<impl std::fmt::Debug>) -> u16 {
    let err = r.expect_err("the call should have failed");
    taskcluster::err_status_code(&err)
        .unwrap_or_else(|| panic!("not an HTTP error: {err:#}"))
        .as_u16()
}

/// A claimTask body for worker `group/<worker>`.
fn claim(worker: &str) -> Value {
    json!({"workerGroup": "group", "workerId": worker})
}

#[tokio::test]
async fn a_created_task_is_announced_defined_then_pending_and_an_identical_repeat_is_accepted() {
    let mut bed = Bed::new().await;
    let q = bed.queue();
    let task_id = slugid();
    let def = bed.definition();
    let created = q.createTask(&task_id, &def).await.unwrap();
    assert_eq!(created["status"]["state"], "pending");
    assert_eq!(created["status"]["runs"][0]["reasonCreated"], "scheduled");
    assert_eq!(created["status"]["retriesLeft"], 5);

    let defined = bed.event("task-defined", &task_id, None).await;
    assert_eq!(
        defined.routing_key,
        format!(
            "primary.{task_id}._._._.buildbot-bridge.buildbot-bridge.gecko-level-3.{task_id}._"
        )
    );
    assert_eq!(defined.body["status"]["state"], "unscheduled");
    let pending = bed.event("task-pending", &task_id, Some(0)).await;
    assert_eq!(
        pending.routing_key,
        format!(
            "primary.{task_id}.0._._.buildbot-bridge.buildbot-bridge.gecko-level-3.{task_id}._"
        )
    );
    assert_eq!(pending.body["version"], 1);
    assert_eq!(pending.body["task"], json!({"tags": {"kind": "test"}}));
    assert_eq!(
        pending.body["status"]["taskQueueId"],
        "buildbot-bridge/buildbot-bridge"
    );
    // The task route is a CC routing key.
    let cc = bed
        .message("CC of task-pending", |m| {
            m.exchange == "task-pending" && m.routing_key == "route.index.bbb.test"
        })
        .await;
    assert_eq!(cc.body, pending.body);

    let task = q.task(&task_id).await.unwrap();
    assert_eq!(task["priority"], "lowest");
    assert_eq!(task["projectId"], "none");
    assert_eq!(task["taskGroupId"], task_id.as_str());
    assert_eq!(task["retries"], 5);
    assert_eq!(
        parse(&task["expires"]),
        parse(&task["deadline"]) + chrono::Duration::days(365)
    );

    q.createTask(&task_id, &def).await.unwrap();
    let mut different = def.clone();
    different["payload"]["buildername"] = json!("something else");
    assert_eq!(code(q.createTask(&task_id, &different).await), 409);
    bed.finish().await;
}

#[tokio::test]
async fn create_task_checks_created_and_deadline_against_the_sandbox_clock() {
    let bed = Bed::new().await;
    let q = bed.queue();
    let mut def = bed.definition();
    def["created"] = json!(time(bed.now() - chrono::Duration::minutes(16)));
    assert_eq!(code(q.createTask(&slugid(), &def).await), 400);
    let mut def = bed.definition();
    def["deadline"] = json!(time(bed.now() + chrono::Duration::days(6)));
    assert_eq!(code(q.createTask(&slugid(), &def).await), 400);
    let mut def = bed.definition();
    def["priority"] = json!("normal");
    assert_eq!(code(q.createTask(&slugid(), &def).await), 400);

    // Moving the clock moves what "now" is: a definition made before is now stale.
    let def = bed.definition();
    bed.tc.clock().advance(chrono::Duration::minutes(20));
    assert_eq!(code(q.createTask(&slugid(), &def).await), 400);
    // The control API can still create it.
    let status = bed.tc.create_task_unchecked(&slugid(), def).await.unwrap();
    assert_eq!(status["state"], "pending");
    bed.finish().await;
}

#[tokio::test]
async fn a_claim_by_another_worker_is_409_and_the_holder_claiming_again_gets_its_original_claim() {
    let mut bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create().await;
    let before = bed.now();
    let claimed = q.claimTask(&task_id, "0", &claim("worker")).await.unwrap();
    let taken_until = parse(&claimed["takenUntil"]);
    let expected = before + chrono::Duration::seconds(1200);
    assert!(
        (taken_until - expected).num_seconds().abs() <= 5,
        "{taken_until} vs {expected}"
    );
    assert_eq!(claimed["status"]["runs"][0]["state"], "running");
    assert_eq!(
        claimed["task"]["payload"]["buildername"],
        "Linux x86-64 mozilla-inbound build"
    );
    assert!(claimed["credentials"]["certificate"].is_string());

    let running = bed.event("task-running", &task_id, Some(0)).await;
    assert_eq!(
        running.routing_key,
        format!(
            "primary.{task_id}.0.group.worker.buildbot-bridge.buildbot-bridge.gecko-level-3.{task_id}._"
        )
    );
    assert_eq!(running.body["workerGroup"], "group");
    assert_eq!(running.body["workerId"], "worker");
    assert_eq!(running.body["takenUntil"], claimed["takenUntil"]);

    assert_eq!(code(q.claimTask(&task_id, "0", &claim("other")).await), 409);
    bed.tc.clock().advance(chrono::Duration::minutes(1));
    let again = q.claimTask(&task_id, "0", &claim("worker")).await.unwrap();
    assert_eq!(again["takenUntil"], claimed["takenUntil"]);
    bed.event("task-running", &task_id, Some(0)).await;
    // A run that does not exist, or a task that does not.
    assert_eq!(
        code(q.claimTask(&task_id, "1", &claim("worker")).await),
        404
    );
    assert_eq!(
        code(q.claimTask(&slugid(), "0", &claim("worker")).await),
        404
    );
    bed.finish().await;
}

#[tokio::test]
async fn reports_resolve_the_run_once_and_conflict_with_any_other_resolution() {
    let mut bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    let done = q.reportCompleted(&task_id, "0").await.unwrap();
    assert_eq!(done["status"]["state"], "completed");
    let completed = bed.event("task-completed", &task_id, Some(0)).await;
    assert_eq!(completed.body["workerId"], "worker");
    assert_eq!(
        completed.body["status"]["runs"][0]["reasonResolved"],
        "completed"
    );
    // Repeating the same report is fine and publishes again.
    q.reportCompleted(&task_id, "0").await.unwrap();
    bed.event("task-completed", &task_id, Some(0)).await;

    assert_eq!(code(q.reportFailed(&task_id, "0").await), 409);
    assert_eq!(
        code(
            q.reportException(&task_id, "0", &json!({"reason": "internal-error"}))
                .await
        ),
        409
    );
    assert_eq!(code(q.reclaimTask(&task_id, "0").await), 409);
    assert_eq!(
        code(q.claimTask(&task_id, "0", &claim("worker")).await),
        409
    );
    assert_eq!(code(q.reportCompleted(&task_id, "3").await), 404);
    assert_eq!(code(q.reportCompleted(&slugid(), "0").await), 404);
    assert_eq!(code(q.status(&slugid()).await), 404);

    // Failed, on another task.
    let other = bed.create_claimed().await;
    q.reportFailed(&other, "0").await.unwrap();
    let failed = bed.event("task-failed", &other, Some(0)).await;
    assert_eq!(failed.body["status"]["state"], "failed");
    assert_eq!(code(q.reportCompleted(&other, "0").await), 409);
    bed.finish().await;
}

#[tokio::test]
async fn a_pending_run_cannot_be_reported_until_it_is_claimed() {
    let bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create().await;
    assert_eq!(
        code(
            q.reportException(&task_id, "0", &json!({"reason": "malformed-payload"}))
                .await
        ),
        409
    );
    q.claimTask(&task_id, "0", &claim("worker")).await.unwrap();
    let r = q
        .reportException(&task_id, "0", &json!({"reason": "malformed-payload"}))
        .await
        .unwrap();
    assert_eq!(
        r["status"]["runs"][0]["reasonResolved"],
        "malformed-payload"
    );
    assert_eq!(r["status"]["runs"].as_array().unwrap().len(), 1);
    bed.finish().await;
}

#[tokio::test]
async fn worker_shutdown_adds_a_retry_run_and_other_exceptions_resolve_the_task() {
    let mut bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    let r = q
        .reportException(&task_id, "0", &json!({"reason": "worker-shutdown"}))
        .await
        .unwrap();
    assert_eq!(r["status"]["state"], "pending");
    assert_eq!(r["status"]["retriesLeft"], 4);
    assert_eq!(r["status"]["runs"][1]["reasonCreated"], "retry");
    let pending = bed.event("task-pending", &task_id, Some(1)).await;
    assert_eq!(
        pending.body["status"]["runs"][0]["reasonResolved"],
        "worker-shutdown"
    );
    // The same report again is fine; another reason is not.
    q.reportException(&task_id, "0", &json!({"reason": "worker-shutdown"}))
        .await
        .unwrap();
    assert_eq!(
        code(
            q.reportException(&task_id, "0", &json!({"reason": "internal-error"}))
                .await
        ),
        409
    );

    q.claimTask(&task_id, "1", &claim("worker")).await.unwrap();
    q.reportException(&task_id, "1", &json!({"reason": "malformed-payload"}))
        .await
        .unwrap();
    let exception = bed.event("task-exception", &task_id, Some(1)).await;
    assert_eq!(exception.body["workerGroup"], "group");
    assert_eq!(exception.body["status"]["state"], "exception");
    assert_eq!(
        exception.routing_key,
        format!(
            "primary.{task_id}.1.group.worker.buildbot-bridge.buildbot-bridge.gecko-level-3.{task_id}._"
        )
    );
    // superseded is retired: a schema violation.
    assert_eq!(
        code(
            q.reportException(&task_id, "1", &json!({"reason": "superseded"}))
                .await
        ),
        400
    );
    bed.finish().await;
}

#[tokio::test]
async fn an_expired_claim_becomes_claim_expired_with_a_retry_run_as_soon_as_the_clock_passes_taken_until()
 {
    let mut bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    bed.tc.clock().advance(chrono::Duration::seconds(1201));

    // Visible at once, through the API and the handle.
    assert_eq!(code(q.reclaimTask(&task_id, "0").await), 409);
    let status = q.status(&task_id).await.unwrap()["status"].clone();
    assert_eq!(status["runs"][0]["state"], "exception");
    assert_eq!(status["runs"][0]["reasonResolved"], "claim-expired");
    assert_eq!(status["runs"][0]["workerId"], "worker");
    assert_eq!(status["runs"][1]["state"], "pending");
    assert_eq!(status["runs"][1]["reasonCreated"], "retry");
    assert_eq!(status["retriesLeft"], 4);
    assert_eq!(bed.tc.status(&task_id).unwrap(), status);

    let exception = bed.event("task-exception", &task_id, Some(0)).await;
    assert_eq!(exception.body["workerId"], "worker");
    assert_eq!(exception.body["status"]["runs"][1]["state"], "pending");
    let pending = bed.event("task-pending", &task_id, Some(1)).await;
    assert_eq!(pending.body["task"]["tags"]["kind"], "test");
    // The retry run can be claimed.
    q.claimTask(&task_id, "1", &claim("worker")).await.unwrap();
    bed.finish().await;
}

#[tokio::test]
async fn the_resolver_expires_claims_without_any_api_call() {
    let mut bed = Bed::new().await;
    let task_id = bed.create_claimed().await;
    bed.tc.clock().advance(chrono::Duration::seconds(1201));
    let exception = bed.event("task-exception", &task_id, Some(0)).await;
    assert_eq!(
        exception.body["status"]["runs"][0]["reasonResolved"],
        "claim-expired"
    );
    bed.event("task-pending", &task_id, Some(1)).await;
    bed.finish().await;
}

#[tokio::test]
async fn reclaim_extends_the_claim_from_now() {
    let bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    bed.tc.clock().advance(chrono::Duration::minutes(15));
    let before = bed.now();
    let r = q.reclaimTask(&task_id, "0").await.unwrap();
    let taken_until = parse(&r["takenUntil"]);
    assert!(
        (taken_until - (before + chrono::Duration::seconds(1200)))
            .num_seconds()
            .abs()
            <= 5
    );
    assert_eq!(r["workerId"], "worker");
    assert!(r["credentials"]["accessToken"].is_string());
    // Past the original takenUntil, the claim lives on.
    bed.tc.clock().advance(chrono::Duration::minutes(10));
    assert_eq!(
        q.status(&task_id).await.unwrap()["status"]["state"],
        "running"
    );
    assert_eq!(code(q.reclaimTask(&task_id, "1").await), 404);
    bed.finish().await;
}

#[tokio::test]
async fn a_claim_timeout_can_be_configured() {
    let bed = Bed::with(|s| s.claim_timeout = Duration::from_secs(60)).await;
    let task_id = bed.create().await;
    let before = bed.now();
    let claimed = bed
        .queue()
        .claimTask(&task_id, "0", &claim("worker"))
        .await
        .unwrap();
    let taken_until = parse(&claimed["takenUntil"]);
    assert!(
        (taken_until - (before + chrono::Duration::seconds(60)))
            .num_seconds()
            .abs()
            <= 5
    );
    bed.finish().await;
}

#[tokio::test]
async fn past_the_deadline_a_task_is_deadline_exceeded_without_worker_fields_and_nothing_else_is_allowed()
 {
    let mut bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    bed.tc.clock().advance(chrono::Duration::minutes(61));

    let exception = bed.event("task-exception", &task_id, Some(0)).await;
    assert_eq!(
        exception.routing_key,
        format!(
            "primary.{task_id}.0._._.buildbot-bridge.buildbot-bridge.gecko-level-3.{task_id}._"
        )
    );
    assert!(exception.body.get("workerGroup").is_none());
    assert!(exception.body.get("workerId").is_none());
    let run = &exception.body["status"]["runs"][0];
    assert_eq!(run["reasonResolved"], "deadline-exceeded");
    assert_eq!(
        exception.body["status"]["runs"].as_array().unwrap().len(),
        1
    );

    assert_eq!(code(q.reclaimTask(&task_id, "0").await), 409);
    assert_eq!(code(q.rerunTask(&task_id).await), 409);
    assert_eq!(code(q.cancelTask(&task_id).await), 409);
    assert_eq!(code(q.reportCompleted(&task_id, "0").await), 409);

    // A pending task too; claiming it is refused for the deadline.
    let pending = bed.create().await;
    bed.tc.clock().advance(chrono::Duration::minutes(61));
    assert_eq!(
        code(q.claimTask(&pending, "0", &claim("worker")).await),
        409
    );
    assert_eq!(
        bed.tc.status(&pending).unwrap()["runs"][0]["reasonResolved"],
        "deadline-exceeded"
    );
    bed.finish().await;
}

#[tokio::test]
async fn rerun_adds_a_pending_run_until_fifty_runs() {
    let mut bed = Bed::new().await;
    let q = bed.queue();
    let task_id = slugid();
    let mut def = bed.definition();
    def["retries"] = json!(0);
    q.createTask(&task_id, &def).await.unwrap();
    // Pending: no change.
    let r = q.rerunTask(&task_id).await.unwrap();
    assert_eq!(r["status"]["runs"].as_array().unwrap().len(), 1);
    for run in 0..49 {
        let run = run.to_string();
        q.claimTask(&task_id, &run, &claim("worker")).await.unwrap();
        q.reportFailed(&task_id, &run).await.unwrap();
        let r = q.rerunTask(&task_id).await.unwrap();
        let runs = r["status"]["runs"].as_array().unwrap();
        assert_eq!(runs.last().unwrap()["reasonCreated"], "rerun");
    }
    let pending = bed.event("task-pending", &task_id, Some(49)).await;
    assert!(
        pending.body.get("task").is_none(),
        "rerunTask's task-pending has no task"
    );
    q.claimTask(&task_id, "49", &claim("worker")).await.unwrap();
    q.reportFailed(&task_id, "49").await.unwrap();
    assert_eq!(code(q.rerunTask(&task_id).await), 409);
    assert_eq!(code(q.rerunTask(&slugid()).await), 404);
    bed.finish().await;
}

#[tokio::test]
async fn cancel_resolves_pending_running_and_unscheduled_tasks_and_leaves_resolved_ones_alone() {
    let mut bed = Bed::new().await;
    let q = bed.queue();

    let pending = bed.create().await;
    let r = q.cancelTask(&pending).await.unwrap();
    assert_eq!(r["status"]["runs"][0]["reasonResolved"], "canceled");
    let m = bed.event("task-exception", &pending, Some(0)).await;
    assert!(m.body.get("workerId").is_none());
    assert!(m.routing_key.contains(&format!("{pending}.0._._.")));

    let running = bed.create_claimed().await;
    q.cancelTask(&running).await.unwrap();
    let m = bed.event("task-exception", &running, Some(0)).await;
    assert_eq!(m.body["workerId"], "worker");
    assert_eq!(m.body["status"]["runs"][0]["workerId"], "worker");
    assert_eq!(code(q.reclaimTask(&running, "0").await), 409);

    // Unscheduled: it depends on a task that has not completed.
    let unscheduled = slugid();
    let mut def = bed.definition();
    def["dependencies"] = json!([running]);
    let r = q.createTask(&unscheduled, &def).await.unwrap();
    assert_eq!(r["status"]["state"], "unscheduled");
    let r = q.cancelTask(&unscheduled).await.unwrap();
    let run = &r["status"]["runs"][0];
    assert_eq!(
        (run["state"].as_str(), run["reasonCreated"].as_str()),
        (Some("exception"), Some("exception"))
    );
    assert_eq!(run["reasonResolved"], "canceled");

    let completed = bed.create_claimed().await;
    q.reportCompleted(&completed, "0").await.unwrap();
    let r = q.cancelTask(&completed).await.unwrap();
    assert_eq!(r["status"]["state"], "completed");
    assert_eq!(code(q.cancelTask(&slugid()).await), 404);
    bed.finish().await;
}

#[tokio::test]
async fn a_task_is_scheduled_when_its_dependency_completes() {
    let mut bed = Bed::new().await;
    let q = bed.queue();
    let first = bed.create_claimed().await;
    let second = slugid();
    let mut def = bed.definition();
    def["dependencies"] = json!([first]);
    q.createTask(&second, &def).await.unwrap();
    q.reportCompleted(&first, "0").await.unwrap();
    bed.event("task-pending", &second, Some(0)).await;
    bed.finish().await;
}

#[tokio::test]
async fn a_wrong_access_token_or_a_skewed_timestamp_is_401_with_www_authenticate_hawk() {
    let bed = Bed::new().await;
    let task_id = bed.create().await;
    let wrong = bed.queue_as(BRIDGE_ID, "not-the-token");
    assert_eq!(code(wrong.status(&task_id).await), 401);
    let unknown = bed.queue_as("who", "tok");
    assert_eq!(code(unknown.status(&task_id).await), 401);
    // Authentication happens at the first scope check: claimTask looks the task up first,
    // and ping checks no scopes at all.
    assert_eq!(
        code(wrong.claimTask(&slugid(), "0", &claim("worker")).await),
        404
    );
    assert_eq!(
        code(wrong.claimTask(&task_id, "0", &claim("worker")).await),
        401
    );
    wrong.ping().await.unwrap();

    let path = format!("/api/queue/v1/task/{task_id}/status");
    let stale = SystemTime::now() - Duration::from_secs(20 * 60);
    let r = bed.signed("GET", &path, None, stale).await;
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "hawk");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "AuthenticationFailed");
    // Ten minutes off is within the allowed skew, even with the sandbox clock moved.
    bed.tc.clock().advance(chrono::Duration::minutes(30));
    let r = bed
        .signed(
            "GET",
            &path,
            None,
            SystemTime::now() - Duration::from_secs(10 * 60),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    bed.finish().await;
}

#[tokio::test]
async fn a_signed_payload_hash_must_match_the_body() {
    let bed = Bed::new().await;
    let task_id = bed.create().await;
    let path = format!("/api/queue/v1/task/{task_id}/runs/0/claim");
    let ok = bed
        .signed("POST", &path, Some(&claim("worker")), SystemTime::now())
        .await;
    assert_eq!(ok.status().as_u16(), 200);
    // Same header, other body.
    let addr = bed.tc.addr();
    let host = addr.ip().to_string();
    let creds = hawk::Credentials {
        id: BRIDGE_ID.into(),
        key: hawk::Key::new(BRIDGE_TOKEN, hawk::SHA256).unwrap(),
    };
    let hash = hawk::PayloadHasher::hash("application/json", hawk::SHA256, b"{}").unwrap();
    let header = hawk::RequestBuilder::new("POST", &host, addr.port(), &path)
        .hash(&hash[..])
        .request()
        .make_header(&creds)
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}{path}", bed.tc.root_url()))
        .header("Authorization", format!("Hawk {header}"))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&claim("worker")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    bed.finish().await;
}

#[tokio::test]
async fn scopes_are_checked_before_the_lookup_for_run_calls_and_after_it_for_claim_cancel_and_rerun()
 {
    let bed = Bed::new().await;
    let task_id = bed.create_claimed().await;
    let limited = bed.queue_as("limited", "limited-token");
    let nobody = bed.queue_as("nobody", "nobody-token");

    assert_eq!(
        limited.status(&task_id).await.unwrap()["status"]["taskId"],
        task_id.as_str()
    );
    assert_eq!(code(limited.status(&slugid()).await), 404);
    assert_eq!(code(limited.reportCompleted(&task_id, "0").await), 403);

    // Scope check first: 403 even for a task that does not exist.
    assert_eq!(code(nobody.status(&slugid()).await), 403);
    assert_eq!(code(nobody.task(&slugid()).await), 403);
    assert_eq!(code(nobody.reportCompleted(&slugid(), "0").await), 403);
    assert_eq!(code(nobody.reclaimTask(&slugid(), "0").await), 403);
    // Lookup first: 404 for an unknown task, 403 for a known one.
    assert_eq!(
        code(nobody.claimTask(&slugid(), "0", &claim("w")).await),
        404
    );
    assert_eq!(
        code(nobody.claimTask(&task_id, "0", &claim("w")).await),
        403
    );
    assert_eq!(code(nobody.cancelTask(&slugid()).await), 404);
    assert_eq!(code(nobody.cancelTask(&task_id).await), 403);
    assert_eq!(code(nobody.rerunTask(&task_id).await), 403);
    assert_eq!(
        code(nobody.createTask(&slugid(), &bed.definition()).await),
        403
    );

    // authorizedScopes narrow the bridge's own client.
    let narrowed = Queue::new(
        bed.client()
            .credentials(Credentials::new(BRIDGE_ID, BRIDGE_TOKEN))
            .authorized_scopes(["queue:status:*"]),
    )
    .unwrap();
    narrowed.status(&task_id).await.unwrap();
    assert_eq!(code(narrowed.reportCompleted(&task_id, "0").await), 403);

    // Anonymous callers have no scopes but the public artifacts'.
    let anonymous = Queue::new(bed.client()).unwrap();
    assert_eq!(code(anonymous.status(&task_id).await), 403);
    bed.finish().await;
}

#[tokio::test]
async fn the_temporary_credentials_of_a_claim_work_for_that_run_only() {
    let bed = Bed::new().await;
    let task_id = bed.create().await;
    let other = bed.create_claimed().await;
    let claimed = bed
        .queue()
        .claimTask(&task_id, "0", &claim("worker"))
        .await
        .unwrap();
    let c = &claimed["credentials"];
    assert!(
        c["clientId"]
            .as_str()
            .unwrap()
            .starts_with(&format!("task-client/{task_id}/0/on/group/worker/until/"))
    );
    let temp = Queue::new(bed.client().credentials(Credentials::new_with_certificate(
        c["clientId"].as_str().unwrap(),
        c["accessToken"].as_str().unwrap(),
        c["certificate"].as_str().unwrap(),
    )))
    .unwrap();
    temp.reclaimTask(&task_id, "0").await.unwrap();
    assert_eq!(code(temp.reportCompleted(&other, "0").await), 403);
    temp.reportCompleted(&task_id, "0").await.unwrap();
    bed.finish().await;
}

#[tokio::test]
async fn bad_parameters_bodies_and_content_types_are_400() {
    let bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create().await;
    assert_eq!(code(q.status("not-a-slugid").await), 400);
    assert_eq!(code(q.reclaimTask(&task_id, "zero").await), 400);
    let extra = json!({"workerGroup": "group", "workerId": "worker", "extra": 1});
    assert_eq!(code(q.claimTask(&task_id, "0", &extra).await), 400);
    let bad_worker = json!({"workerGroup": "group", "workerId": "a/b"});
    assert_eq!(code(q.claimTask(&task_id, "0", &bad_worker).await), 400);

    let r = reqwest::Client::new()
        .put(format!(
            "{}/api/queue/v1/task/{}",
            bed.tc.root_url(),
            slugid()
        ))
        .header("Content-Type", "text/plain")
        .body(serde_json::to_vec(&bed.definition()).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "MalformedPayload");
    bed.finish().await;
}

#[tokio::test]
async fn error_replies_have_the_taskcluster_shape() {
    let bed = Bed::new().await;
    let task_id = bed.create_claimed().await;
    let path = format!("/api/queue/v1/task/{task_id}/runs/0/claim");
    let r = bed
        .signed("POST", &path, Some(&claim("other")), SystemTime::now())
        .await;
    assert_eq!(r.status().as_u16(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "RequestConflict");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("Run 0 was already claimed by another worker."),
        "{message}"
    );
    assert!(message.contains("* method:     claimTask"), "{message}");
    assert!(message.contains("* statusCode: 409"), "{message}");
    assert_eq!(body["requestInfo"]["method"], "claimTask");
    assert_eq!(
        body["requestInfo"]["params"],
        json!({"taskId": task_id, "runId": "0"})
    );
    assert_eq!(body["requestInfo"]["payload"], claim("other"));
    assert!(body["requestInfo"]["time"].is_string());
    bed.finish().await;
}

/// An artifact body expiring with the task.
fn artifact(storage: &str, expires: &Value) -> Value {
    json!({"storageType": storage, "expires": expires, "contentType": "application/json"})
}

#[tokio::test]
async fn reference_and_error_artifacts_are_metadata_announced_at_once() {
    let mut bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    let expires = q.status(&task_id).await.unwrap()["status"]["expires"].clone();
    let name = "public/logs/live_backing.log.gz";
    let reference = json!({"storageType": "reference", "expires": expires, "contentType": "application/gzip", "url": "https://example.com/log.gz"});
    assert_eq!(
        q.createArtifact(&task_id, "0", name, &reference)
            .await
            .unwrap(),
        json!({"storageType": "reference"})
    );
    let created = bed.event("artifact-created", &task_id, Some(0)).await;
    assert_eq!(created.body["artifact"]["name"], name);
    assert_eq!(created.body["artifact"]["storageType"], "reference");
    assert_eq!(created.body["workerId"], "worker");
    // Identical again, or with a new url: fine. Another content type: conflict.
    q.createArtifact(&task_id, "0", name, &reference)
        .await
        .unwrap();
    let mut moved = reference.clone();
    moved["url"] = json!("https://example.com/elsewhere.gz");
    q.createArtifact(&task_id, "0", name, &moved).await.unwrap();
    let mut retyped = moved.clone();
    retyped["contentType"] = json!("text/plain");
    assert_eq!(
        code(q.createArtifact(&task_id, "0", name, &retyped).await),
        409
    );

    let got = q.getArtifact(&task_id, "0", name).await.unwrap();
    assert_eq!(
        got,
        json!({"storageType": "reference", "url": "https://example.com/elsewhere.gz"})
    );
    // Public artifacts need no credentials.
    let anonymous = Queue::new(bed.client()).unwrap();
    anonymous.getArtifact(&task_id, "0", name).await.unwrap();
    let listed = q.listArtifacts(&task_id, "0", None, None).await.unwrap();
    assert_eq!(listed["artifacts"][0]["name"], name);

    let error = json!({"storageType": "error", "expires": expires, "reason": "file-missing-on-worker", "message": "no such file"});
    q.createArtifact(&task_id, "0", "public/missing.txt", &error)
        .await
        .unwrap();
    assert_eq!(
        code(q.getArtifact(&task_id, "0", "public/missing.txt").await),
        424
    );
    assert_eq!(
        code(q.getArtifact(&task_id, "0", "public/nothing.txt").await),
        404
    );

    let records = bed.tc.artifacts(&task_id, 0);
    let record = records.iter().find(|a| a.name == name).unwrap();
    assert_eq!(
        record.url.as_deref(),
        Some("https://example.com/elsewhere.gz")
    );
    assert_eq!(record.content_type, "application/gzip");
    bed.finish().await;
}

#[tokio::test]
async fn artifact_rules_on_expiry_runs_and_resolution_follow_the_real_queue() {
    let bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    let task_expires = parse(&q.status(&task_id).await.unwrap()["status"]["expires"]);
    let at = |t: DateTime<Utc>| json!(time(t));

    // Later than the task: 400; equal: fine; long past: 400.
    let later = artifact(
        "reference",
        &at(task_expires + chrono::Duration::seconds(1)),
    );
    let mut later = later;
    later["url"] = json!("https://example.com/a");
    assert_eq!(
        code(q.createArtifact(&task_id, "0", "public/a", &later).await),
        400
    );
    let mut equal = later.clone();
    equal["expires"] = at(task_expires);
    q.createArtifact(&task_id, "0", "public/a", &equal)
        .await
        .unwrap();
    let mut past = equal.clone();
    past["expires"] = at(bed.now() - chrono::Duration::minutes(20));
    assert_eq!(
        code(q.createArtifact(&task_id, "0", "public/b", &past).await),
        400
    );
    // Unknown task or run, or a run never claimed: 400, not 404.
    assert_eq!(
        code(q.createArtifact(&slugid(), "0", "public/a", &equal).await),
        400
    );
    assert_eq!(
        code(q.createArtifact(&task_id, "4", "public/a", &equal).await),
        400
    );
    let unclaimed = bed.create().await;
    assert_eq!(
        code(q.createArtifact(&unclaimed, "0", "public/a", &equal).await),
        400
    );
    // Extra fields are a schema violation.
    let mut extra = equal.clone();
    extra["bogus"] = json!(true);
    assert_eq!(
        code(q.createArtifact(&task_id, "0", "public/c", &extra).await),
        400
    );

    // Resolved completed: 409. Resolved exception: 25 minutes of grace.
    q.reportCompleted(&task_id, "0").await.unwrap();
    assert_eq!(
        code(q.createArtifact(&task_id, "0", "public/c", &equal).await),
        409
    );
    let broken = bed.create_claimed().await;
    q.reportException(&broken, "0", &json!({"reason": "internal-error"}))
        .await
        .unwrap();
    q.createArtifact(&broken, "0", "public/c", &equal)
        .await
        .unwrap();
    bed.tc.clock().advance(chrono::Duration::minutes(26));
    assert_eq!(
        code(q.createArtifact(&broken, "0", "public/d", &equal).await),
        409
    );
    bed.finish().await;
}

#[tokio::test]
async fn s3_artifacts_take_a_put_with_the_same_content_type_and_read_back() {
    let bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    let expires = q.status(&task_id).await.unwrap()["status"]["expires"].clone();
    let name = "public/properties.json";
    let r = q
        .createArtifact(&task_id, "0", name, &artifact("s3", &expires))
        .await
        .unwrap();
    assert_eq!(r["storageType"], "s3");
    assert_eq!(r["contentType"], "application/json");
    let put_url = r["putUrl"].as_str().unwrap();
    let http = reqwest::Client::new();
    let body = br#"{"buildername": ["b", "Builder"]}"#.to_vec();
    let wrong = http
        .put(put_url)
        .header("Content-Type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 403);
    let ok = http
        .put(put_url)
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);

    let got = q.getArtifact(&task_id, "0", name).await.unwrap();
    let downloaded = http.get(got["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(downloaded.headers()["content-type"], "application/json");
    assert_eq!(downloaded.bytes().await.unwrap().to_vec(), body);
    let records = bed.tc.artifacts(&task_id, 0);
    assert_eq!(records[0].bytes.as_deref(), Some(&body[..]));
    // An identical repeat is fine (a fresh putUrl).
    q.createArtifact(&task_id, "0", name, &artifact("s3", &expires))
        .await
        .unwrap();
    // The putUrl lasts 45 minutes of sandbox time.
    bed.tc.clock().advance(chrono::Duration::minutes(46));
    let late = http
        .put(put_url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status().as_u16(), 403);
    bed.finish().await;
}

/// Uploads `data` as object artifact `name` of run 0 the way a worker does.
async fn upload_object(bed: &Bed, task_id: &str, name: &str, data: &[u8]) {
    let q = bed.queue();
    let expires = q.status(task_id).await.unwrap()["status"]["expires"].clone();
    let body = json!({"storageType": "object", "expires": expires, "contentType": "text/plain"});
    let r = q.createArtifact(task_id, "0", name, &body).await.unwrap();
    assert_eq!(r["name"], format!("t/{task_id}/0/{name}"));
    let c = &r["credentials"];
    let object = Object::new(bed.client().credentials(Credentials::new_with_certificate(
        c["clientId"].as_str().unwrap(),
        c["accessToken"].as_str().unwrap(),
        c["certificate"].as_str().unwrap(),
    )))
    .unwrap();
    taskcluster_upload::upload_from_buf(
        r["projectId"].as_str().unwrap(),
        r["name"].as_str().unwrap(),
        "text/plain",
        &parse(&r["expires"]),
        data,
        &Retry::default(),
        &object,
        r["uploadId"].as_str().unwrap(),
    )
    .await
    .unwrap();
    q.finishArtifact(task_id, "0", name, &json!({"uploadId": r["uploadId"]}))
        .await
        .unwrap();
}

#[tokio::test]
async fn object_artifacts_upload_inline_or_through_a_put_url_and_read_back() {
    let mut bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    let small = b"a small log".to_vec();
    let big: Vec<u8> = (0..20 * 1024).map(|i| (i % 251) as u8).collect();
    upload_object(&bed, &task_id, "public/small.txt", &small).await;
    upload_object(&bed, &task_id, "public/logs/big.log", &big).await;

    let created = bed.event("artifact-created", &task_id, Some(0)).await;
    assert_eq!(created.body["artifact"]["storageType"], "object");
    let names: Vec<String> = bed.tc.calls().into_iter().map(|c| c.name).collect();
    assert_eq!(names.iter().filter(|n| *n == "createUpload").count(), 2);
    assert_eq!(
        names.iter().filter(|n| *n == "objectUpload").count(),
        1,
        "only the big one PUTs: {names:?}"
    );

    let records = bed.tc.artifacts(&task_id, 0);
    let by_name = |n: &str| records.iter().find(|a| a.name == n).unwrap().clone();
    assert_eq!(by_name("public/small.txt").bytes.unwrap(), small);
    assert_eq!(by_name("public/logs/big.log").bytes.unwrap(), big);
    assert!(by_name("public/logs/big.log").present);

    let got = q
        .getArtifact(&task_id, "0", "public/logs/big.log")
        .await
        .unwrap();
    assert_eq!(got["storageType"], "object");
    let downloaded = reqwest::get(got["url"].as_str().unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(downloaded.to_vec(), big);
    // Each createArtifact of an object locks in a new upload: a repeat conflicts.
    let expires = q.status(&task_id).await.unwrap()["status"]["expires"].clone();
    let again = json!({"storageType": "object", "expires": expires, "contentType": "text/plain"});
    assert_eq!(
        code(
            q.createArtifact(&task_id, "0", "public/small.txt", &again)
                .await
        ),
        409
    );
    bed.finish().await;
}

#[tokio::test]
async fn finish_artifact_needs_the_finished_upload_with_its_upload_id() {
    let bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    let expires = q.status(&task_id).await.unwrap()["status"]["expires"].clone();
    let body = json!({"storageType": "object", "expires": expires, "contentType": "text/plain"});
    let r = q
        .createArtifact(&task_id, "0", "public/x", &body)
        .await
        .unwrap();
    let finish = |upload_id: Value| {
        let q = bed.queue();
        let task_id = task_id.clone();
        async move {
            q.finishArtifact(&task_id, "0", "public/x", &json!({"uploadId": upload_id}))
                .await
        }
    };
    assert_eq!(code(finish(r["uploadId"].clone()).await), 400);
    assert_eq!(code(finish(json!(slugid())).await), 400);
    assert_eq!(
        code(
            q.finishArtifact(&task_id, "0", "public/none", &json!({"uploadId": slugid()}))
                .await
        ),
        404
    );
    assert!(!bed.tc.artifacts(&task_id, 0)[0].present);
    bed.finish().await;
}

#[tokio::test]
async fn injected_500s_are_retried_by_the_client_and_the_call_log_shows_each_attempt() {
    let bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create().await;
    bed.tc.inject_fault("claimTask", Fault::Status(500), 2);
    q.claimTask(&task_id, "0", &claim("worker")).await.unwrap();
    let claims: Vec<_> = bed
        .tc
        .calls()
        .into_iter()
        .filter(|c| c.name == "claimTask")
        .collect();
    let statuses: Vec<u16> = claims.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert!(
        claims
            .iter()
            .all(|c| c.task_id.as_deref() == Some(task_id.as_str()) && c.run_id == Some(0))
    );
    assert_eq!(claims[0].method, "POST");
    let names: Vec<String> = bed.tc.calls().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["createTask", "claimTask", "claimTask", "claimTask"]);
    bed.finish().await;
}

#[tokio::test]
async fn an_injected_reset_is_a_transport_error_and_429_is_not_retried() {
    let bed = Bed::new().await;
    let q = bed.queue();
    let task_id = bed.create_claimed().await;
    bed.tc.inject_fault("status", Fault::Reset, 1);
    q.status(&task_id).await.unwrap();
    let statuses: Vec<u16> = bed
        .tc
        .calls()
        .into_iter()
        .filter(|c| c.name == "status")
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [0, 200]);

    let no_retry = Queue::new(
        bed.client()
            .credentials(Credentials::new(BRIDGE_ID, BRIDGE_TOKEN))
            .retry(Retry {
                retries: 0,
                ..Retry::default()
            }),
    )
    .unwrap();
    bed.tc.inject_fault("status", Fault::Reset, 1);
    let err = no_retry.status(&task_id).await.unwrap_err();
    assert!(
        taskcluster::err_status_code(&err).is_none(),
        "a reset has no status: {err:#}"
    );

    bed.tc.inject_fault("reclaimTask", Fault::Status(429), 1);
    assert_eq!(code(q.reclaimTask(&task_id, "0").await), 429);
    q.reclaimTask(&task_id, "0").await.unwrap();
    bed.finish().await;
}

#[tokio::test]
async fn an_injected_latency_delays_the_answer() {
    let bed = Bed::new().await;
    let task_id = bed.create().await;
    bed.tc
        .inject_fault("task", Fault::Latency(Duration::from_millis(400)), 1);
    let started = Instant::now();
    bed.queue().task(&task_id).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    let started = Instant::now();
    bed.queue().task(&task_id).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(400));
    bed.finish().await;
}

#[tokio::test]
async fn the_http_control_api_creates_tasks_moves_the_clock_injects_faults_and_lists_calls() {
    let bed = Bed::new().await;
    let http = reqwest::Client::new();
    let root = bed.tc.root_url();
    let task_id = slugid();
    let r = http
        .put(format!("{root}/_sandbox/tasks/{task_id}"))
        .json(&bed.definition())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["status"]["state"],
        "pending"
    );

    let r = http
        .post(format!("{root}/_sandbox/faults"))
        .json(&json!({"call": "claimTask", "status": 500, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    bed.queue()
        .claimTask(&task_id, "0", &claim("worker"))
        .await
        .unwrap();

    let r = http
        .post(format!("{root}/_sandbox/clock/advance"))
        .json(&json!({"seconds": 1201}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["offsetMs"], 1_201_000);
    let status: Value = http
        .get(format!("{root}/_sandbox/tasks/{task_id}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["status"]["runs"][0]["reasonResolved"],
        "claim-expired"
    );

    let calls: Value = http
        .get(format!("{root}/_sandbox/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims: Vec<&Value> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "claimTask")
        .collect();
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[0]["status"], 500);
    assert_eq!(claims[1]["taskId"], task_id.as_str());
    let unknown = http
        .get(format!("{root}/_sandbox/tasks/{}/status", slugid()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    bed.finish().await;
}
