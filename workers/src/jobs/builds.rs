//! What both Buildbot build events share: finding the tracked tasks a Build works for, and
//! claiming a task's current run for a Build.
//!
//! A Build's `request_ids` are matched against the bridge DB and against each request's own
//! buildset `taskId` property (one query each for all ids). A request counts only when both
//! agree, or when the request is not recorded yet but its buildset names a tracked task (the
//! window between injection and recording, or a crash in it): the row is then completed under
//! the task's lock. A merged Build carries the first request's `taskId` property; every other
//! request is matched by its own buildset, so merged tasks are all found.
use std::collections::HashMap;

use bbb_shared::{bridgedb::TrackedTask, jobs::BuildInfo, lock::LockGuard};

use crate::{
    bridge::{Bridge, ClassifyResult},
    runtime::{JobContext, JobError},
};

/// A task the Build works for, through one of its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTask {
    pub task_id: String,
    pub brid: i64,
}

/// `<master>/<builder>/<number>`: names the Build in the bridge DB (`claimedBy`) and in logs.
pub fn build_key(build: &BuildInfo) -> String {
    format!("{}/{}/{}", build.master, build.builder, build.buildnumber)
}

/// The tasks of a Build's requests, in request order. Empty for Builds that are not ours.
pub async fn tasks_of_build(b: &Bridge, build: &BuildInfo) -> Result<Vec<BuildTask>, JobError> {
    let key = build_key(build);
    if build.task_id.is_none() || build.request_ids.is_empty() {
        tracing::debug!("Build {key} has no taskId property or no request ids: not ours");
        return Ok(Vec::new());
    }
    let rows = b
        .bbb
        .tasks_by_buildrequest_ids(&build.request_ids)
        .await
        .classify()?;
    let recorded: HashMap<i64, &TrackedTask> = rows
        .iter()
        .filter_map(|r| r.buildrequest_id.map(|brid| (brid, r)))
        .collect();
    let in_buildset: HashMap<i64, String> = b
        .sched
        .task_ids_of(&build.request_ids)
        .await
        .classify()?
        .into_iter()
        .collect();
    let mut tasks = Vec::new();
    for &brid in &build.request_ids {
        match (recorded.get(&brid), in_buildset.get(&brid)) {
            (Some(row), Some(t)) if &row.task_id == t => tasks.push(BuildTask {
                task_id: t.clone(),
                brid,
            }),
            (Some(row), Some(t)) => tracing::warn!(
                brid,
                task_id = %row.task_id,
                "Build {key}: BuildRequest {brid} is tracked for task {} but its buildset names task {t}: not touched",
                row.task_id
            ),
            (Some(row), None) => tasks.push(BuildTask {
                task_id: row.task_id.clone(),
                brid,
            }),
            (None, Some(t)) => tasks.push(BuildTask {
                task_id: t.clone(),
                brid,
            }),
            (None, None) => {
                tracing::debug!(brid, "Build {key}: BuildRequest {brid} is not the bridge's")
            }
        }
    }
    Ok(tasks)
}

/// Takes the task's lock (or asks the runtime to retry the job later) and reads its row,
/// recording the request id if the row does not have it yet. `None`: the task is not tracked
/// (any more) or the row belongs to another request.
pub async fn lock_and_read(
    ctx: &JobContext,
    b: &Bridge,
    t: &BuildTask,
) -> Result<Option<(LockGuard, TrackedTask)>, JobError> {
    let guard = match ctx
        .locks
        .acquire_within(&t.task_id, crate::runtime::LOCK_PATIENCE)
        .await
    {
        Ok(Some(g)) => g,
        Ok(None) => return Err(JobError::Locked(t.task_id.clone())),
        Err(e) => return Err(JobError::Transient(e.into())),
    };
    let Some(mut row) = b.bbb.get_task(&t.task_id).await.classify()? else {
        tracing::debug!(task_id = %t.task_id, brid = t.brid, "task {} is not tracked", t.task_id);
        release(guard).await;
        return Ok(None);
    };
    match row.buildrequest_id {
        Some(brid) if brid == t.brid => {}
        Some(other) => {
            tracing::warn!(
                task_id = %t.task_id,
                brid = t.brid,
                "task {} is tracked with BuildRequest {other}, not {}: not touched",
                t.task_id,
                t.brid
            );
            release(guard).await;
            return Ok(None);
        }
        None => {
            b.bbb
                .set_buildrequest_id(&t.task_id, row.run_id, t.brid)
                .await
                .classify()?;
            tracing::info!(
                task_id = %t.task_id,
                brid = t.brid,
                "task {}: BuildRequest {} recorded from its Build (it started before the id was stored)",
                t.task_id,
                t.brid
            );
            row.buildrequest_id = Some(t.brid);
        }
    }
    Ok(Some((guard, row)))
}

/// Where a Build stands relative to the Build holding a task's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// This Build started after the holder: the holder's finished event is still to come.
    Later,
    /// This Build started before the holder: its own events were handled before.
    Earlier,
    /// The same Build, named differently (e.g. by the scan, from the scheduler DB).
    Same,
}

/// Orders two Builds of one request (`<master>/<builder>/<number>` keys) by their builds rows,
/// which Buildbot adds as each attempt starts. `None` when either is not found.
pub async fn order_of(
    b: &Bridge,
    brid: i64,
    this: &str,
    holder: &str,
) -> Result<Option<Order>, JobError> {
    let number = |key: &str| key.rsplit('/').next().and_then(|n| n.parse::<i64>().ok());
    let (Some(this_n), Some(holder_n)) = (number(this), number(holder)) else {
        return Ok(None);
    };
    let builds = b.sched.builds_for(&[brid]).await.classify()?;
    let pos = |n: i64| builds.iter().position(|x| x.number == n);
    Ok(match (pos(this_n), pos(holder_n)) {
        (Some(t), Some(h)) if t > h => Some(Order::Later),
        (Some(t), Some(h)) if t < h => Some(Order::Earlier),
        (Some(_), Some(_)) => Some(Order::Same),
        _ => None,
    })
}

pub async fn release(guard: LockGuard) {
    if let Err(e) = guard.release().await {
        tracing::warn!("releasing a task lock failed (it expires by itself): {e}");
    }
}

/// Claims the task's current run for `build` and records it. When the tracked run can no
/// longer be claimed, the task status says why: a newer pending run (the rerun after a RETRY,
/// whose task-pending has not been handled yet) is followed and claimed; a run we already hold
/// is kept. Returns the run now held, or `None` when there is nothing to claim.
pub async fn claim_current(
    b: &Bridge,
    row: &TrackedTask,
    build: &str,
) -> Result<Option<u32>, JobError> {
    let task_id = row.task_id.as_str();
    let run_id = u32::try_from(row.run_id).unwrap_or(0);
    let brid = row.buildrequest_id;
    match b.tc.claim(task_id, run_id).await {
        Ok(claim) => {
            b.bbb
                .set_claim(
                    task_id,
                    row.run_id,
                    Some(claim.taken_until.timestamp()),
                    Some(build),
                )
                .await
                .classify()?;
            metrics::counter!("bbb_claims_total").increment(1);
            tracing::info!(
                task_id,
                run_id,
                ?brid,
                "task {task_id} run {run_id} claimed for Build {build}, until {}",
                claim.taken_until
            );
            return Ok(Some(run_id));
        }
        Err(e) if e.is_conflict() => {}
        Err(e) if e.is_not_found() => {
            tracing::warn!(
                task_id,
                run_id,
                ?brid,
                "task {task_id} run {run_id} is unknown to the queue (404): not claimed"
            );
            return Ok(None);
        }
        Err(e) => return Err(e).classify(),
    }
    // 409: find out why.
    let status = b.tc.status(task_id).await.classify()?;
    let ours = |r: &bbb_shared::tc::Run| {
        r.state == "running"
            && r.worker_group.as_deref() == Some(b.tc.worker_group.as_str())
            && r.worker_id.as_deref() == Some(b.tc.worker_id.as_str())
    };
    let Some(latest) = status.latest_run() else {
        return Ok(None);
    };
    if latest.run_id == run_id && ours(latest) {
        let until = latest.taken_until.map(|t| t.timestamp());
        b.bbb
            .set_claim(task_id, row.run_id, until, Some(build))
            .await
            .classify()?;
        tracing::info!(
            task_id,
            run_id,
            ?brid,
            "task {task_id} run {run_id} is already claimed by this bridge; held for Build {build}"
        );
        return Ok(Some(run_id));
    }
    if latest.run_id > run_id && (latest.state == "pending" || ours(latest)) {
        let next = latest.run_id;
        b.bbb
            .update_run_id(task_id, i64::from(next))
            .await
            .classify()?;
        tracing::info!(
            task_id,
            run_id = next,
            ?brid,
            "task {task_id}: run {run_id} is resolved and run {next} exists; following it"
        );
        let mut moved = row.clone();
        moved.run_id = i64::from(next);
        moved.taken_until = None;
        moved.claimed_by = None;
        return Box::pin(claim_current(b, &moved, build)).await;
    }
    tracing::info!(
        task_id,
        run_id,
        ?brid,
        "task {task_id} run {run_id} cannot be claimed for Build {build}: task is {}, latest run {} is {} ({})",
        status.state,
        latest.run_id,
        latest.state,
        latest.reason_resolved.as_deref().unwrap_or("-")
    );
    Ok(None)
}
