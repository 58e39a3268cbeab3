//! Buildbot `log_uploaded` (postrun's "finished, log stored"): for each of the Build's tasks,
//! claim the run if no started event did, attach the properties and the log, and resolve the
//! task by the Build's result (BRIDGE.md's table). One task lock at a time.
//!
//! A task whose current run is held by another Build (`claimedBy`) is left alone: this
//! Build's run was resolved before (the job runs again after a crash) and a later Build of the
//! request owns the rerun.
use bbb_shared::{
    bridgedb::TrackedTask,
    jobs::{BuildFinished, results},
    tc::TcError,
};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    artifacts::{attach_log, attach_properties},
    bridge::{Bridge, ClassifyResult},
    jobs::builds::{
        Order, build_key, claim_current, lock_and_read, order_of, release, tasks_of_build,
    },
    runtime::{JobContext, JobError, JobResult},
};

pub async fn run(ctx: JobContext, job: BuildFinished) -> JobResult {
    let b = ctx.bridge()?;
    let key = build_key(&job.build);
    for t in tasks_of_build(b, &job.build).await? {
        let Some((guard, row)) = lock_and_read(&ctx, b, &t).await? else {
            continue;
        };
        let outcome = finish(b, &job, &row, &key).await;
        release(guard).await;
        outcome?;
    }
    Ok(())
}

/// What a Build's result does to its task and to the tracked row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Completed,
    Failed,
    /// SKIPPED, or no result at all: should not happen; logged, row kept.
    Nothing,
    MalformedPayload,
    /// Exception then rerunTask; the row stays for the rerun.
    Retry,
    /// cancelTask if the run is still running in Taskcluster.
    Cancel,
}

pub fn resolution(result: Option<i64>) -> Resolution {
    match result {
        Some(results::SUCCESS) => Resolution::Completed,
        Some(results::WARNINGS | results::FAILURE) => Resolution::Failed,
        Some(results::EXCEPTION) => Resolution::MalformedPayload,
        Some(results::RETRY) => Resolution::Retry,
        Some(results::CANCELLED) => Resolution::Cancel,
        _ => Resolution::Nothing,
    }
}

/// What a finished Build left for its task: from the `log_uploaded` message, or rebuilt from
/// the scheduler DB by the reconciliation when that message never came.
#[derive(Debug, Clone)]
pub struct Finished {
    /// `<master>/<builder>/<number>`.
    pub build: String,
    pub results: Option<i64>,
    /// name -> [value, source], as `public/properties.json` has it.
    pub properties: Value,
    pub log_url: Option<String>,
}

async fn finish(b: &Bridge, job: &BuildFinished, row: &TrackedTask, build: &str) -> JobResult {
    let finished = Finished {
        build: build.to_owned(),
        results: job.results,
        properties: Value::Object(job.build.properties_json()),
        log_url: job.log_url.clone(),
    };
    finish_task(b, row, &finished).await
}

/// Resolves the task of `row` as BRIDGE.md's table says for the Build's result. The caller
/// holds the task's lock.
pub async fn finish_task(b: &Bridge, row: &TrackedTask, f: &Finished) -> JobResult {
    let build = f.build.as_str();
    let task_id = row.task_id.as_str();
    let brid = row.buildrequest_id;
    if let Some(holder) = row.claimed_by.as_deref()
        && holder != build
    {
        // A later Build of the request finishing before the holder's (a RETRY) finished event
        // was handled: wait for that one. An earlier Build: this event was handled before.
        let brid = brid.unwrap_or_default();
        match order_of(b, brid, build, holder).await? {
            Some(Order::Earlier) => {}
            Some(Order::Same) => {
                return Box::pin(finish_task(
                    b,
                    row,
                    &Finished {
                        build: holder.to_owned(),
                        ..f.clone()
                    },
                ))
                .await;
            }
            _ => {
                return Err(JobError::Locked(format!(
                    "{task_id} (run {} still held by Build {holder})",
                    row.run_id
                )));
            }
        }
        tracing::info!(
            task_id,
            run_id = row.run_id,
            ?brid,
            "task {task_id} run {} is held by Build {holder}: Build {build} was handled before",
            row.run_id
        );
        return Ok(());
    }
    let how = resolution(f.results);
    let run = if row.taken_until.is_none() {
        claim_current(b, row, build).await?
    } else {
        u32::try_from(row.run_id).ok()
    };
    let Some(run_id) = run else {
        // Taskcluster already resolved the task (cancelled, deadline): Buildbot's side is over.
        tracing::info!(
            task_id,
            ?brid,
            "task {task_id}: Build {build} finished ({:?}) but no run can be claimed; forgetting the task",
            f.results
        );
        if !matches!(how, Resolution::Retry | Resolution::Nothing) {
            b.bbb.delete_task(task_id).await.classify()?;
        }
        return Ok(());
    };
    let span = (task_id, run_id, brid);
    let expires = task_expiry(b, row).await?;
    attach(b, f, span, expires).await?;

    match how {
        Resolution::Completed => tolerate_conflict(
            span,
            "reportCompleted",
            b.tc.report_completed(task_id, run_id).await,
        )?,
        Resolution::Failed => tolerate_conflict(
            span,
            "reportFailed",
            b.tc.report_failed(task_id, run_id).await,
        )?,
        Resolution::MalformedPayload => tolerate_conflict(
            span,
            "reportException",
            b.tc.report_exception(task_id, run_id, "malformed-payload")
                .await,
        )?,
        Resolution::Retry => {
            tolerate_conflict(
                span,
                "reportException",
                b.tc.report_exception(task_id, run_id, "malformed-payload")
                    .await,
            )?;
            match b.tc.rerun(task_id).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => tracing::warn!(
                    task_id,
                    run_id,
                    ?brid,
                    "task {task_id} cannot be rerun: {e}"
                ),
                Err(e) => return Err(e).classify(),
            }
            // The run is resolved: the next Build of the request claims the rerun.
            b.bbb
                .set_claim(task_id, row.run_id, None, None)
                .await
                .classify()?;
        }
        Resolution::Cancel => {
            let status = b.tc.status(task_id).await.classify()?;
            let running = status.run(run_id).is_some_and(|r| r.state == "running");
            if running {
                b.tc.cancel(task_id).await.classify()?;
                tracing::info!(
                    task_id,
                    run_id,
                    ?brid,
                    "task {task_id} cancelled: Build {build} was cancelled in Buildbot"
                );
            }
        }
        Resolution::Nothing => {
            metrics::counter!("bbb_unexpected_results_total").increment(1);
            tracing::error!(
                task_id,
                run_id,
                ?brid,
                "Build {build} of task {task_id} finished with result {:?}: left for an operator",
                f.results
            );
        }
    }
    if !matches!(how, Resolution::Retry | Resolution::Nothing) {
        b.bbb.delete_task(task_id).await.classify()?;
    }
    metrics::counter!("bbb_tasks_resolved_total", "resolution" => format!("{how:?}")).increment(1);
    tracing::info!(
        task_id,
        run_id,
        ?brid,
        "task {task_id} run {run_id}: Build {build} finished with {:?} -> {how:?}",
        f.results
    );
    Ok(())
}

/// The task's expiry: from the row, or (rows adopted from the original) from the queue.
async fn task_expiry(b: &Bridge, row: &TrackedTask) -> Result<DateTime<Utc>, JobError> {
    if let Some(at) = row
        .task_expires
        .and_then(|s| DateTime::from_timestamp(s, 0))
    {
        return Ok(at);
    }
    Ok(b.tc.status(&row.task_id).await.classify()?.expires)
}

/// Attaches the artifacts; a failure that a retry cannot fix (the run was resolved meanwhile)
/// is logged and does not stop the resolution.
async fn attach(
    b: &Bridge,
    f: &Finished,
    (task_id, run_id, brid): (&str, u32, Option<i64>),
    expires: DateTime<Utc>,
) -> JobResult {
    let mut outcomes = vec![(
        "properties",
        attach_properties(b, task_id, run_id, expires, &f.properties).await,
    )];
    if let Some(url) = &f.log_url {
        outcomes.push(("log", attach_log(b, task_id, run_id, expires, url).await));
    }
    for (what, outcome) in outcomes {
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_transient() => return Err(JobError::Transient(e.into())),
            Err(e @ crate::artifacts::ArtifactError::Exists(_)) => {
                tracing::info!(
                    task_id,
                    run_id,
                    ?brid,
                    "task {task_id} run {run_id}: {what} artifact not attached again: {e}"
                );
            }
            Err(e) => {
                metrics::counter!("bbb_artifact_errors_total").increment(1);
                tracing::warn!(
                    task_id,
                    run_id,
                    ?brid,
                    "task {task_id} run {run_id}: {what} artifact not attached: {e}"
                );
            }
        }
    }
    Ok(())
}

fn tolerate_conflict(
    (task_id, run_id, brid): (&str, u32, Option<i64>),
    call: &str,
    result: Result<(), TcError>,
) -> JobResult {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.is_conflict() => {
            tracing::info!(
                task_id,
                run_id,
                ?brid,
                "{call} of task {task_id} run {run_id}: already resolved ({e})"
            );
            Ok(())
        }
        Err(e) => Err(e).classify(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buildbot_result_maps_to_its_resolution() {
        assert_eq!(resolution(Some(0)), Resolution::Completed);
        assert_eq!(resolution(Some(1)), Resolution::Failed);
        assert_eq!(resolution(Some(2)), Resolution::Failed);
        assert_eq!(resolution(Some(3)), Resolution::Nothing);
        assert_eq!(resolution(Some(4)), Resolution::MalformedPayload);
        assert_eq!(resolution(Some(5)), Resolution::Retry);
        assert_eq!(resolution(Some(6)), Resolution::Cancel);
        assert_eq!(resolution(None), Resolution::Nothing);
    }
}
