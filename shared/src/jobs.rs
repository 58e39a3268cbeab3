//! The job kinds: one type per kind, each with a stable name, an idempotency key derived from
//! the message that caused it, and a lock key.
//!
//! The ingest parses Pulse messages into these types at the edge; the workers run them; the
//! scheduler enqueues its own kinds. Every job may run more than once (at-least-once delivery,
//! retries, a worker killed half-way): handlers are written for that.
//!
//! The idempotency key decides whether an enqueue is a duplicate within the retention window;
//! the lock key names the taskId whose Redis lock the runtime holds while the job runs. Build
//! events return `None`: their request ids are resolved to taskIds by the handler, which locks
//! each task in turn.
use std::fmt::Debug;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Every job kind of the bridge, in the order operators read them: the four event kinds,
/// then the scheduler's scan and the per-task jobs it fans out.
pub const BRIDGE_KINDS: [&str; 6] = [
    TaskPending::NAME,
    TaskException::NAME,
    BuildStarted::NAME,
    BuildFinished::NAME,
    ReflectScan::NAME,
    TaskCheck::NAME,
];

/// A job kind.
pub trait Job:
    Serialize + DeserializeOwned + Clone + Debug + Send + Sync + Unpin + 'static
{
    /// Stable snake-case name: the Redis queue name and the metrics label.
    const NAME: &'static str;

    /// Same key within the retention window = same job (duplicates are dropped at enqueue).
    fn idempotency_key(&self) -> String;

    /// The taskId whose lock the runtime takes around the whole job, if known up front.
    fn lock_key(&self) -> Option<String>;
}

/// Taskcluster `task-pending`: a run of a task waits for a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPending {
    pub task_id: String,
    pub run_id: u32,
    /// The run's `scheduled` time: the BuildRequest's `submitted_at`.
    pub scheduled: Option<DateTime<Utc>>,
}

impl Job for TaskPending {
    const NAME: &'static str = "task-pending";

    fn idempotency_key(&self) -> String {
        format!("task-pending/{}/{}", self.task_id, self.run_id)
    }

    fn lock_key(&self) -> Option<String> {
        Some(self.task_id.clone())
    }
}

/// Taskcluster `task-exception`: the last run was resolved as an exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskException {
    pub task_id: String,
    pub run_id: Option<u32>,
    /// `reasonResolved` of that run (`canceled`, `deadline-exceeded`, ...).
    pub reason: Option<String>,
}

impl Job for TaskException {
    const NAME: &'static str = "task-exception";

    fn idempotency_key(&self) -> String {
        let run = self
            .run_id
            .map_or_else(|| "_".to_owned(), |r| r.to_string());
        let reason = self.reason.as_deref().unwrap_or("_");
        format!("task-exception/{}/{run}/{reason}", self.task_id)
    }

    fn lock_key(&self) -> Option<String> {
        Some(self.task_id.clone())
    }
}

/// One Buildbot property: `[name, value, source]` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildProperty {
    pub name: String,
    pub value: serde_json::Value,
    pub source: String,
}

/// What both Buildbot build events carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// `_meta.master_name`, or `"unknown"` when the envelope lacks it.
    pub master: String,
    /// The builder's full name (the `buildername` property; `build.builderName` when absent,
    /// which `log_uploaded` gives as the directory name).
    pub builder: String,
    pub buildnumber: i64,
    /// The request ids this Build satisfies.
    pub request_ids: Vec<i64>,
    /// The `taskId` property (source `bbb`): absent on builds that are not the bridge's.
    pub task_id: Option<String>,
    pub properties: Vec<BuildProperty>,
}

impl BuildInfo {
    pub fn property(&self, name: &str) -> Option<&serde_json::Value> {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.value)
    }

    /// The properties as Taskcluster's `public/properties.json` has them: name -> [value, source].
    pub fn properties_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.properties
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    serde_json::json!([p.value.clone(), p.source.clone()]),
                )
            })
            .collect()
    }
}

/// Buildbot `build.<builder>.<number>.started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildStarted {
    pub build: BuildInfo,
}

impl Job for BuildStarted {
    const NAME: &'static str = "build-started";

    fn idempotency_key(&self) -> String {
        let b = &self.build;
        format!("build-started/{}/{}/{}", b.master, b.builder, b.buildnumber)
    }

    fn lock_key(&self) -> Option<String> {
        None
    }
}

/// Buildbot `build.<builder>.<number>.log_uploaded` (sent by postrun once the log is stored):
/// the only event that carries every request id the Build satisfied, and its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildFinished {
    pub build: BuildInfo,
    /// Buildbot result code (SUCCESS 0 ... CANCELLED 6); `None` if the message had none.
    pub results: Option<i64>,
    /// The `log_url` property, when it is a URL (postrun writes the string "null" otherwise).
    pub log_url: Option<String>,
}

impl Job for BuildFinished {
    const NAME: &'static str = "build-finished";

    fn idempotency_key(&self) -> String {
        let b = &self.build;
        format!(
            "build-finished/{}/{}/{}",
            b.master, b.builder, b.buildnumber
        )
    }

    fn lock_key(&self) -> Option<String> {
        None
    }
}

/// One periodic scan of every tracked task, per scheduler tick. Any number of scheduler
/// replicas enqueue it; the tick in the key makes it one job per tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReflectScan {
    /// The tick, epoch seconds (a multiple of the interval).
    pub tick: i64,
}

impl Job for ReflectScan {
    const NAME: &'static str = "reflect-scan";

    fn idempotency_key(&self) -> String {
        format!("reflect-scan/{}", self.tick)
    }

    fn lock_key(&self) -> Option<String> {
        None
    }
}

/// What the scan found a task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskAction {
    /// Renew the claim of the running task before it expires.
    Reclaim,
    /// The BuildRequest was cancelled in Buildbot before it started: cancel the task.
    CancelTask,
    /// A Build exists but the task was never claimed (a lost `started`): claim it.
    ReconcileClaim,
    /// The BuildRequest finished but no finished event was handled: resolve from the DB.
    ReconcileFinished,
    /// The tracked row's BuildRequest does not exist: report internal-error, forget it.
    ReconcileMissingRequest,
}

impl TaskAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskAction::Reclaim => "reclaim",
            TaskAction::CancelTask => "cancel-task",
            TaskAction::ReconcileClaim => "reconcile-claim",
            TaskAction::ReconcileFinished => "reconcile-finished",
            TaskAction::ReconcileMissingRequest => "reconcile-missing-request",
        }
    }
}

/// A per-task job fanned out by a scan, run under the task's lock by any worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCheck {
    pub task_id: String,
    /// The run the scan saw tracked.
    pub run_id: i64,
    pub brid: Option<i64>,
    pub action: TaskAction,
    pub tick: i64,
}

impl Job for TaskCheck {
    const NAME: &'static str = "task-check";

    fn idempotency_key(&self) -> String {
        format!(
            "task-check/{}/{}/{}",
            self.action.as_str(),
            self.task_id,
            self.tick
        )
    }

    fn lock_key(&self) -> Option<String> {
        Some(self.task_id.clone())
    }
}

/// Buildbot result codes.
pub mod results {
    pub const SUCCESS: i64 = 0;
    pub const WARNINGS: i64 = 1;
    pub const FAILURE: i64 = 2;
    pub const SKIPPED: i64 = 3;
    pub const EXCEPTION: i64 = 4;
    pub const RETRY: i64 = 5;
    pub const CANCELLED: i64 = 6;
}

/// A job used to prove the worker runtime (locks, retries, crashes); registered only when a
/// worker is started with probe jobs enabled. It records when it ran so tests can check that
/// two runs for one taskId never overlapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub id: String,
    pub task_id: String,
    pub duration_ms: u64,
    /// Fail transiently this many times before succeeding (`u32::MAX`: always).
    pub fail_times: u32,
    /// Redis list that receives one `start,end,id,worker` record per successful run.
    pub record_to: String,
    /// Abort the worker process when the job starts (proves crash counting).
    #[serde(default)]
    pub crash: bool,
}

impl Job for Probe {
    const NAME: &'static str = "probe";

    fn idempotency_key(&self) -> String {
        format!("probe/{}", self.id)
    }

    fn lock_key(&self) -> Option<String> {
        Some(self.task_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_derived_from_the_message() {
        let p = TaskPending {
            task_id: "fNdN0Jx9TmKf0yv7uJ3Q1w".into(),
            run_id: 1,
            scheduled: None,
        };
        assert_eq!(p.idempotency_key(), "task-pending/fNdN0Jx9TmKf0yv7uJ3Q1w/1");
        assert_eq!(p.lock_key().as_deref(), Some("fNdN0Jx9TmKf0yv7uJ3Q1w"));
        let f = BuildFinished {
            build: BuildInfo {
                master: "bm71".into(),
                builder: "mozilla-inbound-linux64".into(),
                buildnumber: 1210,
                request_ids: vec![86737608],
                task_id: None,
                properties: vec![],
            },
            results: Some(0),
            log_url: None,
        };
        assert_eq!(
            f.idempotency_key(),
            "build-finished/bm71/mozilla-inbound-linux64/1210"
        );
        assert_eq!(f.lock_key(), None);
    }
}
