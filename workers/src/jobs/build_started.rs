//! Buildbot `started`: claim each of the Build's tasks for it, one task lock at a time (never
//! two locks held at once, so build events cannot deadlock each other).
use bbb_shared::jobs::BuildStarted;

use crate::{
    bridge::Bridge,
    jobs::builds::{
        Order, build_key, claim_current, lock_and_read, order_of, release, tasks_of_build,
    },
    runtime::{JobContext, JobError, JobResult},
};

pub async fn run(ctx: JobContext, job: BuildStarted) -> JobResult {
    let b = ctx.bridge()?;
    let key = build_key(&job.build);
    for t in tasks_of_build(b, &job.build).await? {
        let Some((guard, row)) = lock_and_read(&ctx, b, &t).await? else {
            continue;
        };
        let outcome = start(b, &row, &key).await;
        release(guard).await;
        outcome?;
    }
    Ok(())
}

async fn start(b: &Bridge, row: &bbb_shared::bridgedb::TrackedTask, build: &str) -> JobResult {
    if let Some(holder) = row.claimed_by.as_deref() {
        if holder == build {
            return Ok(()); // handled before
        }
        let brid = row.buildrequest_id.unwrap_or_default();
        let order = order_of(b, brid, build, holder).await?;
        if order == Some(Order::Same) {
            return Ok(());
        }
        if order == Some(Order::Earlier) {
            tracing::info!(
                task_id = %row.task_id,
                brid,
                "task {}: Build {build} started before Build {holder}, which holds run {}: nothing to claim",
                row.task_id,
                row.run_id
            );
            return Ok(());
        }
        // An earlier Build of the request still holds the run: its finished event (a RETRY)
        // has not been handled yet. Wait for it rather than take the run over.
        return Err(JobError::Locked(format!(
            "{} (run {} still held by Build {holder})",
            row.task_id, row.run_id
        )));
    }
    claim_current(b, row, build).await.map(drop)
}
