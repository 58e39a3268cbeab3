//! What the queue stores: tasks with their runs and artifacts, object-service uploads, and the
//! task definition as `createTask` accepts, checks and completes it.
//!
//! Everything here is plain data plus the JSON shapes the real queue returns (task status,
//! run, artifact, definition with defaults filled in); the transitions live in
//! [`super::machine`]. Times are kept at millisecond precision, as the real queue (JavaScript
//! `Date`) keeps them, and rendered as `2026-11-22T05:40:00.000Z`.
use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{auth::ScopeExpr, error::ApiError};

/// At most this many runs per task, retries and reruns included.
pub(crate) const MAX_RUNS: usize = 50;
/// `created` may be this far from now, either way.
const CREATED_DRIFT: Duration = Duration::minutes(15);
/// Priorities from highest to lowest: a task of priority P may be created by a client with
/// `queue:create-task:<Q>:...` for any Q at or above P.
pub(crate) const PRIORITIES: [&str; 7] = [
    "highest",
    "very-high",
    "high",
    "medium",
    "low",
    "very-low",
    "lowest",
];

/// `2026-11-22T05:40:00.000Z`, as JavaScript's `Date.toJSON()` renders a time.
pub(crate) fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses an RFC 3339 time and keeps milliseconds, like JavaScript's `new Date(...)`.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc).trunc_subsecs(3))
}

/// Serde for a queue timestamp: read as [`parse_time`] reads it, written by [`fmt_time`].
mod queue_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_time(&s).ok_or_else(|| D::Error::custom(format!("not a date-time: {s}")))
    }

    /// The same for an optional timestamp (absent when `None`).
    pub mod opt {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| {
                    super::super::parse_time(&s)
                        .ok_or_else(|| D::Error::custom(format!("not a date-time: {s}")))
                })
                .transpose()
        }
    }
}

/// `^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$`
pub(crate) fn is_slugid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 22
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        && (b'Q'..=b'T').contains(&b[8])
        && b"CGKOSWaeimquy26-".contains(&b[10])
        && b"AQgw".contains(&b[21])
}

/// `^[a-zA-Z0-9-_]{1,38}$`: provisionerId, workerType, workerGroup, workerId, schedulerId.
pub(crate) fn is_identifier(s: &str) -> bool {
    (1..=38).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// `^[1-9]*[0-9]+$` (any string of digits).
pub(crate) fn is_run_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunState {
    Pending,
    Running,
    Completed,
    Failed,
    Exception,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Exception => "exception",
        }
    }

    pub fn is_resolved(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::Exception
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub state: RunState,
    pub reason_created: &'static str,
    pub reason_resolved: Option<String>,
    pub worker_group: Option<String>,
    pub worker_id: Option<String>,
    pub taken_until: Option<DateTime<Utc>>,
    pub scheduled: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub resolved: Option<DateTime<Utc>>,
}

impl Run {
    pub fn pending(reason_created: &'static str, now: DateTime<Utc>) -> Self {
        Self {
            state: RunState::Pending,
            reason_created,
            reason_resolved: None,
            worker_group: None,
            worker_id: None,
            taken_until: None,
            scheduled: now,
            started: None,
            resolved: None,
        }
    }

    pub fn resolve(&mut self, state: RunState, reason: &str, now: DateTime<Utc>) {
        self.state = state;
        self.reason_resolved = Some(reason.to_owned());
        self.resolved = Some(now);
    }

    /// The run as the task status shows it.
    fn run_status(&self, run_id: usize) -> RunStatus {
        RunStatus {
            run_id: u32::try_from(run_id).unwrap_or(u32::MAX),
            state: self.state.as_str().to_owned(),
            reason_created: self.reason_created.to_owned(),
            reason_resolved: self.reason_resolved.clone(),
            worker_group: self.worker_group.clone(),
            worker_id: self.worker_id.clone(),
            taken_until: self.taken_until,
            scheduled: self.scheduled,
            started: self.started,
            resolved: self.resolved,
        }
    }
}

/// One run in the task status structure (FORMATS.md 1.3): `runId, state, reasonCreated,
/// scheduled` always, the others once set (absent, not null, before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    pub run_id: u32,
    pub state: String,
    pub reason_created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_resolved: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "queue_time::opt"
    )]
    pub taken_until: Option<DateTime<Utc>>,
    #[serde(with = "queue_time")]
    pub scheduled: DateTime<Utc>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "queue_time::opt"
    )]
    pub started: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "queue_time::opt"
    )]
    pub resolved: Option<DateTime<Utc>>,
}

/// The task status structure (`status` in responses and messages, FORMATS.md 1.3), as
/// [`Task::status`] renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub task_id: String,
    pub provisioner_id: String,
    pub worker_type: String,
    pub task_queue_id: String,
    pub scheduler_id: String,
    pub project_id: String,
    pub task_group_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(with = "queue_time")]
    pub deadline: DateTime<Utc>,
    #[serde(with = "queue_time")]
    pub expires: DateTime<Utc>,
    pub retries_left: u32,
    pub state: String,
    pub runs: Vec<RunStatus>,
}

/// An artifact of one run.
#[derive(Debug, Clone)]
pub(crate) struct Artifact {
    pub name: String,
    pub storage_type: String,
    pub content_type: String,
    pub expires: DateTime<Utc>,
    /// Per storage type, compared on repeated `createArtifact` calls: s3 `{prefix}`,
    /// reference `{url}`, error `{reason, message}`, link `{artifact}`, object `{uploadId}`
    /// (emptied by `finishArtifact`).
    pub details: Value,
    /// Downloadable (object artifacts become present at `finishArtifact`).
    pub present: bool,
    /// The bytes PUT to an s3 artifact's URL (object artifacts keep theirs in the object store).
    pub bytes: Option<Vec<u8>>,
}

impl Artifact {
    /// The artifact as `listArtifacts` and the artifact-created message show it.
    pub fn to_json(&self) -> Value {
        json!({
            "storageType": self.storage_type,
            "name": self.name,
            "expires": fmt_time(self.expires),
            "contentType": self.content_type,
        })
    }
}

/// An object of the emulated object service (`<rootUrl>/api/object/v1/`).
#[derive(Debug, Clone)]
pub(crate) struct StoredObject {
    pub project_id: String,
    /// The upload in progress; `None` once finished.
    pub upload_id: Option<String>,
    pub expires: DateTime<Utc>,
    /// What a `putUrl` upload must send, once negotiated.
    pub put: Option<(String, u64)>,
    pub content_type: Option<String>,
    pub bytes: Option<Vec<u8>>,
    pub finished: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub task_id: String,
    /// The definition with every default filled in, as `task` returns it.
    pub definition: Value,
    pub provisioner_id: String,
    pub worker_type: String,
    pub scheduler_id: String,
    pub project_id: String,
    pub task_group_id: String,
    pub priority: String,
    pub dependencies: Vec<String>,
    /// `requires: all-completed` (else `all-resolved`).
    pub requires_completed: bool,
    pub routes: Vec<String>,
    pub scopes: Vec<String>,
    pub tags: Value,
    pub retries: u32,
    pub retries_left: u32,
    pub deadline: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub runs: Vec<Run>,
    /// By (runId, name).
    pub artifacts: BTreeMap<(u32, String), Artifact>,
}

impl Task {
    /// `unscheduled` before run 0, else the latest run's state.
    pub fn state(&self) -> &'static str {
        self.runs.last().map_or("unscheduled", |r| r.state.as_str())
    }

    pub fn latest_run_id(&self) -> Option<u32> {
        self.runs
            .len()
            .checked_sub(1)
            .and_then(|n| u32::try_from(n).ok())
    }

    pub fn run(&self, run_id: u32) -> Option<&Run> {
        self.runs.get(run_id as usize)
    }

    pub fn is_latest(&self, run_id: u32) -> bool {
        self.latest_run_id() == Some(run_id)
    }

    /// Unscheduled, pending or running: the deadline still applies.
    pub fn is_unresolved(&self) -> bool {
        self.runs.last().is_none_or(|r| !r.state.is_resolved())
    }

    pub fn task_queue_id(&self) -> String {
        format!("{}/{}", self.provisioner_id, self.worker_type)
    }

    /// The task status structure.
    pub fn status(&self) -> Value {
        serde_json::to_value(self.task_status()).unwrap_or_default()
    }

    /// The task status structure, typed.
    pub fn task_status(&self) -> TaskStatus {
        TaskStatus {
            task_id: self.task_id.clone(),
            provisioner_id: self.provisioner_id.clone(),
            worker_type: self.worker_type.clone(),
            task_queue_id: self.task_queue_id(),
            scheduler_id: self.scheduler_id.clone(),
            project_id: self.project_id.clone(),
            task_group_id: self.task_group_id.clone(),
            priority: Some(self.priority.clone()),
            deadline: self.deadline,
            expires: self.expires,
            retries_left: self.retries_left,
            state: self.state().to_owned(),
            runs: self
                .runs
                .iter()
                .enumerate()
                .map(|(i, r)| r.run_status(i))
                .collect(),
        }
    }

    /// What task messages carry of the definition.
    pub fn pulse_task(&self) -> Value {
        json!({ "tags": self.tags })
    }
}

/// A `createTask` body that passed the schema, with its task queue resolved and projectId
/// defaulted: enough to compute the scopes the caller needs before the time checks run.
#[derive(Debug, Clone)]
pub(crate) struct TaskRequest {
    task_id: String,
    def: Map<String, Value>,
}

const DEFINITION_KEYS: [&str; 19] = [
    "provisionerId",
    "workerType",
    "taskQueueId",
    "schedulerId",
    "projectId",
    "taskGroupId",
    "dependencies",
    "requires",
    "routes",
    "priority",
    "retries",
    "created",
    "deadline",
    "expires",
    "scopes",
    "payload",
    "metadata",
    "tags",
    "extra",
];

impl TaskRequest {
    /// Schema validation (400 InputValidationError), then the task queue fields (400
    /// InputError when they disagree or are missing).
    pub fn parse(task_id: &str, body: &Value) -> Result<Self, ApiError> {
        validate_definition(body).map_err(|e| {
            ApiError::schema(format!(
                "Schema Validation Failed!\nRejecting Schema: create-task-request.json\nErrors:\n  * {e}"
            ))
        })?;
        let mut def = body.as_object().cloned().unwrap_or_default();
        let text = |def: &Map<String, Value>, k: &str| {
            def.get(k).and_then(Value::as_str).map(str::to_owned)
        };
        match (
            text(&def, "provisionerId"),
            text(&def, "workerType"),
            text(&def, "taskQueueId"),
        ) {
            (Some(p), Some(w), Some(q)) => {
                if format!("{p}/{w}") != q {
                    return Err(ApiError::input(format!(
                        "taskQueueId must match \"provisionerId/workerType\" (provisionerId `{p}`, workerType `{w}`, taskQueueId `{q}`)"
                    )));
                }
            }
            (Some(p), Some(w), None) => {
                def.insert("taskQueueId".into(), Value::String(format!("{p}/{w}")));
            }
            (_, _, Some(q)) => {
                let (p, w) = q.split_once('/').unwrap_or((q.as_str(), ""));
                def.insert("provisionerId".into(), Value::String(p.to_owned()));
                def.insert("workerType".into(), Value::String(w.to_owned()));
            }
            _ => {
                return Err(ApiError::input(
                    "at least a provisionerId and a workerType or a taskQueueId must be provided",
                ));
            }
        }
        if text(&def, "projectId").is_none() {
            def.insert("projectId".into(), Value::String("none".into()));
        }
        Ok(Self {
            task_id: task_id.to_owned(),
            def,
        })
    }

    fn text(&self, key: &str, default: &str) -> String {
        self.def
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    }

    fn strings(&self, key: &str) -> Vec<String> {
        self.def
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// createTask's scope expression: every task scope, `queue:route:<r>` per route,
    /// `queue:create-task:project:<projectId>`, `queue:scheduler-id:<schedulerId>` and
    /// `queue:create-task:<priority>:<provisionerId>/<workerType>` for the task's priority or
    /// any higher one.
    pub fn scope_expression(&self) -> ScopeExpr {
        let priority = self.text("priority", "lowest");
        let queue = format!(
            "{}/{}",
            self.text("provisionerId", ""),
            self.text("workerType", "")
        );
        let upto = PRIORITIES
            .iter()
            .position(|p| *p == priority)
            .unwrap_or(PRIORITIES.len() - 1);
        let mut all: Vec<ScopeExpr> = self
            .strings("scopes")
            .into_iter()
            .map(ScopeExpr::One)
            .collect();
        all.extend(
            self.strings("routes")
                .into_iter()
                .map(|r| ScopeExpr::One(format!("queue:route:{r}"))),
        );
        all.push(ScopeExpr::One(format!(
            "queue:create-task:project:{}",
            self.text("projectId", "none")
        )));
        all.push(ScopeExpr::One(format!(
            "queue:scheduler-id:{}",
            self.text("schedulerId", "-")
        )));
        all.push(ScopeExpr::AnyOf(
            PRIORITIES[..=upto]
                .iter()
                .map(|p| ScopeExpr::One(format!("queue:create-task:{p}:{queue}")))
                .collect(),
        ));
        ScopeExpr::AllOf(all)
    }

    /// Fills in the defaults and checks the times against `now` (400 InputError); with
    /// `check_times` false (the control API's unchecked creation) `created` and `deadline` may
    /// be anywhere in time.
    pub fn into_task(self, now: DateTime<Utc>, check_times: bool) -> Result<Task, ApiError> {
        let time = |key: &str| -> Result<Option<DateTime<Utc>>, ApiError> {
            match self.def.get(key).and_then(Value::as_str) {
                None => Ok(None),
                Some(s) => parse_time(s).map(Some).ok_or_else(|| {
                    ApiError::input(format!("`{key}` is not a valid date-time: {s}"))
                }),
            }
        };
        let created = time("created")?.ok_or_else(|| ApiError::input("`created` is required"))?;
        let deadline =
            time("deadline")?.ok_or_else(|| ApiError::input("`deadline` is required"))?;
        if check_times {
            if created < now - CREATED_DRIFT {
                return Err(ApiError::input(format!(
                    "`created` cannot be in the past (max 15min drift): {}",
                    fmt_time(created)
                )));
            }
            if created > now + CREATED_DRIFT {
                return Err(ApiError::input(format!(
                    "`created` cannot be in the future (max 15min drift): {}",
                    fmt_time(created)
                )));
            }
        }
        if created > deadline {
            return Err(ApiError::input(format!(
                "`deadline` cannot be later than `created`: created {}, deadline {}",
                fmt_time(created),
                fmt_time(deadline)
            )));
        }
        if check_times {
            if deadline < now {
                return Err(ApiError::input(format!(
                    "`deadline` cannot be in the past: {}",
                    fmt_time(deadline)
                )));
            }
            if deadline - now > Duration::days(5) + CREATED_DRIFT {
                return Err(ApiError::input(format!(
                    "`deadline` cannot be more than 5 days into the future: {}",
                    fmt_time(deadline)
                )));
            }
        }
        let expires = match time("expires")? {
            Some(t) => t,
            None => deadline
                .with_year(deadline.year() + 1)
                .unwrap_or(deadline + Duration::days(366)),
        };
        if deadline > expires {
            return Err(ApiError::input(format!(
                "`expires` cannot be before `deadline`: deadline {}, expires {}",
                fmt_time(deadline),
                fmt_time(expires)
            )));
        }
        let scopes = self.strings("scopes");
        if scopes.iter().any(|s| s.ends_with("**")) {
            return Err(ApiError::input("scopes must not end with `**`"));
        }
        let retries = self
            .def
            .get("retries")
            .and_then(Value::as_u64)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(5);
        let task_group_id = self.text("taskGroupId", &self.task_id);
        let tags = self.def.get("tags").cloned().unwrap_or_else(|| json!({}));
        let definition = json!({
            "provisionerId": self.text("provisionerId", ""),
            "workerType": self.text("workerType", ""),
            "taskQueueId": self.text("taskQueueId", ""),
            "schedulerId": self.text("schedulerId", "-"),
            "projectId": self.text("projectId", "none"),
            "taskGroupId": task_group_id,
            "dependencies": self.strings("dependencies"),
            "requires": self.text("requires", "all-completed"),
            "routes": self.strings("routes"),
            "priority": self.text("priority", "lowest"),
            "retries": retries,
            "created": fmt_time(created),
            "deadline": fmt_time(deadline),
            "expires": fmt_time(expires),
            "scopes": scopes,
            "payload": self.def.get("payload").cloned().unwrap_or_else(|| json!({})),
            "metadata": self.def.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "tags": tags,
            "extra": self.def.get("extra").cloned().unwrap_or_else(|| json!({})),
        });
        Ok(Task {
            task_id: self.task_id.clone(),
            provisioner_id: self.text("provisionerId", ""),
            worker_type: self.text("workerType", ""),
            scheduler_id: self.text("schedulerId", "-"),
            project_id: self.text("projectId", "none"),
            task_group_id,
            priority: self.text("priority", "lowest"),
            dependencies: self.strings("dependencies"),
            requires_completed: self.text("requires", "all-completed") == "all-completed",
            routes: self.strings("routes"),
            scopes,
            tags,
            retries,
            retries_left: retries,
            deadline,
            expires,
            runs: Vec::new(),
            artifacts: BTreeMap::new(),
            definition,
        })
    }
}

/// The parts of `create-task-request.yml` that matter here: known keys only, required keys,
/// types, identifier and slugid patterns, enums and bounds.
fn validate_definition(body: &Value) -> Result<(), String> {
    let def = body.as_object().ok_or("data must be object")?;
    if let Some(k) = def.keys().find(|k| !DEFINITION_KEYS.contains(&k.as_str())) {
        return Err(format!("data must NOT have additional properties ({k})"));
    }
    for k in ["created", "deadline", "payload", "metadata"] {
        if !def.contains_key(k) {
            return Err(format!("data must have required property '{k}'"));
        }
    }
    let string = |k: &str| -> Result<Option<&str>, String> {
        match def.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("data/{k} must be string")),
        }
    };
    for k in ["provisionerId", "workerType", "schedulerId"] {
        if let Some(s) = string(k)?
            && !is_identifier(s)
        {
            return Err(format!(
                "data/{k} must match pattern \"^[a-zA-Z0-9-_]{{1,38}}$\""
            ));
        }
    }
    if let Some(q) = string("taskQueueId")?
        && !q
            .split_once('/')
            .is_some_and(|(p, w)| is_identifier(p) && is_identifier(w))
    {
        return Err(
            "data/taskQueueId must match pattern \"^[a-zA-Z0-9-_]{1,38}/[a-zA-Z0-9-_]{1,38}$\""
                .into(),
        );
    }
    if let Some(p) = string("projectId")?
        && !((1..=500).contains(&p.len())
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._/-".contains(&c)))
    {
        return Err("data/projectId must match pattern \"^([a-zA-Z0-9._/-]*)$\"".into());
    }
    if let Some(g) = string("taskGroupId")?
        && !is_slugid(g)
    {
        return Err("data/taskGroupId must match the slugid pattern".into());
    }
    for k in ["created", "deadline", "expires"] {
        if let Some(s) = string(k)?
            && parse_time(s).is_none()
        {
            return Err(format!("data/{k} must match format \"date-time\""));
        }
    }
    if let Some(r) = string("requires")?
        && !matches!(r, "all-completed" | "all-resolved")
    {
        return Err("data/requires must be equal to one of the allowed values".into());
    }
    if let Some(p) = string("priority")?
        && !PRIORITIES.contains(&p)
    {
        return Err(format!(
            "data/priority must be equal to one of the allowed values ({})",
            PRIORITIES.join(", ")
        ));
    }
    if let Some(r) = def.get("retries")
        && r.as_u64().is_none_or(|r| r > 49)
    {
        return Err("data/retries must be an integer from 0 to 49".into());
    }
    let string_array = |k: &str, ok: &dyn Fn(&str) -> bool| -> Result<(), String> {
        match def.get(k) {
            None => Ok(()),
            Some(Value::Array(items)) => {
                let mut seen = std::collections::HashSet::new();
                for item in items {
                    let s = item
                        .as_str()
                        .ok_or(format!("data/{k} items must be string"))?;
                    if !ok(s) {
                        return Err(format!("data/{k} item `{s}` is not allowed"));
                    }
                    if !seen.insert(s) {
                        return Err(format!("data/{k} must NOT have duplicate items"));
                    }
                }
                Ok(())
            }
            Some(_) => Err(format!("data/{k} must be array")),
        }
    };
    string_array("dependencies", &is_slugid)?;
    string_array("routes", &|s| (1..=249).contains(&s.len()))?;
    string_array("scopes", &|s| s.bytes().all(|c| (0x20..=0x7e).contains(&c)))?;
    if def
        .get("routes")
        .and_then(Value::as_array)
        .is_some_and(|r| r.len() > 64)
    {
        return Err("data/routes must NOT have more than 64 items".into());
    }
    for k in ["payload", "extra", "tags", "metadata"] {
        if let Some(v) = def.get(k)
            && !v.is_object()
        {
            return Err(format!("data/{k} must be object"));
        }
    }
    if let Some(tags) = def.get("tags").and_then(Value::as_object)
        && let Some((k, _)) = tags
            .iter()
            .find(|(_, v)| v.as_str().is_none_or(|s| s.len() > 4096))
    {
        return Err(format!(
            "data/tags/{k} must be a string of at most 4096 characters"
        ));
    }
    let metadata = def
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or("data/metadata must be object")?;
    for (k, max) in [
        ("name", 255),
        ("description", 32768),
        ("owner", 255),
        ("source", 4096),
    ] {
        match metadata.get(k) {
            None => return Err(format!("data/metadata must have required property '{k}'")),
            Some(Value::String(s)) if s.len() <= max => {}
            Some(_) => {
                return Err(format!(
                    "data/metadata/{k} must be a string of at most {max} characters"
                ));
            }
        }
    }
    if let Some(k) = metadata
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "description" | "owner" | "source"))
    {
        return Err(format!(
            "data/metadata must NOT have additional properties ({k})"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slugid_pattern_accepts_v4_slugs_and_rejects_others() {
        assert!(is_slugid("C4Anq1nwR_i_3PIWfaQGvA"));
        assert!(is_slugid("XKk1dNKmRauR36Mlf8bZWA"));
        assert!(!is_slugid("C4Anq1nwR_i_3PIWfaQGv"));
        assert!(!is_slugid("C4Anq1nwA_i_3PIWfaQGvA"));
        assert!(!is_slugid("C4Anq1nwR_i_3PIWfaQGvB"));
    }

    #[test]
    fn times_render_with_milliseconds_and_parse_generally() {
        let t = parse_time("2026-11-22T05:40:00.123456+00:00").unwrap();
        assert_eq!(fmt_time(t), "2026-11-22T05:40:00.123Z");
        assert_eq!(
            parse_time("2026-11-22T05:40:00Z").map(fmt_time).unwrap(),
            "2026-11-22T05:40:00.000Z"
        );
        assert!(parse_time("yesterday").is_none());
    }

    fn definition(now: DateTime<Utc>) -> Value {
        json!({
            "provisionerId": "prov", "workerType": "wt",
            "created": fmt_time(now), "deadline": fmt_time(now + Duration::hours(1)),
            "payload": {}, "metadata": {"name": "n", "description": "d", "owner": "o@example.com", "source": "https://example.com"},
        })
    }

    #[test]
    fn a_minimal_definition_gets_the_queue_defaults() {
        let now = parse_time("2026-02-28T10:00:00Z").unwrap();
        let task = TaskRequest::parse("C4Anq1nwR_i_3PIWfaQGvA", &definition(now))
            .unwrap()
            .into_task(now, true)
            .unwrap();
        let d = &task.definition;
        assert_eq!(d["taskQueueId"], "prov/wt");
        assert_eq!(d["schedulerId"], "-");
        assert_eq!(d["projectId"], "none");
        assert_eq!(d["taskGroupId"], "C4Anq1nwR_i_3PIWfaQGvA");
        assert_eq!(d["priority"], "lowest");
        assert_eq!(d["retries"], 5);
        assert_eq!(d["expires"], "2027-02-28T11:00:00.000Z");
        assert_eq!(task.state(), "unscheduled");
    }

    #[test]
    fn unknown_keys_legacy_priority_and_stale_times_are_rejected() {
        let now = Utc::now().trunc_subsecs(3);
        let mut d = definition(now);
        d["bogus"] = json!(1);
        assert_eq!(
            TaskRequest::parse("C4Anq1nwR_i_3PIWfaQGvA", &d)
                .unwrap_err()
                .code,
            "InputValidationError"
        );
        let mut d = definition(now);
        d["priority"] = json!("normal");
        assert_eq!(
            TaskRequest::parse("C4Anq1nwR_i_3PIWfaQGvA", &d)
                .unwrap_err()
                .code,
            "InputValidationError"
        );
        let mut d = definition(now);
        d["created"] = json!(fmt_time(now - Duration::minutes(16)));
        let r = TaskRequest::parse("C4Anq1nwR_i_3PIWfaQGvA", &d).unwrap();
        assert_eq!(
            r.clone().into_task(now, true).unwrap_err().code,
            "InputError"
        );
        assert!(r.into_task(now, false).is_ok());
        let mut d = definition(now);
        d["deadline"] = json!(fmt_time(now + Duration::days(6)));
        let r = TaskRequest::parse("C4Anq1nwR_i_3PIWfaQGvA", &d).unwrap();
        assert!(
            r.into_task(now, true)
                .unwrap_err()
                .message
                .contains("5 days")
        );
    }
}
