//! The control API for tests and the demo, under `<rootUrl>/_sandbox/` (no authentication):
//! the same operations as [`super::TcQueue`]'s methods, over HTTP.
//!
//! | route | what |
//! |---|---|
//! | `GET /_sandbox/health` | `{"ok": true}` |
//! | `PUT /_sandbox/tasks/<taskId>[?unchecked=true]` | create a task from the body (a definition) without auth; `unchecked` skips the `created`/`deadline` time checks -> `{status}` |
//! | `GET /_sandbox/tasks/<taskId>/status` | `{status}` or 404 |
//! | `GET /_sandbox/clock` | `{now, offsetMs}` |
//! | `POST /_sandbox/clock/advance` | `{"seconds": 90}` (may be fractional or negative) -> `{now, offsetMs}` |
//! | `POST /_sandbox/faults` | `{"call": "claimTask", "times": 2, "status": 500}`, or `"reset": true`, or `"latencyMs": 300` |
//! | `DELETE /_sandbox/faults` | forget pending faults |
//! | `GET /_sandbox/calls` | `{calls: [{method, name, taskId, runId, status, at}]}` in order |
//! | `DELETE /_sandbox/calls` | clear the call log |
//! | `GET /_sandbox/artifacts/<taskId>/<runId>` | `{artifacts: [{name, storageType, contentType, expires, url, present, bytesBase64}]}` |
use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Fault, Shared, error::ApiError, model::fmt_time};

type Shell = State<Arc<Shared>>;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/_sandbox/health",
            get(|| async { Json(json!({"ok": true})) }),
        )
        .route("/_sandbox/tasks/{task_id}", put(create_task))
        .route("/_sandbox/tasks/{task_id}/status", get(status))
        .route("/_sandbox/clock", get(clock))
        .route("/_sandbox/clock/advance", post(advance))
        .route("/_sandbox/faults", post(inject).delete(clear_faults))
        .route("/_sandbox/calls", get(calls).delete(clear_calls))
        .route("/_sandbox/artifacts/{task_id}/{run_id}", get(artifacts))
}

fn error(shared: &Shared, e: &ApiError) -> Response {
    e.render("sandbox", &json!({}), &json!({}), shared.clock.now())
}

#[derive(Deserialize)]
struct CreateQuery {
    #[serde(default)]
    unchecked: bool,
}

async fn create_task(
    State(shared): Shell,
    Path(task_id): Path<String>,
    Query(q): Query<CreateQuery>,
    Json(definition): Json<Value>,
) -> Response {
    match shared
        .create_from_definition(&task_id, &definition, !q.unchecked)
        .await
    {
        Ok(status) => Json(json!({ "status": status })).into_response(),
        Err(e) => error(&shared, &e),
    }
}

async fn status(State(shared): Shell, Path(task_id): Path<String>) -> Response {
    match shared.status_view(&task_id) {
        Some(status) => Json(json!({ "status": status })).into_response(),
        None => error(
            &shared,
            &ApiError::not_found(format!("Task `{task_id}` not found")),
        ),
    }
}

fn clock_json(shared: &Shared) -> Json<Value> {
    Json(json!({
        "now": fmt_time(shared.clock.now()),
        "offsetMs": shared.clock.offset().num_milliseconds(),
    }))
}

async fn clock(State(shared): Shell) -> Json<Value> {
    clock_json(&shared)
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

async fn advance(State(shared): Shell, Json(a): Json<Advance>) -> Json<Value> {
    shared.clock.advance(chrono::Duration::milliseconds(
        (a.seconds * 1000.0).round() as i64
    ));
    clock_json(&shared)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultRequest {
    call: String,
    #[serde(default = "one")]
    times: u32,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    latency_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

async fn inject(State(shared): Shell, Json(f): Json<FaultRequest>) -> Response {
    let fault = match (f.status, f.reset, f.latency_ms) {
        (Some(s), false, None) if (100..600).contains(&s) => Fault::Status(s),
        (None, true, None) => Fault::Reset,
        (None, false, Some(ms)) => Fault::Latency(Duration::from_millis(ms)),
        _ => {
            return error(
                &shared,
                &ApiError::input(
                    "give exactly one of `status` (100-599), `reset: true` or `latencyMs`",
                ),
            );
        }
    };
    shared.inject_fault(&f.call, fault, f.times);
    (
        StatusCode::OK,
        Json(json!({"call": f.call, "times": f.times})),
    )
        .into_response()
}

async fn clear_faults(State(shared): Shell) -> StatusCode {
    shared.clear_faults();
    StatusCode::NO_CONTENT
}

async fn calls(State(shared): Shell) -> Json<Value> {
    Json(json!({ "calls": shared.calls() }))
}

async fn clear_calls(State(shared): Shell) -> StatusCode {
    shared.clear_calls();
    StatusCode::NO_CONTENT
}

async fn artifacts(
    State(shared): Shell,
    Path((task_id, run_id)): Path<(String, u32)>,
) -> Json<Value> {
    let list: Vec<Value> = shared
        .artifacts(&task_id, run_id)
        .into_iter()
        .map(|a| {
            json!({
                "name": a.name,
                "storageType": a.storage_type,
                "contentType": a.content_type,
                "expires": fmt_time(a.expires),
                "url": a.url,
                "present": a.present,
                "bytesBase64": a.bytes.map(|b| STANDARD.encode(b)),
            })
        })
        .collect();
    Json(json!({ "artifacts": list }))
}
