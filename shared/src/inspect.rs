//! A snapshot of the bridge's queues for operators: `bbb queue`, the status page and the
//! queue gauges of `/metrics` all read it. Everything comes from Redis (apalis-redis's keys,
//! the runtime's counters and worker registry of [`crate::stats`], the dead-letter list) and
//! from RabbitMQ (the bridge's Pulse queues); nothing is kept in a process.
//!
//! # What is read, per job kind (queue `<prefix>:<kind>`)
//! - waiting: the `{q}:active` list plus the `{q}:scheduled` entries already due (every push
//!   lands in the scheduled zset, scored by its run time in epoch seconds, and a worker's
//!   fetch promotes the due ones); delayed: the scheduled entries not yet due;
//! - running: the sizes of the `{q}:inflight:<worker>` sets of the workers in the
//!   `{q}:workers` heartbeat zset (apalis re-queues an orphan's set and removes its entry);
//! - the age of the oldest waiting job: the `enqueued_at` of the envelopes at the
//!   next-to-run end of the active list and of the longest-due scheduled entries (a bounded
//!   sample, [`AGE_SAMPLE`] of each);
//! - throughput and failures: the per-minute counters of [`crate::stats`];
//! - live workers: the registry of [`crate::stats`] joined with the heartbeat zsets.
//!
//! The counts of one kind are read in one `MULTI` so they add up; the whole snapshot takes
//! a handful of round trips whatever the queue sizes (the dead-letter list is read in chunks,
//! up to [`DEAD_LETTER_SCAN`] entries).
use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::secret::{Secret, SecretUrl};
use crate::stats::{self, Outcome};

/// A worker whose apalis heartbeat is older than this is not alive.
pub const WORKER_ALIVE_SECS: f64 = 30.0;
/// A registration whose worker has sent no heartbeat for this long (or never did, since
/// starting this long ago) is deleted from the registry by [`snapshot`].
pub const STALE_REGISTRATION_SECS: i64 = 3600;
/// Waiting jobs older than this, with workers alive, are a backlog worth a diagnosis line.
pub const BACKLOG_SECS: u64 = 60;
/// Ready Pulse messages, with consumers, from which ingest is said to fall behind.
pub const PULSE_BACKLOG: u64 = 1000;
/// Envelopes read per kind at each waiting end (active list head, longest-due scheduled).
pub const AGE_SAMPLE: usize = 16;
/// Dead letters read to count them per kind (the newest ones; the total is always exact).
pub const DEAD_LETTER_SCAN: usize = 10_000;
/// The RabbitMQ management plugin's port, for the management URL derived from the AMQP one.
pub const MANAGEMENT_PORT: u16 = 15672;
/// Time allowed to each Pulse request (HTTP) or connection (AMQP).
const PULSE_TIMEOUT: Duration = Duration::from_secs(5);
const DEAD_LETTER_CHUNK: usize = 500;

/// The whole picture at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// The Redis key prefix of this installation.
    pub prefix: String,
    /// One row per job kind, in [`crate::jobs::BRIDGE_KINDS`] order.
    pub queues: Vec<QueueRow>,
    /// One row per bridge Pulse queue; empty when RabbitMQ was not asked.
    pub pulse: Vec<PulseRow>,
    /// Why the Pulse side could not be read, if it could not.
    pub pulse_error: Option<String>,
    /// Live workers (apalis heartbeat fresh), one per worker and job kind.
    pub workers: Vec<WorkerRow>,
    /// Entries in the dead-letter list, of every source (jobs and Pulse messages).
    #[serde(default)]
    pub dead_letters: u64,
    /// Plain-words lag diagnosis lines; empty when all is well.
    pub diagnosis: Vec<String>,
}

/// One job queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRow {
    pub kind: String,
    /// Ready to run now (the active list, plus delayed jobs already due).
    pub waiting: u64,
    /// Scheduled for later: retries in backoff, lock waits, delayed enqueues.
    pub delayed: u64,
    /// In flight on a worker.
    pub running: u64,
    /// Jobs finished in the last hour: the current minute and the 59 before it.
    pub done_last_hour: u64,
    /// Job failures in the last hour (retried or dead-lettered), same window.
    pub failed_last_hour: u64,
    /// Entries of this kind in the dead-letter list now (the list's `queue` field: the job
    /// kind, or the Pulse queue purpose of the same name).
    pub dead_lettered: u64,
    /// Age of the oldest waiting job, in seconds, if any waits.
    pub oldest_waiting_secs: Option<u64>,
    /// Jobs finished for good (done or dead-lettered) per second over the last whole minute.
    pub jobs_per_sec: f64,
    /// Live workers taking this kind.
    pub workers_alive: u64,
}

/// One of the bridge's RabbitMQ queues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PulseRow {
    pub queue: String,
    /// Messages ready for delivery.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged; `None` when the broker's management API
    /// is not reachable (AMQP alone does not tell).
    pub unacked: Option<u64>,
    pub consumers: u64,
    /// Why the row is empty when it is not a reading, e.g. the queue is not declared yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One live worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    pub name: String,
    pub kind: String,
    pub host: String,
    pub pid: u32,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
    pub concurrency: usize,
    pub in_flight: u64,
}

/// What to inspect.
#[derive(Debug, Clone)]
pub struct InspectSettings {
    /// The Redis key prefix (`redis.prefix`).
    pub prefix: String,
    /// The job kinds to show, in order.
    pub kinds: Vec<String>,
    /// The bridge's Pulse queues; `None` leaves RabbitMQ alone.
    pub pulse: Option<PulseTarget>,
}

/// The bridge's RabbitMQ queues and how to reach the broker.
#[derive(Debug, Clone)]
pub struct PulseTarget {
    /// The AMQP URL the bridge consumes with (the fallback when the management API is not
    /// reachable, and the vhost and default credentials of the management API).
    pub amqp_url: SecretUrl,
    /// The management HTTP API; `None`: `http://<AMQP host>:15672` with the AMQP credentials.
    pub management_url: Option<SecretUrl>,
    /// Queue names, in display order.
    pub queues: Vec<String>,
}

impl InspectSettings {
    /// Every bridge job kind and the bridge's three Pulse queues of this configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            prefix: config.redis.prefix.clone(),
            kinds: crate::jobs::BRIDGE_KINDS
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            pulse: Some(PulseTarget {
                amqp_url: config.pulse.url.clone(),
                management_url: config.pulse.management_url.clone(),
                queues: crate::config::PULSE_PURPOSES
                    .iter()
                    .map(|p| config.pulse.queue_name(p))
                    .collect(),
            }),
        }
    }
}

/// Takes a snapshot: the job queues from Redis and the Pulse queues from RabbitMQ, read at
/// the same time, then [`diagnose`]d. Fails only when Redis cannot be read; a Pulse failure
/// is reported in [`Snapshot::pulse_error`].
pub async fn snapshot(
    conn: &ConnectionManager,
    settings: &InspectSettings,
) -> anyhow::Result<Snapshot> {
    let taken_at = Utc::now();
    let redis_side = read_redis(conn.clone(), settings, taken_at);
    let pulse_side = async {
        match &settings.pulse {
            Some(target) => read_pulse(target).await,
            None => (Vec::new(), None),
        }
    };
    let (redis_side, (pulse, pulse_error)) = tokio::join!(redis_side, pulse_side);
    let (queues, workers, dead_letters) = redis_side?;
    let mut snapshot = Snapshot {
        taken_at,
        prefix: settings.prefix.clone(),
        queues,
        pulse,
        pulse_error,
        workers,
        dead_letters,
        diagnosis: Vec::new(),
    };
    snapshot.diagnosis = diagnose(&snapshot);
    Ok(snapshot)
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// The replies of a pipeline, taken in order with their types.
struct Replies(std::vec::IntoIter<redis::Value>);

impl Replies {
    fn take<T: redis::FromRedisValue>(&mut self) -> anyhow::Result<T> {
        let value = self
            .0
            .next()
            .context("a Redis pipeline returned fewer replies than commands")?;
        Ok(redis::from_redis_value(value)?)
    }
}

/// Runs a pipeline; an empty one (Redis refuses those) answers nothing without a round trip.
async fn query(pipe: &redis::Pipeline, conn: &mut ConnectionManager) -> anyhow::Result<Replies> {
    if pipe.cmd_iter().next().is_none() {
        return Ok(Replies(Vec::new().into_iter()));
    }
    let values: Vec<redis::Value> = pipe.query_async(conn).await?;
    Ok(Replies(values.into_iter()))
}

/// What the first round trip reads of one kind.
struct KindRead {
    active: u64,
    due: u64,
    delayed: u64,
    head: Vec<String>,
    longest_due: Vec<(String, f64)>,
    heartbeats: Vec<(String, f64)>,
}

/// The `enqueued_at` of a stored envelope; the job itself is not decoded.
#[derive(Deserialize)]
struct EnqueuedAt {
    enqueued_at: DateTime<Utc>,
}

/// The field of a dead letter the per-kind count needs.
#[derive(Deserialize)]
struct LetterQueue {
    #[serde(default)]
    queue: String,
}

type RedisSide = (Vec<QueueRow>, Vec<WorkerRow>, u64);

async fn read_redis(
    mut conn: ConnectionManager,
    settings: &InspectSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<RedisSide> {
    let prefix = settings.prefix.as_str();
    let keys = |kind: &str| crate::queue::queue_keys(prefix, kind);
    let now_secs = now.timestamp();
    let now_f = now.timestamp_millis() as f64 / 1000.0;

    let registered = stats::registered_workers(&mut conn, prefix)
        .await
        .context("reading the worker registry")?;
    // Kinds shown first, then any other kind a registered worker takes.
    let mut kinds: Vec<String> = settings.kinds.clone();
    for (_, info) in &registered {
        if !kinds.contains(&info.kind) {
            kinds.push(info.kind.clone());
        }
    }

    // Round trip 1: counts, samples and heartbeats, one MULTI; counters; dead-letter total.
    let minute = stats::epoch_minute(now);
    let window: Vec<i64> = (minute - 59..=minute).collect();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for kind in &kinds {
        let q = keys(kind);
        let scheduled = q.scheduled_jobs_set();
        let active = q.active_jobs_list();
        pipe.llen(&active)
            .zcount(&scheduled, "-inf", now_secs)
            .zcount(&scheduled, format!("({now_secs}"), "+inf")
            .lrange(&active, 0, AGE_SAMPLE as isize - 1)
            .zrangebyscore_limit_withscores(&scheduled, "-inf", now_secs, 0, AGE_SAMPLE as isize)
            .zrange_withscores(q.workers_set(), 0, -1);
    }
    // Kind by kind, outcome by outcome in `Outcome::ALL` order, oldest minute first.
    let mut counter_keys = Vec::new();
    for kind in &settings.kinds {
        for outcome in Outcome::ALL {
            for m in &window {
                counter_keys.push(stats::counter_key(prefix, kind, outcome, *m));
            }
        }
    }
    if !counter_keys.is_empty() {
        pipe.mget(&counter_keys);
    }
    let dead_key = crate::queue::dead_letter_key(prefix);
    pipe.llen(&dead_key);
    let mut replies = query(&pipe, &mut conn)
        .await
        .context("reading the job queues")?;
    let mut reads = Vec::with_capacity(kinds.len());
    for _ in &kinds {
        reads.push(KindRead {
            active: replies.take()?,
            due: replies.take()?,
            delayed: replies.take()?,
            head: replies.take()?,
            longest_due: replies.take()?,
            heartbeats: replies.take()?,
        });
    }
    let counters: Vec<Option<u64>> = if counter_keys.is_empty() {
        Vec::new()
    } else {
        replies.take()?
    };
    let dead_total: u64 = replies.take()?;

    // Round trip 2: in-flight set sizes and the sampled envelopes.
    let mut pipe = redis::pipe();
    for (kind, read) in kinds.iter().zip(&reads) {
        let q = keys(kind);
        let inflight = q.inflight_jobs_set();
        for (worker, _) in &read.heartbeats {
            pipe.scard(format!("{inflight}:{worker}"));
        }
        let ids: Vec<&str> = read
            .head
            .iter()
            .map(String::as_str)
            .chain(read.longest_due.iter().map(|(id, _)| id.as_str()))
            .collect();
        if !ids.is_empty() {
            pipe.cmd("HMGET").arg(q.job_data_hash()).arg(&ids);
        }
    }
    let mut replies = query(&pipe, &mut conn)
        .await
        .context("reading in-flight jobs")?;
    let mut in_flight: HashMap<(String, String), u64> = HashMap::new();
    let mut running = Vec::with_capacity(kinds.len());
    let mut oldest = Vec::with_capacity(kinds.len());
    for (kind, read) in kinds.iter().zip(&reads) {
        let mut sum = 0;
        for (worker, _) in &read.heartbeats {
            let n: u64 = replies.take()?;
            sum += n;
            in_flight.insert((kind.clone(), worker.clone()), n);
        }
        running.push(sum);
        let sampled = read.head.len() + read.longest_due.len();
        let data: Vec<Option<String>> = if sampled > 0 {
            replies.take()?
        } else {
            Vec::new()
        };
        oldest.push(oldest_waiting(read, &data, now));
    }

    let dead_by_kind = count_dead_letters(&mut conn, &dead_key, dead_total).await?;

    // Live workers: registered, with a fresh heartbeat on their kind's queue.
    let mut workers = Vec::new();
    let mut stale = Vec::new();
    for (name, info) in registered {
        let heartbeat = kinds
            .iter()
            .position(|k| *k == info.kind)
            .and_then(|i| reads[i].heartbeats.iter().find(|(w, _)| *w == name))
            .map(|(_, score)| *score);
        let age = heartbeat.map(|seen| (now_f - seen).max(0.0));
        match age {
            Some(age) if age < WORKER_ALIVE_SECS => {
                let in_flight = in_flight
                    .get(&(info.kind.clone(), name.clone()))
                    .copied()
                    .unwrap_or(0);
                workers.push(WorkerRow {
                    name,
                    kind: info.kind,
                    host: info.host,
                    pid: info.pid,
                    heartbeat_age_secs: (age * 10.0).round() / 10.0,
                    concurrency: info.concurrency,
                    in_flight,
                });
            }
            Some(age) if age > STALE_REGISTRATION_SECS as f64 => stale.push(name),
            None if (now - info.started_at).num_seconds() > STALE_REGISTRATION_SECS => {
                stale.push(name);
            }
            _ => {}
        }
    }
    if !stale.is_empty() {
        let removed: redis::RedisResult<u64> = redis::cmd("HDEL")
            .arg(stats::workers_key(prefix))
            .arg(&stale)
            .query_async(&mut conn)
            .await;
        if let Err(e) = removed {
            tracing::debug!(
                "removing {} stale worker registrations failed: {e}",
                stale.len()
            );
        }
    }
    workers.sort_by(|a, b| {
        let rank = |k: &str| kinds.iter().position(|x| x == k);
        (rank(&a.kind), &a.name).cmp(&(rank(&b.kind), &b.name))
    });

    let per_kind = Outcome::ALL.len() * window.len();
    let mut rows = Vec::with_capacity(settings.kinds.len());
    for (i, kind) in settings.kinds.iter().enumerate() {
        let read = &reads[i];
        let counts = counters
            .get(i * per_kind..(i + 1) * per_kind)
            .unwrap_or(&[]);
        let series = |outcome: Outcome| -> &[Option<u64>] {
            let o = Outcome::ALL.iter().position(|x| *x == outcome).unwrap_or(0);
            counts
                .get(o * window.len()..(o + 1) * window.len())
                .unwrap_or(&[])
        };
        let total = |outcome| series(outcome).iter().flatten().sum::<u64>();
        // The last whole minute is the one before the current, last in the window.
        let last_minute = |outcome| {
            let s = series(outcome);
            s.len()
                .checked_sub(2)
                .and_then(|i| s.get(i).copied().flatten())
                .unwrap_or(0)
        };
        let waiting = read.active + read.due;
        rows.push(QueueRow {
            kind: kind.clone(),
            waiting,
            delayed: read.delayed,
            running: running[i],
            done_last_hour: total(Outcome::Done),
            failed_last_hour: total(Outcome::Failed) + total(Outcome::Retried),
            dead_lettered: dead_by_kind.get(kind).copied().unwrap_or(0),
            oldest_waiting_secs: if waiting > 0 { oldest[i] } else { None },
            jobs_per_sec: (last_minute(Outcome::Done) + last_minute(Outcome::Failed)) as f64 / 60.0,
            workers_alive: workers.iter().filter(|w| w.kind == *kind).count() as u64,
        });
    }
    Ok((rows, workers, dead_total))
}

/// The age of the oldest sampled waiting job: from its envelope's `enqueued_at`, or for a due
/// scheduled job whose envelope does not parse, from the time it became due.
fn oldest_waiting(read: &KindRead, data: &[Option<String>], now: DateTime<Utc>) -> Option<u64> {
    let enqueued = |i: usize| {
        data.get(i)
            .and_then(Option::as_deref)
            .and_then(|json| serde_json::from_str::<EnqueuedAt>(json).ok())
            .map(|e| (now - e.enqueued_at).num_seconds().max(0) as u64)
    };
    let head = (0..read.head.len()).filter_map(enqueued);
    let due = read.longest_due.iter().enumerate().map(|(j, (_, due_at))| {
        enqueued(read.head.len() + j)
            .unwrap_or_else(|| (now.timestamp() as f64 - due_at).max(0.0) as u64)
    });
    head.chain(due).max()
}

/// Counts the newest [`DEAD_LETTER_SCAN`] dead letters by their `queue` field.
async fn count_dead_letters(
    conn: &mut ConnectionManager,
    key: &str,
    total: u64,
) -> anyhow::Result<HashMap<String, u64>> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let end = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .min(DEAD_LETTER_SCAN);
    let mut start = 0;
    while start < end {
        let stop = (start + DEAD_LETTER_CHUNK).min(end) - 1;
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(key)
            .arg(start)
            .arg(stop)
            .query_async(conn)
            .await
            .context("reading the dead-letter list")?;
        if raw.is_empty() {
            break;
        }
        for entry in &raw {
            if let Ok(letter) = serde_json::from_str::<LetterQueue>(entry) {
                *counts.entry(letter.queue).or_default() += 1;
            }
        }
        start += raw.len();
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ
// ---------------------------------------------------------------------------------------------

/// The management API's base URL (without credentials) and its credentials.
struct ManagementApi {
    base: url::Url,
    user: String,
    password: Secret,
}

/// The parts of the AMQP URL the management API needs.
struct AmqpParts {
    host: String,
    user: String,
    password: Secret,
    vhost: String,
}

impl AmqpParts {
    /// Errors name the URL masked, never the parser's message (which quotes the URL).
    fn parse(url: &SecretUrl) -> Result<AmqpParts, String> {
        let bad = || format!("the Pulse URL {url} is not a valid AMQP URL");
        let parsed = url::Url::parse(url.expose()).map_err(|_| bad())?;
        let uri: lapin::uri::AMQPUri = url.expose().parse().map_err(|_| bad())?;
        Ok(AmqpParts {
            host: parsed.host_str().ok_or_else(bad)?.to_owned(),
            user: uri.authority.userinfo.username,
            password: Secret::new(uri.authority.userinfo.password),
            vhost: uri.vhost,
        })
    }
}

fn management_api(
    configured: Option<&SecretUrl>,
    amqp: &AmqpParts,
) -> Result<ManagementApi, String> {
    let Some(configured) = configured else {
        let text = format!("http://{}:{MANAGEMENT_PORT}/", amqp.host);
        let base = url::Url::parse(&text).map_err(|_| format!("{text} is not a valid URL"))?;
        return Ok(ManagementApi {
            base,
            user: amqp.user.clone(),
            password: amqp.password.clone(),
        });
    };
    let mut base = url::Url::parse(configured.expose())
        .map_err(|_| format!("the management URL {configured} is not a valid URL"))?;
    let (user, password) = if base.username().is_empty() {
        (amqp.user.clone(), amqp.password.clone())
    } else {
        (
            percent_decode(base.username()),
            Secret::new(base.password().map(percent_decode).unwrap_or_default()),
        )
    };
    let _ = base.set_username("");
    let _ = base.set_password(None);
    Ok(ManagementApi {
        base,
        user,
        password,
    })
}

/// Decodes `%XX` escapes (URL userinfo); anything else is kept as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The management API's view of a queue; fields are absent until the broker has sampled the
/// queue's statistics once.
#[derive(Deserialize)]
struct ManagementQueue {
    #[serde(default)]
    messages_ready: u64,
    #[serde(default)]
    messages_unacknowledged: u64,
    #[serde(default)]
    consumers: u64,
}

/// The note of a Pulse queue that does not exist.
pub const NOT_DECLARED: &str = "not declared yet";

async fn read_pulse(target: &PulseTarget) -> (Vec<PulseRow>, Option<String>) {
    let amqp = match AmqpParts::parse(&target.amqp_url) {
        Ok(amqp) => amqp,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let why = match management_api(target.management_url.as_ref(), &amqp) {
        Ok(api) => match read_management(&api, &amqp.vhost, &target.queues).await {
            Ok(rows) => return (rows, None),
            Err(e) => format!("the management API at {} is not usable ({e})", api.base),
        },
        Err(e) => e,
    };
    match read_amqp(&target.amqp_url, &target.queues).await {
        Ok(rows) => (
            rows,
            Some(format!(
                "{why}: ready and consumers read over AMQP, unacked unknown"
            )),
        ),
        Err(e) => (
            Vec::new(),
            Some(format!(
                "{why}; AMQP at {} failed too: {e}",
                target.amqp_url
            )),
        ),
    }
}

/// Every queue through the management API, or why the API cannot be used.
async fn read_management(
    api: &ManagementApi,
    vhost: &str,
    queues: &[String],
) -> Result<Vec<PulseRow>, String> {
    let client = reqwest::Client::builder()
        .timeout(PULSE_TIMEOUT)
        .build()
        .map_err(|e| e.without_url().to_string())?;
    let mut rows = Vec::with_capacity(queues.len());
    for name in queues {
        let mut url = api.base.clone();
        url.path_segments_mut()
            .map_err(|()| "not a base URL".to_owned())?
            .pop_if_empty()
            .extend(["api", "queues", vhost, name]);
        let response = client
            .get(url)
            .basic_auth(&api.user, Some(api.password.expose()))
            .send()
            .await
            .map_err(|e| with_causes(&e.without_url()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            rows.push(missing_row(name, Some(0)));
            continue;
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let q: ManagementQueue = response
            .json()
            .await
            .map_err(|e| format!("unexpected answer: {}", e.without_url()))?;
        rows.push(PulseRow {
            queue: name.clone(),
            ready: q.messages_ready,
            unacked: Some(q.messages_unacknowledged),
            consumers: q.consumers,
            note: None,
        });
    }
    Ok(rows)
}

/// An error and its causes on one line (reqwest's own text leaves out why a request failed).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn missing_row(name: &str, unacked: Option<u64>) -> PulseRow {
    PulseRow {
        queue: name.to_owned(),
        ready: 0,
        unacked,
        consumers: 0,
        note: Some(NOT_DECLARED.to_owned()),
    }
}

/// Every queue through a passive declare (one channel each: a missing queue closes its
/// channel).
async fn read_amqp(url: &SecretUrl, queues: &[String]) -> Result<Vec<PulseRow>, String> {
    use lapin::{
        Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable,
    };
    let conn = tokio::time::timeout(
        PULSE_TIMEOUT,
        Connection::connect(url.expose(), ConnectionProperties::default()),
    )
    .await
    .map_err(|_| format!("no connection within {PULSE_TIMEOUT:?}"))?
    .map_err(|e| format!("connecting: {e}"))?;
    let mut rows = Vec::with_capacity(queues.len());
    let mut failure = None;
    for name in queues {
        let declared = async {
            let channel = conn.create_channel().await?;
            let q = channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            if q.is_ok() {
                let _ = channel.close(200, "inspected".into()).await;
            }
            q
        };
        match tokio::time::timeout(PULSE_TIMEOUT, declared).await {
            Ok(Ok(q)) => rows.push(PulseRow {
                queue: name.clone(),
                ready: u64::from(q.message_count()),
                unacked: None,
                consumers: u64::from(q.consumer_count()),
                note: None,
            }),
            Ok(Err(e)) if is_not_found(&e) => rows.push(missing_row(name, None)),
            Ok(Err(e)) => {
                failure = Some(format!("declaring {name}: {e}"));
                break;
            }
            Err(_) => {
                failure = Some(format!(
                    "declaring {name}: no answer within {PULSE_TIMEOUT:?}"
                ));
                break;
            }
        }
    }
    let _ = conn.close(200, "inspected".into()).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

// ---------------------------------------------------------------------------------------------
// Diagnosis
// ---------------------------------------------------------------------------------------------

/// Plain-words lines about what is off in `s`, most urgent first per queue; empty when all is
/// well. Reads nothing but the snapshot.
pub fn diagnose(s: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for q in &s.queues {
        if q.waiting > 0 {
            let waited = q.oldest_waiting_secs.map(format_duration);
            if q.workers_alive == 0 {
                lines.push(match waited {
                    Some(age) => {
                        format!("{}: oldest job waiting {age} with 0 workers alive", q.kind)
                    }
                    None => format!(
                        "{}: {} waiting with 0 workers alive",
                        q.kind,
                        plural(q.waiting, "job")
                    ),
                });
            } else if let Some(age) = q.oldest_waiting_secs.filter(|a| *a >= BACKLOG_SECS) {
                let age = format_duration(age);
                let mine = s.workers.iter().filter(|w| w.kind == q.kind);
                let in_flight: u64 = mine.clone().map(|w| w.in_flight).sum();
                let capacity: u64 = mine.map(|w| w.concurrency as u64).sum();
                let workers = plural(q.workers_alive, "worker");
                let have = if q.workers_alive == 1 { "has" } else { "have" };
                lines.push(if in_flight >= capacity {
                    format!(
                        "{}: oldest job waiting {age}; {workers} at full concurrency ({in_flight} in flight): add workers",
                        q.kind
                    )
                } else {
                    format!(
                        "{}: oldest job waiting {age} while {workers} {have} free slots ({in_flight} of {capacity} in flight): are they stuck? see their logs",
                        q.kind
                    )
                });
            }
        }
        if q.failed_last_hour > 0 && q.done_last_hour == 0 {
            lines.push(format!(
                "{}: {} and no job done in the last hour: see the workers' logs",
                q.kind,
                plural(q.failed_last_hour, "failure")
            ));
        }
    }
    let missing: Vec<&str> = s
        .pulse
        .iter()
        .filter(|p| p.note.as_deref() == Some(NOT_DECLARED))
        .map(|p| p.queue.as_str())
        .collect();
    if !missing.is_empty() {
        lines.push(format!(
            "{}: not declared yet: bbb-ingest declares its queues when it starts; has it run with this configuration?",
            missing.join(", ")
        ));
    }
    for p in &s.pulse {
        if p.note.is_some() {
            continue;
        }
        if p.ready > 0 && p.consumers == 0 {
            lines.push(format!(
                "{}: {} ready and no consumer: is bbb-ingest running?",
                p.queue,
                plural(p.ready, "message")
            ));
        } else if p.ready >= PULSE_BACKLOG {
            lines.push(format!(
                "{}: {} ready with {}: bbb-ingest is falling behind",
                p.queue,
                plural(p.ready, "message"),
                plural(p.consumers, "consumer")
            ));
        }
    }
    if s.pulse.is_empty()
        && let Some(e) = &s.pulse_error
    {
        lines.push(format!("Pulse queues not read: {e}"));
    }
    if s.dead_letters > 0 {
        lines.push(format!(
            "{}: see bbb dead-letters list",
            plural(s.dead_letters, "dead letter")
        ));
    }
    lines
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A duration for people: `45s`, `4m12s`, `2h05m`, `3d04h`.
pub fn format_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(kind: &str) -> QueueRow {
        QueueRow {
            kind: kind.into(),
            waiting: 0,
            delayed: 0,
            running: 0,
            done_last_hour: 10,
            failed_last_hour: 0,
            dead_lettered: 0,
            oldest_waiting_secs: None,
            jobs_per_sec: 0.0,
            workers_alive: 0,
        }
    }

    fn worker(kind: &str, concurrency: usize, in_flight: u64) -> WorkerRow {
        WorkerRow {
            name: format!("host-1-{kind}-{in_flight}"),
            kind: kind.into(),
            host: "host".into(),
            pid: 1,
            heartbeat_age_secs: 0.5,
            concurrency,
            in_flight,
        }
    }

    fn pulse(queue: &str, ready: u64, consumers: u64) -> PulseRow {
        PulseRow {
            queue: queue.into(),
            ready,
            unacked: Some(0),
            consumers,
            note: None,
        }
    }

    fn snapshot(queues: Vec<QueueRow>, workers: Vec<WorkerRow>, pulse: Vec<PulseRow>) -> Snapshot {
        Snapshot {
            taken_at: Utc::now(),
            prefix: "bbb".into(),
            queues,
            pulse,
            pulse_error: None,
            workers,
            dead_letters: 0,
            diagnosis: Vec::new(),
        }
    }

    #[test]
    fn all_is_well_gives_no_line() {
        let mut q = row("task-pending");
        q.waiting = 5;
        q.oldest_waiting_secs = Some(3);
        q.workers_alive = 1;
        let s = snapshot(
            vec![q, row("build-finished")],
            vec![worker("task-pending", 16, 2)],
            vec![pulse("bbb/task-pending", 3, 1)],
        );
        assert_eq!(diagnose(&s), Vec::<String>::new());
    }

    #[test]
    fn waiting_jobs_without_workers_are_named_with_their_age() {
        let mut q = row("build-finished");
        q.waiting = 7;
        q.oldest_waiting_secs = Some(252);
        let mut unknown_age = row("task-check");
        unknown_age.waiting = 1;
        let s = snapshot(vec![q, unknown_age], vec![], vec![]);
        assert_eq!(
            diagnose(&s),
            vec![
                "build-finished: oldest job waiting 4m12s with 0 workers alive",
                "task-check: 1 job waiting with 0 workers alive",
            ]
        );
    }

    #[test]
    fn an_old_backlog_with_busy_workers_asks_for_more_workers() {
        let mut q = row("build-finished");
        q.waiting = 200;
        q.oldest_waiting_secs = Some(123);
        q.workers_alive = 3;
        let workers = vec![
            worker("build-finished", 16, 16),
            worker("build-finished", 16, 17),
            worker("build-finished", 16, 15),
            worker("task-pending", 16, 0),
        ];
        let s = snapshot(vec![q.clone()], workers, vec![]);
        assert_eq!(
            diagnose(&s),
            vec![
                "build-finished: oldest job waiting 2m03s; 3 workers at full concurrency (48 in flight): add workers"
            ]
        );

        let idle = vec![worker("build-finished", 16, 2)];
        q.workers_alive = 1;
        let s = snapshot(vec![q.clone()], idle, vec![]);
        assert_eq!(
            diagnose(&s),
            vec![
                "build-finished: oldest job waiting 2m03s while 1 worker has free slots (2 of 16 in flight): are they stuck? see their logs"
            ]
        );

        // Younger than a minute: workers are keeping up.
        q.oldest_waiting_secs = Some(59);
        let s = snapshot(vec![q], vec![worker("build-finished", 16, 16)], vec![]);
        assert_eq!(diagnose(&s), Vec::<String>::new());
    }

    #[test]
    fn pulse_backlogs_missing_queues_and_dead_letters_are_named() {
        let mut s = snapshot(
            vec![],
            vec![],
            vec![
                pulse("bbb/task-pending", 120, 0),
                pulse("bbb/task-exception", 1500, 2),
                pulse("bbb/buildbot", 0, 0),
                missing_row("bbb/other", Some(0)),
            ],
        );
        s.dead_letters = 3;
        assert_eq!(
            diagnose(&s),
            vec![
                "bbb/other: not declared yet: bbb-ingest declares its queues when it starts; has it run with this configuration?",
                "bbb/task-pending: 120 messages ready and no consumer: is bbb-ingest running?",
                "bbb/task-exception: 1500 messages ready with 2 consumers: bbb-ingest is falling behind",
                "3 dead letters: see bbb dead-letters list",
            ]
        );

        let mut s = snapshot(vec![], vec![], vec![]);
        s.pulse_error = Some("the management API at http://h:15672/ is not usable".into());
        s.dead_letters = 1;
        assert_eq!(
            diagnose(&s),
            vec![
                "Pulse queues not read: the management API at http://h:15672/ is not usable",
                "1 dead letter: see bbb dead-letters list",
            ]
        );
    }

    #[test]
    fn failures_without_any_success_are_named() {
        let mut q = row("task-exception");
        q.done_last_hour = 0;
        q.failed_last_hour = 4;
        let s = snapshot(vec![q], vec![], vec![]);
        assert_eq!(
            diagnose(&s),
            vec![
                "task-exception: 4 failures and no job done in the last hour: see the workers' logs"
            ]
        );
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(123), "2m03s");
        assert_eq!(format_duration(252), "4m12s");
        assert_eq!(format_duration(3600 + 300), "1h05m");
        assert_eq!(format_duration(3 * 86_400 + 4 * 3600), "3d04h");
    }

    fn amqp(url: &str) -> AmqpParts {
        AmqpParts::parse(&SecretUrl::new(url)).unwrap()
    }

    #[test]
    fn the_management_api_defaults_to_the_amqp_host_and_credentials() {
        let a = amqp("amqps://bbb%20user:p%40ss@pulse.example.com:5671/bbb%2fdev");
        assert_eq!(a.vhost, "bbb/dev");
        let api = management_api(None, &a).unwrap();
        assert_eq!(api.base.as_str(), "http://pulse.example.com:15672/");
        assert_eq!(
            (api.user.as_str(), api.password.expose().as_str()),
            ("bbb user", "p@ss")
        );

        let a = amqp("amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(a.vhost, "/");
        let configured = SecretUrl::new("https://admin:s%3Acret@mq.example.com/rabbit/");
        let api = management_api(Some(&configured), &a).unwrap();
        assert_eq!(api.base.as_str(), "https://mq.example.com/rabbit/");
        assert_eq!(
            (api.user.as_str(), api.password.expose().as_str()),
            ("admin", "s:cret")
        );

        let err = AmqpParts::parse(&SecretUrl::new("amqp://u:S3CRET@"))
            .err()
            .unwrap();
        assert!(!err.contains("S3CRET"), "{err}");
    }
}
