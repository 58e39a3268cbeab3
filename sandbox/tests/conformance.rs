#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Conformance of the emulators with the recorded real examples of FORMATS.md.
//!
//! 1. Every sample round-trips unchanged (compared as JSON values) through the type the
//!    emulator renders that structure with: [`TaskStatus`] / [`RunStatus`] (queue, 1.3 and
//!    1.5), the task definition through the queue's own createTask / task calls, the Buildbot
//!    [`Envelope`] with its payloads and [`BuildDict`] (3), [`AllTheThings`] and
//!    [`SelfServeReply`] (4).
//! 2. What the running emulators publish and serve has the shape of the samples: the queue
//!    (real RabbitMQ) replays the sample's story (claim, claim expiry, retry) and its
//!    task-pending message and status structure have exactly the sample's keys, types and
//!    values (timestamps aside, checked by format and by their relations); a master on SQLite
//!    sends started and log_uploaded messages in which every key of the real sample is present
//!    with the same JSON type; self-serve answers and `allthethings.json` have the samples'
//!    keys.
//!
//! Samples marked "recorded" are copied verbatim from FORMATS.md; the others are built from
//! its field lists and say so.
use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use bbb_sandbox::{
    buildbot::{
        BuildDict, Envelope, FinishedPayload, LogUploadedPayload, Master, MasterSettings, Masters,
        PulseFaults, StartedPayload, builder_dir,
    },
    clock::Clock,
    pulse::Publisher,
    selfserve::{AllTheThings, SelfServe, SelfServeReply},
    tc::{RunStatus, TaskStatus, TcQueue, TcSettings},
};
use bbb_shared::{
    dburl::DbUrl,
    schedulerdb::{BuildRequestSpec, SchedulerDb, create_buildbot08_schema},
    secret::SecretUrl,
};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use taskcluster::{ClientBuilder, Credentials, Queue};

const WAIT: Duration = Duration::from_secs(30);
const BRIDGE_ID: &str = "bridge";
const BRIDGE_TOKEN: &str = "bridge-token";
const BUILDER: &str = "Linux x86-64 mozilla-inbound build";

// ---------------------------------------------------------------------------------------------
// Samples.

/// Recorded: FORMATS.md 1.5, task-pending after a claim-expired retry.
const TASK_PENDING: &str = r#"{"version":1,
 "status":{"taskId":"C4Anq1nwR_i_3PIWfaQGvA","provisionerId":"buildbot-bridge","workerType":"buildbot-bridge",
  "taskQueueId":"buildbot-bridge/buildbot-bridge","schedulerId":"gecko-level-3","projectId":"none",
  "taskGroupId":"XKk1dNKmRauR36Mlf8bZWA","priority":"lowest",
  "deadline":"2026-11-23T05:00:00.000Z","expires":"2027-11-23T05:00:00.000Z","retriesLeft":4,"state":"pending",
  "runs":[
   {"runId":0,"state":"exception","reasonCreated":"scheduled","reasonResolved":"claim-expired",
    "workerGroup":"buildbot-bridge","workerId":"buildbot-bridge","takenUntil":"2026-11-22T05:40:00.000Z",
    "scheduled":"2026-11-22T05:19:58.120Z","started":"2026-11-22T05:20:00.000Z","resolved":"2026-11-22T05:40:03.511Z"},
   {"runId":1,"state":"pending","reasonCreated":"retry","scheduled":"2026-11-22T05:40:03.511Z"}]},
 "task":{"tags":{}},
 "runId":1}"#;

/// Recorded: FORMATS.md 3, a real log_uploaded (trimmed, with a bridge taskId added).
const LOG_UPLOADED: &str = r#"{"_meta":{"exchange":"exchange/build/","serializer":"json","routing_key":"build.mozilla-inbound-linux64.1210.log_uploaded",
  "master_name":"buildbot-master71.bb.releng.use1.mozilla.com:/builds/buildbot/build1/master",
  "master_incarnation":"pid14770-boot1446339941","message_id":79368986,"sent":"2015-11-03T11:14:00-08:00"},
 "payload":{"build":{"slave":"bld-linux64-spot-132","builderName":"mozilla-inbound-linux64","text":["build","successful"],
  "number":1210,"currentStep":null,"results":0,"blame":["dev@example.com"],"reason":"scheduler","eta":null,"steps":[],
  "sourceStamp":{"repository":"","hasPatch":false,"project":"","branch":"integration/mozilla-inbound",
   "revision":"bd3d049a39ad16c75357edacf9f0867246012b7c","changes":[]},
  "times":["2015-11-03T18:23:44+0000","2015-11-03T19:13:31+0000"],
  "properties":[["branch","mozilla-inbound","Builder"],["buildername","Linux x86-64 mozilla-inbound build","Builder"],
   ["buildnumber",1210,"Build"],
   ["log_url","http://archive.example.org/mozilla-inbound-linux64-bm71-build1-build1210.txt.gz","postrun.py"],
   ["product","firefox","Builder"],["request_ids",[86737608],"postrun.py"],["request_times",{"86737608":1446575010},"postrun.py"],
   ["revision","bd3d049a39ad16c75357edacf9f0867246012b7c","Build"],["slavename","bld-linux64-spot-132","BuildSlave"],
   ["statusdb_id",79368986,"postrun.py"],["taskId","fNdN0Jx9TmKf0yv7uJ3Q1w","bbb"]]}}}"#;

/// Built from FORMATS.md 4 (no recorded document): the documented keys, builder entries as
/// BuildAPI lists them; the values of `properties`, `schedulers`, `master_builders` and
/// `slavepools` are illustrative (the bridge reads only the keys of `builders`).
const ALLTHETHINGS: &str = r#"{
  "builders": {
    "Linux x86-64 mozilla-inbound build": {
      "properties": {"branch": "mozilla-inbound", "platform": "linux64", "product": "firefox",
                     "repo_path": "integration/mozilla-inbound", "slavebuilddir": "m-in-l64-00000000000"},
      "shortname": "mozilla-inbound-linux64",
      "slavebuilddir": "m-in-l64-00000000000",
      "slavepool": "c0ad7a2b8e9a1a6f4a45d2b2d8d3f3b3e0b1c6f1"
    }
  },
  "schedulers": {"mozilla-inbound": {"downstream": ["Linux x86-64 mozilla-inbound build"], "type": "BuildbotBridgeScheduler"}},
  "master_builders": {"bm71-build1": ["Linux x86-64 mozilla-inbound build"]},
  "slavepools": {"c0ad7a2b8e9a1a6f4a45d2b2d8d3f3b3e0b1c6f1": ["bld-linux64-spot-132"]}
}"#;

/// FORMATS.md 4, with the placeholders filled in.
const SELFSERVE_NOT_FOUND: &str =
    r#"{"status":"FAILED","msg":"Request 999999 not found on branch mozilla-inbound"}"#;
const SELFSERVE_QUEUED: &str = r#"{"status":"OK","request_id":1}"#;

fn sample(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Built from FORMATS.md 3 ("no captured sample"): the recorded log_uploaded turned into the
/// started message the same Build sent: full builder name, not finished, no postrun
/// properties, `request_ids` in the payload.
fn started_sample() -> Value {
    let mut started = sample(LOG_UPLOADED);
    let build = &mut started["payload"]["build"];
    build["builderName"] = json!("Linux x86-64 mozilla-inbound build");
    build["results"] = Value::Null;
    build["text"] = json!([]);
    build["times"][1] = Value::Null;
    strip_postrun(build);
    let build = build.take();
    started["payload"] = json!({"request_ids": [86_737_608], "build": build});
    started["_meta"]["routing_key"] = json!("build.mozilla-inbound-linux64.1210.started");
    started["_meta"]["message_id"] = json!("01JC8Q3W7ZK1M4B7M1V3N0QZ2D");
    started
}

/// Built from FORMATS.md 3: the finished message of the same Build.
fn finished_sample() -> Value {
    let mut finished = sample(LOG_UPLOADED);
    let build = &mut finished["payload"]["build"];
    build["builderName"] = json!("Linux x86-64 mozilla-inbound build");
    strip_postrun(build);
    let build = build.take();
    finished["payload"] = json!({"build": build, "results": 0, "request_ids": [86_737_608]});
    finished["_meta"]["routing_key"] = json!("build.mozilla-inbound-linux64.1210.finished");
    finished["_meta"]["message_id"] = json!("01JC8Q3W7ZK1M4B7M1V3N0QZ2E");
    finished
}

const POSTRUN_PROPERTIES: [&str; 4] = ["log_url", "request_ids", "request_times", "statusdb_id"];

fn strip_postrun(build: &mut Value) {
    build["properties"]
        .as_array_mut()
        .unwrap()
        .retain(|p| !POSTRUN_PROPERTIES.contains(&p[0].as_str().unwrap()));
}

/// Built from FORMATS.md 1.3 (no recorded definition): every field the queue knows, set to
/// what the sample task has, with a bridge payload.
fn definition_sample() -> Value {
    json!({
        "provisionerId": "buildbot-bridge",
        "workerType": "buildbot-bridge",
        "taskQueueId": "buildbot-bridge/buildbot-bridge",
        "schedulerId": "gecko-level-3",
        "projectId": "none",
        "taskGroupId": "XKk1dNKmRauR36Mlf8bZWA",
        "dependencies": [],
        "requires": "all-completed",
        "routes": ["index.gecko.v2.mozilla-inbound.revision.bd3d049a39ad16c75357edacf9f0867246012b7c"],
        "priority": "lowest",
        "retries": 5,
        "created": "2026-11-22T05:19:58.120Z",
        "deadline": "2026-11-23T05:00:00.000Z",
        "expires": "2027-11-23T05:00:00.000Z",
        "scopes": [],
        "payload": {
            "buildername": "Linux x86-64 mozilla-inbound build",
            "sourcestamp": {
                "branch": "integration/mozilla-inbound",
                "revision": "bd3d049a39ad16c75357edacf9f0867246012b7c",
                "repository": "https://hg.mozilla.org/integration/mozilla-inbound",
                "project": "mozilla-inbound"
            },
            "properties": {"product": "firefox"}
        },
        "metadata": {
            "name": "Buildbot/mozilla-inbound linux64 build",
            "description": "Linux x86-64 mozilla-inbound build, through the Buildbot bridge",
            "owner": "dev@example.com",
            "source": "https://hg.mozilla.org/integration/mozilla-inbound/rev/bd3d049a39ad16c75357edacf9f0867246012b7c"
        },
        "tags": {},
        "extra": {}
    })
}

// ---------------------------------------------------------------------------------------------
// Comparing.

/// Deserializes `sample` into `T`, serializes it back and asserts nothing changed.
fn assert_round_trips<T: DeserializeOwned + Serialize>(what: &str, sample: &Value) -> T {
    let typed: T = serde_json::from_value(sample.clone())
        .unwrap_or_else(|e| panic!("{what} does not deserialize: {e}\n{sample:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back,
        sample,
        "{what} does not round-trip:\n{}",
        shape_diff(&back, sample)
    );
    typed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

fn kind(v: &Value) -> Kind {
    match v {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Bool,
        Value::Number(_) => Kind::Number,
        Value::String(_) => Kind::String,
        Value::Array(_) => Kind::Array,
        Value::Object(_) => Kind::Object,
    }
}

type Shape = BTreeMap<String, BTreeSet<Kind>>;

/// Every path (`$.status.runs[0].state`) with the JSON types found there. With `indexed`
/// false, the elements of an array all go under `path[]`.
fn shape(v: &Value, indexed: bool) -> Shape {
    fn walk(v: &Value, path: String, indexed: bool, out: &mut Shape) {
        out.entry(path.clone()).or_default().insert(kind(v));
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    walk(x, format!("{path}.{k}"), indexed, out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let p = if indexed {
                        format!("{path}[{i}]")
                    } else {
                        format!("{path}[]")
                    };
                    walk(x, p, indexed, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Shape::new();
    walk(v, "$".to_owned(), indexed, &mut out);
    out
}

fn shape_diff(live: &Value, sample: &Value) -> String {
    let (l, s) = (shape(live, true), shape(sample, true));
    let mut lines = Vec::new();
    for (p, k) in &s {
        match l.get(p) {
            None => lines.push(format!("  missing {p} ({k:?})")),
            Some(lk) if lk != k => lines.push(format!("  {p}: {lk:?}, sample {k:?}")),
            Some(_) => {}
        }
    }
    for (p, k) in &l {
        if !s.contains_key(p) {
            lines.push(format!("  extra {p} ({k:?})"));
        }
    }
    if lines.is_empty() {
        "  same keys and types; values differ".to_owned()
    } else {
        lines.join("\n")
    }
}

/// Exactly the same keys (array elements by index) with the same types.
fn assert_same_shape(what: &str, live: &Value, sample: &Value) {
    assert_eq!(
        shape(live, true),
        shape(sample, true),
        "{what} is not shaped like the sample:\n{}\nlive: {live:#}",
        shape_diff(live, sample)
    );
}

/// Every key of the sample is in `live` with the same JSON type, a null on either side
/// matching any type. Array elements are compared by their union (`path[]`), and only when
/// both arrays have some. Returns the sample paths `live` does not reach because its array is
/// empty there.
fn assert_covers(what: &str, live: &Value, sample: &Value) -> Vec<String> {
    let (l, s) = (shape(live, false), shape(sample, false));
    let mut problems = Vec::new();
    let mut unreached = Vec::new();
    'paths: for (p, kinds) in &s {
        let Some(live_kinds) = l.get(p) else {
            // Inside an array that is empty in `live`?
            for (i, _) in p.match_indices("[]") {
                if !l.contains_key(&p[..i + 2]) && l.contains_key(&p[..i]) {
                    unreached.push(p.clone());
                    continue 'paths;
                }
            }
            problems.push(format!("  missing {p} ({kinds:?})"));
            continue;
        };
        let strip = |k: &BTreeSet<Kind>| -> BTreeSet<Kind> {
            k.iter().copied().filter(|k| *k != Kind::Null).collect()
        };
        let (sk, lk) = (strip(kinds), strip(live_kinds));
        if !(sk == lk || sk.is_empty() || lk.is_empty()) {
            problems.push(format!("  {p}: {live_kinds:?}, sample {kinds:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{what} lacks keys of the sample or has other types:\n{}\nlive: {live:#}",
        problems.join("\n")
    );
    unreached
}

/// A master message with `payload.build.properties` (`[[name, value, source]]`) turned into
/// an object by name, so that property names are compared as keys (and the brids that key
/// `request_times` all named `<brid>`: they are data, not names).
fn by_property(message: &Value) -> Value {
    let mut m = message.clone();
    let build = &mut m["payload"]["build"];
    let props: serde_json::Map<String, Value> = build["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let p = p.as_array().unwrap();
            assert_eq!(p.len(), 3, "a property is [name, value, source]: {p:?}");
            let name = p[0].as_str().unwrap().to_owned();
            let mut value = p[1].clone();
            if name == "request_times" {
                let times = value.as_object().unwrap();
                assert!(times.keys().all(|k| k.parse::<i64>().is_ok()), "{value}");
                value = Value::Object(
                    times
                        .values()
                        .map(|t| ("<brid>".to_owned(), t.clone()))
                        .collect(),
                );
            }
            (name, json!({"value": value, "source": p[2]}))
        })
        .collect();
    build["properties"] = Value::Object(props);
    m
}

/// An object's keys, sorted (whatever order the map keeps).
fn sorted_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    keys.sort_unstable();
    keys
}

/// `2026-11-22T05:40:00.000Z`: the queue's (JavaScript's) format.
fn assert_queue_time(what: &str, v: &Value) -> DateTime<Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    let b = s.as_bytes();
    assert!(
        b.len() == 24 && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "{what} is not written like 2026-11-22T05:40:00.000Z: {s}"
    );
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what}: {s}: {e}"))
        .with_timezone(&Utc)
}

/// Same length, digits and separators as `like` (e.g. `2015-11-03T18:23:44+0000`), and `like`
/// itself when `fixed` characters must match (the offset).
fn assert_written_like(what: &str, value: &Value, like: &str, fixed_tail: usize) {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    let same = s.len() == like.len()
        && s.bytes().zip(like.bytes()).enumerate().all(|(i, (a, b))| {
            if i >= like.len() - fixed_tail {
                a == b
            } else {
                a.is_ascii_digit() == b.is_ascii_digit() && (b.is_ascii_digit() || a == b)
            }
        });
    assert!(same, "{what} is written {s:?}, the sample {like:?}");
}

/// Polls `check` until it gives a value; panics after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
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

fn pulse_url() -> String {
    std::env::var("BBB_TEST_PULSE_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn unique(prefix: &str) -> String {
    format!(
        "bbbtest-{prefix}-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    )
}

/// A message as received.
#[derive(Debug, Clone)]
struct Received {
    exchange: String,
    routing_key: String,
    body: Value,
}

/// Topic exchanges of one test on the real broker, all bound to one exclusive queue;
/// deleted by [`Bus::close`], or when dropped (a failed test).
struct Bus {
    conn: Connection,
    channel: Channel,
    exchanges: Vec<String>,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn delete_exchanges(channel: &Channel, exchanges: &[String]) {
    for exchange in exchanges {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let exchanges = std::mem::take(&mut self.exchanges);
        if exchanges.is_empty() {
            return;
        }
        // Not inside the test's runtime: a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let connected =
                    Connection::connect(&pulse_url(), ConnectionProperties::default()).await;
                if let Ok(conn) = connected {
                    if let Ok(channel) = conn.create_channel().await {
                        delete_exchanges(&channel, &exchanges).await;
                    }
                    let _ = conn.close(0, "done".into()).await;
                }
            });
        })
        .join();
    }
}

impl Bus {
    async fn new(exchanges: Vec<String>) -> Bus {
        let conn = Connection::connect(&pulse_url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        for exchange in &exchanges {
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
                    queue.name().clone(),
                    exchange.as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "conformance".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let body = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
                sink.lock().unwrap().push(Received {
                    exchange: delivery.exchange.to_string(),
                    routing_key: delivery.routing_key.to_string(),
                    body,
                });
            }
        });
        Bus {
            conn,
            channel,
            exchanges,
            received,
        }
    }

    async fn publisher() -> Publisher {
        Publisher::connect(&SecretUrl::new(pulse_url()))
            .await
            .unwrap()
    }

    /// The first message received on `exchange` that `pred` accepts.
    async fn message(
        &self,
        what: &str,
        exchange: &str,
        pred: impl Fn(&Received) -> bool,
    ) -> Received {
        eventually(what, || async {
            self.received
                .lock()
                .unwrap()
                .iter()
                .find(|m| m.exchange == exchange && pred(m))
                .cloned()
        })
        .await
    }

    async fn close(mut self) {
        let exchanges = std::mem::take(&mut self.exchanges);
        delete_exchanges(&self.channel, &exchanges).await;
        let _ = self.conn.close(0, "done".into()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The queue.

/// The queue emulator on its own exchanges, its clock set to the sample's time (the
/// sample's run 0 was scheduled at 05:19:58.120).
struct QueueBed {
    tc: TcQueue,
    basename: String,
    bus: Bus,
}

impl QueueBed {
    async fn new() -> QueueBed {
        let basename = format!("{}/exchange/taskcluster-queue/v1", unique("conformance"));
        let bus = Bus::new(
            bbb_sandbox::tc::EXCHANGES
                .iter()
                .map(|e| format!("{basename}/{e}"))
                .collect(),
        )
        .await;
        let clock = Clock::new();
        let settings = TcSettings {
            exchange_basename: basename.clone(),
            ..TcSettings::default()
        };
        let tc = TcQueue::start(
            settings,
            (BRIDGE_ID.into(), BRIDGE_TOKEN.into()),
            clock,
            Bus::publisher().await,
        )
        .await
        .unwrap();
        let bed = QueueBed { tc, basename, bus };
        bed.set_time("2026-11-22T05:19:58.120Z");
        bed
    }

    /// Moves the sandbox clock to about `at` (real time keeps running from there).
    fn set_time(&self, at: &str) {
        let at = DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&Utc);
        let clock = self.tc.clock();
        clock.advance(at - clock.now());
    }

    fn queue(&self) -> Queue {
        Queue::new(
            ClientBuilder::new(self.tc.root_url())
                .credentials(Credentials::new(BRIDGE_ID, BRIDGE_TOKEN)),
        )
        .unwrap()
    }

    /// The message on `<basename>/<exchange>` about run `run_id` (primary routing key).
    async fn event(&self, exchange: &str, task_id: &str, run_id: u64) -> Received {
        let full = format!("{}/{exchange}", self.basename);
        self.bus
            .message(&format!("{exchange} of {task_id}/{run_id}"), &full, |m| {
                m.routing_key.starts_with("primary.")
                    && m.body["status"]["taskId"] == task_id
                    && m.body["runId"] == run_id
            })
            .await
    }

    async fn finish(self) {
        self.tc.clone().shutdown().await;
        self.bus.close().await;
    }
}

#[test]
fn the_task_pending_sample_status_round_trips_through_the_queue_status_types() {
    let body = sample(TASK_PENDING);
    let status: TaskStatus = assert_round_trips("the sample's status", &body["status"]);
    assert_eq!(status.runs.len(), 2);
    for (i, run) in body["status"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_round_trips::<RunStatus>(&format!("the sample's run {i}"), run);
    }
    // The body around the status: nothing the emulator's messages would not carry.
    assert_eq!(sorted_keys(&body), ["runId", "status", "task", "version"]);
}

#[test]
fn queue_times_written_otherwise_are_read_and_written_back_as_the_queue_writes_them() {
    // FORMATS.md 1.3: "Timestamps are RFC 3339 (`...Z` or `+00:00`): parse generally." The
    // queue (JavaScript `Date`) writes them back to the millisecond with `Z`.
    let mut status = sample(TASK_PENDING)["status"].clone();
    status["deadline"] = json!("2026-11-23T05:00:00+00:00");
    status["runs"][0]["started"] = json!("2026-11-22T05:20:00.000123Z");
    status["runs"][1]["scheduled"] = json!("2026-11-22T06:40:03.511+01:00");
    let typed: TaskStatus = serde_json::from_value(status).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, sample(TASK_PENDING)["status"]);
    let mut bad = sample(TASK_PENDING)["status"].clone();
    bad["deadline"] = json!("tomorrow");
    assert!(serde_json::from_value::<TaskStatus>(bad).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_task_definition_round_trips_through_create_task_and_task() {
    let bed = QueueBed::new().await;
    let q = bed.queue();
    let task_id = "C4Anq1nwR_i_3PIWfaQGvA";
    let definition = definition_sample();
    let created = q.createTask(task_id, &definition).await.unwrap();
    assert_eq!(sorted_keys(&created), ["status"]);
    assert_round_trips::<TaskStatus>("createTask's status", &created["status"]);

    // The definition comes back exactly as given: every field was set, nothing to default.
    let stored = q.task(task_id).await.unwrap();
    assert_eq!(
        stored,
        definition,
        "task() differs from the definition given to createTask:\n{}",
        shape_diff(&stored, &definition)
    );

    // A fresh task's status: the sample's keys, but only the required ones in run 0.
    let status = q.status(task_id).await.unwrap();
    assert_round_trips::<TaskStatus>("status()'s status", &status["status"]);
    let sample_status = sample(TASK_PENDING)["status"].clone();
    assert_eq!(sorted_keys(&status["status"]), sorted_keys(&sample_status));
    assert_eq!(
        sorted_keys(&status["status"]["runs"][0]),
        ["reasonCreated", "runId", "scheduled", "state"]
    );
    assert_covers("the sample's status", &sample_status, &status["status"]);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_pending_after_a_claim_expiry_is_the_recorded_message() {
    let bed = QueueBed::new().await;
    let q = bed.queue();
    let recorded = sample(TASK_PENDING);
    let task_id = "C4Anq1nwR_i_3PIWfaQGvA";
    let group = "XKk1dNKmRauR36Mlf8bZWA";
    let now = bed
        .tc
        .clock()
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    q.createTask(
        task_id,
        &json!({
            "provisionerId": "buildbot-bridge",
            "workerType": "buildbot-bridge",
            "schedulerId": "gecko-level-3",
            "taskGroupId": group,
            "created": now,
            "deadline": "2026-11-23T05:00:00.000Z",
            "expires": "2027-11-23T05:00:00.000Z",
            "payload": {"buildername": BUILDER, "properties": {"product": "firefox"}},
            "metadata": {"name": "n", "description": "d", "owner": "dev@example.com", "source": "https://example.com/"},
        }),
    )
    .await
    .unwrap();

    // Run 0's task-pending: every key it has is in the sample, with the same type.
    let first = bed.event("task-pending", task_id, 0).await;
    assert_eq!(
        first.routing_key,
        format!("primary.{task_id}.0._._.buildbot-bridge.buildbot-bridge.gecko-level-3.{group}._")
    );
    assert_covers("the sample", &recorded, &first.body);
    assert_round_trips::<TaskStatus>("run 0's task-pending status", &first.body["status"]);

    // The sample's story: claimed at 05:20:00, never reclaimed, expired, retried.
    bed.set_time("2026-11-22T05:20:00.000Z");
    let claim = json!({"workerGroup": "buildbot-bridge", "workerId": "buildbot-bridge"});
    q.claimTask(task_id, "0", &claim).await.unwrap();
    bed.tc
        .clock()
        .advance(chrono::Duration::milliseconds(20 * 60 * 1000 + 3511));
    let retry = bed.event("task-pending", task_id, 1).await;
    assert_eq!(
        retry.routing_key,
        format!("primary.{task_id}.1._._.buildbot-bridge.buildbot-bridge.gecko-level-3.{group}._")
    );
    let live = &retry.body;
    assert_same_shape("the emulator's task-pending", live, &recorded);

    // Same values, timestamps aside: those are written the queue's way and related as in the
    // sample (takenUntil = claim + 20 min, run 1 scheduled when run 0 was resolved).
    let runs = &live["status"]["runs"];
    let started = assert_queue_time("started", &runs[0]["started"]);
    let taken_until = assert_queue_time("takenUntil", &runs[0]["takenUntil"]);
    let resolved = assert_queue_time("resolved", &runs[0]["resolved"]);
    assert_queue_time("run 0 scheduled", &runs[0]["scheduled"]);
    assert_eq!(taken_until - started, chrono::Duration::minutes(20));
    assert!(
        resolved >= taken_until,
        "resolved {resolved} before {taken_until}"
    );
    assert_eq!(runs[1]["scheduled"], runs[0]["resolved"]);
    let mut normalized = live.clone();
    for (i, field) in [
        (0, "scheduled"),
        (0, "started"),
        (0, "takenUntil"),
        (0, "resolved"),
        (1, "scheduled"),
    ] {
        normalized["status"]["runs"][i][field] = recorded["status"]["runs"][i][field].clone();
    }
    assert_eq!(
        normalized, recorded,
        "the emulator's task-pending differs from the recorded one"
    );

    // The status structure, as status() and the emulator's accessor give it.
    let status = q.status(task_id).await.unwrap();
    assert_eq!(status.as_object().unwrap().len(), 1);
    assert_same_shape("status()", &status["status"], &recorded["status"]);
    assert_eq!(status["status"], live["status"]);
    assert_round_trips::<TaskStatus>("status()'s status", &status["status"]);
    assert_eq!(bed.tc.status(task_id).unwrap(), status["status"]);
    bed.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Buildbot masters.

#[test]
fn the_master_message_samples_round_trip_through_the_envelope_and_build_types() {
    let log: Envelope<LogUploadedPayload> =
        assert_round_trips("the recorded log_uploaded", &sample(LOG_UPLOADED));
    assert_eq!(log.payload.build.times[0], Some(1_446_575_024));
    assert_eq!(
        log.meta.sent.map(|t| t.to_rfc3339()),
        Some("2015-11-03T11:14:00-08:00".to_owned())
    );
    let started: Envelope<StartedPayload> =
        assert_round_trips("the started message", &started_sample());
    assert_eq!(started.payload.build.times[1], None);
    assert_round_trips::<Envelope<FinishedPayload>>("the finished message", &finished_sample());
    assert_round_trips::<BuildDict>(
        "the recorded build",
        &sample(LOG_UPLOADED)["payload"]["build"],
    );
}

/// A scheduler DB in a temporary SQLite file, removed when dropped.
struct SqliteDb {
    url: DbUrl,
    path: PathBuf,
}

impl SqliteDb {
    fn new() -> SqliteDb {
        let path = std::env::temp_dir().join(format!("bbbtest_{:016x}.db", rand::random::<u64>()));
        SqliteDb {
            url: DbUrl::parse(&format!("sqlite:///{}", path.display())).unwrap(),
            path,
        }
    }
}

impl Drop for SqliteDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

fn request_spec(task_id: &str) -> BuildRequestSpec {
    let mut properties = serde_json::Map::new();
    properties.insert("product".into(), json!("firefox"));
    BuildRequestSpec {
        task_id: task_id.to_owned(),
        buildername: BUILDER.to_owned(),
        priority: 0,
        submitted_at: Utc::now().timestamp() - 30,
        branch: Some("integration/mozilla-inbound".to_owned()),
        revision: Some("bd3d049a39ad16c75357edacf9f0867246012b7c".to_owned()),
        repository: None,
        project: None,
        properties,
    }
}

/// `(value, source)` of a build's property.
fn property(build: &Value, name: &str) -> Option<(Value, String)> {
    build["properties"].as_array()?.iter().find_map(|p| {
        (p[0] == name).then(|| (p[1].clone(), p[2].as_str().unwrap_or("").to_owned()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_sends_started_and_log_uploaded_shaped_like_the_real_ones() {
    let db = SqliteDb::new();
    let sched = SchedulerDb::connect(&db.url).await.unwrap();
    create_buildbot08_schema(&sched).await.unwrap();
    let exchange = format!("{}/exchange/build/", unique("conformance"));
    let bus = Bus::new(vec![exchange.clone()]).await;
    let clock = Clock::new();
    let master = Master::start(
        MasterSettings {
            name: "bm71.bbb.test:/builds/buildbot/build1/master".to_owned(),
            builders: vec![BUILDER.to_owned()],
            poll_interval: Duration::from_millis(20),
            build_duration: Duration::from_millis(100),
            exchange: exchange.clone(),
            faults: PulseFaults::default(),
        },
        &db.url,
        clock.clone(),
        Bus::publisher().await,
    )
    .await
    .unwrap();
    let task_id = "fNdN0Jx9TmKf0yv7uJ3Q1w";
    let brid = sched
        .inject_buildrequest(&request_spec(task_id))
        .await
        .unwrap();
    let kind =
        |kind: &'static str| move |m: &Received| m.routing_key.ends_with(&format!(".{kind}"));
    let log = bus
        .message("log_uploaded", &exchange, kind("log_uploaded"))
        .await;
    let started = bus.message("started", &exchange, kind("started")).await;
    let finished = bus.message("finished", &exchange, kind("finished")).await;

    // The emulator's messages are what its own types say.
    let typed_log: Envelope<LogUploadedPayload> =
        assert_round_trips("the emulator's log_uploaded", &log.body);
    assert_round_trips::<Envelope<StartedPayload>>("the emulator's started", &started.body);
    assert_round_trips::<Envelope<FinishedPayload>>("the emulator's finished", &finished.body);

    // log_uploaded: every key of the recorded one (property names included), same types.
    let recorded = sample(LOG_UPLOADED);
    let unreached = assert_covers(
        "the emulator's log_uploaded",
        &by_property(&log.body),
        &by_property(&recorded),
    );
    // Only the blame list (bridge builds have no changes) is empty in the emulator.
    assert_eq!(unreached, ["$.payload.build.blame[]"]);
    let meta_keys = |m: &Value| sorted_keys(&m["_meta"]);
    assert_eq!(meta_keys(&log.body), meta_keys(&recorded));
    let payload_keys = |m: &Value| sorted_keys(&m["payload"]);
    assert_eq!(payload_keys(&log.body), ["build"]);
    let number = typed_log.payload.build.number;
    assert_eq!(
        log.routing_key,
        format!("build.{}.{number}.log_uploaded", builder_dir(BUILDER))
    );
    assert_eq!(log.body["_meta"]["routing_key"], log.routing_key.as_str());
    assert_eq!(log.body["_meta"]["exchange"], exchange.as_str());
    let build = &log.body["payload"]["build"];
    let recorded_build = &recorded["payload"]["build"];
    assert_eq!(build["builderName"], builder_dir(BUILDER).as_str());
    assert_eq!(
        log.body["_meta"]["message_id"],
        property(build, "statusdb_id").unwrap().0
    );
    // Sources as the real master and postrun set them (`product` comes from the request here,
    // source "bbb"; the recorded build's builder defined it, source "Builder").
    for name in [
        "branch",
        "buildername",
        "buildnumber",
        "log_url",
        "request_ids",
        "request_times",
        "revision",
        "slavename",
        "statusdb_id",
        "taskId",
    ] {
        assert_eq!(
            property(build, name).map(|p| p.1),
            property(recorded_build, name).map(|p| p.1),
            "source of property {name}"
        );
    }
    assert_eq!(property(build, "taskId").unwrap().0, task_id);
    assert_eq!(property(build, "request_ids").unwrap().0, json!([brid]));
    // Times and `sent` are written as in the sample.
    for i in 0..2 {
        assert_written_like(
            "a build time",
            &build["times"][i],
            recorded_build["times"][i].as_str().unwrap(),
            5,
        );
    }
    let sent = log.body["_meta"]["sent"].as_str().unwrap();
    assert_written_like(
        "_meta.sent",
        &log.body["_meta"]["sent"],
        if sent.ends_with("-07:00") {
            "2015-07-03T11:14:00-07:00"
        } else {
            "2015-11-03T11:14:00-08:00"
        },
        6,
    );

    // started: the same envelope; the build as in the recorded one, less postrun's
    // properties, not finished.
    let mut started_recorded = recorded.clone();
    strip_postrun(&mut started_recorded["payload"]["build"]);
    let without_message_id = |m: &Value| {
        let mut m = by_property(m);
        m["_meta"]
            .as_object_mut()
            .unwrap()
            .remove("message_id")
            .unwrap();
        m
    };
    let unreached = assert_covers(
        "the emulator's started",
        &without_message_id(&started.body),
        &without_message_id(&started_recorded),
    );
    assert_eq!(
        unreached,
        ["$.payload.build.blame[]", "$.payload.build.text[]"]
    );
    assert_eq!(meta_keys(&started.body), meta_keys(&recorded));
    assert!(started.body["_meta"]["message_id"].is_string());
    assert_eq!(payload_keys(&started.body), ["build", "request_ids"]);
    assert_eq!(started.body["payload"]["request_ids"], json!([brid]));
    let build = &started.body["payload"]["build"];
    assert_eq!(build["builderName"], BUILDER);
    assert_eq!(build["results"], Value::Null);
    assert_eq!(build["times"][1], Value::Null);
    assert_eq!(
        property(build, "taskId"),
        Some((json!(task_id), "bbb".to_owned()))
    );
    assert_eq!(
        started.routing_key,
        format!("build.{}.{number}.started", builder_dir(BUILDER))
    );

    // finished: as the recorded build, less postrun's properties, with results and request_ids.
    let mut finished_recorded = finished_sample();
    finished_recorded["payload"]["build"] = started_recorded["payload"]["build"].clone();
    let unreached = assert_covers(
        "the emulator's finished",
        &without_message_id(&finished.body),
        &without_message_id(&finished_recorded),
    );
    assert_eq!(unreached, ["$.payload.build.blame[]"]);
    assert_eq!(
        payload_keys(&finished.body),
        ["build", "request_ids", "results"]
    );

    master.shutdown().await;
    sched.close().await;
    bus.close().await;
}

// ---------------------------------------------------------------------------------------------
// Self-serve and allthethings.json.

#[test]
fn the_self_serve_samples_round_trip_through_the_emulator_types() {
    let att: AllTheThings = assert_round_trips("allthethings.json", &sample(ALLTHETHINGS));
    assert!(att.builders.contains_key(BUILDER));
    assert_eq!(
        assert_round_trips::<SelfServeReply>("a 404 answer", &sample(SELFSERVE_NOT_FOUND)),
        SelfServeReply::Failed {
            msg: "Request 999999 not found on branch mozilla-inbound".to_owned()
        }
    );
    assert_eq!(
        assert_round_trips::<SelfServeReply>("a queued answer", &sample(SELFSERVE_QUEUED)),
        SelfServeReply::Ok { request_id: 1 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_serve_answers_and_serves_allthethings_in_the_documented_shapes() {
    let db = SqliteDb::new();
    let sched = SchedulerDb::connect(&db.url).await.unwrap();
    create_buildbot08_schema(&sched).await.unwrap();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let selfserve = SelfServe::start(
        listen,
        "/buildapi/self-serve/",
        "/builders/allthethings.json",
        vec![BUILDER.to_owned()],
        &db.url,
        Masters::new(),
        Clock::new(),
        Duration::ZERO,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", selfserve.addr());

    let att: Value = http
        .get(format!("{base}/builders/allthethings.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let typed: AllTheThings = assert_round_trips("the served allthethings.json", &att);
    let recorded = sample(ALLTHETHINGS);
    assert_eq!(sorted_keys(&att), sorted_keys(&recorded));
    for key in ["builders", "schedulers", "master_builders", "slavepools"] {
        assert!(att[key].is_object(), "{key}");
    }
    assert_eq!(typed.builders.keys().collect::<Vec<_>>(), [BUILDER]);
    // A builder entry: the documented keys, same types (what `properties` holds varies).
    let entry = &att["builders"][BUILDER];
    let recorded_entry = &recorded["builders"][BUILDER];
    assert_eq!(sorted_keys(entry), sorted_keys(recorded_entry));
    for key in sorted_keys(recorded_entry) {
        assert_eq!(kind(&entry[&key]), kind(&recorded_entry[&key]), "{key}");
    }

    let delete = |path: String| {
        let http = http.clone();
        async move {
            let response = http
                .delete(path)
                .header("X-Remote-User", "buildbot-bridge")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let prefix = format!("{base}/buildapi/self-serve/mozilla-inbound");
    let (status, body) = delete(format!("{prefix}/request/999999?format=json")).await;
    assert_eq!(status, 404);
    assert_eq!(body, sample(SELFSERVE_NOT_FOUND));

    let brid = sched
        .inject_buildrequest(&request_spec("fNdN0Jx9TmKf0yv7uJ3Q1w"))
        .await
        .unwrap();
    let (status, body) = delete(format!("{prefix}/request/{brid}?format=json")).await;
    assert_eq!(status, 202);
    assert_same_shape("the queued answer", &body, &sample(SELFSERVE_QUEUED));
    let SelfServeReply::Ok { request_id: job } = assert_round_trips("the queued answer", &body)
    else {
        panic!("not an OK answer: {body}");
    };
    eventually("the cancellation job", || async {
        selfserve.job(job).filter(|j| j.completed_at.is_some())
    })
    .await;

    selfserve.shutdown().await;
    sched.close().await;
}
