//! Attaching a Build's outputs to its task: `public/properties.json` (the Build's properties,
//! name -> [value, source]) and, when the Build has a log URL, the reference artifact
//! `public/logs/live_backing.log.gz`. Both expire no later than the task.
//!
//! Storage `object` (current Taskcluster): createArtifact, upload through the object service
//! with the `taskcluster-upload` crate and the credentials createArtifact returned, then
//! finishArtifact. Storage `s3` (older deployments): createArtifact returns a putUrl, which is
//! PUT with retries.
use std::time::Duration;

use bbb_shared::{config::ArtifactStorage, tc::TcError};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use taskcluster::{ClientBuilder, Credentials, Object, retry::Retry};

use crate::bridge::Bridge;

pub const PROPERTIES: &str = "public/properties.json";
pub const LOG: &str = "public/logs/live_backing.log.gz";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The queue already has it and no upload of ours is pending: an earlier attempt attached
    /// it, or the run was resolved before (then the queue would refuse anyway).
    #[error("{0}: the artifact exists already")]
    Exists(TcError),
    #[error(transparent)]
    Tc(#[from] TcError),
    #[error("uploading {name} of task {task_id}: {message}")]
    Upload {
        name: &'static str,
        task_id: String,
        message: String,
        transient: bool,
    },
}

impl ArtifactError {
    pub fn is_transient(&self) -> bool {
        match self {
            ArtifactError::Tc(e) => e.is_transient(),
            ArtifactError::Exists(_) => false,
            ArtifactError::Upload { transient, .. } => *transient,
        }
    }
}

pub async fn attach_properties(
    b: &Bridge,
    task_id: &str,
    run_id: u32,
    expires: DateTime<Utc>,
    properties: &Value,
) -> Result<(), ArtifactError> {
    let body = serde_json::to_vec_pretty(properties).unwrap_or_default();
    let content_type = "application/json";
    let expires_s = expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match b.artifact_storage {
        ArtifactStorage::Object => {
            let req =
                json!({"storageType": "object", "expires": expires_s, "contentType": content_type});
            let resp = create_or_resume(b, task_id, run_id, &req).await?;
            let upload_err = |message: String, transient: bool| ArtifactError::Upload {
                name: PROPERTIES,
                task_id: task_id.to_owned(),
                message,
                transient,
            };
            let field = |k: &str| resp.get(k).and_then(Value::as_str).map(str::to_owned);
            let (Some(name), Some(project_id), Some(upload_id)) =
                (field("name"), field("projectId"), field("uploadId"))
            else {
                return Err(upload_err(
                    format!("createArtifact answered without name/projectId/uploadId: {resp}"),
                    false,
                ));
            };
            let creds = resp.get("credentials").cloned().unwrap_or(Value::Null);
            let cred = |k: &str| creds.get(k).and_then(Value::as_str).map(str::to_owned);
            let credentials = match (cred("clientId"), cred("accessToken"), cred("certificate")) {
                (Some(id), Some(token), Some(cert)) => {
                    Credentials::new_with_certificate(id, token, cert)
                }
                (Some(id), Some(token), None) => Credentials::new(id, token),
                _ => {
                    return Err(upload_err(
                        "createArtifact answered without credentials".into(),
                        false,
                    ));
                }
            };
            let object =
                Object::new(ClientBuilder::new(b.root_url.clone()).credentials(credentials))
                    .map_err(|e| upload_err(format!("{e:#}"), false))?;
            let uploaded = taskcluster_upload::upload_from_buf(
                &project_id,
                &name,
                content_type,
                &expires,
                &body,
                &Retry::default(),
                &object,
                &upload_id,
            )
            .await;
            match uploaded {
                Ok(()) => {}
                // An earlier attempt finished this upload before it stopped.
                Err(e) if taskcluster::err_status_code(&e).is_some_and(|s| s.as_u16() == 409) => {}
                Err(e) => {
                    let transient = taskcluster::err_status_code(&e)
                        .is_none_or(|s| s.is_server_error() || s.as_u16() == 429);
                    return Err(upload_err(format!("{e:#}"), transient));
                }
            }
            match b
                .tc
                .finish_artifact(task_id, run_id, PROPERTIES, &upload_id)
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
            forget_upload(b, task_id, run_id).await;
        }
        ArtifactStorage::S3 => {
            let req =
                json!({"storageType": "s3", "expires": expires_s, "contentType": content_type});
            let resp =
                b.tc.create_artifact(task_id, run_id, PROPERTIES, &req)
                    .await?;
            let Some(put_url) = resp.get("putUrl").and_then(Value::as_str) else {
                return Err(ArtifactError::Upload {
                    name: PROPERTIES,
                    task_id: task_id.to_owned(),
                    message: format!("createArtifact answered without putUrl: {resp}"),
                    transient: false,
                });
            };
            put_with_retries(b, task_id, put_url, content_type, body).await?;
        }
    }
    Ok(())
}

fn upload_key(b: &Bridge, task_id: &str, run_id: u32) -> String {
    format!(
        "{}:artifact-upload:{task_id}:{run_id}:{PROPERTIES}",
        b.redis_prefix
    )
}

/// createArtifact, remembering its answer (upload id and credentials) for a day: an object
/// artifact's upload id is chosen by the queue, so an attempt after a crash between
/// createArtifact and finishArtifact gets 409 for the same request and must resume the upload
/// it cannot ask for again.
async fn create_or_resume(
    b: &Bridge,
    task_id: &str,
    run_id: u32,
    req: &Value,
) -> Result<Value, ArtifactError> {
    use redis::AsyncCommands;
    let key = upload_key(b, task_id, run_id);
    let mut redis = b.redis.clone();
    match b.tc.create_artifact(task_id, run_id, PROPERTIES, req).await {
        Ok(resp) => {
            let saved: Result<(), _> = redis.set_ex(&key, resp.to_string(), 86_400).await;
            if let Err(e) = saved {
                tracing::warn!(
                    task_id,
                    run_id,
                    "could not remember the upload of {PROPERTIES}: {e}"
                );
            }
            Ok(resp)
        }
        Err(e) if e.is_conflict() => {
            let saved: Option<String> = redis.get(&key).await.ok().flatten();
            match saved.and_then(|s| serde_json::from_str(&s).ok()) {
                Some(resp) => {
                    tracing::info!(
                        task_id,
                        run_id,
                        "resuming the upload of {PROPERTIES} that an earlier attempt started"
                    );
                    Ok(resp)
                }
                None => Err(ArtifactError::Exists(e)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn forget_upload(b: &Bridge, task_id: &str, run_id: u32) {
    use redis::AsyncCommands;
    let mut redis = b.redis.clone();
    let _: Result<(), _> = redis.del(upload_key(b, task_id, run_id)).await;
}

async fn put_with_retries(
    b: &Bridge,
    task_id: &str,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(), ArtifactError> {
    let mut delay = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 1..=5 {
        let sent = b
            .http
            .put(url)
            .header("Content-Type", content_type)
            .header("Content-Length", body.len())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() => {
                return Err(ArtifactError::Upload {
                    name: PROPERTIES,
                    task_id: task_id.to_owned(),
                    message: format!("PUT to the artifact's putUrl: HTTP {}", r.status().as_u16()),
                    transient: false,
                });
            }
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = e.without_url().to_string(),
        }
        tracing::debug!(
            task_id,
            "PUT of {PROPERTIES} failed (attempt {attempt}): {last}"
        );
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    Err(ArtifactError::Upload {
        name: PROPERTIES,
        task_id: task_id.to_owned(),
        message: format!("PUT to the artifact's putUrl failed 5 times: {last}"),
        transient: true,
    })
}

pub async fn attach_log(
    b: &Bridge,
    task_id: &str,
    run_id: u32,
    expires: DateTime<Utc>,
    url: &str,
) -> Result<(), ArtifactError> {
    let req = json!({
        "storageType": "reference",
        "expires": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "url": url,
        "contentType": "application/gzip",
    });
    b.tc.create_artifact(task_id, run_id, LOG, &req).await?;
    Ok(())
}
