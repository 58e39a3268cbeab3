//! Buildbot 0.8 masters (Mozilla's 0.8.2 fork) acting on the scheduler DB exactly as the real
//! ones do (FORMATS.md section 2) and publishing their build events on Pulse (section 3).
//!
//! # What a master does
//! Every `poll_interval` it re-stamps the claims of its running Builds (every 10 minutes of
//! [`Clock`] time), then, for each builder it serves, reads the claimable requests with the
//! real condition (`complete=0 AND (claimed_at < now-3600 OR (claimed_by_name=<me> AND
//! claimed_by_incarnation != <mine>))`, `ORDER BY priority DESC, buildsets.submitted_at`),
//! claims each with one conditional `UPDATE` (so two masters never get the same request),
//! merges the compatible ones (same builder and sourcestamp values, at most
//! [`MAX_MERGED_REQUESTS`]) into one Build and runs it:
//! 1. one `builds` row per request, same `number`, `start_time=now`; `started` is published;
//! 2. it runs for the scripted duration (in [`Clock`] time: advancing the clock ends it), or
//!    until stopped ([`Master::stop_build`], [`Master::stop_request`]: CANCELLED at once);
//! 3. `finished` is published, then `finish_time` is set on its rows; then each request is
//!    completed (`complete=1, results, complete_at`) and its buildset once all its requests
//!    are, or, on RETRY, unclaimed (`claimed_at=0`, names NULL) for a later poll to build it
//!    again under the same id with a new number;
//! 4. postrun: `log_uploaded`, with `log_url`, `request_ids`, `request_times` and
//!    `statusdb_id` properties (source `postrun.py`).
//!
//! # Scripting
//! Per request, from its buildset properties (stored as JSON `[value, source]`):
//! `sandbox_results` (`"RETRY,SUCCESS"`: the n-th Build of the request gets the n-th result,
//! names or numbers, SUCCESS past the list), `sandbox_duration_ms` (else the master's
//! `build_duration`), `sandbox_log_url` (`"null"` makes postrun send the string "null", as the
//! real one does when no log was uploaded). A merged Build follows its first (oldest) request.
//!
//! # Builder directories
//! [`builder_dir`] derives the directory name used in routing keys and in `log_uploaded`'s
//! `builderName` from the full builder name; `allthethings.json` (see `selfserve`) reports the
//! same name as `shortname` and `slavebuilddir`.
//!
//! # Incarnations
//! `claimed_by_incarnation` is `pid<N>-boot<T>`; `T` is the start time in epoch seconds, made
//! strictly increasing within the process, so a master restarted under the same name is a new
//! incarnation and re-claims the requests its predecessor left claimed.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use bbb_shared::{
    dburl::DbUrl,
    schedulerdb::{SchedulerDb, create_buildbot08_schema},
};
use serde_json::Value;
use tokio::{sync::watch, task::JoinSet};

use crate::{clock::Clock, pulse::Publisher, settings::SandboxSettings};

mod events;
mod outbox;
pub(crate) mod sql;

pub use events::{
    BuildDict, Envelope, EventKind, FinishedPayload, LogUploadedPayload, Meta, Properties,
    SourceStampDict, StartedPayload,
};
use events::{BuildView, SourceStamp};
use outbox::Outbox;
use sql::{BuildbotDb, Unclaimed};

/// Buildbot's result codes (6 exists only in Mozilla's fork).
pub mod results {
    pub const SUCCESS: i64 = 0;
    pub const WARNINGS: i64 = 1;
    pub const FAILURE: i64 = 2;
    pub const SKIPPED: i64 = 3;
    pub const EXCEPTION: i64 = 4;
    pub const RETRY: i64 = 5;
    pub const CANCELLED: i64 = 6;

    /// A result by name (`"SUCCESS"`, `"retry"`, `"CANCELED"`) or number (`"5"`).
    pub fn parse(s: &str) -> Option<i64> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i64>() {
            return (0..=6).contains(&n).then_some(n);
        }
        Some(match s.to_ascii_uppercase().as_str() {
            "SUCCESS" => SUCCESS,
            "WARNINGS" => WARNINGS,
            "FAILURE" => FAILURE,
            "SKIPPED" => SKIPPED,
            "EXCEPTION" => EXCEPTION,
            "RETRY" => RETRY,
            "CANCELLED" | "CANCELED" => CANCELLED,
            _ => return None,
        })
    }
}

/// Requests one Build serves at most (`request_ids` carries up to 100).
pub const MAX_MERGED_REQUESTS: usize = 100;
/// A claim older than this is stale: any master may take the request over.
const STALE_CLAIM_SECS: i64 = 3600;
/// Running Builds re-stamp their claims this often (clock time).
const RESTAMP_SECS: i64 = 600;
/// Longest nap while a Build runs, so that clock advances are noticed quickly.
const RUN_TICK: Duration = Duration::from_millis(25);

/// The builder's directory name: lower case, with every character other than ASCII letters,
/// digits, `-` and `_` (spaces, dots, slashes, ...) replaced by `_`, one for one.
/// `"Linux x86-64 mozilla-inbound build"` -> `"linux_x86-64_mozilla-inbound_build"`. The
/// result is a single routing-key word (no `.`, `*` or `#`).
pub fn builder_dir(full_name: &str) -> String {
    full_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Faults a master can inject into its Pulse messages. Probabilities are in 0..=1 (1: every
/// one); `*_every` = N > 0 hits the N-th, 2N-th, ... message of that kind. The default
/// injects nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PulseFaults {
    pub drop_started: f64,
    pub drop_finished: f64,
    pub drop_log_uploaded: f64,
    /// Publish a message twice (as `pulse_publisher.py` re-sends a batch after an error).
    pub duplicate: f64,
    /// Publish every message this late (order kept).
    pub delay_ms: u64,
    /// Swap messages pairwise: each is held until the next one has gone (or for a moment, if
    /// none comes).
    pub reorder: bool,
    pub drop_started_every: u32,
    pub drop_finished_every: u32,
    pub drop_log_uploaded_every: u32,
    pub duplicate_every: u32,
}

/// One emulated master.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterSettings {
    /// `claimed_by_name` and `_meta.master_name`, e.g.
    /// `buildbot-master71.bb.releng.use1.mozilla.com:/builds/buildbot/build1/master`.
    pub name: String,
    /// Full builder names it serves.
    pub builders: Vec<String>,
    pub poll_interval: Duration,
    /// A Build's duration when its request does not script one.
    pub build_duration: Duration,
    /// The Pulse exchange (the bridge's `bblistener.pulse_exchange`).
    pub exchange: String,
    pub faults: PulseFaults,
}

impl Default for MasterSettings {
    fn default() -> Self {
        MasterSettings::sandbox(1, &SandboxSettings::default(), "exchange/build/")
    }
}

impl MasterSettings {
    /// The `index`-th (from 1) master of a sandbox: serves every builder, named
    /// `sandbox-master<index>.bbb.test:/builds/buildbot/sandbox<index>/master`.
    pub fn sandbox(index: usize, sandbox: &SandboxSettings, exchange: &str) -> MasterSettings {
        MasterSettings {
            name: format!("sandbox-master{index}.bbb.test:/builds/buildbot/sandbox{index}/master"),
            builders: sandbox.builders.clone(),
            poll_interval: sandbox.master_poll,
            build_duration: sandbox.build_duration,
            exchange: exchange.to_owned(),
            faults: PulseFaults::default(),
        }
    }
}

/// A running master. Clones share it; [`Master::shutdown`] stops it for all of them.
#[derive(Clone)]
pub struct Master {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Master({} {})", self.inner.name, self.inner.incarnation)
    }
}

struct Inner {
    name: String,
    incarnation: String,
    builders: Vec<String>,
    poll_interval: Duration,
    build_duration: Duration,
    exchange: String,
    db: BuildbotDb,
    clock: Clock,
    outbox: Outbox,
    running: Mutex<HashMap<u64, Running>>,
    next_key: AtomicU64,
    /// Next build number per builder (at least the DB's highest + 1).
    numbers: tokio::sync::Mutex<HashMap<String, i64>>,
    builds_started: AtomicU64,
    shutdown: watch::Sender<bool>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A Build between its claim and the end of postrun.
struct Running {
    brids: Vec<i64>,
    build_ids: Vec<i64>,
    last_stamp: i64,
    stop: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `pid<N>-boot<T>`, with `T` strictly increasing within the process.
fn new_incarnation(clock: &Clock) -> String {
    static LAST_BOOT: AtomicI64 = AtomicI64::new(0);
    let now = clock.now_secs();
    let boot = match LAST_BOOT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
        Some(now.max(last + 1))
    }) {
        Ok(last) | Err(last) => now.max(last + 1),
    };
    format!("pid{}-boot{boot}", std::process::id())
}

/// postrun's status DB ids: unique in the process and, seeded from the time, across restarts
/// (the bridge may key on `_meta.message_id`).
fn next_statusdb_id() -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(0);
    let seed = chrono::Utc::now().timestamp_millis();
    let _ = NEXT.compare_exchange(0, seed, Ordering::SeqCst, Ordering::SeqCst);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

impl Master {
    /// Creates the Buildbot tables when missing, then starts polling.
    pub async fn start(
        settings: MasterSettings,
        db: &DbUrl,
        clock: Clock,
        publisher: Publisher,
    ) -> anyhow::Result<Master> {
        let buildbot_db = BuildbotDb::connect(db).await?;
        ensure_schema(db).await?;
        let incarnation = new_incarnation(&clock);
        let outbox = Outbox::start(
            publisher,
            settings.exchange.clone(),
            settings.faults.clone(),
            clock.clone(),
        );
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            name: settings.name,
            incarnation,
            builders: settings.builders,
            poll_interval: settings.poll_interval,
            build_duration: settings.build_duration,
            exchange: settings.exchange,
            db: buildbot_db,
            clock,
            outbox,
            running: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            numbers: tokio::sync::Mutex::new(HashMap::new()),
            builds_started: AtomicU64::new(0),
            shutdown,
            poller: Mutex::new(None),
        });
        tracing::info!(
            master.name = %inner.name,
            master.incarnation = %inner.incarnation,
            "master {} ({}) serving {} builders on {}",
            inner.name,
            inner.incarnation,
            inner.builders.len(),
            db
        );
        let poller = tokio::spawn(poll_loop(Arc::clone(&inner)));
        *lock(&inner.poller) = Some(poller);
        Ok(Master { inner })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `claimed_by_incarnation` of this master's claims.
    pub fn incarnation(&self) -> &str {
        &self.inner.incarnation
    }

    pub fn builders(&self) -> &[String] {
        &self.inner.builders
    }

    /// Stops the running Build that has the builds row `build_id` (the whole Build, every
    /// merged request): it finishes CANCELLED at once and sends its events. False if no
    /// running Build of this master has that row.
    pub async fn stop_build(&self, build_id: i64) -> anyhow::Result<bool> {
        if self.stop_where(|r| r.build_ids.contains(&build_id)) {
            return Ok(true);
        }
        // The row may be in the DB while its Build is still inserting the others: find it by
        // request among the Builds whose rows are not all known yet.
        let Some(brid) = self.inner.db.unfinished_build_brid(build_id).await? else {
            return Ok(false);
        };
        // The row may have joined its Build since the first look.
        Ok(self.stop_where(|r| {
            r.build_ids.contains(&build_id)
                || (r.brids.contains(&brid) && r.build_ids.len() < r.brids.len())
        }))
    }

    /// Stops the running Build serving the claimed request `brid`. False if none of this
    /// master's running Builds serves it.
    pub async fn stop_request(&self, brid: i64) -> anyhow::Result<bool> {
        Ok(self.stop_where(|r| r.brids.contains(&brid)))
    }

    fn stop_where(&self, matches: impl Fn(&Running) -> bool) -> bool {
        let running = lock(&self.inner.running);
        let mut found = false;
        for build in running.values().filter(|r| matches(r)) {
            build.stop.send_replace(true);
            found = true;
        }
        found
    }

    /// Changes the Pulse faults from now on.
    pub fn set_faults(&self, faults: PulseFaults) {
        self.inner.outbox.set_faults(faults);
    }

    pub fn faults(&self) -> PulseFaults {
        self.inner.outbox.faults()
    }

    /// Brids of the Builds running now.
    pub fn running_requests(&self) -> Vec<i64> {
        let running = lock(&self.inner.running);
        let mut brids: Vec<i64> = running.values().flat_map(|r| r.brids.clone()).collect();
        brids.sort_unstable();
        brids
    }

    /// Stops as a killed master would: no more polling, running Builds end where they are
    /// (their requests stay claimed, for a later incarnation to take over), no further
    /// events. Messages already queued are still published (bounded wait).
    pub async fn shutdown(self) {
        self.inner.shutdown.send_replace(true);
        let poller = lock(&self.inner.poller).take();
        if let Some(poller) = poller {
            let _ = poller.await;
        }
        self.inner.outbox.drain().await;
        self.inner.db.close().await;
        tracing::info!(master.name = %self.inner.name, "master {} stopped", self.inner.name);
    }
}

/// Creates Buildbot's tables when missing, through the shared schema.
pub(crate) async fn ensure_schema(db: &DbUrl) -> anyhow::Result<()> {
    let schema = SchedulerDb::connect(db)
        .await
        .with_context(|| format!("connecting to the scheduler DB {db}"))?;
    let created = create_buildbot08_schema(&schema).await;
    schema.close().await;
    created.with_context(|| format!("creating the Buildbot 0.8 tables in {db}"))
}

async fn poll_loop(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut builds = JoinSet::new();
    loop {
        while builds.try_join_next().is_some() {}
        if let Err(error) = poll_once(&inner, &mut builds).await {
            tracing::warn!(
                master.name = %inner.name,
                error = format!("{error:#}"),
                "master {} could not poll the scheduler DB: {error:#}",
                inner.name
            );
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(inner.poll_interval) => {}
        }
    }
    builds.abort_all();
    while builds.join_next().await.is_some() {}
    lock(&inner.running).clear();
}

/// One poll: re-stamp due claims, then claim and start what is buildable.
async fn poll_once(inner: &Arc<Inner>, builds: &mut JoinSet<()>) -> anyhow::Result<()> {
    let now = inner.clock.now_secs();
    let due: Vec<(u64, Vec<i64>)> = lock(&inner.running)
        .iter()
        .filter(|(_, r)| now - r.last_stamp >= RESTAMP_SECS)
        .map(|(key, r)| (*key, r.brids.clone()))
        .collect();
    for (key, brids) in due {
        inner
            .db
            .restamp(&brids, now, &inner.name, &inner.incarnation)
            .await?;
        if let Some(r) = lock(&inner.running).get_mut(&key) {
            r.last_stamp = now;
        }
    }
    for builder in &inner.builders {
        let now = inner.clock.now_secs();
        let candidates = inner
            .db
            .unclaimed(
                builder,
                now - STALE_CLAIM_SECS,
                &inner.name,
                &inner.incarnation,
            )
            .await?;
        // Our own running Builds look stale after a clock jump until re-stamped.
        let mine: BTreeSet<i64> = lock(&inner.running)
            .values()
            .flat_map(|r| r.brids.iter().copied())
            .collect();
        let candidates: Vec<Unclaimed> = candidates
            .into_iter()
            .filter(|c| !mine.contains(&c.id))
            .collect();
        let mut taken = vec![false; candidates.len()];
        for first in 0..candidates.len() {
            if taken[first] {
                continue;
            }
            taken[first] = true;
            let lead = &candidates[first];
            if !inner
                .db
                .claim(lead, now, &inner.name, &inner.incarnation)
                .await?
            {
                continue;
            }
            let mut group = vec![lead.clone()];
            for other in first + 1..candidates.len() {
                if group.len() >= MAX_MERGED_REQUESTS {
                    break;
                }
                if taken[other] || !lead.same_sourcestamp(&candidates[other]) {
                    continue;
                }
                taken[other] = true;
                match inner
                    .db
                    .claim(&candidates[other], now, &inner.name, &inner.incarnation)
                    .await
                {
                    Ok(true) => group.push(candidates[other].clone()),
                    Ok(false) => {}
                    Err(error) => {
                        // Build what is claimed already; the rest waits for the next poll.
                        tracing::warn!(
                            master.name = %inner.name,
                            %error,
                            "master {} could not claim request {}: {error}",
                            inner.name,
                            candidates[other].id
                        );
                        break;
                    }
                }
            }
            let key = inner.next_key.fetch_add(1, Ordering::SeqCst);
            let (stop, stop_rx) = watch::channel(false);
            lock(&inner.running).insert(
                key,
                Running {
                    brids: group.iter().map(|r| r.id).collect(),
                    build_ids: Vec::new(),
                    last_stamp: now,
                    stop,
                },
            );
            builds.spawn(run_build(
                Arc::clone(inner),
                key,
                builder.clone(),
                group,
                stop_rx,
            ));
        }
    }
    Ok(())
}

/// What a request's properties script for its Builds.
#[derive(Debug, Clone, Default, PartialEq)]
struct Script {
    results: Vec<i64>,
    duration: Option<Duration>,
    log_url: Option<String>,
}

impl Script {
    fn from_properties(properties: &Properties) -> Script {
        let mut script = Script::default();
        if let Some((value, _)) = properties.get("sandbox_results") {
            let items: Vec<String> = match value {
                Value::String(s) => s.split(',').map(str::to_owned).collect(),
                Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect(),
                other => vec![other.to_string()],
            };
            for item in items.iter().filter(|i| !i.trim().is_empty()) {
                script.results.push(results::parse(item).unwrap_or_else(|| {
                    tracing::warn!("sandbox_results: unknown result {item:?}; using SUCCESS");
                    results::SUCCESS
                }));
            }
        }
        if let Some((value, _)) = properties.get("sandbox_duration_ms") {
            let ms = match value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            script.duration = ms.map(Duration::from_millis);
        }
        if let Some((value, _)) = properties.get("sandbox_log_url") {
            script.log_url = Some(
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned),
            );
        }
        script
    }

    /// The result of the request's `attempt`-th Build (from 1).
    fn result_for(&self, attempt: i64) -> i64 {
        usize::try_from(attempt - 1)
            .ok()
            .and_then(|i| self.results.get(i).copied())
            .unwrap_or(results::SUCCESS)
    }
}

/// Stored property values are JSON `[value, source]`; anything else is kept as a string.
fn parse_properties(rows: Vec<(String, String)>) -> Properties {
    rows.into_iter()
        .map(|(name, raw)| {
            let pair = match serde_json::from_str::<Value>(&raw) {
                Ok(Value::Array(mut a)) if a.len() == 2 && a[1].is_string() => {
                    let source = a.pop().and_then(|s| s.as_str().map(str::to_owned));
                    let value = a.pop().unwrap_or(Value::Null);
                    (value, source.unwrap_or_default())
                }
                _ => (Value::String(raw), "Unknown".to_owned()),
            };
            (name, pair)
        })
        .collect()
}

async fn run_build(
    inner: Arc<Inner>,
    key: u64,
    builder: String,
    requests: Vec<Unclaimed>,
    stop: watch::Receiver<bool>,
) {
    let brids: Vec<i64> = requests.iter().map(|r| r.id).collect();
    if let Err(error) = build(&inner, key, &builder, &requests, stop).await {
        tracing::error!(
            master.name = %inner.name,
            buildrequest_ids = ?brids,
            error = format!("{error:#}"),
            "master {}: the Build of {builder} for requests {brids:?} failed: {error:#}",
            inner.name
        );
    }
    lock(&inner.running).remove(&key);
}

impl Inner {
    /// Numbers go up per builder, past any number some master already used in the DB.
    async fn next_number(&self, builder: &str) -> anyhow::Result<i64> {
        let mut numbers = self.numbers.lock().await;
        let from_db = self.db.max_number(builder).await?.map_or(0, |n| n + 1);
        let next = numbers.get(builder).copied().unwrap_or(0).max(from_db);
        numbers.insert(builder.to_owned(), next + 1);
        Ok(next)
    }

    fn send(&self, kind: EventKind, build: &BuildView, message_id: Value, payload: Value) {
        let routing_key = events::routing_key(&build.builder, build.number, kind);
        let body = events::envelope(
            &self.exchange,
            &routing_key,
            &self.name,
            &self.incarnation,
            message_id,
            payload,
        );
        self.outbox.send(kind, routing_key, body);
    }

    /// The host part of the master's name, as a word for log file names.
    fn short_name(&self) -> String {
        let host = self.name.split([':', '.']).next().unwrap_or("master");
        builder_dir(host)
    }
}

/// One Build, from its builds rows to postrun.
async fn build(
    inner: &Inner,
    key: u64,
    builder: &str,
    requests: &[Unclaimed],
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(lead) = requests.first() else {
        return Ok(());
    };
    let mut properties = Properties::new();
    let mut lead_properties = None;
    for request in requests {
        let props = parse_properties(inner.db.properties(request.buildsetid).await?);
        if lead_properties.is_none() {
            lead_properties = Some(props.clone());
        }
        // Buildbot 0.8: each request's properties in turn, later ones overriding.
        properties.extend(props);
    }
    let script = Script::from_properties(&lead_properties.unwrap_or_default());
    let number = inner.next_number(builder).await?;
    let slave = format!(
        "bld-sandbox-{:03}",
        inner.builds_started.fetch_add(1, Ordering::SeqCst) % 1000 + 1
    );
    let sourcestamp = SourceStamp {
        branch: lead.branch.clone(),
        revision: lead.revision.clone(),
        repository: lead.repository.clone().unwrap_or_default(),
        project: lead.project.clone().unwrap_or_default(),
    };
    let short_branch = sourcestamp
        .branch
        .as_deref()
        .and_then(|b| b.trim_matches('/').rsplit('/').next())
        .map_or(Value::Null, Value::from);
    let set = |properties: &mut Properties, name: &str, value: Value, source: &str| {
        properties.insert(name.to_owned(), (value, source.to_owned()));
    };
    set(
        &mut properties,
        "buildername",
        Value::from(builder),
        "Builder",
    );
    set(&mut properties, "buildnumber", Value::from(number), "Build");
    set(&mut properties, "branch", short_branch, "Builder");
    set(
        &mut properties,
        "revision",
        sourcestamp
            .revision
            .clone()
            .map_or(Value::Null, Value::from),
        "Build",
    );
    set(
        &mut properties,
        "repository",
        Value::from(sourcestamp.repository.clone()),
        "Build",
    );
    set(
        &mut properties,
        "project",
        Value::from(sourcestamp.project.clone()),
        "Build",
    );
    set(
        &mut properties,
        "slavename",
        Value::from(slave.clone()),
        "BuildSlave",
    );

    // The Build's clock starts here, before its rows exist: whoever sees a row and moves the
    // clock on moves this Build's end too.
    let started_at = inner.clock.now();
    let start = started_at.timestamp();
    let mut build_ids = Vec::with_capacity(requests.len());
    for request in requests {
        let id = inner.db.insert_build(number, request.id, start).await?;
        build_ids.push(id);
        if let Some(r) = lock(&inner.running).get_mut(&key) {
            r.build_ids.push(id);
        }
    }
    let attempt = inner.db.count_builds(lead.id).await?;
    let mut view = BuildView {
        builder: builder.to_owned(),
        number,
        sourcestamp,
        reason: lead.reason.clone().unwrap_or_default(),
        properties,
        start,
        finish: None,
        results: None,
        slave,
        request_ids: requests.iter().map(|r| r.id).collect(),
    };
    tracing::info!(
        master.name = %inner.name,
        buildrequest_ids = ?view.request_ids,
        "master {}: {builder} #{number} started for requests {:?} (attempt {attempt})",
        inner.name,
        view.request_ids
    );
    inner.send(
        EventKind::Started,
        &view,
        Value::from(ulid::Ulid::generate().to_string()),
        events::started_payload(&view),
    );

    let duration = script.duration.unwrap_or(inner.build_duration);
    let deadline =
        started_at + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
    let stopped = loop {
        if *stop.borrow() {
            break true;
        }
        let left = deadline - inner.clock.now();
        let Some(left) = left.to_std().ok().filter(|l| !l.is_zero()) else {
            break false;
        };
        let nap = left.min(RUN_TICK);
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            changed = stop.changed() => if changed.is_err() {
                tokio::time::sleep(nap).await;
            },
        }
    };
    let results = if stopped {
        results::CANCELLED
    } else {
        script.result_for(attempt)
    };
    let finish = inner.clock.now_secs();
    view.finish = Some(finish);
    view.results = Some(results);
    tracing::info!(
        master.name = %inner.name,
        buildrequest_ids = ?view.request_ids,
        build.results = results,
        "master {}: {builder} #{number} finished with results {results}",
        inner.name
    );
    inner.send(
        EventKind::Finished,
        &view,
        Value::from(ulid::Ulid::generate().to_string()),
        events::finished_payload(&view),
    );

    inner.db.finish_builds(&build_ids, finish).await?;
    if results == results::RETRY {
        for request in requests {
            inner
                .db
                .unclaim(request.id, &inner.name, &inner.incarnation)
                .await?;
        }
    } else {
        for request in requests {
            inner
                .db
                .complete_request(request.id, results, finish)
                .await?;
        }
        let buildsets: BTreeSet<i64> = requests.iter().map(|r| r.buildsetid).collect();
        for buildset in buildsets {
            inner.db.maybe_complete_buildset(buildset, finish).await?;
        }
    }

    // postrun.py
    let log_url = script.log_url.clone().unwrap_or_else(|| {
        format!(
            "https://archive.sandbox.bbb.test/buildbot-logs/{}-{}-build{number}.txt.gz",
            builder_dir(builder),
            inner.short_name()
        )
    });
    let request_times: BTreeMap<i64, i64> =
        requests.iter().map(|r| (r.id, r.submitted_at)).collect();
    let statusdb_id = next_statusdb_id();
    inner.send(
        EventKind::LogUploaded,
        &view,
        Value::from(statusdb_id),
        events::log_uploaded_payload(&view, &log_url, &request_times, statusdb_id),
    );
    Ok(())
}

/// The running masters by name (`claimed_by_name`), for self-serve to find the one holding a
/// request. Clones share the registry.
#[derive(Debug, Clone, Default)]
pub struct Masters {
    inner: Arc<RwLock<BTreeMap<String, Master>>>,
}

impl Masters {
    pub fn new() -> Masters {
        Masters::default()
    }

    /// Starts one master per settings and registers them.
    pub async fn start_all(
        settings: Vec<MasterSettings>,
        db: &DbUrl,
        clock: &Clock,
        publisher: &Publisher,
    ) -> anyhow::Result<Masters> {
        let masters = Masters::new();
        for s in settings {
            let master = Master::start(s, db, clock.clone(), publisher.clone()).await?;
            masters.insert(master);
        }
        Ok(masters)
    }

    /// Registers (or replaces) a master under its name.
    pub fn insert(&self, master: Master) {
        let mut map = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(master.name().to_owned(), master);
    }

    pub fn remove(&self, name: &str) -> Option<Master> {
        let mut map = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(name)
    }

    /// The master whose `claimed_by_name` is `name`.
    pub fn get(&self, name: &str) -> Option<Master> {
        let map = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(name).cloned()
    }

    pub fn all(&self) -> Vec<Master> {
        let map = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.values().cloned().collect()
    }

    pub fn names(&self) -> Vec<String> {
        let map = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.keys().cloned().collect()
    }

    /// Sets the faults of every master.
    pub fn set_faults(&self, faults: &PulseFaults) {
        for master in self.all() {
            master.set_faults(faults.clone());
        }
    }

    /// Shuts every registered master down and empties the registry.
    pub async fn shutdown(&self) {
        let masters: Vec<Master> = {
            let mut map = self
                .inner
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::take(&mut *map).into_values().collect()
        };
        for master in masters {
            master.shutdown().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builder_directories_are_single_lower_case_words() {
        assert_eq!(
            builder_dir("Linux x86-64 mozilla-inbound build"),
            "linux_x86-64_mozilla-inbound_build"
        );
        assert_eq!(
            builder_dir("release-mozilla-beta-firefox_signing"),
            "release-mozilla-beta-firefox_signing"
        );
        assert_eq!(
            builder_dir("WINNT 6.1 try/opt #3*"),
            "winnt_6_1_try_opt__3_"
        );
    }

    #[test]
    fn result_names_and_numbers_parse() {
        assert_eq!(results::parse("retry"), Some(results::RETRY));
        assert_eq!(results::parse(" CANCELED "), Some(results::CANCELLED));
        assert_eq!(results::parse("2"), Some(results::FAILURE));
        assert_eq!(results::parse("7"), None);
        assert_eq!(results::parse("bogus"), None);
    }

    #[test]
    fn scripts_give_the_nth_build_the_nth_result_then_success() {
        let props = parse_properties(vec![
            (
                "sandbox_results".into(),
                r#"["RETRY,5,FAILURE","bbb"]"#.into(),
            ),
            ("sandbox_duration_ms".into(), r#"["1500","bbb"]"#.into()),
            ("sandbox_log_url".into(), r#"["null","bbb"]"#.into()),
        ]);
        let script = Script::from_properties(&props);
        assert_eq!(
            (1..=4).map(|n| script.result_for(n)).collect::<Vec<_>>(),
            vec![5, 5, 2, 0]
        );
        assert_eq!(script.duration, Some(Duration::from_millis(1500)));
        assert_eq!(script.log_url.as_deref(), Some("null"));
        assert_eq!(Script::from_properties(&Properties::new()).result_for(1), 0);
    }

    #[test]
    fn stored_properties_keep_their_source_and_odd_values_survive() {
        let props = parse_properties(vec![
            ("taskId".into(), r#"["abc","bbb"]"#.into()),
            ("odd".into(), "not json".into()),
        ]);
        assert_eq!(props["taskId"], (json!("abc"), "bbb".to_owned()));
        assert_eq!(props["odd"], (json!("not json"), "Unknown".to_owned()));
    }

    #[test]
    fn incarnations_differ_within_a_process() {
        let clock = Clock::new();
        let a = new_incarnation(&clock);
        let b = new_incarnation(&clock);
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("pid{}-boot", std::process::id())));
    }
}
