//! The Taskcluster queue, as the bridge uses it: the official `taskcluster` client with the
//! calls typed and their failures classified.
//!
//! The client retries transport errors and 5xx by itself (5 times, backoff from 100 ms). What
//! reaches us is classified once, here: [`TcError::is_transient`] (transport, 5xx, and 429,
//! which the client does not retry) is for the job runtime to retry with its backoff; 4xx are
//! answers the handlers act on (409 conflict, 404 gone, 403 scopes) and are never retried
//! blindly. Every call is timed and counted by name and status.
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use taskcluster::{ClientBuilder, Credentials, Queue};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TcError {
    #[error("{call} of task {task_id}: HTTP {status}: {message}")]
    Http {
        call: &'static str,
        task_id: String,
        status: u16,
        message: String,
    },
    #[error("{call} of task {task_id}: {message}")]
    Transport {
        call: &'static str,
        task_id: String,
        message: String,
    },
    #[error("{call} of task {task_id}: unexpected response: {message}")]
    Response {
        call: &'static str,
        task_id: String,
        message: String,
    },
}

impl TcError {
    pub fn status(&self) -> Option<u16> {
        match self {
            TcError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth retrying later: the queue or the network had a problem, not our request.
    pub fn is_transient(&self) -> bool {
        match self {
            TcError::Http { status, .. } => *status >= 500 || *status == 429,
            TcError::Transport { .. } => true,
            TcError::Response { .. } => false,
        }
    }

    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// A task's status as the queue reports it (the parts the bridge reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub task_id: String,
    pub state: String,
    pub deadline: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    #[serde(default)]
    pub retries_left: u32,
    #[serde(default)]
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: u32,
    pub state: String,
    #[serde(default)]
    pub reason_created: Option<String>,
    #[serde(default)]
    pub reason_resolved: Option<String>,
    #[serde(default)]
    pub worker_group: Option<String>,
    #[serde(default)]
    pub worker_id: Option<String>,
    #[serde(default)]
    pub taken_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub scheduled: Option<DateTime<Utc>>,
}

impl TaskStatus {
    pub fn run(&self, run_id: u32) -> Option<&Run> {
        self.runs.iter().find(|r| r.run_id == run_id)
    }

    pub fn latest_run(&self) -> Option<&Run> {
        self.runs.last()
    }

    pub fn is_resolved(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "failed" | "exception")
    }
}

impl Run {
    pub fn is_resolved(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "failed" | "exception")
    }
}

/// What a claim or reclaim returns that the bridge keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub run_id: u32,
    pub taken_until: DateTime<Utc>,
}

/// The queue client of one bridge deployment (its worker group and id).
#[derive(Clone)]
pub struct TcQueue {
    queue: std::sync::Arc<Queue>,
    root_url: String,
    pub worker_group: String,
    pub worker_id: String,
}

impl std::fmt::Debug for TcQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcQueue")
            .field("root_url", &self.root_url)
            .field("worker_group", &self.worker_group)
            .field("worker_id", &self.worker_id)
            .finish()
    }
}

impl TcQueue {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let tc = &config.taskcluster;
        let credentials = match &tc.certificate {
            Some(cert) => Credentials::new_with_certificate(
                tc.client_id.clone(),
                tc.access_token.expose().clone(),
                cert.expose().clone(),
            ),
            None => Credentials::new(tc.client_id.clone(), tc.access_token.expose().clone()),
        };
        let queue = std::sync::Arc::new(Queue::new(
            ClientBuilder::new(tc.root_url.clone()).credentials(credentials),
        )?);
        Ok(Self {
            queue,
            root_url: tc.root_url.clone(),
            worker_group: config.tc_worker_group.clone(),
            worker_id: config.tc_worker_id.clone(),
        })
    }

    pub fn root_url(&self) -> &str {
        &self.root_url
    }

    /// The task definition.
    pub async fn task(&self, task_id: &str) -> Result<Value, TcError> {
        timed("task", task_id, self.queue.task(task_id)).await
    }

    pub async fn status(&self, task_id: &str) -> Result<TaskStatus, TcError> {
        let v = timed("status", task_id, self.queue.status(task_id)).await?;
        parse_status("status", task_id, &v)
    }

    /// Claims a run for this deployment's worker group and id.
    pub async fn claim(&self, task_id: &str, run_id: u32) -> Result<Claim, TcError> {
        let body = json!({"workerGroup": self.worker_group, "workerId": self.worker_id});
        let run = run_id.to_string();
        let v = timed(
            "claimTask",
            task_id,
            self.queue.claimTask(task_id, &run, &body),
        )
        .await?;
        parse_claim("claimTask", task_id, run_id, &v)
    }

    pub async fn reclaim(&self, task_id: &str, run_id: u32) -> Result<Claim, TcError> {
        let run = run_id.to_string();
        let v = timed(
            "reclaimTask",
            task_id,
            self.queue.reclaimTask(task_id, &run),
        )
        .await?;
        parse_claim("reclaimTask", task_id, run_id, &v)
    }

    pub async fn report_completed(&self, task_id: &str, run_id: u32) -> Result<(), TcError> {
        let run = run_id.to_string();
        timed(
            "reportCompleted",
            task_id,
            self.queue.reportCompleted(task_id, &run),
        )
        .await
        .map(drop)
    }

    pub async fn report_failed(&self, task_id: &str, run_id: u32) -> Result<(), TcError> {
        let run = run_id.to_string();
        timed(
            "reportFailed",
            task_id,
            self.queue.reportFailed(task_id, &run),
        )
        .await
        .map(drop)
    }

    pub async fn report_exception(
        &self,
        task_id: &str,
        run_id: u32,
        reason: &str,
    ) -> Result<(), TcError> {
        let run = run_id.to_string();
        let body = json!({ "reason": reason });
        timed(
            "reportException",
            task_id,
            self.queue.reportException(task_id, &run, &body),
        )
        .await
        .map(drop)
    }

    pub async fn rerun(&self, task_id: &str) -> Result<TaskStatus, TcError> {
        let v = timed("rerunTask", task_id, self.queue.rerunTask(task_id)).await?;
        parse_status("rerunTask", task_id, &v)
    }

    pub async fn cancel(&self, task_id: &str) -> Result<TaskStatus, TcError> {
        let v = timed("cancelTask", task_id, self.queue.cancelTask(task_id)).await?;
        parse_status("cancelTask", task_id, &v)
    }

    pub async fn create_artifact(
        &self,
        task_id: &str,
        run_id: u32,
        name: &str,
        body: &Value,
    ) -> Result<Value, TcError> {
        let run = run_id.to_string();
        timed(
            "createArtifact",
            task_id,
            self.queue.createArtifact(task_id, &run, name, body),
        )
        .await
    }

    pub async fn finish_artifact(
        &self,
        task_id: &str,
        run_id: u32,
        name: &str,
        upload_id: &str,
    ) -> Result<(), TcError> {
        let run = run_id.to_string();
        let body = json!({ "uploadId": upload_id });
        let started = Instant::now();
        let r = self.queue.finishArtifact(task_id, &run, name, &body).await;
        record("finishArtifact", started, r.as_ref().err());
        r.map_err(|e| classify("finishArtifact", task_id, e))
    }
}

async fn timed(
    call: &'static str,
    task_id: &str,
    fut: impl Future<Output = anyhow::Result<Value>>,
) -> Result<Value, TcError> {
    let started = Instant::now();
    let r = fut.await;
    record(call, started, r.as_ref().err());
    r.map_err(|e| classify(call, task_id, e))
}

fn record(call: &'static str, started: Instant, err: Option<&anyhow::Error>) {
    let status = match err {
        None => "2xx".to_owned(),
        Some(e) => taskcluster::err_status_code(e)
            .map_or_else(|| "transport".to_owned(), |s| s.as_u16().to_string()),
    };
    metrics::histogram!("bbb_tc_call_seconds", "call" => call, "status" => status.clone())
        .record(started.elapsed().as_secs_f64());
    if err.is_some() {
        metrics::counter!("bbb_tc_errors_total", "call" => call, "status" => status).increment(1);
    }
}

fn classify(call: &'static str, task_id: &str, e: anyhow::Error) -> TcError {
    let message = format!("{e:#}");
    match taskcluster::err_status_code(&e) {
        Some(status) => TcError::Http {
            call,
            task_id: task_id.to_owned(),
            status: status.as_u16(),
            message,
        },
        None => TcError::Transport {
            call,
            task_id: task_id.to_owned(),
            message,
        },
    }
}

fn parse_status(call: &'static str, task_id: &str, v: &Value) -> Result<TaskStatus, TcError> {
    let status = v.get("status").unwrap_or(v);
    serde_json::from_value(status.clone()).map_err(|e| TcError::Response {
        call,
        task_id: task_id.to_owned(),
        message: e.to_string(),
    })
}

fn parse_claim(
    call: &'static str,
    task_id: &str,
    run_id: u32,
    v: &Value,
) -> Result<Claim, TcError> {
    let taken_until = v
        .get("takenUntil")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .ok_or_else(|| TcError::Response {
            call,
            task_id: task_id.to_owned(),
            message: "no takenUntil in the claim response".into(),
        })?;
    Ok(Claim {
        run_id,
        taken_until: taken_until.with_timezone(&Utc),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_status_structure_from_the_queue_parses_with_all_its_runs() {
        let v = json!({"status": {"taskId":"C4Anq1nwR_i_3PIWfaQGvA","provisionerId":"p","workerType":"w",
            "taskQueueId":"p/w","schedulerId":"-","projectId":"none","taskGroupId":"XKk1dNKmRauR36Mlf8bZWA",
            "priority":"lowest","deadline":"2026-11-23T05:00:00.000Z","expires":"2027-11-23T05:00:00.000Z",
            "retriesLeft":4,"state":"pending","runs":[
              {"runId":0,"state":"exception","reasonCreated":"scheduled","reasonResolved":"claim-expired",
               "workerGroup":"g","workerId":"w","takenUntil":"2026-11-22T05:40:00.000Z",
               "scheduled":"2026-11-22T05:19:58.120Z","started":"2026-11-22T05:20:00.000Z","resolved":"2026-11-22T05:40:03.511+00:00"},
              {"runId":1,"state":"pending","reasonCreated":"retry","scheduled":"2026-11-22T05:40:03.511Z"}]}});
        let s = parse_status("status", "C4Anq1nwR_i_3PIWfaQGvA", &v).unwrap();
        assert_eq!(s.runs.len(), 2);
        assert_eq!(s.latest_run().unwrap().run_id, 1);
        assert!(s.run(0).unwrap().is_resolved());
        assert_eq!(
            s.run(0).unwrap().reason_resolved.as_deref(),
            Some("claim-expired")
        );
        assert!(!s.is_resolved());
    }

    #[test]
    fn transport_5xx_and_429_are_transient_other_4xx_are_not() {
        let http = |status| TcError::Http {
            call: "claimTask",
            task_id: "t".into(),
            status,
            message: String::new(),
        };
        assert!(http(500).is_transient() && http(503).is_transient() && http(429).is_transient());
        assert!(
            !http(409).is_transient() && !http(404).is_transient() && !http(403).is_transient()
        );
        assert!(http(409).is_conflict() && http(404).is_not_found());
        let t = TcError::Transport {
            call: "status",
            task_id: "t".into(),
            message: "reset".into(),
        };
        assert!(t.is_transient());
    }
}
