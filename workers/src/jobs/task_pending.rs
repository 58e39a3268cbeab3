//! Taskcluster `task-pending`: a run of a task waits for a worker. For a new task: validate,
//! then record the task and inject its BuildRequest; for a rerun after a Buildbot RETRY: move
//! the tracked row to the new run (Buildbot retries the same request by itself).
//!
//! Runs under the task's lock, so two deliveries of the same message never interleave; the
//! insert-then-inject order, the unique (taskId, runId) row and the look-up of an injected
//! request by its buildset's `external_idstring` make a re-run after a crash at any point end
//! with exactly one BuildRequest.
use bbb_shared::{
    bridgedb::TrackedTask,
    config::matches_any,
    jobs::TaskPending,
    schedulerdb::{BuildRequestSpec, shorten_branch},
};
use chrono::Utc;
use serde_json::Value;

use crate::{
    bridge::{Bridge, ClassifyResult},
    runtime::{JobContext, JobError, JobResult},
    validate::{Invalid, check_payload, check_restricted, task_scopes},
};

pub async fn run(ctx: JobContext, job: TaskPending) -> JobResult {
    handle(ctx.bridge()?, &job).await
}

pub async fn handle(b: &Bridge, job: &TaskPending) -> JobResult {
    let (task_id, run_id) = (job.task_id.as_str(), job.run_id);
    let task = match b.tc.task(task_id).await {
        Ok(task) => task,
        Err(e) if e.is_not_found() => {
            metrics::counter!("bbb_unknown_tasks_total").increment(1);
            tracing::warn!(
                task_id,
                run_id,
                "task-pending for task {task_id} run {run_id}, which the queue does not know (404): ignored"
            );
            return Ok(());
        }
        Err(e) => return Err(e).classify(),
    };
    let payload = task.get("payload").cloned().unwrap_or(Value::Null);
    let buildername = payload
        .get("buildername")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !buildername.is_empty() && matches_any(&b.ignored, buildername) {
        tracing::info!(
            task_id,
            run_id,
            "task {task_id} is for ignored builder {buildername:?}: not touched"
        );
        return Ok(());
    }
    if let Err(invalid) = validate(b, &task, &payload, buildername).await? {
        return reject(b, task_id, run_id, &invalid).await;
    }

    let tracked = b.bbb.get_task(task_id).await.classify()?;
    if let Some(row) = &tracked {
        let tracked_run = u32::try_from(row.run_id).unwrap_or(0);
        if tracked_run > run_id || (tracked_run == run_id && row.buildrequest_id.is_some()) {
            tracing::debug!(
                task_id,
                run_id,
                "task {task_id} run {run_id} is already tracked (run {tracked_run})"
            );
            return Ok(());
        }
        if tracked_run < run_id {
            b.bbb
                .update_run_id(task_id, i64::from(run_id))
                .await
                .classify()?;
            tracing::info!(
                task_id,
                run_id,
                brid = row.buildrequest_id,
                "task {task_id} was rerun: tracking run {run_id} (was {tracked_run}); BuildRequest {:?} is retried by Buildbot",
                row.buildrequest_id
            );
            return Ok(());
        }
        // Same run without a BuildRequest id: an earlier attempt stopped half-way.
    } else {
        // A later run of a task we do not track: a person reran it (new BuildRequest), or this
        // message arrived after the task was resolved and forgotten (nothing to do).
        if run_id > 0 {
            let status = b.tc.status(task_id).await.classify()?;
            if status.run(run_id).is_none_or(|r| r.state != "pending") {
                tracing::info!(
                    task_id,
                    run_id,
                    "task-pending for task {task_id} run {run_id}, which is no longer pending: ignored"
                );
                return Ok(());
            }
        }
        let time_of = |key: &str| {
            task.get(key)
                .and_then(Value::as_str)
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.timestamp())
        };
        let created = time_of("created").unwrap_or_else(|| Utc::now().timestamp());
        let row = TrackedTask {
            task_id: task_id.to_owned(),
            run_id: i64::from(run_id),
            buildrequest_id: None,
            created_date: created,
            processed_date: Utc::now().timestamp(),
            taken_until: None,
            buildername: Some(buildername.to_owned()),
            branch: branch_of(&payload).map(|b| shorten_branch(&b)),
            claimed_by: None,
            task_expires: time_of("expires"),
        };
        b.bbb.insert_task(&row).await.classify()?;
    }

    // Only after a stop half-way can a request exist already (the look-up scans buildsets).
    let injected = match &tracked {
        Some(_) => b.sched.buildrequest_for_task(task_id).await.classify()?,
        None => None,
    };
    let brid = match injected {
        Some(brid) => {
            tracing::info!(
                task_id,
                run_id,
                brid,
                "task {task_id}: BuildRequest {brid} was already injected; recording it"
            );
            brid
        }
        None => {
            let spec = spec(task_id, job, &task, &payload, buildername);
            b.sched.inject_buildrequest(&spec).await.classify()?
        }
    };
    b.bbb
        .set_buildrequest_id(task_id, i64::from(run_id), brid)
        .await
        .classify()?;
    metrics::counter!("bbb_buildrequests_injected_total").increment(1);
    tracing::info!(
        task_id,
        run_id,
        brid,
        "task {task_id} run {run_id}: BuildRequest {brid} for {buildername:?}"
    );
    Ok(())
}

/// `Ok(Err(..))`: the task is invalid; `Err(..)`: the check itself could not be made.
async fn validate(
    b: &Bridge,
    task: &Value,
    payload: &Value,
    buildername: &str,
) -> Result<Result<(), Invalid>, JobError> {
    if let Err(e) = check_payload(payload) {
        return Ok(Err(e));
    }
    if let Err(e) = check_restricted(&b.restricted, buildername, &task_scopes(task)) {
        return Ok(Err(e));
    }
    match b.allowed.allows(buildername).await {
        Ok(true) => Ok(Ok(())),
        Ok(false) => Ok(Err(Invalid(format!(
            "builder {buildername:?} is not in the allowed builders"
        )))),
        Err(no_list) => Err(JobError::Transient(no_list.into())),
    }
}

/// Invalid task: claim the run (a pending run cannot be reported on), report
/// `malformed-payload`, forget the task.
async fn reject(b: &Bridge, task_id: &str, run_id: u32, invalid: &Invalid) -> JobResult {
    metrics::counter!("bbb_malformed_tasks_total").increment(1);
    tracing::warn!(
        task_id,
        run_id,
        "task {task_id} run {run_id} is malformed: {invalid}"
    );
    match b.tc.claim(task_id, run_id).await {
        Ok(_) => {}
        // Already claimed (by us, on an earlier attempt) or resolved: the report decides.
        Err(e) if e.is_conflict() => {}
        Err(e) => return Err(e).classify(),
    }
    match b
        .tc
        .report_exception(task_id, run_id, "malformed-payload")
        .await
    {
        Ok(()) => {}
        Err(e) if e.is_conflict() => {
            tracing::info!(
                task_id,
                run_id,
                "task {task_id} run {run_id} was already resolved: {e}"
            );
        }
        Err(e) => return Err(e).classify(),
    }
    b.bbb.delete_task(task_id).await.classify()?;
    Ok(())
}

fn branch_of(payload: &Value) -> Option<String> {
    payload
        .pointer("/sourcestamp/branch")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn spec(
    task_id: &str,
    job: &TaskPending,
    task: &Value,
    payload: &Value,
    buildername: &str,
) -> BuildRequestSpec {
    let ss = |key: &str| {
        payload
            .pointer(&format!("/sourcestamp/{key}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let priority = match task.get("priority").and_then(Value::as_str) {
        Some("highest" | "very-high" | "high") => 1,
        _ => 0,
    };
    BuildRequestSpec {
        task_id: task_id.to_owned(),
        buildername: buildername.to_owned(),
        priority,
        submitted_at: job.scheduled.unwrap_or_else(Utc::now).timestamp(),
        branch: ss("branch"),
        revision: ss("revision"),
        repository: ss("repository"),
        project: ss("project"),
        properties: payload
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    }
}
