//! The status page: what the job queues, the bridge's Pulse queues and the workers look like
//! now and over the last hour, for an operator's browser; and the queue gauges of `/metrics`.
//!
//! - [`sample`] / [`run_sampler`]: take an [`inspect::snapshot`], set the queue gauges and
//!   append a compact [`Sample`] to the Redis list `<prefix>:stats:history` (newest first,
//!   trimmed to an hour's worth). Any number of scheduler replicas may sample: one Lua script
//!   appends only when the newest sample is at least half an interval old, so the list holds
//!   about one sample per interval however many replicas run, and readers keep only the
//!   samples of the last hour.
//! - [`router`]: `GET /` and `GET /status` (a self-contained HTML page that reloads itself
//!   every 10 s, its chart of the last hour drawn server-side as inline SVG) and
//!   `GET /status.json` (the snapshot and the history).
//!
//! Nothing is kept in the process: every request reads Redis (and RabbitMQ) afresh.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use bbb_shared::{
    inspect::{self, InspectSettings, Snapshot},
    stats,
};
use chrono::{DateTime, Utc};
use redis::{AsyncCommands, Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How far back the history and the chart reach.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(3600);

/// The sampling interval of [`sample`] (and the `bbb serve-status` default).
pub const DEFAULT_SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Seconds between the page's reloads.
const REFRESH_SECS: u32 = 10;

/// The Redis list of samples, newest first.
pub fn history_key(prefix: &str) -> String {
    format!("{prefix}:stats:history")
}

/// The time (epoch milliseconds) of the newest sample of the history.
fn history_last_key(prefix: &str) -> String {
    format!("{prefix}:stats:history:last-at")
}

/// One point of the history: the queues summed over the job kinds at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub waiting: u64,
    pub delayed: u64,
    pub running: u64,
    /// Jobs finished in the last whole minute, all kinds together.
    pub done_per_min: u64,
    /// Waiting jobs per kind.
    pub waiting_by_kind: BTreeMap<String, u64>,
}

impl Sample {
    pub fn from_snapshot(snapshot: &Snapshot, done_per_min: u64) -> Self {
        let q = &snapshot.queues;
        Self {
            at: snapshot.taken_at,
            waiting: q.iter().map(|r| r.waiting).sum(),
            delayed: q.iter().map(|r| r.delayed).sum(),
            running: q.iter().map(|r| r.running).sum(),
            done_per_min,
            waiting_by_kind: q.iter().map(|r| (r.kind.clone(), r.waiting)).collect(),
        }
    }

    /// Jobs not finished: waiting, delayed and running.
    pub fn depth(&self) -> u64 {
        self.waiting + self.delayed + self.running
    }
}

/// What `GET /status.json` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    pub snapshot: Snapshot,
    /// The samples of the last hour, oldest first.
    pub history: Vec<Sample>,
}

/// Appends a sample unless the newest one is younger than the minimum gap; returns whether it
/// did. KEYS: the history list, the newest sample's time. ARGV: the sample's JSON, its time
/// (epoch ms), the minimum gap (ms), the list's maximum length, the keys' lifetime (ms).
const APPEND: &str = r#"
local last = redis.call('GET', KEYS[2])
if last and tonumber(ARGV[2]) - tonumber(last) < tonumber(ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5])
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[4]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"#;

/// Takes a snapshot, sets the queue gauges and appends a sample to the history, at the
/// [`DEFAULT_SAMPLE_EVERY`] interval.
pub async fn sample(
    conn: &ConnectionManager,
    settings: &InspectSettings,
) -> anyhow::Result<Snapshot> {
    sample_every(conn, settings, DEFAULT_SAMPLE_EVERY).await
}

/// [`sample`] for a sampler running every `every`: the history keeps an hour's worth of
/// samples at that interval, and a sample taken less than `every / 2` after the newest one
/// (another replica's) is not appended.
pub async fn sample_every(
    conn: &ConnectionManager,
    settings: &InspectSettings,
    every: Duration,
) -> anyhow::Result<Snapshot> {
    let snapshot = inspect::snapshot(conn, settings)
        .await
        .context("taking a snapshot of the queues")?;
    set_gauges(&snapshot);
    let mut conn = conn.clone();
    let done = done_last_minute(&mut conn, &settings.prefix, &snapshot)
        .await
        .context("reading the done counters")?;
    let sample = Sample::from_snapshot(&snapshot, done);
    append(&mut conn, &settings.prefix, &sample, every)
        .await
        .with_context(|| format!("appending to {}", history_key(&settings.prefix)))?;
    Ok(snapshot)
}

/// Jobs of the snapshot's kinds finished in the last whole minute before it was taken.
async fn done_last_minute(
    conn: &mut ConnectionManager,
    prefix: &str,
    snapshot: &Snapshot,
) -> redis::RedisResult<u64> {
    let minute = stats::epoch_minute(snapshot.taken_at) - 1;
    let keys: Vec<String> = snapshot
        .queues
        .iter()
        .map(|q| stats::counter_key(prefix, &q.kind, stats::Outcome::Done, minute))
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    let counts: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    Ok(counts.into_iter().flatten().sum())
}

/// Appends `sample` to the history (see [`APPEND`]); returns whether it was appended.
async fn append(
    conn: &mut ConnectionManager,
    prefix: &str,
    sample: &Sample,
    every: Duration,
) -> anyhow::Result<bool> {
    let json = serde_json::to_string(sample)?;
    let every_ms = every.as_millis().max(1);
    // Out-of-phase replicas may append every half interval: room for twice the samples.
    let max_len = 2 * HISTORY_WINDOW.as_millis().div_ceil(every_ms) + 2;
    let ttl_ms = 2 * HISTORY_WINDOW.as_millis();
    let appended: i64 = Script::new(APPEND)
        .key(history_key(prefix))
        .key(history_last_key(prefix))
        .arg(json)
        .arg(sample.at.timestamp_millis())
        .arg(u64::try_from(every_ms / 2).unwrap_or(u64::MAX))
        .arg(u64::try_from(max_len).unwrap_or(u64::MAX))
        .arg(u64::try_from(ttl_ms).unwrap_or(u64::MAX))
        .invoke_async(conn)
        .await?;
    Ok(appended == 1)
}

/// The samples of the hour before `now`, oldest first.
pub async fn history(
    conn: &ConnectionManager,
    prefix: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Sample>> {
    let mut conn = conn.clone();
    let raw: Vec<String> = conn.lrange(history_key(prefix), 0, -1).await?;
    let start = now - window();
    let mut samples: Vec<Sample> = raw
        .iter()
        .filter_map(|r| serde_json::from_str::<Sample>(r).ok())
        .filter(|s| s.at >= start)
        .collect();
    samples.sort_by_key(|s| s.at);
    Ok(samples)
}

fn window() -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(HISTORY_WINDOW).unwrap_or(chrono::TimeDelta::hours(1))
}

/// Sets the queue, worker and Pulse gauges from a snapshot.
pub fn set_gauges(snapshot: &Snapshot) {
    for q in &snapshot.queues {
        let kind = q.kind.clone();
        metrics::gauge!("bbb_queue_waiting", "kind" => kind.clone()).set(q.waiting as f64);
        metrics::gauge!("bbb_queue_delayed", "kind" => kind.clone()).set(q.delayed as f64);
        metrics::gauge!("bbb_queue_running", "kind" => kind.clone()).set(q.running as f64);
        metrics::gauge!("bbb_queue_oldest_waiting_seconds", "kind" => kind.clone())
            .set(q.oldest_waiting_secs.unwrap_or(0) as f64);
        metrics::gauge!("bbb_queue_dead_letters", "kind" => kind.clone())
            .set(q.dead_lettered as f64);
        metrics::gauge!("bbb_workers_alive", "kind" => kind).set(q.workers_alive as f64);
    }
    for p in &snapshot.pulse {
        let queue = p.queue.clone();
        metrics::gauge!("bbb_pulse_messages_ready", "queue" => queue.clone()).set(p.ready as f64);
        if let Some(unacked) = p.unacked {
            metrics::gauge!("bbb_pulse_messages_unacked", "queue" => queue.clone())
                .set(unacked as f64);
        }
        metrics::gauge!("bbb_pulse_consumers", "queue" => queue).set(p.consumers as f64);
    }
}

/// Samples every `every` until `shutdown` turns true. A failed sample is logged and the next
/// tick tries again.
pub async fn run_sampler(
    conn: ConnectionManager,
    settings: InspectSettings,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = every.max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        "status sampler: a sample every {} ms into {}",
        every.as_millis(),
        history_key(&settings.prefix)
    );
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = bbb_shared::process::stopped(&mut shutdown) => return,
        }
        let outcome = tokio::select! {
            r = sample_every(&conn, &settings, every) => r,
            _ = bbb_shared::process::stopped(&mut shutdown) => return,
        };
        match outcome {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("status sampler: sampling again");
            }
            Ok(_) => {}
            Err(e) => {
                failing = true;
                tracing::warn!("status sampler: no sample this tick: {e:#}");
            }
        }
    }
}

/// Every answer is of the moment: browsers and proxies keep no copy.
const NO_STORE: [(header::HeaderName, &str); 1] = [(header::CACHE_CONTROL, "no-store")];

#[derive(Clone)]
struct PageState {
    conn: ConnectionManager,
    settings: Arc<InspectSettings>,
}

/// The status page's routes: `GET /`, `GET /status` (HTML) and `GET /status.json`.
pub fn router(conn: ConnectionManager, settings: InspectSettings) -> Router {
    let state = PageState {
        conn,
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/", get(page))
        .route("/status", get(page))
        .route("/status.json", get(document))
        .with_state(state)
}

async fn load(state: &PageState) -> anyhow::Result<StatusDocument> {
    let snapshot = inspect::snapshot(&state.conn, &state.settings)
        .await
        .context("taking a snapshot of the queues")?;
    let history = history(&state.conn, &state.settings.prefix, snapshot.taken_at)
        .await
        .context("reading the history")?;
    Ok(StatusDocument { snapshot, history })
}

async fn page(State(state): State<PageState>) -> Response {
    match load(&state).await {
        Ok(doc) => (NO_STORE, Html(render_page(&doc.snapshot, &doc.history))).into_response(),
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!("status page: {message}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(render_error_page(&state.settings.prefix, &message)),
            )
                .into_response()
        }
    }
}

async fn document(State(state): State<PageState>) -> Response {
    match load(&state).await {
        Ok(doc) => (NO_STORE, Json(doc)).into_response(),
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!("status.json: {message}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "error": message })),
            )
                .into_response()
        }
    }
}

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { --fg: #1f2328; --muted: #656d76; --line: #d8dee4; --bg: #f6f8fa; --bad: #cf222e; --warn: #9a6700; --good: #1a7f37; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 40px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: #fff; }
main { max-width: 1120px; }
h1 { font-size: 22px; margin: 0 0 2px; }
h2 { font-size: 15px; margin: 26px 0 8px; }
.meta { color: var(--muted); margin: 0; }
.meta a { color: inherit; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: var(--bg); padding: 1px 4px; border-radius: 4px; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 16px; }
.tile { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 118px; background: var(--bg); }
.tile b { display: block; font-size: 20px; font-variant-numeric: tabular-nums; }
.tile span { color: var(--muted); font-size: 12px; }
.tile.bad b { color: var(--bad); }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { font-size: 12px; font-weight: 600; color: var(--muted); background: var(--bg); }
th.n, td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.zero { color: #8c959f; }
td.warn { color: var(--warn); font-weight: 600; }
td.bad { color: var(--bad); font-weight: 600; }
.ok { color: var(--good); font-weight: 600; margin: 0; }
ul.diagnosis { margin: 0; padding-left: 20px; color: var(--warn); }
.empty { color: var(--muted); font-style: italic; margin: 0; }
.note { color: var(--muted); font-size: 12px; margin-left: 6px; }
.error { color: var(--bad); margin: 0 0 6px; }
svg#chart { display: block; width: 100%; height: auto; border: 1px solid var(--line); border-radius: 8px; }
"#;

/// The whole status page for a snapshot and the history before it (oldest first).
pub fn render_page(snapshot: &Snapshot, history: &[Sample]) -> String {
    let prefix = escape(&snapshot.prefix);
    let mut html = String::with_capacity(16 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>bbb status: {prefix}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>bbb status</h1>\n<p class=\"meta\">Redis prefix <code>{prefix}</code> \
         &middot; taken {} &middot; reloads every {REFRESH_SECS} s &middot; \
         <a href=\"status.json\">JSON</a></p>\n",
        snapshot.taken_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    render_tiles(&mut html, snapshot);
    html.push_str("<h2>Diagnosis</h2>\n");
    render_diagnosis(&mut html, &snapshot.diagnosis);
    html.push_str("<h2>Last hour</h2>\n");
    html.push_str(&render_chart(history, snapshot.taken_at));
    html.push_str("\n<h2>Job queues</h2>\n");
    render_queues(&mut html, snapshot);
    html.push_str("<h2>Pulse queues</h2>\n");
    render_pulse(&mut html, snapshot);
    html.push_str("<h2>Live workers</h2>\n");
    render_workers(&mut html, snapshot);
    html.push_str("</main>\n</body>\n</html>\n");
    html
}

/// The page shown when the snapshot cannot be taken.
pub fn render_error_page(prefix: &str, message: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\n\
         <title>bbb status: {prefix}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>bbb status</h1>\n<p class=\"error\">The status cannot be read: {message}</p>\n\
         <p class=\"meta\">Redis prefix <code>{prefix}</code> &middot; retrying every \
         {REFRESH_SECS} s</p>\n</main>\n</body>\n</html>\n",
        prefix = escape(prefix),
        message = escape(message),
    )
}

fn render_tiles(html: &mut String, s: &Snapshot) {
    let sum = |f: fn(&inspect::QueueRow) -> u64| s.queues.iter().map(f).sum::<u64>();
    let workers: BTreeSet<&str> = s.workers.iter().map(|w| w.name.as_str()).collect();
    let dead = s.dead_letters;
    let tiles = [
        ("waiting", sum(|q| q.waiting), false),
        ("delayed", sum(|q| q.delayed), false),
        ("running", sum(|q| q.running), false),
        ("done, 1 h", sum(|q| q.done_last_hour), false),
        ("failed, 1 h", sum(|q| q.failed_last_hour), false),
        ("dead letters", dead, dead > 0),
        ("live workers", workers.len() as u64, false),
    ];
    html.push_str("<div class=\"tiles\">\n");
    for (label, value, bad) in tiles {
        let class = if bad { "tile bad" } else { "tile" };
        let _ = writeln!(
            html,
            "<div class=\"{class}\"><b>{value}</b><span>{label}</span></div>"
        );
    }
    html.push_str("</div>\n");
}

fn render_diagnosis(html: &mut String, lines: &[String]) {
    if lines.is_empty() {
        html.push_str("<p class=\"ok\" id=\"diagnosis\">all clear</p>\n");
        return;
    }
    html.push_str("<ul class=\"diagnosis\" id=\"diagnosis\">\n");
    for line in lines {
        let _ = writeln!(html, "<li>{}</li>", escape(line));
    }
    html.push_str("</ul>\n");
}

/// A right-aligned number cell, grey when zero, `hot_class` when not.
fn number_cell(html: &mut String, value: u64, hot_class: &str) {
    let class = match (value, hot_class) {
        (0, _) => "n zero",
        (_, "") => "n",
        (_, "warn") => "n warn",
        _ => "n bad",
    };
    let _ = write!(html, "<td class=\"{class}\">{value}</td>");
}

fn render_queues(html: &mut String, s: &Snapshot) {
    if s.queues.is_empty() {
        html.push_str("<p class=\"empty\">no job kinds configured</p>\n");
        return;
    }
    html.push_str(
        "<table id=\"queues\">\n<thead><tr><th>kind</th><th class=\"n\">waiting</th>\
         <th class=\"n\">delayed</th><th class=\"n\">running</th><th class=\"n\">done 1h</th>\
         <th class=\"n\">failed 1h</th><th class=\"n\">dead</th><th class=\"n\">oldest waiting</th>\
         <th class=\"n\">jobs/s</th><th class=\"n\">workers</th></tr></thead>\n<tbody>\n",
    );
    for q in &s.queues {
        let kind = escape(&q.kind);
        let _ = write!(html, "<tr data-kind=\"{kind}\"><td>{kind}</td>");
        number_cell(html, q.waiting, "");
        number_cell(html, q.delayed, "");
        number_cell(html, q.running, "");
        number_cell(html, q.done_last_hour, "");
        number_cell(html, q.failed_last_hour, "warn");
        number_cell(html, q.dead_lettered, "bad");
        match q.oldest_waiting_secs {
            Some(secs) => {
                let _ = write!(html, "<td class=\"n\">{}</td>", human_secs(secs));
            }
            None => html.push_str("<td class=\"n zero\">&ndash;</td>"),
        }
        let rate_class = if q.jobs_per_sec > 0.0 { "n" } else { "n zero" };
        let _ = write!(
            html,
            "<td class=\"{rate_class}\">{:.2}</td>",
            q.jobs_per_sec
        );
        number_cell(html, q.workers_alive, "");
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n");
}

fn render_pulse(html: &mut String, s: &Snapshot) {
    if let Some(error) = &s.pulse_error {
        let _ = writeln!(
            html,
            "<p class=\"error\">RabbitMQ could not be read: {}</p>",
            escape(error)
        );
    }
    if s.pulse.is_empty() {
        if s.pulse_error.is_none() {
            html.push_str("<p class=\"empty\">no Pulse queues inspected</p>\n");
        }
        return;
    }
    html.push_str(
        "<table id=\"pulse\">\n<thead><tr><th>queue</th><th class=\"n\">ready</th>\
         <th class=\"n\">unacked</th><th class=\"n\">consumers</th></tr></thead>\n<tbody>\n",
    );
    for p in &s.pulse {
        let _ = write!(html, "<tr><td>{}", escape(&p.queue));
        if let Some(note) = &p.note {
            let _ = write!(html, " <span class=\"note\">{}</span>", escape(note));
        }
        html.push_str("</td>");
        number_cell(html, p.ready, "");
        match p.unacked {
            Some(n) => number_cell(html, n, ""),
            None => html.push_str(
                "<td class=\"n zero\" title=\"the management API is not reachable\">n/a</td>",
            ),
        }
        let consumers_class = if p.consumers == 0 { "bad" } else { "" };
        number_cell(html, p.consumers, consumers_class);
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n");
}

fn render_workers(html: &mut String, s: &Snapshot) {
    if s.workers.is_empty() {
        html.push_str("<p class=\"empty\" id=\"workers\">no live workers</p>\n");
        return;
    }
    html.push_str(
        "<table id=\"workers\">\n<thead><tr><th>worker</th><th>kind</th><th>host</th>\
         <th class=\"n\">pid</th><th class=\"n\">heartbeat</th><th class=\"n\">concurrency</th>\
         <th class=\"n\">in flight</th></tr></thead>\n<tbody>\n",
    );
    for w in &s.workers {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{:.1} s ago</td><td class=\"n\">{}</td>",
            escape(&w.name),
            escape(&w.kind),
            escape(&w.host),
            w.pid,
            w.heartbeat_age_secs,
            w.concurrency,
        );
        number_cell(html, w.in_flight, "");
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n");
}

/// `42 s`, `3 min 5 s`, `2 h 7 min`.
fn human_secs(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

// The chart's geometry, in SVG user units.
const CHART_W: f64 = 960.0;
const CHART_H: f64 = 260.0;
const PLOT_LEFT: f64 = 56.0;
const PLOT_RIGHT: f64 = CHART_W - 56.0;
const PLOT_TOP: f64 = 40.0;
const PLOT_BOTTOM: f64 = CHART_H - 32.0;
/// Horizontal grid lines divide each y axis into this many steps.
const Y_STEPS: u32 = 4;
const DEPTH_COLOR: &str = "#0969da";
const DONE_COLOR: &str = "#1a7f37";

/// The smallest "round" maximum at or above `value` whose [`Y_STEPS`] steps are whole
/// numbers: 1, 2, 2.5 (from 25 up) or 5 times a power of ten per step.
fn nice_max(value: f64) -> f64 {
    let raw_step = (value / f64::from(Y_STEPS)).max(1.0);
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .filter(|m| magnitude >= 10.0 || *m != 2.5)
        .map(|m| m * magnitude)
        .find(|s| *s >= raw_step - 1e-9)
        .unwrap_or(10.0 * magnitude);
    step * f64::from(Y_STEPS)
}

/// Splits the history where the gap between two samples is more than three times the usual
/// interval (the sampler was down): the line is not drawn across the gap.
fn segments(history: &[Sample]) -> Vec<&[Sample]> {
    let mut gaps: Vec<i64> = history
        .windows(2)
        .map(|w| (w[1].at - w[0].at).num_milliseconds())
        .collect();
    gaps.sort_unstable();
    let usual = gaps.get(gaps.len() / 2).copied().unwrap_or(0).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..history.len() {
        if (history[i].at - history[i - 1].at).num_milliseconds() > 3 * usual {
            out.push(&history[start..i]);
            start = i;
        }
    }
    if start < history.len() {
        out.push(&history[start..]);
    }
    out
}

/// The chart of the hour before `now`: queue depth (waiting + delayed + running, left axis)
/// and throughput (jobs done per minute, right axis), as an inline SVG `<svg id="chart">`.
pub fn render_chart(history: &[Sample], now: DateTime<Utc>) -> String {
    let start = now - window();
    let window_ms = window().num_milliseconds().max(1) as f64;
    let x_of = |at: DateTime<Utc>| {
        let f = ((at - start).num_milliseconds() as f64 / window_ms).clamp(0.0, 1.0);
        PLOT_LEFT + f * (PLOT_RIGHT - PLOT_LEFT)
    };
    let y_of = |v: u64, max: f64| PLOT_BOTTOM - (v as f64 / max) * (PLOT_BOTTOM - PLOT_TOP);
    let depth_max = nice_max(history.iter().map(Sample::depth).max().unwrap_or(0) as f64);
    let done_max = nice_max(history.iter().map(|s| s.done_per_min).max().unwrap_or(0) as f64);

    let mut svg = String::with_capacity(8 * 1024);
    let _ = write!(
        svg,
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {CHART_W} {CHART_H}\" \
         role=\"img\" aria-labelledby=\"chart-title\" font-family=\"system-ui, sans-serif\" \
         font-size=\"11\">\n<title id=\"chart-title\">Queue depth and jobs done per minute over \
         the last hour</title>\n<rect width=\"{CHART_W}\" height=\"{CHART_H}\" fill=\"#ffffff\"/>\n"
    );

    // Grid and y labels: depth on the left, throughput on the right.
    if !history.is_empty() {
        for i in 0..=Y_STEPS {
            let f = f64::from(i) / f64::from(Y_STEPS);
            let y = PLOT_BOTTOM - f * (PLOT_BOTTOM - PLOT_TOP);
            if i > 0 {
                let _ = writeln!(
                    svg,
                    "<line x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT}\" y2=\"{y:.1}\" \
                     stroke=\"#eaeef2\"/>"
                );
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{DEPTH_COLOR}\">{:.0}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"start\" fill=\"{DONE_COLOR}\">{:.0}</text>",
                PLOT_LEFT - 6.0,
                y + 4.0,
                f * depth_max,
                PLOT_RIGHT + 6.0,
                y + 4.0,
                f * done_max,
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{DEPTH_COLOR}\">jobs</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"start\" fill=\"{DONE_COLOR}\">per min</text>",
            PLOT_LEFT - 6.0,
            PLOT_TOP - 12.0,
            PLOT_RIGHT + 6.0,
            PLOT_TOP - 12.0,
        );
    }

    // Axes and the time labels.
    let _ = writeln!(
        svg,
        "<path d=\"M{PLOT_LEFT},{PLOT_TOP} V{PLOT_BOTTOM} H{PLOT_RIGHT} V{PLOT_TOP}\" fill=\"none\" \
         stroke=\"#8c959f\"/>"
    );
    for minutes_ago in [60u32, 45, 30, 15, 0] {
        let x = PLOT_RIGHT - f64::from(minutes_ago) / 60.0 * (PLOT_RIGHT - PLOT_LEFT);
        let label = if minutes_ago == 0 {
            "now".to_owned()
        } else {
            format!("&#8722;{minutes_ago} min")
        };
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{PLOT_BOTTOM}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#8c959f\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#57606a\">{label}</text>",
            PLOT_BOTTOM + 4.0,
            PLOT_BOTTOM + 18.0,
        );
    }

    if history.is_empty() {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"15\" \
             fill=\"#57606a\">No samples in the last hour yet</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#8c959f\">The sampler \
             (bbb-scheduler or bbb serve-status) records one every few seconds.</text>",
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            (PLOT_TOP + PLOT_BOTTOM) / 2.0 - 4.0,
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            (PLOT_TOP + PLOT_BOTTOM) / 2.0 + 16.0,
        );
    } else {
        type Value = fn(&Sample) -> u64;
        let series: [(&str, &str, Value, f64); 2] = [
            ("depth", DEPTH_COLOR, Sample::depth, depth_max),
            ("done", DONE_COLOR, |s| s.done_per_min, done_max),
        ];
        for (class, color, value, max) in series {
            for segment in segments(history) {
                let points: Vec<String> = segment
                    .iter()
                    .map(|s| format!("{:.1},{:.1}", x_of(s.at), y_of(value(s), max)))
                    .collect();
                match segment {
                    [only] => {
                        let _ = writeln!(
                            svg,
                            "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" \
                             fill=\"{color}\"/>",
                            x_of(only.at),
                            y_of(value(only), max)
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            svg,
                            "<polyline class=\"{class}\" points=\"{}\" fill=\"none\" \
                             stroke=\"{color}\" stroke-width=\"2\" stroke-linejoin=\"round\"/>",
                            points.join(" ")
                        );
                    }
                }
            }
        }
    }

    // Legend.
    let _ = writeln!(
        svg,
        "<g transform=\"translate({:.1},14)\">\
         <line x1=\"0\" y1=\"0\" x2=\"18\" y2=\"0\" stroke=\"{DEPTH_COLOR}\" stroke-width=\"3\"/>\
         <text x=\"24\" y=\"4\" fill=\"#1f2328\">depth (waiting + delayed + running)</text>\
         <line x1=\"250\" y1=\"0\" x2=\"268\" y2=\"0\" stroke=\"{DONE_COLOR}\" stroke-width=\"3\"/>\
         <text x=\"274\" y=\"4\" fill=\"#1f2328\">jobs done per minute</text></g>",
        PLOT_LEFT + 40.0
    );
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use bbb_shared::inspect::{PulseRow, QueueRow, WorkerRow};

    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn row(kind: &str, waiting: u64, delayed: u64, running: u64) -> QueueRow {
        QueueRow {
            kind: kind.to_owned(),
            waiting,
            delayed,
            running,
            done_last_hour: 120,
            failed_last_hour: 2,
            dead_lettered: 0,
            oldest_waiting_secs: (waiting > 0).then_some(75),
            jobs_per_sec: 0.5,
            workers_alive: 1,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            taken_at: at("2025-12-03T10:00:00Z"),
            prefix: "bbb".to_owned(),
            queues: vec![row("task-pending", 3, 1, 2), row("task-check", 0, 4, 0)],
            pulse: vec![PulseRow {
                queue: "queue/bbb/task-pending".to_owned(),
                ready: 7,
                unacked: None,
                consumers: 1,
                note: None,
            }],
            pulse_error: None,
            workers: vec![WorkerRow {
                name: "w1".to_owned(),
                kind: "task-pending".to_owned(),
                host: "host-a".to_owned(),
                pid: 4242,
                heartbeat_age_secs: 1.5,
                concurrency: 8,
                in_flight: 2,
            }],
            dead_letters: 0,
            diagnosis: vec![],
        }
    }

    fn sample_at(t: DateTime<Utc>, depth: u64, done: u64) -> Sample {
        Sample {
            at: t,
            waiting: depth,
            delayed: 0,
            running: 0,
            done_per_min: done,
            waiting_by_kind: BTreeMap::new(),
        }
    }

    fn polylines(svg: &str) -> Vec<&str> {
        svg.split("<polyline").skip(1).collect()
    }

    #[test]
    fn a_sample_sums_the_kinds() {
        let s = Sample::from_snapshot(&snapshot(), 30);
        assert_eq!((s.waiting, s.delayed, s.running), (3, 5, 2));
        assert_eq!(s.depth(), 10);
        assert_eq!(s.done_per_min, 30);
        assert_eq!(s.waiting_by_kind.get("task-pending"), Some(&3));
        assert_eq!(s.waiting_by_kind.get("task-check"), Some(&0));
    }

    #[test]
    fn text_from_the_snapshot_is_escaped() {
        let mut s = snapshot();
        s.prefix = "p<x>".to_owned();
        s.queues[0].kind = "<script>alert(1)</script>".to_owned();
        s.workers[0].host = "a&b\"c'".to_owned();
        s.pulse[0].queue = "q<i>".to_owned();
        s.pulse[0].note = Some("not declared <yet>".to_owned());
        s.pulse_error = Some("<b>refused</b>".to_owned());
        s.diagnosis = vec!["waiting > 5 min & no <workers>".to_owned()];
        let html = render_page(&s, &[]);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("data-kind=\"&lt;script&gt;alert(1)&lt;/script&gt;\""));
        assert!(html.contains("a&amp;b&quot;c&#39;"));
        assert!(html.contains("q&lt;i&gt;"));
        assert!(html.contains("<span class=\"note\">not declared &lt;yet&gt;</span>"));
        assert!(html.contains("&lt;b&gt;refused&lt;/b&gt;"));
        assert!(html.contains("<li>waiting &gt; 5 min &amp; no &lt;workers&gt;</li>"));
        assert!(html.contains("<title>bbb status: p&lt;x&gt;</title>"));
        assert!(!html.contains("<i>") && !html.contains("<b>refused"));
    }

    #[test]
    fn the_page_has_the_tables_the_refresh_and_the_chart() {
        let html = render_page(&snapshot(), &[]);
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
        assert!(html.contains("<table id=\"queues\">"));
        assert!(html.contains(
            "<tr data-kind=\"task-pending\"><td>task-pending</td><td class=\"n\">3</td>\
             <td class=\"n\">1</td><td class=\"n\">2</td>"
        ));
        assert!(html.contains("<td class=\"n\">1 min 15 s</td>"));
        assert!(html.contains("<table id=\"pulse\">"));
        assert!(html.contains("n/a"));
        assert!(html.contains("<table id=\"workers\">"));
        assert!(html.contains("all clear"));
        assert!(html.contains("<svg id=\"chart\""));
        assert!(!html.contains("<script"), "no scripts on the page");
        assert!(
            !html.contains("src=") && !html.contains("<link"),
            "no external assets"
        );
    }

    #[test]
    fn the_dead_letter_tile_counts_every_source_and_turns_red() {
        let mut s = snapshot();
        s.dead_letters = 3;
        let html = render_page(&s, &[]);
        assert!(html.contains("<div class=\"tile bad\"><b>3</b><span>dead letters</span></div>"));
    }

    #[test]
    fn diagnosis_lines_replace_all_clear() {
        let mut s = snapshot();
        s.diagnosis = vec!["task-pending: 3 waiting and no live worker".to_owned()];
        let html = render_page(&s, &[]);
        assert!(!html.contains("all clear"));
        assert!(html.contains("<li>task-pending: 3 waiting and no live worker</li>"));
    }

    #[test]
    fn empty_sections_say_so() {
        let mut s = snapshot();
        s.workers.clear();
        s.pulse.clear();
        let html = render_page(&s, &[]);
        assert!(html.contains("no live workers"));
        assert!(html.contains("no Pulse queues inspected"));
        s.pulse_error = Some("connection refused".to_owned());
        let html = render_page(&s, &[]);
        assert!(html.contains("RabbitMQ could not be read: connection refused"));
        assert!(!html.contains("no Pulse queues inspected"));
    }

    #[test]
    fn an_empty_history_draws_the_empty_state() {
        let svg = render_chart(&[], at("2025-12-03T10:00:00Z"));
        assert!(svg.starts_with("<svg id=\"chart\""));
        assert!(svg.contains("No samples in the last hour yet"));
        assert!(polylines(&svg).is_empty());
        assert!(svg.contains(">now</text>") && svg.contains("&#8722;60 min"));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn polylines_place_the_samples_on_the_hour() {
        let now = at("2025-12-03T10:00:00Z");
        let history = [
            sample_at(at("2025-12-03T09:00:00Z"), 0, 0),
            sample_at(at("2025-12-03T09:30:00Z"), 4, 2),
            sample_at(now, 8, 4),
        ];
        let svg = render_chart(&history, now);
        let lines = polylines(&svg);
        assert_eq!(lines.len(), 2, "{svg}");
        // Depth 8 -> axis max 8; done 4 -> axis max 4: the last point sits at the top right.
        assert!(
            lines[0].contains("class=\"depth\" points=\"56.0,228.0 480.0,134.0 904.0,40.0\""),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("class=\"done\" points=\"56.0,228.0 480.0,134.0 904.0,40.0\""),
            "{}",
            lines[1]
        );
        assert!(svg.contains(">8</text>") && svg.contains(">4</text>"));
        assert!(svg.contains("jobs done per minute"));
        assert!(!svg.contains("No samples"));
    }

    #[test]
    fn samples_older_than_the_hour_are_pinned_to_the_left_edge() {
        let now = at("2025-12-03T10:00:00Z");
        let history = [
            sample_at(at("2025-12-03T08:00:00Z"), 1, 1),
            sample_at(now, 1, 1),
        ];
        let svg = render_chart(&history, now);
        assert!(svg.contains("points=\"56.0,"), "{svg}");
    }

    #[test]
    fn a_gap_in_the_history_breaks_the_lines() {
        let now = at("2025-12-03T10:00:00Z");
        let mut history: Vec<Sample> = (0..4)
            .map(|i| sample_at(now - chrono::TimeDelta::seconds(1800 - 10 * i), 5, 1))
            .collect();
        history
            .extend((0..4).map(|i| sample_at(now - chrono::TimeDelta::seconds(30 - 10 * i), 5, 1)));
        let svg = render_chart(&history, now);
        assert_eq!(polylines(&svg).len(), 4, "two segments per series: {svg}");
    }

    #[test]
    fn a_single_sample_is_a_dot() {
        let now = at("2025-12-03T10:00:00Z");
        let svg = render_chart(&[sample_at(now, 3, 0)], now);
        assert!(polylines(&svg).is_empty());
        assert_eq!(svg.matches("<circle").count(), 2);
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 4.0);
        assert_eq!(nice_max(3.0), 4.0);
        assert_eq!(nice_max(5.0), 8.0);
        assert_eq!(nice_max(8.0), 8.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(100.0), 100.0);
        assert_eq!(nice_max(101.0), 200.0);
        assert_eq!(nice_max(1500.0), 2000.0);
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(human_secs(42), "42 s");
        assert_eq!(human_secs(185), "3 min 5 s");
        assert_eq!(human_secs(7620), "2 h 7 min");
    }
}
