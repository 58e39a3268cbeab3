//! Taskcluster `task-exception`: only `canceled` and `deadline-exceeded` matter (every other
//! reason is the bridge's own doing, or a rerun). The Buildbot side follows: Builds that exist
//! are cancelled through self-serve and the row is kept (the finished event still attaches
//! artifacts and cleans up); a request without Builds is cancelled and the row deleted.
use bbb_shared::{jobs::TaskException, selfserve::Cancelled};

use crate::{
    bridge::{Bridge, ClassifyResult},
    runtime::{JobContext, JobResult},
};

pub async fn run(ctx: JobContext, job: TaskException) -> JobResult {
    handle(ctx.bridge()?, &job).await
}

pub async fn handle(b: &Bridge, job: &TaskException) -> JobResult {
    let task_id = job.task_id.as_str();
    let reason = job.reason.as_deref().unwrap_or("");
    if !matches!(reason, "canceled" | "deadline-exceeded") {
        tracing::debug!(
            task_id,
            "task {task_id} exception {reason:?}: nothing to do"
        );
        return Ok(());
    }
    let Some(row) = b.bbb.get_task(task_id).await.classify()? else {
        tracing::debug!(task_id, "task {task_id} ({reason}) is not tracked");
        return Ok(());
    };
    cancel_in_buildbot(b, task_id, row.run_id, row.buildrequest_id, reason).await
}

/// Cancels the task's Builds, or its BuildRequest when no Build exists (then forgets the task).
/// Shared with the periodic scan, which finds tasks TC resolved without a message reaching us.
pub async fn cancel_in_buildbot(
    b: &Bridge,
    task_id: &str,
    run_id: i64,
    brid: Option<i64>,
    reason: &str,
) -> JobResult {
    let Some(brid) = brid else {
        tracing::info!(
            task_id,
            run_id,
            "task {task_id} ({reason}) has no BuildRequest yet: forgotten"
        );
        b.bbb.delete_task(task_id).await.classify()?;
        return Ok(());
    };
    let branch = b
        .sched
        .branch_of(brid)
        .await
        .classify()?
        .unwrap_or_default();
    let builds = b.sched.build_ids(brid).await.classify()?;
    if builds.is_empty() {
        let outcome = b.selfserve.cancel_request(&branch, brid).await.classify()?;
        tracing::info!(
            task_id,
            run_id,
            brid,
            "task {task_id} {reason}: BuildRequest {brid} cancelled through self-serve ({})",
            describe(outcome)
        );
        b.bbb.delete_task(task_id).await.classify()?;
    } else {
        for build_id in builds {
            let outcome = b
                .selfserve
                .cancel_build(&branch, build_id)
                .await
                .classify()?;
            tracing::info!(
                task_id,
                run_id,
                brid,
                build_id,
                "task {task_id} {reason}: Build {build_id} of BuildRequest {brid} cancelled through self-serve ({})",
                describe(outcome)
            );
        }
    }
    Ok(())
}

fn describe(outcome: Cancelled) -> &'static str {
    match outcome {
        Cancelled::Accepted => "accepted",
        Cancelled::NotFound => "self-serve answered 404: already gone",
    }
}
