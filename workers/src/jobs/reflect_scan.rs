//! The periodic scan (one job per scheduler tick): reads every tracked task in keyset pages,
//! with their BuildRequests and Builds in one query per page each (never a query per task),
//! decides what each task needs, and fans the work out as per-task [`TaskCheck`] jobs, which
//! every worker shares under the per-task lock.
//!
//! Decisions (BRIDGE.md "Reflector", plus the reconciliation of lost events):
//! - request complete, never claimed, no Build: cancelled in Buildbot before it started ->
//!   cancel the task;
//! - request complete longer than the grace period: its finished event was lost -> resolve;
//! - claimed and due: reclaim, only when `takenUntil - now < margin - jitter`, where the jitter
//!   is stable per task in [0, margin/4), so claims falling due together are spread and every
//!   claim is renewed at the latest 3/4 of the margin before it expires;
//! - not claimed but a Build is running: its started event was lost -> claim;
//! - a recorded request that does not exist -> internal-error, forget.
use std::collections::HashMap;

use bbb_shared::{
    bridgedb::TrackedTask,
    jobs::{ReflectScan, TaskAction, TaskCheck},
    schedulerdb::{Build, BuildRequest},
};
use chrono::Utc;

use crate::{
    bridge::ClassifyResult,
    runtime::{JobContext, JobError, JobResult},
};

/// The scan's knobs, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct ScanPolicy {
    pub now: i64,
    pub margin: i64,
    /// A complete request whose finished event has not been handled after this long is
    /// resolved from the database.
    pub grace: i64,
}

/// A stable per-task spread in [0, margin/4).
pub fn jitter(task_id: &str, margin: i64) -> i64 {
    let quarter = (margin / 4).max(1);
    // FNV-1a: stable across processes and releases.
    let hash = task_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    i64::try_from(hash % u64::try_from(quarter).unwrap_or(1)).unwrap_or(0)
}

/// What a tracked task needs now, if anything.
pub fn decide(
    row: &TrackedTask,
    br: Option<&BuildRequest>,
    builds: &[&Build],
    p: ScanPolicy,
) -> Option<TaskAction> {
    row.buildrequest_id?; // not injected yet: its task-pending job is on it
    let Some(br) = br else {
        return Some(TaskAction::ReconcileMissingRequest);
    };
    let due = |until: i64| until - p.now < p.margin - jitter(&row.task_id, p.margin);
    if br.complete {
        if br.claimed_at == 0 && builds.is_empty() {
            return Some(TaskAction::CancelTask);
        }
        if br.complete_at.is_some_and(|at| p.now - at > p.grace) {
            return Some(TaskAction::ReconcileFinished);
        }
        return row
            .taken_until
            .filter(|u| due(*u))
            .map(|_| TaskAction::Reclaim);
    }
    match row.taken_until {
        Some(until) if due(until) => Some(TaskAction::Reclaim),
        Some(_) => None,
        None if builds.iter().any(|b| b.finish_time.is_none()) => Some(TaskAction::ReconcileClaim),
        None => None,
    }
}

/// What one scan saw and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub scanned: usize,
    pub queued: usize,
}

pub async fn run(ctx: JobContext, job: ReflectScan) -> JobResult {
    scan(ctx.bridge()?, &ctx.queue, job.tick).await.map(drop)
}

/// Scans every tracked task for the tick `tick` and enqueues the per-task checks.
pub async fn scan(
    b: &crate::bridge::Bridge,
    queue: &bbb_shared::queue::JobQueue,
    tick: i64,
) -> Result<ScanReport, JobError> {
    let job = ReflectScan { tick };
    let started = std::time::Instant::now();
    // The tick is the scheduler's "now"; a scan that waited in the queue uses the real time.
    let policy = ScanPolicy {
        now: Utc::now().timestamp().max(job.tick),
        margin: i64::try_from(b.reflector.reclaim_margin).unwrap_or(600),
        grace: 2 * i64::try_from(b.reflector.interval).unwrap_or(60),
    };
    let page_size = b.reflector.page_size.max(1);
    let (mut scanned, mut queued) = (0usize, 0usize);
    let mut after: Option<String> = None;
    loop {
        let page = b
            .bbb
            .list_tasks_page(after.as_deref(), page_size)
            .await
            .classify()?;
        let Some(last) = page.last() else { break };
        after = Some(last.task_id.clone());
        let brids: Vec<i64> = page.iter().filter_map(|r| r.buildrequest_id).collect();
        let requests: HashMap<i64, BuildRequest> = b
            .sched
            .buildrequests(&brids)
            .await
            .classify()?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let all_builds = b.sched.builds_for(&brids).await.classify()?;
        let mut builds: HashMap<i64, Vec<&Build>> = HashMap::new();
        for build in &all_builds {
            builds.entry(build.brid).or_default().push(build);
        }
        for row in &page {
            scanned += 1;
            let brid = row.buildrequest_id;
            let br = brid.and_then(|id| requests.get(&id));
            let row_builds = brid
                .and_then(|id| builds.get(&id))
                .map_or(&[][..], Vec::as_slice);
            let Some(action) = decide(row, br, row_builds, policy) else {
                continue;
            };
            let check = TaskCheck {
                task_id: row.task_id.clone(),
                run_id: row.run_id,
                brid,
                action,
                tick: job.tick,
            };
            queue
                .enqueue(check)
                .await
                .map_err(|e| JobError::Transient(e.into()))?;
            queued += 1;
            metrics::counter!("bbb_scan_actions_total", "action" => action.as_str()).increment(1);
        }
        if page.len() < usize::try_from(page_size).unwrap_or(usize::MAX) {
            break;
        }
    }
    metrics::histogram!("bbb_scan_seconds").record(started.elapsed().as_secs_f64());
    metrics::gauge!("bbb_tracked_tasks").set(scanned as f64);
    tracing::info!(
        "scan of tick {}: {scanned} tracked task(s), {queued} check(s) queued, in {:?}",
        job.tick,
        started.elapsed()
    );
    Ok(ScanReport { scanned, queued })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(taken_until: Option<i64>) -> TrackedTask {
        TrackedTask {
            task_id: "fNdN0Jx9TmKf0yv7uJ3Q1w".into(),
            run_id: 0,
            buildrequest_id: Some(7),
            created_date: 0,
            processed_date: 0,
            taken_until,
            buildername: None,
            branch: None,
            claimed_by: None,
            task_expires: None,
        }
    }

    fn br(complete: bool, claimed_at: i64, complete_at: Option<i64>) -> BuildRequest {
        BuildRequest {
            id: 7,
            buildsetid: 1,
            buildername: "b".into(),
            priority: 0,
            claimed_at,
            claimed_by_name: None,
            complete,
            results: complete.then_some(0),
            submitted_at: 0,
            complete_at,
        }
    }

    const P: ScanPolicy = ScanPolicy {
        now: 100_000,
        margin: 600,
        grace: 120,
    };

    #[test]
    fn a_request_cancelled_before_it_started_cancels_the_task() {
        assert_eq!(
            decide(&row(None), Some(&br(true, 0, Some(P.now))), &[], P),
            Some(TaskAction::CancelTask)
        );
    }

    #[test]
    fn a_running_claim_is_renewed_only_within_the_margin() {
        let running = br(false, 1, None);
        assert_eq!(
            decide(&row(Some(P.now + 1200)), Some(&running), &[], P),
            None
        );
        assert_eq!(
            decide(&row(Some(P.now + 100)), Some(&running), &[], P),
            Some(TaskAction::Reclaim)
        );
        // Never later than 3/4 of the margin before expiry, whatever the jitter.
        assert_eq!(
            decide(&row(Some(P.now + 449)), Some(&running), &[], P),
            Some(TaskAction::Reclaim)
        );
    }

    #[test]
    fn the_jitter_is_stable_and_below_a_quarter_of_the_margin() {
        let ids: Vec<String> = (0..500).map(|i| format!("task{i:018}")).collect();
        let j: Vec<i64> = ids.iter().map(|t| jitter(t, 600)).collect();
        assert!(j.iter().all(|x| (0..150).contains(x)));
        assert_eq!(j, ids.iter().map(|t| jitter(t, 600)).collect::<Vec<_>>());
        let distinct: std::collections::HashSet<_> = j.iter().collect();
        assert!(
            distinct.len() > 50,
            "claims falling due together are spread"
        );
    }

    #[test]
    fn lost_events_are_noticed_from_the_database() {
        let build_running = Build {
            id: 1,
            number: 3,
            brid: 7,
            start_time: 1,
            finish_time: None,
        };
        assert_eq!(
            decide(&row(None), Some(&br(false, 1, None)), &[&build_running], P),
            Some(TaskAction::ReconcileClaim)
        );
        let build_done = Build {
            finish_time: Some(2),
            ..build_running
        };
        assert_eq!(
            decide(&row(None), Some(&br(false, 0, None)), &[&build_done], P),
            None,
            "a RETRY waiting for its next Build"
        );
        assert_eq!(
            decide(
                &row(Some(P.now + 1200)),
                Some(&br(true, 1, Some(P.now - 200))),
                &[&build_done],
                P
            ),
            Some(TaskAction::ReconcileFinished)
        );
        assert_eq!(
            decide(
                &row(Some(P.now + 1200)),
                Some(&br(true, 1, Some(P.now - 10))),
                &[&build_done],
                P
            ),
            None
        );
        assert_eq!(
            decide(&row(None), None, &[], P),
            Some(TaskAction::ReconcileMissingRequest)
        );
        let mut pending = row(None);
        pending.buildrequest_id = None;
        assert_eq!(decide(&pending, None, &[], P), None);
    }
}
