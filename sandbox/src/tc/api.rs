//! The HTTP surface of the emulated queue and object service, and of the data URLs the
//! emulator hands out (s3 `putUrl`s, object `putUrl`s, artifact downloads).
//!
//! Routes are matched on the raw path and parameters percent-decoded afterwards (the Rust
//! client sends a `/` inside an artifact name as `%2F`). Each API call goes through the steps
//! of `taskcluster-lib-api`, in its order:
//! 1. an injected fault, if any (see [`super::Fault`]);
//! 2. the body: JSON only with `Content-Type: application/json` (400 MalformedPayload);
//! 3. for the scopes that the URL parameters alone determine, Hawk authentication (401
//!    AuthenticationFailed, `www-authenticate: hawk`) and the scope check (403
//!    InsufficientScopes), so task, status, reclaimTask, report*, createArtifact,
//!    finishArtifact, listArtifacts and getArtifact answer 401/403 before 404;
//! 4. URL parameter patterns (400 InvalidRequestArguments);
//! 5. the body schema (400 InputValidationError);
//! 6. the handler: claimTask, rerunTask and cancelTask look the task up (404) before
//!    authenticating and checking scopes, since their scopes depend on the task.
//!
//! Authentication is lazy, as in `taskcluster-lib-api`: it happens at the first scope check.
//!
//! Every answered call is recorded in the call log.
use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use super::{
    Call, Fault, Shared, artifacts,
    auth::{Caller, HawkRequest, ScopeExpr},
    error::{ApiError, code_for},
    machine::{Outcome, exception_retry_reason},
    model::{fmt_time, is_identifier, is_run_id, is_slugid},
    server::ConnReset,
};

/// Largest accepted body (the real queue's `inputLimit`).
const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    CreateTask,
    Task,
    Status,
    ClaimTask,
    ReclaimTask,
    ReportCompleted,
    ReportFailed,
    ReportException,
    RerunTask,
    CancelTask,
    CreateArtifact,
    FinishArtifact,
    ListArtifacts,
    GetArtifact,
    Ping,
    CreateUpload,
    FinishUpload,
    S3Upload,
    ObjectUpload,
    Download,
    Unknown,
}

impl Kind {
    /// The API call name, as the call log and fault injection know it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::CreateTask => "createTask",
            Kind::Task => "task",
            Kind::Status => "status",
            Kind::ClaimTask => "claimTask",
            Kind::ReclaimTask => "reclaimTask",
            Kind::ReportCompleted => "reportCompleted",
            Kind::ReportFailed => "reportFailed",
            Kind::ReportException => "reportException",
            Kind::RerunTask => "rerunTask",
            Kind::CancelTask => "cancelTask",
            Kind::CreateArtifact => "createArtifact",
            Kind::FinishArtifact => "finishArtifact",
            Kind::ListArtifacts => "listArtifacts",
            Kind::GetArtifact => "getArtifact",
            Kind::Ping => "ping",
            Kind::CreateUpload => "createUpload",
            Kind::FinishUpload => "finishUpload",
            Kind::S3Upload => "s3Upload",
            Kind::ObjectUpload => "objectUpload",
            Kind::Download => "downloadArtifact",
            Kind::Unknown => "unknown",
        }
    }

    /// Calls whose body is JSON input.
    fn has_input(self) -> bool {
        matches!(
            self,
            Kind::CreateTask
                | Kind::ClaimTask
                | Kind::ReportException
                | Kind::CreateArtifact
                | Kind::FinishArtifact
                | Kind::CreateUpload
                | Kind::FinishUpload
        )
    }
}

/// Decoded path parameters (`name` also carries an object name or an upload id).
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    pub task_id: Option<String>,
    pub run_id: Option<String>,
    pub name: Option<String>,
}

impl Params {
    pub fn task_id(&self) -> &str {
        self.task_id.as_deref().unwrap_or("")
    }

    /// The runId (validated as digits before handlers run; huge values never match a run).
    pub fn run_id(&self) -> u32 {
        self.run_id
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok())
            .map_or(u32::MAX, |r| u32::try_from(r).unwrap_or(u32::MAX))
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    fn to_json(&self, kind: Kind) -> Value {
        let mut m = Map::new();
        if let Some(t) = &self.task_id {
            m.insert("taskId".into(), json!(t));
        }
        if let Some(r) = &self.run_id {
            m.insert("runId".into(), json!(r));
        }
        if let Some(n) = &self.name {
            let key = if kind == Kind::ObjectUpload {
                "uploadId"
            } else {
                "name"
            };
            m.insert(key.into(), json!(n));
        }
        Value::Object(m)
    }

    /// The real queue's URL parameter patterns.
    fn validate(&self) -> Result<(), ApiError> {
        let bad = |param: &str, value: &str, pattern: &str| {
            Err(ApiError::bad_param(format!(
                "Invalid URL patterns:\n```\nURL parameter '{param}' given as '{value}' must match regular expression: '{pattern}'\n```"
            )))
        };
        if let Some(t) = &self.task_id
            && !is_slugid(t)
        {
            return bad(
                "taskId",
                t,
                "/^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$/",
            );
        }
        if let Some(r) = &self.run_id
            && !is_run_id(r)
        {
            return bad("runId", r, "/^[1-9]*[0-9]+$/");
        }
        if let Some(n) = &self.name
            && (n.is_empty() || !n.bytes().all(|c| (0x20..=0x7e).contains(&c)))
        {
            return bad("name", n, "/^[\\x20-\\x7e]+$/");
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes; a malformed escape stays as it is.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Percent-encodes everything but unreserved characters (so `/` becomes `%2F`).
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// Which call a method and raw path are.
pub(crate) fn route(method: &Method, path: &str) -> (Kind, Params) {
    let mut p = Params::default();
    let decode = |s: &str| Some(percent_decode(s));
    if let Some(rest) = path.strip_prefix("/api/queue/v1/") {
        let segs: Vec<&str> = rest.split('/').collect();
        let kind = match (method, segs.as_slice()) {
            (&Method::GET, ["ping"]) => Kind::Ping,
            (m, ["task", id]) => {
                p.task_id = decode(id);
                match *m {
                    Method::PUT => Kind::CreateTask,
                    Method::GET => Kind::Task,
                    _ => Kind::Unknown,
                }
            }
            (m, ["task", id, action]) => {
                p.task_id = decode(id);
                match (m, *action) {
                    (&Method::GET, "status") => Kind::Status,
                    (&Method::POST, "rerun") => Kind::RerunTask,
                    (&Method::POST, "cancel") => Kind::CancelTask,
                    _ => Kind::Unknown,
                }
            }
            (m, ["task", id, "runs", run, rest @ ..]) => {
                p.task_id = decode(id);
                p.run_id = decode(run);
                match (m, rest) {
                    (&Method::POST, ["claim"]) => Kind::ClaimTask,
                    (&Method::POST, ["reclaim"]) => Kind::ReclaimTask,
                    (&Method::POST, ["completed"]) => Kind::ReportCompleted,
                    (&Method::POST, ["failed"]) => Kind::ReportFailed,
                    (&Method::POST, ["exception"]) => Kind::ReportException,
                    (&Method::GET, ["artifacts"]) => Kind::ListArtifacts,
                    (m, ["artifacts", name @ ..]) if !name.is_empty() => {
                        p.name = decode(&name.join("/"));
                        match *m {
                            Method::POST => Kind::CreateArtifact,
                            Method::PUT => Kind::FinishArtifact,
                            Method::GET => Kind::GetArtifact,
                            _ => Kind::Unknown,
                        }
                    }
                    _ => Kind::Unknown,
                }
            }
            _ => Kind::Unknown,
        };
        return (kind, p);
    }
    if let Some(rest) = path.strip_prefix("/api/object/v1/") {
        let kind = if let (&Method::PUT, Some(name)) = (method, rest.strip_prefix("upload/")) {
            p.name = decode(name);
            Kind::CreateUpload
        } else if let (&Method::POST, Some(name)) = (method, rest.strip_prefix("finish-upload/")) {
            p.name = decode(name);
            Kind::FinishUpload
        } else {
            Kind::Unknown
        };
        if let Some((task_id, run_id)) = p.name.as_deref().and_then(artifacts::object_ids) {
            p.task_id = Some(task_id);
            p.run_id = Some(run_id);
        }
        return (kind, p);
    }
    if let Some(rest) = path.strip_prefix("/_data/") {
        let segs: Vec<&str> = rest.splitn(4, '/').collect();
        let kind = match (method, segs.as_slice()) {
            (&Method::PUT, ["objects", upload_id]) => {
                p.name = decode(upload_id);
                Kind::ObjectUpload
            }
            (m, [what @ ("s3" | "artifacts"), id, run, name]) => {
                p.task_id = decode(id);
                p.run_id = decode(run);
                p.name = decode(name);
                match (m, *what) {
                    (&Method::PUT, "s3") => Kind::S3Upload,
                    (&Method::GET, "artifacts") => Kind::Download,
                    _ => Kind::Unknown,
                }
            }
            _ => Kind::Unknown,
        };
        return (kind, p);
    }
    (Kind::Unknown, p)
}

pub(crate) fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The mime type of a Content-Type header, lowercased, without parameters.
fn mime(headers: &HeaderMap) -> Option<String> {
    header_str(headers, header::CONTENT_TYPE)
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
}

/// The axum fallback: every queue, object service and data request.
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (kind, params) = route(&parts.method, parts.uri.path());
    let record = |status: u16| {
        shared.record(Call {
            method: parts.method.to_string(),
            name: kind.name().to_owned(),
            task_id: params.task_id.clone(),
            run_id: params.run_id.as_deref().and_then(|r| r.parse().ok()),
            status,
            at: shared.clock.now(),
        });
    };

    match shared.take_fault(kind.name()) {
        Some(Fault::Reset) => {
            record(0);
            if let Some(reset) = parts.extensions.get::<ConnReset>() {
                reset.fire();
            }
            return std::future::pending::<Response>().await;
        }
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let err = ApiError::new(
                code_for(status.as_u16()),
                format!("Injected fault: HTTP {}", status.as_u16()),
            );
            let mut response = err.render(
                kind.name(),
                &params.to_json(kind),
                &json!({}),
                shared.clock.now(),
            );
            *response.status_mut() = status;
            record(status.as_u16());
            return response;
        }
        Some(Fault::Latency(d)) => tokio::time::sleep(d).await,
        None => {}
    }

    let response = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Err(_) => ApiError::new(
            "InputTooLarge",
            format!("Payload larger than {BODY_LIMIT} bytes"),
        )
        .render(
            kind.name(),
            &params.to_json(kind),
            &json!({}),
            shared.clock.now(),
        ),
        Ok(body) => match kind {
            Kind::S3Upload => {
                artifacts::s3_upload(&shared, &params, &parts.uri, &parts.headers, body)
            }
            Kind::ObjectUpload => artifacts::object_upload(&shared, &params, &parts.headers, body),
            Kind::Download => artifacts::download(&shared, &params),
            Kind::Unknown => ApiError::not_found(format!(
                "No API method at {} {}",
                parts.method,
                parts.uri.path()
            ))
            .render(
                kind.name(),
                &params.to_json(kind),
                &json!({}),
                shared.clock.now(),
            ),
            _ => api_call(&shared, kind, &params, &parts, body).await,
        },
    };
    record(response.status().as_u16());
    response
}

/// One call of the queue or object service API, through the steps listed in the module doc.
async fn api_call(
    shared: &Shared,
    kind: Kind,
    params: &Params,
    parts: &axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let params_json = params.to_json(kind);
    let fail = |e: ApiError, payload: &Value| {
        e.render(kind.name(), &params_json, payload, shared.clock.now())
    };

    let content_type = mime(&parts.headers);
    let payload = if body.is_empty() {
        json!({})
    } else if content_type.as_deref() == Some("application/json") {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.is_object() || v.is_array() => v,
            Ok(_) => {
                return fail(
                    ApiError::malformed("Failed to parse JSON: Must be an object or array"),
                    &json!({}),
                );
            }
            Err(e) => {
                return fail(
                    ApiError::malformed(format!("Failed to parse JSON: {e}")),
                    &json!({}),
                );
            }
        }
    } else if kind.has_input() {
        return fail(
            ApiError::malformed(format!(
                "Request payload must be JSON with `Content-Type: application/json` (got {})",
                content_type.as_deref().unwrap_or("no Content-Type")
            )),
            &json!({}),
        );
    } else {
        json!({})
    };

    let hawk = HawkRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        host: header_str(&parts.headers, header::HOST).unwrap_or(""),
        authorization: header_str(&parts.headers, header::AUTHORIZATION),
        content_type: header_str(&parts.headers, header::CONTENT_TYPE),
        body: &body,
    };
    let caller = Caller::new(&shared.auth, hawk);
    match call(shared, kind, params, &caller, &payload).await {
        Ok(response) => response,
        Err(e) => fail(e, &payload),
    }
}

/// Scopes determined by the URL parameters alone, checked before anything else.
fn url_scopes(kind: Kind, p: &Params) -> Option<ScopeExpr> {
    let (t, r) = (p.task_id(), p.run_id.as_deref().unwrap_or(""));
    Some(ScopeExpr::one(match kind {
        Kind::Task => format!("queue:get-task:{t}"),
        Kind::Status => format!("queue:status:{t}"),
        Kind::ReclaimTask => format!("queue:reclaim-task:{t}/{r}"),
        Kind::ReportCompleted | Kind::ReportFailed | Kind::ReportException => {
            format!("queue:resolve-task:{t}/{r}")
        }
        Kind::CreateArtifact | Kind::FinishArtifact => format!("queue:create-artifact:{t}/{r}"),
        Kind::ListArtifacts => format!("queue:list-artifacts:{t}:{r}"),
        Kind::GetArtifact => format!("queue:get-artifact:{}", p.name()),
        _ => return None,
    }))
}

async fn call(
    shared: &Shared,
    kind: Kind,
    p: &Params,
    caller: &Caller<'_>,
    payload: &Value,
) -> Result<Response, ApiError> {
    if let Some(expr) = url_scopes(kind, p) {
        caller.authorize(&expr)?;
    }
    p.validate()?;
    match kind {
        Kind::Ping => Ok(reply(StatusCode::OK, json!({"alive": true, "uptime": 0}))),
        Kind::CreateTask => create_task(shared, p, caller, payload).await,
        Kind::Task => {
            let id = p.task_id();
            read_task(shared, id, |t| t.definition.clone()).await
        }
        Kind::Status => {
            let id = p.task_id();
            read_task(shared, id, |t| json!({"status": t.status()})).await
        }
        Kind::ClaimTask => claim_task(shared, p, caller, payload).await,
        Kind::ReclaimTask => reclaim_task(shared, p).await,
        Kind::ReportCompleted => report(shared, p, Outcome::Completed).await,
        Kind::ReportFailed => report(shared, p, Outcome::Failed).await,
        Kind::ReportException => report_exception(shared, p, payload).await,
        Kind::RerunTask | Kind::CancelTask => rerun_or_cancel(shared, kind, p, caller).await,
        Kind::CreateArtifact => artifacts::create_artifact(shared, p, payload).await,
        Kind::FinishArtifact => artifacts::finish_artifact(shared, p, payload).await,
        Kind::ListArtifacts => artifacts::list_artifacts(shared, p).await,
        Kind::GetArtifact => artifacts::get_artifact(shared, p, caller).await,
        Kind::CreateUpload => artifacts::create_upload(shared, p, caller, payload),
        Kind::FinishUpload => artifacts::finish_upload(shared, p, caller, payload),
        Kind::S3Upload | Kind::ObjectUpload | Kind::Download | Kind::Unknown => {
            Err(ApiError::not_found("No such API method"))
        }
    }
}

pub(crate) fn unknown_task(task_id: &str) -> ApiError {
    ApiError::not_found(format!(
        "Task `{task_id}` not found. Are you sure it was created?"
    ))
}

/// A schema error in the shape the real queue reports.
pub(crate) fn schema_error(schema: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::schema(format!(
        "Schema Validation Failed!\nRejecting Schema: {schema}\nErrors:\n  * {problem}"
    ))
}

/// Checks that `payload` is an object with only `allowed` keys and every `required` key.
pub(crate) fn check_keys(
    schema: &str,
    payload: &Value,
    allowed: &[&str],
    required: &[&str],
) -> Result<(), ApiError> {
    let obj = payload
        .as_object()
        .ok_or_else(|| schema_error(schema, "data must be object"))?;
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(schema_error(
            schema,
            format!("data must NOT have additional properties ({k})"),
        ));
    }
    if let Some(k) = required.iter().find(|k| !obj.contains_key(**k)) {
        return Err(schema_error(
            schema,
            format!("data must have required property '{k}'"),
        ));
    }
    Ok(())
}

async fn create_task(
    shared: &Shared,
    p: &Params,
    caller: &Caller<'_>,
    payload: &Value,
) -> Result<Response, ApiError> {
    let request = super::model::TaskRequest::parse(p.task_id(), payload)?;
    caller.authorize(&request.scope_expression())?;
    let task = request.into_task(shared.clock.now(), true)?;
    let status = shared.create_task(task).await?;
    Ok(reply(StatusCode::OK, json!({ "status": status })))
}

async fn read_task(
    shared: &Shared,
    task_id: &str,
    view: impl FnOnce(&super::model::Task) -> Value,
) -> Result<Response, ApiError> {
    let body = shared
        .with_task(task_id, |state, _| {
            let task = state.tasks.get(task_id).ok_or_else(|| {
                ApiError::not_found(format!(
                    "`{task_id}` does not correspond to a task that exists.\nAre you sure this task has already been submitted?"
                ))
            })?;
            Ok((view(task), Vec::new()))
        })
        .await?;
    Ok(reply(StatusCode::OK, body))
}

/// Temporary credentials for the worker holding a run (the real queue's `task-creds.js`).
fn run_credentials(
    shared: &Shared,
    task: &super::model::Task,
    run_id: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let run = task.run(run_id);
    let group = run.and_then(|r| r.worker_group.clone()).unwrap_or_default();
    let worker = run.and_then(|r| r.worker_id.clone()).unwrap_or_default();
    let taken_until = run.and_then(|r| r.taken_until).unwrap_or(now);
    let until = taken_until.timestamp_millis() as f64 / 1000.0;
    let client_id = format!(
        "task-client/{}/{run_id}/on/{group}/{worker}/until/{until}",
        task.task_id
    );
    let mut scopes = vec![
        format!("queue:reclaim-task:{}/{run_id}", task.task_id),
        format!("queue:resolve-task:{}/{run_id}", task.task_id),
        format!("queue:create-artifact:{}/{run_id}", task.task_id),
    ];
    scopes.extend(task.scopes.iter().cloned());
    shared
        .auth
        .temporary_credentials(&client_id, scopes, (taken_until - now).num_milliseconds())
}

async fn claim_task(
    shared: &Shared,
    p: &Params,
    caller: &Caller<'_>,
    payload: &Value,
) -> Result<Response, ApiError> {
    const SCHEMA: &str = "task-claim-request.json";
    check_keys(
        SCHEMA,
        payload,
        &["workerGroup", "workerId"],
        &["workerGroup", "workerId"],
    )?;
    let field = |k: &str| -> Result<String, ApiError> {
        match payload[k].as_str() {
            Some(s) if is_identifier(s) => Ok(s.to_owned()),
            _ => Err(schema_error(
                SCHEMA,
                format!("data/{k} must match pattern \"^[a-zA-Z0-9-_]{{1,38}}$\""),
            )),
        }
    };
    let (group, worker) = (field("workerGroup")?, field("workerId")?);
    let (task_id, run_id) = (p.task_id(), p.run_id());
    let body = shared
        .with_task(task_id, |state, now| {
            let task = state
                .tasks
                .get_mut(task_id)
                .ok_or_else(|| unknown_task(task_id))?;
            caller.authorize(&ScopeExpr::all([
                format!(
                    "queue:claim-task:{}/{}",
                    task.provisioner_id, task.worker_type
                ),
                format!("queue:worker-id:{group}/{worker}"),
            ]))?;
            let msgs = task.claim(run_id, &group, &worker, now, shared.claim_timeout)?;
            let taken_until = task.run(run_id).and_then(|r| r.taken_until).map(fmt_time);
            let body = json!({
                "status": task.status(),
                "runId": run_id,
                "workerGroup": group,
                "workerId": worker,
                "takenUntil": taken_until,
                "task": task.definition,
                "credentials": run_credentials(shared, task, run_id, now),
            });
            Ok((body, msgs))
        })
        .await?;
    Ok(reply(StatusCode::OK, body))
}

async fn reclaim_task(shared: &Shared, p: &Params) -> Result<Response, ApiError> {
    let (task_id, run_id) = (p.task_id(), p.run_id());
    let body = shared
        .with_task(task_id, |state, now| {
            let task = state
                .tasks
                .get_mut(task_id)
                .ok_or_else(|| unknown_task(task_id))?;
            task.reclaim(run_id, now, shared.claim_timeout)?;
            let run = task.run(run_id);
            let body = json!({
                "status": task.status(),
                "runId": run_id,
                "workerGroup": run.and_then(|r| r.worker_group.clone()),
                "workerId": run.and_then(|r| r.worker_id.clone()),
                "takenUntil": run.and_then(|r| r.taken_until).map(fmt_time),
                "credentials": run_credentials(shared, task, run_id, now),
            });
            Ok((body, Vec::new()))
        })
        .await?;
    Ok(reply(StatusCode::OK, body))
}

async fn report(shared: &Shared, p: &Params, outcome: Outcome) -> Result<Response, ApiError> {
    let (task_id, run_id) = (p.task_id(), p.run_id());
    let status = shared
        .with_task(task_id, |state, now| {
            let task = state
                .tasks
                .get_mut(task_id)
                .ok_or_else(|| unknown_task(task_id))?;
            let msgs = task.report(run_id, outcome, now)?;
            Ok((task.status(), msgs))
        })
        .await?;
    Ok(reply(StatusCode::OK, json!({ "status": status })))
}

async fn report_exception(
    shared: &Shared,
    p: &Params,
    payload: &Value,
) -> Result<Response, ApiError> {
    const SCHEMA: &str = "task-exception-request.json";
    check_keys(SCHEMA, payload, &["reason"], &["reason"])?;
    let reason = payload["reason"].as_str().unwrap_or("");
    if exception_retry_reason(reason).is_none() {
        return Err(schema_error(
            SCHEMA,
            "data/reason must be equal to one of the allowed values (worker-shutdown, malformed-payload, resource-unavailable, internal-error, intermittent-task)",
        ));
    }
    let (task_id, run_id) = (p.task_id(), p.run_id());
    let status = shared
        .with_task(task_id, |state, now| {
            let task = state
                .tasks
                .get_mut(task_id)
                .ok_or_else(|| unknown_task(task_id))?;
            let msgs = task.report_exception(run_id, reason, now)?;
            Ok((task.status(), msgs))
        })
        .await?;
    Ok(reply(StatusCode::OK, json!({ "status": status })))
}

async fn rerun_or_cancel(
    shared: &Shared,
    kind: Kind,
    p: &Params,
    caller: &Caller<'_>,
) -> Result<Response, ApiError> {
    let task_id = p.task_id();
    let verb = if kind == Kind::RerunTask {
        "rerun"
    } else {
        "cancel"
    };
    let status = shared
        .with_task(task_id, |state, now| {
            let task = state
                .tasks
                .get_mut(task_id)
                .ok_or_else(|| unknown_task(task_id))?;
            caller.authorize(&ScopeExpr::AnyOf(vec![
                ScopeExpr::one(format!(
                    "queue:{verb}-task:{}/{}/{task_id}",
                    task.scheduler_id, task.task_group_id
                )),
                ScopeExpr::one(format!("queue:{verb}-task-in-project:{}", task.project_id)),
                ScopeExpr::all([
                    format!("queue:{verb}-task"),
                    format!(
                        "assume:scheduler-id:{}/{}",
                        task.scheduler_id, task.task_group_id
                    ),
                ]),
            ]))?;
            let msgs = if kind == Kind::RerunTask {
                task.rerun(now)?
            } else {
                task.cancel(now)?
            };
            Ok((task.status(), msgs))
        })
        .await?;
    Ok(reply(StatusCode::OK, json!({ "status": status })))
}

/// An error reply for the data URLs, which are not API methods.
pub(crate) fn plain_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        message.to_owned(),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_are_decoded_after_routing_on_the_raw_path() {
        let (kind, p) = route(
            &Method::POST,
            "/api/queue/v1/task/C4Anq1nwR_i_3PIWfaQGvA/runs/0/artifacts/public%2Flogs%2Flive.log",
        );
        assert_eq!(kind, Kind::CreateArtifact);
        assert_eq!(p.name(), "public/logs/live.log");
        let (kind, p) = route(
            &Method::GET,
            "/api/queue/v1/task/C4Anq1nwR_i_3PIWfaQGvA/runs/0/artifacts/public/a b",
        );
        assert_eq!((kind, p.name()), (Kind::GetArtifact, "public/a b"));
        assert_eq!(
            route(&Method::POST, "/api/queue/v1/task/x/runs/0/claim").0,
            Kind::ClaimTask
        );
        assert_eq!(
            route(&Method::DELETE, "/api/queue/v1/task/x").0,
            Kind::Unknown
        );
        assert_eq!(percent_encode("public/a b"), "public%2Fa%20b");
        assert_eq!(percent_decode("%2"), "%2");
    }

    #[test]
    fn bad_parameters_are_invalid_request_arguments() {
        let (_, p) = route(&Method::POST, "/api/queue/v1/task/nope/runs/0/claim");
        assert_eq!(p.validate().unwrap_err().code, "InvalidRequestArguments");
        let (_, p) = route(
            &Method::POST,
            "/api/queue/v1/task/C4Anq1nwR_i_3PIWfaQGvA/runs/x/claim",
        );
        assert_eq!(p.validate().unwrap_err().code, "InvalidRequestArguments");
    }
}
