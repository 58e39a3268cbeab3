//! The per-task work a scan fans out, each under the task's lock: reclaim a running task,
//! cancel a task whose request Buildbot cancelled before it started, and repair what a lost
//! or dead-lettered Pulse message left behind (every repair counted by kind).
//!
//! A 409 on reclaim is explained from the task status before anything is cancelled: the
//! deadline passed or a person cancelled the task -> cancel the Builds, forget the task; a
//! newer run exists (a rerun after RETRY) -> follow it, cancel nothing; the run was resolved
//! by the finished handler -> nothing to cancel.
use bbb_shared::{
    bridgedb::TrackedTask,
    jobs::{TaskAction, TaskCheck},
};
use chrono::Utc;
use serde_json::{Value, json};

use crate::{
    bridge::{Bridge, ClassifyResult},
    jobs::{
        build_finished::{Finished, finish_task},
        builds::claim_current,
        task_exception::cancel_in_buildbot,
    },
    runtime::{JobContext, JobResult},
};

pub async fn run(ctx: JobContext, check: TaskCheck) -> JobResult {
    let b = ctx.bridge()?;
    let Some(row) = b.bbb.get_task(&check.task_id).await.classify()? else {
        return Ok(()); // resolved meanwhile
    };
    if row.run_id != check.run_id || row.buildrequest_id != check.brid {
        return Ok(()); // the task moved on since the scan; the next scan sees it as it is
    }
    match check.action {
        TaskAction::Reclaim => reclaim(b, &row).await,
        TaskAction::CancelTask => cancel_task(b, &row).await,
        TaskAction::ReconcileClaim => reconcile_claim(b, &row).await,
        TaskAction::ReconcileFinished => reconcile_finished(b, &row).await,
        TaskAction::ReconcileMissingRequest => reconcile_missing(b, &row).await,
    }
}

fn repaired(kind: &'static str, row: &TrackedTask) {
    metrics::counter!("bbb_reconciliations_total", "kind" => kind).increment(1);
    tracing::warn!(
        task_id = %row.task_id,
        run_id = row.run_id,
        brid = row.buildrequest_id,
        "task {} (BuildRequest {:?}): repaired by the scan: {kind}",
        row.task_id,
        row.buildrequest_id
    );
}

async fn reclaim(b: &Bridge, row: &TrackedTask) -> JobResult {
    let task_id = row.task_id.as_str();
    let run_id = u32::try_from(row.run_id).unwrap_or(0);
    let brid = row.buildrequest_id;
    match b.tc.reclaim(task_id, run_id).await {
        Ok(claim) => {
            b.bbb
                .set_claim(
                    task_id,
                    row.run_id,
                    Some(claim.taken_until.timestamp()),
                    row.claimed_by.as_deref(),
                )
                .await
                .classify()?;
            metrics::counter!("bbb_reclaims_total").increment(1);
            tracing::info!(
                task_id,
                run_id,
                ?brid,
                "task {task_id} run {run_id} reclaimed until {}",
                claim.taken_until
            );
            Ok(())
        }
        Err(e) if e.status() == Some(404) || e.status() == Some(403) => {
            tracing::warn!(
                task_id,
                run_id,
                ?brid,
                "reclaim of task {task_id} run {run_id}: {e}; forgetting the task"
            );
            b.bbb.delete_task(task_id).await.classify()?;
            Ok(())
        }
        Err(e) if e.is_conflict() => explain_conflict(b, row).await,
        Err(e) => Err(e).classify(),
    }
}

/// Why a reclaim got 409, and what follows.
async fn explain_conflict(b: &Bridge, row: &TrackedTask) -> JobResult {
    let task_id = row.task_id.as_str();
    let run_id = u32::try_from(row.run_id).unwrap_or(0);
    let brid = row.buildrequest_id;
    let status = b.tc.status(task_id).await.classify()?;
    let Some(latest) = status.latest_run() else {
        return Ok(());
    };
    if latest.run_id > run_id {
        b.bbb
            .update_run_id(task_id, i64::from(latest.run_id))
            .await
            .classify()?;
        tracing::info!(
            task_id,
            run_id,
            ?brid,
            "task {task_id}: run {run_id} was resolved and run {} exists; following it, nothing cancelled",
            latest.run_id
        );
        return Ok(());
    }
    let reason = latest.reason_resolved.as_deref().unwrap_or("");
    let cancelled =
        matches!(reason, "canceled" | "deadline-exceeded") || status.deadline < Utc::now();
    if cancelled {
        let why = if reason.is_empty() {
            "deadline-exceeded"
        } else {
            reason
        };
        tracing::info!(
            task_id,
            run_id,
            ?brid,
            "task {task_id} run {run_id} is {why} in Taskcluster: cancelling its Builds"
        );
        cancel_in_buildbot(b, task_id, row.run_id, brid, why).await?;
        b.bbb.delete_task(task_id).await.classify()?;
        repaired("resolved-in-taskcluster", row);
    } else {
        tracing::info!(
            task_id,
            run_id,
            ?brid,
            "task {task_id} run {run_id} is {} ({reason}): nothing to cancel",
            latest.state
        );
    }
    Ok(())
}

async fn cancel_task(b: &Bridge, row: &TrackedTask) -> JobResult {
    let task_id = row.task_id.as_str();
    let Some(brid) = row.buildrequest_id else {
        return Ok(());
    };
    let br = b.sched.buildrequest(brid).await.classify()?;
    if !br.is_some_and(|br| br.complete && br.claimed_at == 0) {
        return Ok(());
    }
    match b.tc.cancel(task_id).await {
        Ok(_) => tracing::info!(
            task_id,
            brid,
            "task {task_id} cancelled: BuildRequest {brid} was cancelled in Buildbot before it started"
        ),
        Err(e) if e.is_conflict() || e.is_not_found() => {
            tracing::info!(
                task_id,
                brid,
                "task {task_id}: BuildRequest {brid} cancelled in Buildbot; the task cannot be cancelled ({e})"
            );
        }
        Err(e) => return Err(e).classify(),
    }
    b.bbb.delete_task(task_id).await.classify()?;
    Ok(())
}

/// The key `started`/`log_uploaded` would give the request's latest Build.
async fn latest_build_key(
    b: &Bridge,
    brid: i64,
    running_only: bool,
) -> Result<Option<String>, crate::runtime::JobError> {
    let Some(br) = b.sched.buildrequest(brid).await.classify()? else {
        return Ok(None);
    };
    let builds = b.sched.builds_for(&[brid]).await.classify()?;
    let build = builds
        .iter()
        .rev()
        .find(|x| !running_only || x.finish_time.is_none());
    Ok(build.map(|x| {
        format!(
            "{}/{}/{}",
            br.claimed_by_name.as_deref().unwrap_or("unknown"),
            br.buildername,
            x.number
        )
    }))
}

async fn reconcile_claim(b: &Bridge, row: &TrackedTask) -> JobResult {
    let Some(brid) = row.buildrequest_id else {
        return Ok(());
    };
    if row.taken_until.is_some() {
        return Ok(());
    }
    let Some(build) = latest_build_key(b, brid, true).await? else {
        return Ok(());
    };
    if claim_current(b, row, &build).await?.is_some() {
        repaired("claim", row);
    }
    Ok(())
}

async fn reconcile_finished(b: &Bridge, row: &TrackedTask) -> JobResult {
    let Some(brid) = row.buildrequest_id else {
        return Ok(());
    };
    let Some(br) = b.sched.buildrequest(brid).await.classify()? else {
        return Ok(());
    };
    if !br.complete {
        return Ok(());
    }
    let build = match latest_build_key(b, brid, false).await? {
        Some(key) => key,
        None => format!(
            "{}/{}/reconciled",
            br.claimed_by_name.as_deref().unwrap_or("unknown"),
            br.buildername
        ),
    };
    let mut properties = b
        .sched
        .buildset_properties(br.buildsetid)
        .await
        .classify()?;
    properties.insert("buildername".into(), json!([br.buildername, "Builder"]));
    properties.insert("request_ids".into(), json!([[brid], "bbb"]));
    properties.insert(
        "reconciled".into(),
        json!([
            "resolved by bbb's periodic scan from the scheduler DB: the Build's finished event was never handled",
            "bbb"
        ]),
    );
    // The finished handler checks the claim holder; the scan acts for the Build that holds it.
    let build = row.claimed_by.clone().unwrap_or(build);
    let finished = Finished {
        build,
        results: br.results,
        properties: Value::Object(properties),
        log_url: None,
    };
    finish_task(b, row, &finished).await?;
    repaired("finished", row);
    Ok(())
}

async fn reconcile_missing(b: &Bridge, row: &TrackedTask) -> JobResult {
    let task_id = row.task_id.as_str();
    let Some(brid) = row.buildrequest_id else {
        return Ok(());
    };
    if b.sched.buildrequest(brid).await.classify()?.is_some() {
        return Ok(());
    }
    let run_id = u32::try_from(row.run_id).unwrap_or(0);
    tracing::error!(
        task_id,
        run_id,
        brid,
        "task {task_id} is tracked with BuildRequest {brid}, which does not exist in the scheduler DB: reporting internal-error and forgetting it"
    );
    if row.taken_until.is_none() {
        match b.tc.claim(task_id, run_id).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() || e.is_not_found() => {}
            Err(e) => return Err(e).classify(),
        }
    }
    match b
        .tc
        .report_exception(task_id, run_id, "internal-error")
        .await
    {
        Ok(()) => {}
        Err(e) if e.is_conflict() || e.is_not_found() => {}
        Err(e) => return Err(e).classify(),
    }
    b.bbb.delete_task(task_id).await.classify()?;
    repaired("missing-request", row);
    Ok(())
}
