//! Artifacts (FORMATS.md 1.4), the part of the object service that `taskcluster-upload`
//! calls, and the data URLs the emulator serves in place of S3.
//!
//! - `object`: createArtifact registers the object `t/<taskId>/<runId>/<name>` with a fresh
//!   uploadId (as the real queue "locks in" the upload) and returns temporary credentials with
//!   `object:upload:<projectId>:<object name>`; the client then calls the object service's
//!   `createUpload` (`dataInline` below 8 KiB, else `putUrl`, answered with
//!   `<rootUrl>/_data/objects/<uploadId>`), PUTs the bytes, calls `finishUpload` (hashes
//!   checked against the bytes), and finally `finishArtifact`, which makes the artifact
//!   present and publishes artifact-created. As in the real queue, a repeated createArtifact
//!   of an object artifact is a conflict (each call would lock in a new uploadId).
//! - `s3`: the `putUrl` is `<rootUrl>/_data/s3/<taskId>/<runId>/<name>`, valid 45 minutes of
//!   sandbox time; the PUT must send the artifact's Content-Type and a Content-Length.
//! - `reference`, `error`, `link`: metadata only, present at once, artifact-created published.
//!
//! getArtifact answers 303 to the reference URL or to `<rootUrl>/_data/artifacts/...` for
//! stored bytes, 424 for error artifacts, 410 once expired.
use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

use super::{
    Shared,
    api::{Params, check_keys, percent_encode, plain_error, reply, schema_error},
    auth::{Caller, ScopeExpr},
    error::ApiError,
    events,
    machine::State,
    model::{Artifact, RunState, StoredObject, fmt_time, is_slugid, parse_time},
};

/// createArtifact rejects `expires` further than this in the past.
const EXPIRES_SLACK: Duration = Duration::minutes(15);
/// A run resolved exception still accepts artifacts this long.
const EXCEPTION_GRACE: Duration = Duration::minutes(25);
/// Validity of an s3 putUrl.
const S3_PUT_VALIDITY: Duration = Duration::minutes(45);

/// The object service name of an artifact.
pub(crate) fn object_name(task_id: &str, run_id: u32, name: &str) -> String {
    format!("t/{task_id}/{run_id}/{name}")
}

/// taskId and runId of an artifact's object name.
pub(crate) fn object_ids(object_name: &str) -> Option<(String, String)> {
    let mut parts = object_name.splitn(4, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("t"), Some(task_id), Some(run_id)) => Some((task_id.to_owned(), run_id.to_owned())),
        _ => None,
    }
}

fn download_url(root_url: &str, task_id: &str, run_id: u32, name: &str) -> String {
    format!(
        "{root_url}/_data/artifacts/{task_id}/{run_id}/{}",
        percent_encode(name)
    )
}

/// A createArtifact body that passed `post-artifact-request.json`.
struct ArtifactRequest {
    storage_type: String,
    expires: DateTime<Utc>,
    content_type: String,
    /// url (reference), artifact (link), reason and message (error).
    input: Value,
}

fn parse_artifact_request(payload: &Value) -> Result<ArtifactRequest, ApiError> {
    const SCHEMA: &str = "post-artifact-request.json";
    let storage_type = payload
        .get("storageType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (allowed, required): (&[&str], &[&str]) = match storage_type {
        "s3" | "object" => (
            &["storageType", "expires", "contentType", "contentLength"],
            &["storageType", "expires", "contentType"],
        ),
        "reference" => (
            &["storageType", "expires", "contentType", "url"],
            &["storageType", "expires", "contentType", "url"],
        ),
        "link" => (
            &["storageType", "expires", "contentType", "artifact"],
            &["storageType", "expires", "artifact"],
        ),
        "error" => (
            &["storageType", "expires", "reason", "message"],
            &["storageType", "expires", "reason", "message"],
        ),
        _ => {
            return Err(schema_error(
                SCHEMA,
                "data must match exactly one schema in oneOf (storageType)",
            ));
        }
    };
    check_keys(SCHEMA, payload, allowed, required)?;
    let expires = payload["expires"]
        .as_str()
        .and_then(parse_time)
        .ok_or_else(|| schema_error(SCHEMA, "data/expires must match format \"date-time\""))?;
    if let Some(c) = payload.get("contentType")
        && c.as_str().is_none_or(|c| c.len() > 255)
    {
        return Err(schema_error(
            SCHEMA,
            "data/contentType must be a string of at most 255 characters",
        ));
    }
    if let Some(l) = payload.get("contentLength")
        && l.as_u64().is_none()
    {
        return Err(schema_error(
            SCHEMA,
            "data/contentLength must be a non-negative integer",
        ));
    }
    match storage_type {
        "reference"
            if payload["url"]
                .as_str()
                .is_none_or(|u| url::Url::parse(u).is_err()) =>
        {
            return Err(schema_error(SCHEMA, "data/url must match format \"uri\""));
        }
        "link" if !payload["artifact"].is_string() => {
            return Err(schema_error(SCHEMA, "data/artifact must be string"));
        }
        "error" => {
            let reasons = [
                "file-missing-on-worker",
                "invalid-resource-on-worker",
                "too-large-file-on-worker",
                "file-not-readable-on-worker",
            ];
            if !payload["reason"]
                .as_str()
                .is_some_and(|r| reasons.contains(&r))
            {
                return Err(schema_error(
                    SCHEMA,
                    "data/reason must be equal to one of the allowed values",
                ));
            }
            if payload["message"].as_str().is_none_or(|m| m.len() > 4096) {
                return Err(schema_error(
                    SCHEMA,
                    "data/message must be a string of at most 4096 characters",
                ));
            }
        }
        _ => {}
    }
    Ok(ArtifactRequest {
        storage_type: storage_type.to_owned(),
        expires,
        content_type: payload
            .get("contentType")
            .and_then(Value::as_str)
            .unwrap_or("application/binary")
            .to_owned(),
        input: payload.clone(),
    })
}

/// The real queue's `createArtifactCallsCompatible`.
fn compatible(original: &Artifact, new: &Artifact) -> bool {
    if new.storage_type != "link" && original.content_type != new.content_type {
        return false;
    }
    if original.expires > new.expires {
        return false;
    }
    if original.storage_type == new.storage_type {
        original.details == new.details || new.storage_type == "reference"
    } else {
        original.storage_type == "reference" && new.storage_type == "link"
    }
}

pub(crate) async fn create_artifact(
    shared: &Shared,
    p: &Params,
    payload: &Value,
) -> Result<Response, ApiError> {
    let req = parse_artifact_request(payload)?;
    if req.expires < shared.clock.now() - EXPIRES_SLACK {
        return Err(ApiError::input("Expires must be in the future"));
    }
    let (task_id, run_id, name) = (p.task_id(), p.run_id(), p.name());
    let body = shared
        .with_task(task_id, |state, now| {
            let State { tasks, objects } = state;
            let task = tasks.get_mut(task_id).ok_or_else(|| ApiError::input("Task not found"))?;
            let run = task.run(run_id).ok_or_else(|| ApiError::input("Run not found"))?;
            let (Some(group), Some(worker)) = (run.worker_group.clone(), run.worker_id.clone()) else {
                return Err(ApiError::input(
                    "Run was not claimed by a worker and so no artifacts can exist",
                ));
            };
            if req.expires > task.expires {
                return Err(ApiError::input(format!(
                    "Artifact expires ({}) after the task expiration {} (task.expires < expires) - this is not allowed, artifacts may not expire after the task they belong to expires",
                    fmt_time(req.expires),
                    fmt_time(task.expires)
                )));
            }
            if run.state != RunState::Running {
                let grace = run.state == RunState::Exception
                    && run.resolved.is_some_and(|r| r > now - EXCEPTION_GRACE);
                if !grace {
                    return Err(ApiError::conflict(format!(
                        "Artifacts cannot be created for a task after it is resolved, unless it is resolved 'exception', and even in this case only up to 25 min past resolution.This to ensure that artifacts have been uploaded before a task is 'completed' and output is consumed by a dependent task\n\nTask status: {}",
                        serde_json::to_string_pretty(&task.status()).unwrap_or_default()
                    )));
                }
            }
            let upload_id = super::slugid();
            let details = match req.storage_type.as_str() {
                "s3" => json!({"prefix": format!("{task_id}/{run_id}/{name}")}),
                "reference" => json!({"url": req.input["url"]}),
                "link" => json!({"artifact": req.input["artifact"]}),
                "error" => json!({"message": req.input["message"], "reason": req.input["reason"]}),
                _ => json!({"uploadId": upload_id}),
            };
            let new = Artifact {
                name: name.to_owned(),
                storage_type: req.storage_type.clone(),
                content_type: req.content_type.clone(),
                expires: req.expires,
                details,
                present: req.storage_type != "object",
                bytes: None,
            };
            let key = (run_id, name.to_owned());
            let artifact = match task.artifacts.get_mut(&key) {
                None => {
                    if new.storage_type == "object" {
                        objects.insert(
                            object_name(task_id, run_id, name),
                            StoredObject {
                                project_id: task.project_id.clone(),
                                upload_id: Some(upload_id.clone()),
                                expires: req.expires,
                                put: None,
                                content_type: None,
                                bytes: None,
                                finished: false,
                            },
                        );
                    }
                    task.artifacts.insert(key.clone(), new);
                    task.artifacts.get(&key)
                }
                Some(original) => {
                    if !compatible(original, &new) {
                        return Err(ApiError::conflict(format!(
                            "Artifact already exists with different properties, and none of the allowed exceptions apply: {}",
                            json!({
                                "storageType": original.storage_type,
                                "contentType": original.content_type,
                                "expires": fmt_time(original.expires),
                            })
                        )));
                    }
                    original.expires = new.expires;
                    original.details = new.details;
                    original.storage_type = new.storage_type;
                    Some(&*original)
                }
            };
            let artifact = artifact.cloned().ok_or_else(|| ApiError::internal("artifact vanished"))?;
            let mut msgs = Vec::new();
            if artifact.present && artifact.storage_type != "s3" {
                msgs.push(events::artifact_created(task, run_id, &artifact));
            }
            let body = match artifact.storage_type.as_str() {
                "object" => {
                    let validity = (artifact.expires - now).min(Duration::hours(24));
                    let credentials = shared.auth.temporary_credentials(
                        &format!("artifact-upload/{task_id}/{run_id}/on/{group}/{worker}"),
                        vec![format!(
                            "object:upload:{}:{}",
                            task.project_id,
                            object_name(task_id, run_id, name)
                        )],
                        validity.num_milliseconds(),
                    );
                    json!({
                        "storageType": "object",
                        "name": object_name(task_id, run_id, name),
                        "projectId": task.project_id,
                        "uploadId": upload_id,
                        "expires": fmt_time(artifact.expires),
                        "credentials": credentials,
                    })
                }
                "s3" => {
                    let until = now + S3_PUT_VALIDITY;
                    json!({
                        "storageType": "s3",
                        "contentType": artifact.content_type,
                        "expires": fmt_time(until),
                        "putUrl": format!(
                            "{}/_data/s3/{task_id}/{run_id}/{}?expires={}",
                            shared.root_url,
                            percent_encode(name),
                            until.timestamp()
                        ),
                    })
                }
                other => json!({ "storageType": other }),
            };
            Ok((body, msgs))
        })
        .await?;
    Ok(reply(StatusCode::OK, body))
}

pub(crate) async fn finish_artifact(
    shared: &Shared,
    p: &Params,
    payload: &Value,
) -> Result<Response, ApiError> {
    const SCHEMA: &str = "finish-artifact-request.json";
    check_keys(SCHEMA, payload, &["uploadId"], &["uploadId"])?;
    let upload_id = match payload["uploadId"].as_str() {
        Some(u) if is_slugid(u) => u.to_owned(),
        _ => {
            return Err(schema_error(
                SCHEMA,
                "data/uploadId must match the slugid pattern",
            ));
        }
    };
    let (task_id, run_id, name) = (p.task_id(), p.run_id(), p.name());
    shared
        .with_task(task_id, |state, _| {
            let State { tasks, objects } = state;
            let not_found = || {
                ApiError::not_found(format!(
                    "Artifact with taskId `{task_id}`, runId {run_id}, name `{name}` not found"
                ))
            };
            let task = tasks.get_mut(task_id).ok_or_else(not_found)?;
            if task.run(run_id).is_none() {
                return Err(not_found());
            }
            let artifact = task
                .artifacts
                .get_mut(&(run_id, name.to_owned()))
                .ok_or_else(not_found)?;
            if artifact.storage_type != "object" {
                return Err(ApiError::input("Only object artifacts can be finished"));
            }
            if !artifact.present {
                if artifact.details["uploadId"].as_str() != Some(upload_id.as_str()) {
                    return Err(ApiError::input(
                        "given uploadId does not match that for the artifact",
                    ));
                }
                let finished = objects
                    .get(&object_name(task_id, run_id, name))
                    .is_some_and(|o| o.finished);
                if !finished {
                    return Err(ApiError::input(
                        "Object storing artifact data does not exist",
                    ));
                }
                artifact.present = true;
                artifact.details = json!({});
            }
            let artifact = artifact.clone();
            Ok(((), vec![events::artifact_created(task, run_id, &artifact)]))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn list_artifacts(shared: &Shared, p: &Params) -> Result<Response, ApiError> {
    let (task_id, run_id) = (p.task_id(), p.run_id());
    let body = shared
        .with_task(task_id, |state, _| {
            let task = state
                .tasks
                .get(task_id)
                .ok_or_else(|| ApiError::not_found("Task not found"))?;
            let latest = task
                .latest_run_id()
                .ok_or_else(|| ApiError::not_found("Task doesn't have any runs"))?;
            if run_id > latest {
                return Err(ApiError::not_found(format!(
                    "Task with taskId: `{task_id}` has no run with runId: {run_id}"
                )));
            }
            let artifacts: Vec<Value> = task
                .artifacts
                .iter()
                .filter(|((r, _), a)| *r == run_id && a.present)
                .map(|(_, a)| a.to_json())
                .collect();
            Ok((json!({ "artifacts": artifacts }), Vec::new()))
        })
        .await?;
    Ok(reply(StatusCode::OK, body))
}

pub(crate) async fn get_artifact(
    shared: &Shared,
    p: &Params,
    caller: &Caller<'_>,
) -> Result<Response, ApiError> {
    let (task_id, run_id) = (p.task_id(), p.run_id());
    let found = shared
        .with_task(task_id, |state, now| {
            let mut names = vec![p.name().to_owned()];
            loop {
                let name = names.last().cloned().unwrap_or_default();
                let artifact = state
                    .tasks
                    .get(task_id)
                    .and_then(|t| t.artifacts.get(&(run_id, name.clone())))
                    .filter(|a| a.present)
                    .ok_or_else(|| ApiError::not_found("Artifact not found"))?;
                if artifact.expires < now {
                    return Err(ApiError::expired("Artifact expired"));
                }
                if artifact.storage_type != "link" {
                    return Ok((artifact.clone(), Vec::new()));
                }
                let target = artifact.details["artifact"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                if names.contains(&target) {
                    return Err(ApiError::input("Artifact leads to a link cycle"));
                }
                caller.authorize(&ScopeExpr::one(format!("queue:get-artifact:{target}")))?;
                names.push(target);
            }
        })
        .await?;
    let url = match found.storage_type.as_str() {
        "error" => {
            return Ok(reply(
                StatusCode::FAILED_DEPENDENCY,
                json!({"reason": found.details["reason"], "message": found.details["message"]}),
            ));
        }
        "reference" => found.details["url"].as_str().unwrap_or("").to_owned(),
        _ => download_url(&shared.root_url, task_id, run_id, &found.name),
    };
    let mut response = reply(
        StatusCode::SEE_OTHER,
        json!({"storageType": found.storage_type, "url": url}),
    );
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&url) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&found.storage_type) {
        headers.insert("x-taskcluster-artifact-storage-type", v);
    }
    Ok(response)
}

/// Object service `createUpload`.
pub(crate) fn create_upload(
    shared: &Shared,
    p: &Params,
    caller: &Caller<'_>,
    payload: &Value,
) -> Result<Response, ApiError> {
    const SCHEMA: &str = "create-upload-request.json";
    let all = ["projectId", "uploadId", "expires", "proposedUploadMethods"];
    check_keys(SCHEMA, payload, &all, &all)?;
    let project_id = payload["projectId"]
        .as_str()
        .ok_or_else(|| schema_error(SCHEMA, "data/projectId must be string"))?;
    let upload_id = payload["uploadId"]
        .as_str()
        .filter(|u| is_slugid(u))
        .ok_or_else(|| schema_error(SCHEMA, "data/uploadId must match the slugid pattern"))?;
    let expires = payload["expires"]
        .as_str()
        .and_then(parse_time)
        .ok_or_else(|| schema_error(SCHEMA, "data/expires must match format \"date-time\""))?;
    let methods = &payload["proposedUploadMethods"];
    check_keys(SCHEMA, methods, &["dataInline", "putUrl"], &[])?;
    let inline = match methods.get("dataInline") {
        None => None,
        Some(m) => {
            check_keys(
                SCHEMA,
                m,
                &["contentType", "objectData"],
                &["contentType", "objectData"],
            )?;
            let (Some(ct), Some(data)) = (m["contentType"].as_str(), m["objectData"].as_str())
            else {
                return Err(schema_error(
                    SCHEMA,
                    "data/proposedUploadMethods/dataInline fields must be strings",
                ));
            };
            let bytes = STANDARD
                .decode(data)
                .map_err(|e| ApiError::input(format!("objectData is not valid base64: {e}")))?;
            Some((ct.to_owned(), bytes))
        }
    };
    let put = match methods.get("putUrl") {
        None => None,
        Some(m) => {
            check_keys(
                SCHEMA,
                m,
                &["contentType", "contentLength"],
                &["contentType", "contentLength"],
            )?;
            let (Some(ct), Some(len)) = (m["contentType"].as_str(), m["contentLength"].as_u64())
            else {
                return Err(schema_error(
                    SCHEMA,
                    "data/proposedUploadMethods/putUrl fields have the wrong types",
                ));
            };
            Some((ct.to_owned(), len))
        }
    };
    let name = p.name();
    caller.authorize(&ScopeExpr::one(format!(
        "object:upload:{project_id}:{name}"
    )))?;

    let now = shared.clock.now();
    let mut state = shared.state();
    let object = state
        .objects
        .entry(name.to_owned())
        .or_insert_with(|| StoredObject {
            project_id: project_id.to_owned(),
            upload_id: Some(upload_id.to_owned()),
            expires,
            put: None,
            content_type: None,
            bytes: None,
            finished: false,
        });
    if object.upload_id.as_deref() != Some(upload_id) || object.project_id != project_id {
        return Err(ApiError::conflict(format!(
            "Object `{name}` already exists with a different uploadId or projectId"
        )));
    }
    if object.finished {
        return Err(ApiError::conflict(format!(
            "The upload of object `{name}` is already finished"
        )));
    }
    object.expires = expires;
    let method = if let Some((ct, bytes)) = inline {
        object.content_type = Some(ct);
        object.bytes = Some(bytes);
        json!({"dataInline": true})
    } else if let Some((ct, len)) = put {
        object.content_type = Some(ct.clone());
        object.put = Some((ct.clone(), len));
        json!({"putUrl": {
            "url": format!("{}/_data/objects/{upload_id}", shared.root_url),
            "expires": fmt_time(now + Duration::hours(1)),
            "headers": {"Content-Type": ct, "Content-Length": len.to_string()},
        }})
    } else {
        json!({})
    };
    Ok(reply(
        StatusCode::OK,
        json!({"projectId": project_id, "uploadId": upload_id, "expires": fmt_time(expires), "uploadMethod": method}),
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Object service `finishUpload`: the given hashes must match the uploaded bytes.
pub(crate) fn finish_upload(
    shared: &Shared,
    p: &Params,
    caller: &Caller<'_>,
    payload: &Value,
) -> Result<Response, ApiError> {
    const SCHEMA: &str = "finish-upload-request.json";
    check_keys(
        SCHEMA,
        payload,
        &["projectId", "uploadId", "hashes"],
        &["projectId", "uploadId"],
    )?;
    let (Some(project_id), Some(upload_id)) =
        (payload["projectId"].as_str(), payload["uploadId"].as_str())
    else {
        return Err(schema_error(
            SCHEMA,
            "data/projectId and data/uploadId must be strings",
        ));
    };
    let hashes = payload.get("hashes").cloned().unwrap_or_else(|| json!({}));
    check_keys(SCHEMA, &hashes, &["sha256", "sha512"], &[])?;
    let name = p.name();
    caller.authorize(&ScopeExpr::one(format!(
        "object:upload:{project_id}:{name}"
    )))?;

    let mut state = shared.state();
    let object = state
        .objects
        .get_mut(name)
        .ok_or_else(|| ApiError::not_found(format!("Object `{name}` not found")))?;
    if object.upload_id.as_deref() != Some(upload_id) || object.project_id != project_id {
        return Err(ApiError::conflict(
            "uploadId or projectId does not match the upload",
        ));
    }
    if !object.finished {
        let bytes = object
            .bytes
            .as_deref()
            .ok_or_else(|| ApiError::input(format!("No data was uploaded for object `{name}`")))?;
        let computed = [
            ("sha256", hex(&Sha256::digest(bytes))),
            ("sha512", hex(&Sha512::digest(bytes))),
        ];
        for (algo, value) in computed {
            if let Some(given) = hashes.get(algo)
                && given.as_str() != Some(value.as_str())
            {
                return Err(ApiError::input(format!(
                    "{algo} hash {given} does not match the uploaded data ({value})"
                )));
            }
        }
        object.finished = true;
    }
    Ok(reply(StatusCode::OK, json!({})))
}

/// `PUT <rootUrl>/_data/s3/<taskId>/<runId>/<name>?expires=<epoch s>`: an s3 artifact's bytes.
pub(crate) fn s3_upload(
    shared: &Shared,
    p: &Params,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let expires = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("expires="))
        .and_then(|v| v.parse::<i64>().ok());
    if expires.is_none_or(|e| e < shared.clock.now().timestamp()) {
        return plain_error(StatusCode::FORBIDDEN, "AccessDenied: Request has expired");
    }
    let Some(length) = headers.get(header::CONTENT_LENGTH) else {
        return plain_error(
            StatusCode::LENGTH_REQUIRED,
            "MissingContentLength: You must provide the Content-Length HTTP header.",
        );
    };
    if length.to_str().ok().and_then(|l| l.parse::<usize>().ok()) != Some(body.len()) {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "IncompleteBody: Content-Length does not match the body",
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut state = shared.state();
    let artifact = state
        .tasks
        .get_mut(p.task_id())
        .and_then(|t| t.artifacts.get_mut(&(p.run_id(), p.name().to_owned())))
        .filter(|a| a.storage_type == "s3");
    let Some(artifact) = artifact else {
        return plain_error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload: no s3 artifact at this URL",
        );
    };
    if content_type != Some(artifact.content_type.as_str()) {
        return plain_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch: Content-Type differs from the artifact's contentType",
        );
    }
    artifact.bytes = Some(body.to_vec());
    StatusCode::OK.into_response()
}

/// `PUT <rootUrl>/_data/objects/<uploadId>`: the target of an object service `putUrl`.
pub(crate) fn object_upload(
    shared: &Shared,
    p: &Params,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = shared.state();
    let object = state
        .objects
        .values_mut()
        .find(|o| o.upload_id.as_deref() == Some(p.name()) && o.put.is_some() && !o.finished);
    let Some(object) = object else {
        return plain_error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload: no upload in progress at this URL",
        );
    };
    let Some((content_type, length)) = object.put.clone() else {
        return plain_error(StatusCode::NOT_FOUND, "NoSuchUpload");
    };
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some(content_type.as_str())
    {
        return plain_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch: Content-Type differs from the upload's",
        );
    }
    let sent = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if sent != Some(length) || body.len() as u64 != length {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "IncompleteBody: the body does not have the negotiated Content-Length",
        );
    }
    object.bytes = Some(body.to_vec());
    StatusCode::OK.into_response()
}

/// `GET <rootUrl>/_data/artifacts/<taskId>/<runId>/<name>`: the bytes of an object or s3
/// artifact (where getArtifact redirects).
pub(crate) fn download(shared: &Shared, p: &Params) -> Response {
    let state = shared.state();
    let (task_id, run_id, name) = (p.task_id(), p.run_id(), p.name());
    let Some(artifact) = state
        .tasks
        .get(task_id)
        .and_then(|t| t.artifacts.get(&(run_id, name.to_owned())))
        .filter(|a| a.present)
    else {
        return plain_error(StatusCode::NOT_FOUND, "NoSuchKey");
    };
    let bytes = match artifact.storage_type.as_str() {
        "object" => state
            .objects
            .get(&object_name(task_id, run_id, name))
            .filter(|o| o.finished)
            .and_then(|o| o.bytes.clone()),
        _ => artifact.bytes.clone(),
    };
    match bytes {
        Some(bytes) => {
            let content_type = HeaderValue::from_str(&artifact.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let mut response = Body::from(bytes).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
            response
        }
        None => plain_error(StatusCode::NOT_FOUND, "NoSuchKey"),
    }
}
