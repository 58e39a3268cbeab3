//! BuildAPI self-serve and its agent (FORMATS.md section 4), and `allthethings.json`.
//!
//! # Self-serve
//! `DELETE {prefix}/{branch}/request/{brid}` and `DELETE {prefix}/{branch}/build/{buildId}`,
//! where `{prefix}` is the path of the bridge's `selfserve_url`:
//! - no `X-Remote-User`: 403 `ACCESS DENIED!`;
//! - an id that is not an integer: 400;
//! - an unknown id, or a branch that is neither a prefix nor a suffix of the sourcestamp's
//!   branch (BuildAPI's loose match), or (option `fresh_404`) a request submitted less than
//!   that long ago: 404 `{"status":"FAILED","msg":"Request N not found on branch B"}`
//!   (`Build N ...` for builds);
//! - otherwise the action is queued as a job and answered 202 `{"status":"OK","request_id":J}`
//!   when JSON is asked for (`?format=json` or `Accept: application/json`), else 200 with a
//!   small HTML page. `GET {prefix}/jobs/{J}` reports the job.
//!
//! The agent then carries the job out, asynchronously, on the scheduler DB and the masters:
//! cancel request -> complete: nothing; claimed: stop its running Build on the master named
//! by `claimed_by_name` (found in the [`Masters`] registry; the Build finishes CANCELLED and
//! sends its events); else `complete=1, results=2, complete_at=now` with `claimed_at` left 0
//! and no Pulse message. Cancel build -> finished (or its request complete): nothing; else
//! stop it on its master. A claim whose Build a master has not registered yet (the moment
//! between claim and start) is retried for a few seconds.
//!
//! # allthethings.json
//! `{"builders": {<full name>: {"properties", "shortname", "slavebuilddir", "slavepool"}},
//! "schedulers": {}, "master_builders": {}, "slavepools": {}}`, with `shortname` and
//! `slavebuilddir` the [`builder_dir`] that the masters use in routing keys.
//!
//! # Listeners
//! [`SelfServe::start`] serves both on one address. When the configuration puts
//! `allthethings.json` on another port, serve [`allthethings_router`] there too with
//! [`serve`].
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{delete, get},
};
use bbb_shared::dburl::DbUrl;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    buildbot::{
        Masters, builder_dir, ensure_schema,
        sql::{BuildbotDb, SqlError},
    },
    clock::Clock,
};

/// How long the agent keeps trying to reach the running Build of a claimed request.
const STOP_PATIENCE: Duration = Duration::from_secs(5);
const STOP_RETRY: Duration = Duration::from_millis(50);
/// Longest wait for queued jobs at shutdown.
const JOBS_DRAIN: Duration = Duration::from_secs(10);

/// An HTTP listener serving one router, stopped by [`HttpServer::shutdown`].
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HttpServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Binds `listen` (port 0: any free port) and serves `router` until shut down.
pub async fn serve(listen: SocketAddr, router: Router) -> anyhow::Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "HTTP listener on {addr} failed: {error}");
        }
    });
    Ok(HttpServer {
        addr,
        stop: Some(stop),
        task,
    })
}

/// `allthethings.json`: the bridge reads the keys of `builders`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllTheThings {
    /// By full builder name.
    pub builders: BTreeMap<String, BuilderEntry>,
    pub schedulers: Map<String, Value>,
    pub master_builders: Map<String, Value>,
    pub slavepools: Map<String, Value>,
}

/// One builder of `allthethings.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuilderEntry {
    pub properties: Map<String, Value>,
    pub shortname: String,
    pub slavebuilddir: String,
    pub slavepool: String,
}

/// A JSON answer of self-serve: `{"status":"OK","request_id":J}` for a queued job,
/// `{"status":"FAILED","msg":"..."}` for a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status")]
pub enum SelfServeReply {
    #[serde(rename = "OK")]
    Ok { request_id: i64 },
    #[serde(rename = "FAILED")]
    Failed { msg: String },
}

impl SelfServeReply {
    fn failed(msg: String) -> Json<SelfServeReply> {
        Json(SelfServeReply::Failed { msg })
    }
}

/// `allthethings.json` for these builders.
pub fn allthethings(builders: &[String]) -> Value {
    let builders = builders
        .iter()
        .map(|name| {
            let dir = builder_dir(name);
            let entry = BuilderEntry {
                properties: Map::from_iter([(
                    "slavebuilddir".to_owned(),
                    Value::from(dir.clone()),
                )]),
                shortname: dir.clone(),
                slavebuilddir: dir,
                slavepool: "sandbox".to_owned(),
            };
            (name.clone(), entry)
        })
        .collect();
    serde_json::to_value(AllTheThings {
        builders,
        schedulers: Map::new(),
        master_builders: Map::new(),
        slavepools: Map::new(),
    })
    .unwrap_or_default()
}

/// Serves [`allthethings`] at `path` (e.g. `/allthethings.json`).
pub fn allthethings_router(path: &str, builders: &[String]) -> Router {
    let body = Arc::new(allthethings(builders));
    Router::new().route(
        &normalize_path(path, "/allthethings.json"),
        get(move || {
            let body = Arc::clone(&body);
            async move { Json((*body).clone()) }
        }),
    )
}

/// `"/self-serve/"` -> `"/self-serve"`, `""` -> `fallback` (or `""` for a prefix).
fn normalize_path(path: &str, fallback: &str) -> String {
    let trimmed = path.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return fallback.to_owned();
    }
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum JobAction {
    CancelRequest { request_id: i64 },
    CancelBuild { build_id: i64 },
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum JobOutcome {
    /// The request was complete (or the build finished): nothing changed.
    AlreadyComplete,
    /// The pending request was completed as FAILURE, never claimed.
    CancelledPending,
    /// The running Build was told to stop on this master.
    Stopped { master: String },
    /// The request is claimed by a master that is not running here.
    MasterUnknown { master: String },
    /// The claimed request's Build could not be found on its master in time.
    NotRunning { master: String },
    /// The row disappeared, or the DB failed.
    Failed { message: String },
}

/// One self-serve job, as `GET .../jobs/{id}` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: i64,
    #[serde(flatten)]
    pub action: JobAction,
    pub branch: String,
    /// `X-Remote-User`.
    pub who: String,
    /// Queued at, epoch s.
    pub when: i64,
    pub completed_at: Option<i64>,
    pub outcome: Option<JobOutcome>,
}

struct AppState {
    db: BuildbotDb,
    masters: Masters,
    clock: Clock,
    fresh_404: Duration,
    jobs: Mutex<Vec<Job>>,
    next_job: AtomicI64,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running self-serve emulator.
pub struct SelfServe {
    server: HttpServer,
    state: Arc<AppState>,
}

impl SelfServe {
    /// Serves self-serve under `selfserve_path` and `allthethings.json` at
    /// `allthethings_path`, both on `listen`. Creates the Buildbot tables when missing.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        listen: SocketAddr,
        selfserve_path: &str,
        allthethings_path: &str,
        builders: Vec<String>,
        db: &DbUrl,
        masters: Masters,
        clock: Clock,
        fresh_404: Duration,
    ) -> anyhow::Result<SelfServe> {
        let pool = BuildbotDb::connect(db).await?;
        ensure_schema(db).await?;
        let state = Arc::new(AppState {
            db: pool,
            masters,
            clock,
            fresh_404,
            jobs: Mutex::new(Vec::new()),
            next_job: AtomicI64::new(1),
            workers: Mutex::new(Vec::new()),
        });
        let router = selfserve_router(selfserve_path, Arc::clone(&state))
            .merge(allthethings_router(allthethings_path, &builders));
        let server = serve(listen, router).await?;
        tracing::info!(
            "self-serve listening on http://{}{}",
            server.addr(),
            normalize_path(selfserve_path, "")
        );
        Ok(SelfServe { server, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every job so far, oldest first.
    pub fn jobs(&self) -> Vec<Job> {
        lock(&self.state.jobs).clone()
    }

    pub fn job(&self, id: i64) -> Option<Job> {
        lock(&self.state.jobs).iter().find(|j| j.id == id).cloned()
    }

    /// Stops listening, lets queued jobs finish (bounded wait), closes the DB pool.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
        let workers = std::mem::take(&mut *lock(&self.state.workers));
        for mut worker in workers {
            if tokio::time::timeout(JOBS_DRAIN, &mut worker).await.is_err() {
                worker.abort();
            }
        }
        self.state.db.close().await;
    }
}

fn selfserve_router(prefix: &str, state: Arc<AppState>) -> Router {
    let prefix = normalize_path(prefix, "");
    Router::new()
        .route(
            &format!("{prefix}/{{branch}}/request/{{id}}"),
            delete(cancel_request),
        )
        .route(
            &format!("{prefix}/{{branch}}/build/{{id}}"),
            delete(cancel_build),
        )
        .route(&format!("{prefix}/jobs/{{id}}"), get(job_status))
        .with_state(state)
}

/// The parts of a cancellation request every answer depends on.
struct Asked {
    who: String,
    json: bool,
}

/// No `X-Remote-User`: BuildAPI's 403.
struct Denied;

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        (StatusCode::FORBIDDEN, "ACCESS DENIED!").into_response()
    }
}

fn asked(headers: &HeaderMap, query: Option<&str>) -> Result<Asked, Denied> {
    let who = headers
        .get("x-remote-user")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let Some(who) = who else {
        return Err(Denied);
    };
    let format_json = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "format" && v == "json")
    });
    let accept_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    Ok(Asked {
        who: who.to_owned(),
        json: format_json || accept_json,
    })
}

fn bad_id(what: &str, raw: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        SelfServeReply::failed(format!("Invalid {what} id {raw:?}")),
    )
        .into_response()
}

fn not_found(what: &str, id: i64, branch: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        SelfServeReply::failed(format!("{what} {id} not found on branch {branch}")),
    )
        .into_response()
}

fn db_failure(error: &SqlError) -> Response {
    tracing::error!(%error, "self-serve: scheduler DB failed: {error}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        SelfServeReply::failed("database error".to_owned()),
    )
        .into_response()
}

/// BuildAPI's loose branch match: the asked branch is a prefix or a suffix of the stored one.
fn branch_matches(stored: Option<&str>, asked: &str) -> bool {
    match stored {
        Some(stored) if !asked.is_empty() => stored.starts_with(asked) || stored.ends_with(asked),
        _ => false,
    }
}

async fn cancel_request(
    State(state): State<Arc<AppState>>,
    Path((branch, raw_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let asked = match asked(&headers, query.as_deref()) {
        Ok(a) => a,
        Err(denied) => return denied.into_response(),
    };
    let Ok(brid) = raw_id.trim().parse::<i64>() else {
        return bad_id("request", &raw_id);
    };
    let request = match state.db.request_state(brid).await {
        Ok(r) => r,
        Err(error) => return db_failure(&error),
    };
    let Some(request) = request else {
        return not_found("Request", brid, &branch);
    };
    if !branch_matches(request.branch.as_deref(), &branch) {
        return not_found("Request", brid, &branch);
    }
    let age = state.clock.now_secs() - request.submitted_at;
    if !state.fresh_404.is_zero()
        && age < i64::try_from(state.fresh_404.as_secs()).unwrap_or(i64::MAX)
    {
        return not_found("Request", brid, &branch);
    }
    queue(
        &state,
        JobAction::CancelRequest { request_id: brid },
        branch,
        asked,
    )
}

async fn cancel_build(
    State(state): State<Arc<AppState>>,
    Path((branch, raw_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let asked = match asked(&headers, query.as_deref()) {
        Ok(a) => a,
        Err(denied) => return denied.into_response(),
    };
    let Ok(build_id) = raw_id.trim().parse::<i64>() else {
        return bad_id("build", &raw_id);
    };
    let build = match state.db.build_state(build_id).await {
        Ok(b) => b,
        Err(error) => return db_failure(&error),
    };
    match build {
        Some(build) if branch_matches(build.branch.as_deref(), &branch) => {
            queue(&state, JobAction::CancelBuild { build_id }, branch, asked)
        }
        _ => not_found("Build", build_id, &branch),
    }
}

async fn job_status(State(state): State<Arc<AppState>>, Path(raw_id): Path<String>) -> Response {
    let job = raw_id
        .parse::<i64>()
        .ok()
        .and_then(|id| lock(&state.jobs).iter().find(|j| j.id == id).cloned());
    match job {
        Some(job) => Json(job).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            SelfServeReply::failed(format!("Job {raw_id} not found")),
        )
            .into_response(),
    }
}

/// Records the job, starts the agent on it and answers.
fn queue(state: &Arc<AppState>, action: JobAction, branch: String, asked: Asked) -> Response {
    let id = state.next_job.fetch_add(1, Ordering::SeqCst);
    let job = Job {
        id,
        action,
        branch: branch.clone(),
        who: asked.who,
        when: state.clock.now_secs(),
        completed_at: None,
        outcome: None,
    };
    tracing::info!(
        selfserve.job_id = id,
        "self-serve job {id} queued: {action:?} on branch {branch} by {}",
        job.who
    );
    lock(&state.jobs).push(job);
    let worker = tokio::spawn(run_job(Arc::clone(state), id, action));
    {
        let mut workers = lock(&state.workers);
        workers.retain(|w| !w.is_finished());
        workers.push(worker);
    }
    if asked.json {
        (
            StatusCode::ACCEPTED,
            Json(SelfServeReply::Ok { request_id: id }),
        )
            .into_response()
    } else {
        let what = match action {
            JobAction::CancelRequest { request_id } => format!("cancel request {request_id}"),
            JobAction::CancelBuild { build_id } => format!("cancel build {build_id}"),
        };
        Html(format!(
            "<html><head><title>BuildAPI</title></head><body>\
             <p>Your request to {what} on {branch} has been queued as job {id}.</p>\
             </body></html>"
        ))
        .into_response()
    }
}

async fn run_job(state: Arc<AppState>, id: i64, action: JobAction) {
    let outcome = match action {
        JobAction::CancelRequest { request_id } => agent_cancel_request(&state, request_id).await,
        JobAction::CancelBuild { build_id } => agent_cancel_build(&state, build_id).await,
    }
    .unwrap_or_else(|error| JobOutcome::Failed {
        message: error.to_string(),
    });
    tracing::info!(
        selfserve.job_id = id,
        "self-serve job {id} ({action:?}) done: {outcome:?}"
    );
    let now = state.clock.now_secs();
    if let Some(job) = lock(&state.jobs).iter_mut().find(|j| j.id == id) {
        job.completed_at = Some(now);
        job.outcome = Some(outcome);
    }
}

/// Asks `master` to stop; `None` if it does not know the Build (yet).
async fn stop_on(
    state: &AppState,
    master: &str,
    stop: impl AsyncFnOnce(crate::buildbot::Master) -> anyhow::Result<bool>,
) -> Result<Option<JobOutcome>, SqlError> {
    let Some(m) = state.masters.get(master) else {
        return Ok(Some(JobOutcome::MasterUnknown {
            master: master.to_owned(),
        }));
    };
    Ok(match stop(m).await {
        Ok(true) => Some(JobOutcome::Stopped {
            master: master.to_owned(),
        }),
        Ok(false) => None,
        Err(error) => Some(JobOutcome::Failed {
            message: error.to_string(),
        }),
    })
}

async fn agent_cancel_request(state: &AppState, brid: i64) -> Result<JobOutcome, SqlError> {
    let deadline = tokio::time::Instant::now() + STOP_PATIENCE;
    loop {
        let Some(request) = state.db.request_state(brid).await? else {
            return Ok(JobOutcome::Failed {
                message: format!("request {brid} disappeared"),
            });
        };
        if request.is_complete() {
            return Ok(JobOutcome::AlreadyComplete);
        }
        if request.is_claimed() {
            let master = request.claimed_by_name.unwrap_or_default();
            if let Some(outcome) =
                stop_on(state, &master, async |m| m.stop_request(brid).await).await?
            {
                return Ok(outcome);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(JobOutcome::NotRunning { master });
            }
            tokio::time::sleep(STOP_RETRY).await;
            continue;
        }
        let now = state.clock.now_secs();
        if state.db.cancel_pending(brid, now).await? {
            state
                .db
                .maybe_complete_buildset(request.buildsetid, now)
                .await?;
            return Ok(JobOutcome::CancelledPending);
        }
        // Claimed or completed meanwhile: look again.
    }
}

async fn agent_cancel_build(state: &AppState, build_id: i64) -> Result<JobOutcome, SqlError> {
    let deadline = tokio::time::Instant::now() + STOP_PATIENCE;
    loop {
        let Some(build) = state.db.build_state(build_id).await? else {
            return Ok(JobOutcome::Failed {
                message: format!("build {build_id} disappeared"),
            });
        };
        if build.is_over() {
            return Ok(JobOutcome::AlreadyComplete);
        }
        let master = build.claimed_by_name.unwrap_or_default();
        if let Some(outcome) =
            stop_on(state, &master, async |m| m.stop_build(build_id).await).await?
        {
            return Ok(outcome);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(JobOutcome::NotRunning { master });
        }
        tokio::time::sleep(STOP_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_match_by_prefix_or_suffix() {
        assert!(branch_matches(
            Some("integration/mozilla-inbound"),
            "mozilla-inbound"
        ));
        assert!(branch_matches(
            Some("integration/mozilla-inbound"),
            "integration"
        ));
        assert!(!branch_matches(Some("integration/mozilla-inbound"), "try"));
        assert!(!branch_matches(None, "try"));
        assert!(!branch_matches(Some("try"), ""));
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize_path("/self-serve/", ""), "/self-serve");
        assert_eq!(
            normalize_path("buildapi/self-serve", ""),
            "/buildapi/self-serve"
        );
        assert_eq!(normalize_path("/", ""), "");
        assert_eq!(
            normalize_path("", "/allthethings.json"),
            "/allthethings.json"
        );
    }

    #[test]
    fn allthethings_lists_builders_with_their_directories() {
        let doc = allthethings(&["Linux x86-64 mozilla-inbound build".to_owned()]);
        let b = &doc["builders"]["Linux x86-64 mozilla-inbound build"];
        assert_eq!(b["shortname"], "linux_x86-64_mozilla-inbound_build");
        assert_eq!(b["slavebuilddir"], "linux_x86-64_mozilla-inbound_build");
        assert!(doc["schedulers"].is_object() && doc["slavepools"].is_object());
    }
}
