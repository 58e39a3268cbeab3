//! The Taskcluster queue emulator: the queue API (and the slice of the object service that
//! `taskcluster-upload` uses) over real HTTP with Hawk, the real state machine and status
//! codes, and the real Pulse messages on RabbitMQ, so that the bridge cannot tell it from the
//! queue it talks to in production (FORMATS.md section 1).
//!
//! # Layout
//! - [`model`]: tasks, runs, artifacts and objects as stored, their JSON shapes (the task
//!   status structure is [`TaskStatus`]), and the createTask definition checks and defaults.
//! - [`machine`]: every transition (claim, reclaim, report*, rerun, cancel, claim expiry,
//!   deadline, dependency scheduling) and the messages each one publishes.
//! - [`events`]: exchanges, routing keys and message bodies; publishing.
//! - [`auth`]: Hawk, temporary credentials, scopes.
//! - [`api`]: the HTTP surface: routing on the raw path, the real queue's check order, each
//!   call's handler; [`artifacts`]: artifacts, the object service and the upload / download
//!   URLs the emulator serves itself.
//! - [`control`]: `/_sandbox/` routes for tests and the demo (no auth), faults, the call log.
//! - [`server`]: the accept loop (connections it can reset on purpose) and shutdown.
//!
//! # Invariants
//! - Time comes only from the sandbox [`Clock`], except Hawk timestamps and credential
//!   windows, which clients stamp with real time.
//! - Everything that touches one task runs under that task's lane (an async mutex), so its
//!   messages go out in the order its changes happened; different tasks proceed in parallel.
//!   The state itself sits behind one plain mutex, never held across an `await`.
//! - Time-driven changes (deadline, claim expiry) are applied before every access to a task
//!   and by a resolver that checks every 100 ms of real time, so moving the clock shows them
//!   at once.
mod api;
mod artifacts;
mod auth;
mod control;
mod error;
mod events;
mod machine;
mod model;
mod server;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::{sync::watch, task::JoinHandle};

pub use self::model::{RunStatus, TaskStatus};
use self::{
    auth::Auth,
    error::ApiError,
    events::Msg,
    machine::State,
    model::{Task, TaskRequest},
};
use crate::{clock::Clock, pulse::Publisher, settings::ClientSpec};

/// How often the resolver looks for deadlines and expired claims (real time).
const RESOLVER_PERIOD: Duration = Duration::from_millis(100);
/// The call log keeps the latest this many calls (a long demo must not grow without bound).
const MAX_CALLS: usize = 100_000;

/// Where and how the emulated queue serves.
#[derive(Debug, Clone)]
pub struct TcSettings {
    /// Port 0 picks a free port.
    pub listen: SocketAddr,
    /// The root URL clients use; empty: `http://<bound address>`.
    pub root_url: String,
    /// Exchanges are `<basename>/task-pending` etc.
    pub exchange_basename: String,
    /// Clients besides the bridge's own (which is passed to [`TcQueue::start`], with `*`).
    pub clients: Vec<ClientSpec>,
    pub claim_timeout: Duration,
}

impl Default for TcSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            root_url: String::new(),
            exchange_basename: "exchange/taskcluster-queue/v1".into(),
            clients: Vec::new(),
            claim_timeout: Duration::from_secs(1200),
        }
    }
}

/// One API call as the emulator answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// API call name (`claimTask`, `createUpload`, ...; `s3Upload`, `objectUpload` and
    /// `downloadArtifact` for the emulator's own data URLs; `unknown` for unrouted paths).
    pub name: String,
    pub task_id: Option<String>,
    pub run_id: Option<u32>,
    /// HTTP status; 0 for a connection reset on purpose.
    pub status: u16,
    /// Sandbox clock time of the answer.
    pub at: DateTime<Utc>,
}

/// A fault to inject in the next calls of one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status (and a Taskcluster-style error body).
    Status(u16),
    /// Close the connection (RST) without answering.
    Reset,
    /// Answer normally, this much later.
    Latency(Duration),
}

/// An artifact, as tests read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub name: String,
    pub storage_type: String,
    pub content_type: String,
    pub expires: DateTime<Utc>,
    /// The target of a reference artifact.
    pub url: Option<String>,
    /// Uploaded bytes (object and s3 artifacts, once uploaded).
    pub bytes: Option<Vec<u8>>,
    /// Downloadable (object artifacts: after finishArtifact).
    pub present: bool,
}

/// The exchanges the queue publishes on, after `<basename>/`.
pub const EXCHANGES: [&str; 7] = [
    "task-defined",
    "task-pending",
    "task-running",
    "artifact-created",
    "task-completed",
    "task-failed",
    "task-exception",
];

/// A fresh v4 slugid in Taskcluster's "nice" form (22 characters, first bit clear), matching
/// `^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$`.
pub fn slugid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes[0] &= 0x7f;
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What every part of the emulator shares.
pub(crate) struct Shared {
    pub root_url: String,
    pub basename: String,
    pub claim_timeout: chrono::Duration,
    pub clock: Clock,
    pub publisher: Publisher,
    pub auth: Auth,
    state: Mutex<State>,
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    faults: Mutex<HashMap<String, VecDeque<Fault>>>,
    calls: Mutex<VecDeque<Call>>,
}

/// Locks a mutex; a panic elsewhere while it was held leaves the data usable for a sandbox.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    async fn lane(&self, task_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lane = lock(&self.lanes)
            .entry(task_id.to_owned())
            .or_default()
            .clone();
        lane.lock_owned().await
    }

    /// Runs `op` on the state in the task's lane, after the task's time-driven changes, then
    /// publishes what both produced (a failed publish is a 500, as in the real queue: the
    /// change stays, a retry of the call publishes again).
    pub async fn with_task<R>(
        &self,
        task_id: &str,
        op: impl FnOnce(&mut State, DateTime<Utc>) -> Result<(R, Vec<Msg>), ApiError>,
    ) -> Result<R, ApiError> {
        let _lane = self.lane(task_id).await;
        let (result, msgs) = {
            let mut state = self.state();
            let now = self.clock.now();
            let mut msgs = state.settle(task_id, now);
            match op(&mut state, now) {
                Ok((r, more)) => {
                    msgs.extend(more);
                    (Ok(r), msgs)
                }
                Err(e) => (Err(e), msgs),
            }
        };
        let published = if msgs.is_empty() {
            Ok(())
        } else {
            self.publish(&msgs).await
        };
        // Forget the lane of a task that does not exist (unknown, or expired and dropped)
        // unless another call is waiting on it.
        if !self.state().tasks.contains_key(task_id) {
            let mut lanes = lock(&self.lanes);
            if lanes
                .get(task_id)
                .is_some_and(|l| Arc::strong_count(l) <= 2)
            {
                lanes.remove(task_id);
            }
        }
        published?;
        result
    }

    pub async fn publish(&self, msgs: &[Msg]) -> Result<(), ApiError> {
        events::publish(&self.publisher, &self.basename, msgs)
            .await
            .map_err(|e| {
                tracing::error!(error = %format!("{e:#}"), "publishing queue messages failed");
                ApiError::internal(format!("Publishing on Pulse failed: {e:#}"))
            })
    }

    /// Stores a new task (or accepts an identical repeat) and publishes task-defined, then
    /// task-pending when run 0 is pending.
    pub async fn create_task(&self, task: Task) -> Result<Value, ApiError> {
        let lane = task.task_id.clone();
        let task_id = lane.clone();
        self.with_task(&lane, move |state, now| {
            // Before run 0 exists: what task-defined carries.
            let defined = events::task_defined(&task, task.status());
            if let Some(existing) = state.tasks.get(&task_id) {
                if existing.definition != task.definition {
                    return Err(ApiError::conflict(format!(
                        "taskId `{task_id}` already used by another task.\nThis could be the result of faulty idempotency!"
                    )));
                }
                let mut msgs = vec![defined];
                if existing.runs.first().is_some_and(|r| r.state == model::RunState::Pending) {
                    msgs.push(events::task_pending(existing, 0, true));
                }
                return Ok((existing.status(), msgs));
            }
            if let Some(missing) = task.dependencies.iter().find(|d| !state.tasks.contains_key(*d)) {
                return Err(ApiError::input(format!(
                    "Task `{missing}` referenced in task.dependencies does not exist"
                )));
            }
            state.tasks.insert(task_id.clone(), task);
            let mut msgs = vec![defined];
            msgs.extend(state.settle(&task_id, now));
            let status = state.tasks.get(&task_id).map(Task::status).unwrap_or_default();
            Ok((status, msgs))
        })
        .await
    }

    /// createTask without authentication (the control API's creation).
    pub async fn create_from_definition(
        &self,
        task_id: &str,
        definition: &Value,
        check_times: bool,
    ) -> Result<Value, ApiError> {
        if !model::is_slugid(task_id) {
            return Err(ApiError::bad_param(format!(
                "taskId `{task_id}` is not a slugid"
            )));
        }
        let task =
            TaskRequest::parse(task_id, definition)?.into_task(self.clock.now(), check_times)?;
        self.create_task(task).await
    }

    /// The next fault injected for `call`, if any.
    pub fn take_fault(&self, call: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let queue = faults.get_mut(call)?;
        let fault = queue.pop_front();
        if queue.is_empty() {
            faults.remove(call);
        }
        fault
    }

    pub fn inject_fault(&self, call: &str, fault: Fault, times: u32) {
        let mut faults = lock(&self.faults);
        let queue = faults.entry(call.to_owned()).or_default();
        queue.extend(std::iter::repeat_n(fault, times as usize));
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub fn record(&self, call: Call) {
        let mut calls = lock(&self.calls);
        if calls.len() >= MAX_CALLS {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).iter().cloned().collect()
    }

    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }

    /// A task's status with its time-driven changes applied to a copy (the resolver or the
    /// next call stores and publishes them).
    pub fn status_view(&self, task_id: &str) -> Option<Value> {
        let now = self.clock.now();
        let mut task = self.state().tasks.get(task_id)?.clone();
        if now >= task.expires {
            return None;
        }
        task.timeouts(now);
        Some(task.status())
    }

    pub fn artifacts(&self, task_id: &str, run_id: u32) -> Vec<ArtifactRecord> {
        let state = self.state();
        let Some(task) = state.tasks.get(task_id) else {
            return Vec::new();
        };
        task.artifacts
            .range((run_id, String::new())..)
            .take_while(|((r, _), _)| *r == run_id)
            .map(|(_, a)| ArtifactRecord {
                name: a.name.clone(),
                storage_type: a.storage_type.clone(),
                content_type: a.content_type.clone(),
                expires: a.expires,
                url: (a.storage_type == "reference")
                    .then(|| a.details["url"].as_str().map(str::to_owned))
                    .flatten(),
                bytes: match a.storage_type.as_str() {
                    "object" => state
                        .objects
                        .get(&artifacts::object_name(task_id, run_id, &a.name))
                        .and_then(|o| o.bytes.clone()),
                    _ => a.bytes.clone(),
                },
                present: a.present,
            })
            .collect()
    }
}

/// A running queue emulator; cheap to clone.
#[derive(Clone)]
pub struct TcQueue {
    shared: Arc<Shared>,
    addr: SocketAddr,
    run: Arc<Running>,
}

struct Running {
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for TcQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcQueue")
            .field("root_url", &self.shared.root_url)
            .finish()
    }
}

impl TcQueue {
    /// Binds `settings.listen`, then serves the queue and runs the resolver until
    /// [`TcQueue::shutdown`]. `bridge_client` (clientId, accessToken) has scope `*` and signs
    /// the temporary credentials the queue hands out.
    pub async fn start(
        settings: TcSettings,
        bridge_client: (String, String),
        clock: Clock,
        publisher: Publisher,
    ) -> anyhow::Result<TcQueue> {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding the queue emulator to {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let root_url = if settings.root_url.is_empty() {
            let mut shown = addr;
            if shown.ip().is_unspecified() {
                shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{shown}")
        } else {
            settings.root_url.trim_end_matches('/').to_owned()
        };
        let claim_timeout = chrono::Duration::from_std(settings.claim_timeout)
            .context("claim timeout out of range")?;
        let shared = Arc::new(Shared {
            root_url,
            basename: settings.exchange_basename.trim_end_matches('/').to_owned(),
            claim_timeout,
            clock,
            publisher,
            auth: Auth::new(bridge_client, &settings.clients),
            state: Mutex::new(State::default()),
            lanes: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            calls: Mutex::new(VecDeque::new()),
        });
        let (shutdown, rx) = watch::channel(false);
        let router = control::router()
            .fallback(api::handle)
            .with_state(shared.clone());
        let server = tokio::spawn(server::serve(listener, router, rx.clone()));
        let resolver = tokio::spawn(resolve(shared.clone(), rx));
        tracing::info!(root_url = %shared.root_url, "queue emulator listening");
        Ok(TcQueue {
            shared,
            addr,
            run: Arc::new(Running {
                shutdown,
                tasks: Mutex::new(vec![server, resolver]),
            }),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`, without a trailing slash.
    pub fn root_url(&self) -> String {
        self.shared.root_url.clone()
    }

    /// Creates a task as createTask would (defaults, checks against the sandbox clock,
    /// messages), without authentication. Returns its status.
    pub async fn create_task(&self, task_id: &str, definition: Value) -> anyhow::Result<Value> {
        self.create(task_id, definition, true).await
    }

    /// Like [`TcQueue::create_task`] without the `created` / `deadline` time checks, e.g. for
    /// a task already past its deadline.
    pub async fn create_task_unchecked(
        &self,
        task_id: &str,
        definition: Value,
    ) -> anyhow::Result<Value> {
        self.create(task_id, definition, false).await
    }

    async fn create(
        &self,
        task_id: &str,
        definition: Value,
        check_times: bool,
    ) -> anyhow::Result<Value> {
        self.shared
            .create_from_definition(task_id, &definition, check_times)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "creating task {task_id}: {} {}: {}",
                    e.status().as_u16(),
                    e.code,
                    e.message
                )
            })
    }

    /// The task's status structure, or `None` for an unknown (or expired) task. Deadline and
    /// claim expiry are shown as of now even before the resolver stores them.
    pub fn status(&self, task_id: &str) -> Option<Value> {
        self.shared.status_view(task_id)
    }

    /// Every call answered so far (the latest 100,000), in order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls()
    }

    pub fn clear_calls(&self) {
        self.shared.clear_calls();
    }

    /// The next `times` calls named `call_name` (e.g. `claimTask`) get `fault`.
    pub fn inject_fault(&self, call_name: &str, fault: Fault, times: u32) {
        self.shared.inject_fault(call_name, fault, times);
    }

    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// The artifacts of one run, by name.
    pub fn artifacts(&self, task_id: &str, run_id: u32) -> Vec<ArtifactRecord> {
        self.shared.artifacts(task_id, run_id)
    }

    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Stops serving and resolving, and waits for both.
    pub async fn shutdown(self) {
        let _ = self.run.shutdown.send(true);
        let tasks = std::mem::take(&mut *lock(&self.run.tasks));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Applies deadlines, claim expiry and dependency scheduling as the clock passes them.
async fn resolve(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RESOLVER_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        let due = shared.state().due(shared.clock.now());
        for task_id in due {
            if let Err(e) = shared
                .with_task(&task_id, |_, _| Ok(((), Vec::new())))
                .await
            {
                tracing::warn!(task_id, error = %e.message, "resolving a task by time failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugids_match_the_nice_pattern() {
        for _ in 0..1000 {
            let s = slugid();
            assert!(model::is_slugid(&s), "{s}");
            assert!(
                s.as_bytes()[0].is_ascii_uppercase() || (b'a'..=b'f').contains(&s.as_bytes()[0])
            );
        }
    }
}
