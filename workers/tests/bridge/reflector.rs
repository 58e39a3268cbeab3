//! The periodic scan (BRIDGE.md "Reflector" and "Self-healing reconciliation"): claims are
//! renewed once per margin window, requests cancelled in Buildbot cancel their tasks, a 409,
//! 404 or 403 on reclaim ends the tracking (stopping the Build when the deadline passed), lost
//! `started` and `log_uploaded` events are repaired from the scheduler DB, and a scan of many
//! rows costs a few queries per page, never one per row.
//!
//! Scans are driven by hand: the bed runs no scheduler, so each test enqueues
//! `ReflectScan { tick }` itself. The scan's "now" is `max(real now, tick)`, so moving the
//! emulators' clock forward and scanning with a tick of the clock's time is a scan "in the
//! future".
use std::time::{Duration, Instant};

use bbb_sandbox::{
    buildbot::PulseFaults,
    selfserve::{JobAction, JobOutcome},
    tc::Fault,
};
use bbb_shared::{bridgedb::TrackedTask, jobs::ReflectScan, queue::Enqueued};
use serde_json::{Value, json};

use crate::harness::*;

/// A Build this long (sandbox clock time) runs until it is stopped, whatever the tests do to
/// the clock.
const LONG_MS: u64 = 36_000_000;
/// The bed's reflector interval is 60 s: a complete request is reconciled 120 s after it
/// completed. Moving the clock this far is past that grace.
const PAST_GRACE_SECS: i64 = 130;

/// Enqueues the scan of `tick` and waits until it and every check it fanned out have run.
async fn scan(bed: &Bed, tick: i64) {
    let enqueued = bed.queue.enqueue(ReflectScan { tick }).await.unwrap();
    assert_eq!(enqueued, Enqueued::New, "tick {tick} was scanned before");
    wait_drained(bed, &["reflect-scan", "task-check"]).await;
}

/// Waits until no job of these kinds is waiting, delayed or running (twice in a row, so a job
/// moving between Redis lists is not missed). A scan enqueues its checks before it ends, and
/// the scan's count is read first, so its checks are never missed.
async fn wait_drained(bed: &Bed, kinds: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut idle = 0;
    while idle < 2 {
        let mut pending = Vec::new();
        for kind in kinds {
            pending.push((*kind, bed.queue.pending_count(kind).await.unwrap()));
        }
        if pending.iter().all(|(_, n)| *n == 0) {
            idle += 1;
        } else {
            idle = 0;
        }
        if Instant::now() >= deadline {
            let mut state = Vec::new();
            for kind in kinds {
                state.push(queue_state(bed, kind).await);
            }
            panic!("jobs never drained: {pending:?}\n{}", state.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What Redis holds for one job kind's queue (for failure messages): the registered workers
/// and their last heartbeat, the due, delayed and in-flight job ids.
async fn queue_state(bed: &Bed, kind: &str) -> String {
    use redis::AsyncCommands as _;
    let config = bed.queue.settings().apalis_config(kind);
    let mut conn = bed.queue.connection();
    let workers: Vec<(String, f64)> = conn
        .zrange_withscores(config.workers_set(), 0, -1)
        .await
        .unwrap_or_default();
    let active: Vec<String> = conn
        .lrange(config.active_jobs_list(), 0, 20)
        .await
        .unwrap_or_default();
    let scheduled: Vec<(String, f64)> = conn
        .zrange_withscores(config.scheduled_jobs_set(), 0, 20)
        .await
        .unwrap_or_default();
    let signal: i64 = conn.llen(config.signal_list()).await.unwrap_or(-1);
    let inflight_keys: Vec<String> = conn
        .keys(format!("{}:*", config.inflight_jobs_set()))
        .await
        .unwrap_or_default();
    let mut inflight = Vec::new();
    for key in inflight_keys {
        let ids: Vec<String> = conn.smembers(&key).await.unwrap_or_default();
        inflight.push((key, ids));
    }
    format!(
        "{kind} at {}: workers (name, last heartbeat) {workers:?}; active {active:?}; scheduled {scheduled:?}; signal {signal}; in flight {inflight:?}",
        chrono::Utc::now().timestamp_millis()
    )
}

/// Moves every emulator's clock forward; returns the new time (epoch s), a tick for a scan.
fn advance(bed: &Bed, secs: i64) -> i64 {
    bed.clock.advance(chrono::Duration::seconds(secs));
    bed.clock.now_secs()
}

/// The tracked row, once it records a claim.
async fn wait_claim_recorded(bed: &Bed, task_id: &str) -> TrackedTask {
    wait_until(
        &format!("task {task_id}: the claim recorded"),
        Duration::from_secs(60),
        || async {
            bed.bbb
                .get_task(task_id)
                .await
                .unwrap()
                .is_some_and(|r| r.taken_until.is_some())
        },
    )
    .await;
    bed.bbb.get_task(task_id).await.unwrap().unwrap()
}

/// A task whose Build runs (until stopped) and whose run 0 the bridge claimed: (taskId,
/// brid, the tracked row).
async fn running_task(bed: &Bed) -> (String, i64, TrackedTask) {
    let task_id = bed
        .create_for(BUILDER, json!({"sandbox_duration_ms": LONG_MS}))
        .await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    bed.wait_builds(brid, 1).await;
    bed.wait_run_running(&task_id, 0).await;
    let row = wait_claim_recorded(bed, &task_id).await;
    (task_id, brid, row)
}

/// `takenUntil` of a run in the queue's status, epoch s.
fn tc_taken_until(status: &Value, run_id: usize) -> i64 {
    status["runs"][run_id]["takenUntil"]
        .as_str()
        .expect("the run has a takenUntil")
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap()
        .timestamp()
}

fn run(state: &str, reason: &str) -> (String, Option<String>) {
    (state.to_owned(), Some(reason.to_owned()))
}

fn running() -> (String, Option<String>) {
    ("running".to_owned(), None)
}

/// Asserts the Build still runs and its request is neither complete nor unclaimed.
async fn assert_build_running(bed: &Bed, brid: i64) {
    let builds = bed.builds(brid).await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert!(builds[0].finish_time.is_none(), "{builds:?}");
    let br = bed.buildrequest(brid).await;
    assert!(!br.complete && br.claimed_at != 0, "{br:?}");
}

// ---- 1. Reclaims: once per margin window. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_claim_is_renewed_once_per_margin_window_and_never_while_far_from_expiry() {
    let bed = Bed::start(Options::default()).await;
    let (near, near_brid, claimed) = running_task(&bed).await;

    // Right after the claim (1200 s left, margin 600 s): nothing to renew.
    scan(&bed, bed.clock.now_secs()).await;
    assert_eq!(
        bed.calls_named(&near, STATE_CALLS),
        vec!["claimTask/0/200"],
        "{:?}",
        bed.calls(&near)
    );
    assert_eq!(
        bed.bbb.get_task(&near).await.unwrap().as_ref(),
        Some(&claimed)
    );

    // 800 s later the claim has at most 400 s left: within the margin whatever the task's
    // jitter (< margin/4). A second task is claimed now, 1200 s from expiry.
    let mut tick = advance(&bed, 800);
    let (far, far_brid, far_claimed) = running_task(&bed).await;
    scan(&bed, tick).await;
    // Three more scans, a reflector interval apart, within the same margin window.
    for _ in 0..3 {
        tick = advance(&bed, 60);
        scan(&bed, tick).await;
    }

    assert_eq!(
        bed.calls_named(&near, STATE_CALLS),
        vec!["claimTask/0/200", "reclaimTask/0/200"],
        "one reclaim in the window, not one per scan: {:?}",
        bed.calls(&near)
    );
    assert_eq!(
        bed.calls_named(&far, STATE_CALLS),
        vec!["claimTask/0/200"],
        "a claim far from expiry is not renewed: {:?}",
        bed.calls(&far)
    );
    // Taskcluster: both still running, the first with its renewed claim.
    assert_eq!(bed.run_states(&near), vec![running()]);
    assert_eq!(bed.run_states(&far), vec![running()]);
    let renewed = tc_taken_until(&bed.status(&near), 0);
    assert!(
        renewed > claimed.taken_until.unwrap() + 700,
        "renewed until {renewed}, first claim until {:?}",
        claimed.taken_until
    );
    // Bridge DB: the renewed expiry is stored, the claim holder kept; the other row unchanged.
    let row = bed.bbb.get_task(&near).await.unwrap().unwrap();
    assert_eq!(row.taken_until, Some(renewed), "{row:?}");
    assert_eq!(row.claimed_by, claimed.claimed_by, "{row:?}");
    assert_eq!(row.run_id, 0);
    assert_eq!(row.buildrequest_id, Some(near_brid));
    assert_eq!(
        bed.bbb.get_task(&far).await.unwrap().as_ref(),
        Some(&far_claimed)
    );
    // Scheduler DB: both Builds still run, nothing was cancelled.
    assert_build_running(&bed, near_brid).await;
    assert_build_running(&bed, far_brid).await;
    assert!(
        bed.selfserve.jobs().is_empty(),
        "{:?}",
        bed.selfserve.jobs()
    );

    // The next window: both claims are near expiry now, each is renewed once more.
    tick = advance(&bed, 800);
    scan(&bed, tick).await;
    tick = advance(&bed, 60);
    scan(&bed, tick).await;
    assert_eq!(
        bed.calls_named(&near, STATE_CALLS),
        vec!["claimTask/0/200", "reclaimTask/0/200", "reclaimTask/0/200"],
        "{:?}",
        bed.calls(&near)
    );
    assert_eq!(
        bed.calls_named(&far, STATE_CALLS),
        vec!["claimTask/0/200", "reclaimTask/0/200"],
        "{:?}",
        bed.calls(&far)
    );
    for task_id in [&near, &far] {
        let row = bed.bbb.get_task(task_id).await.unwrap().unwrap();
        assert_eq!(
            row.taken_until,
            Some(tc_taken_until(&bed.status(task_id), 0)),
            "{row:?}"
        );
        assert_eq!(bed.run_states(task_id), vec![running()]);
    }
    assert_build_running(&bed, near_brid).await;
    assert_build_running(&bed, far_brid).await;
    assert!(bed.queue.dead_letters(10).await.unwrap().is_empty());
    bed.shutdown().await;
}

// ---- 2. A request cancelled in Buildbot before it started. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_cancelled_in_buildbot_before_it_started_cancels_its_task_at_the_next_scan() {
    let bed = Bed::start(Options::default()).await;
    let task_id = bed.create_for(IDLE_BUILDER, json!({})).await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();

    // A person cancels the pending request in self-serve.
    let url = format!(
        "{}/mozilla-inbound/request/{brid}",
        bed.config.selfserve_url.as_str().trim_end_matches('/')
    );
    let response = reqwest::Client::new()
        .delete(&url)
        .header("X-Remote-User", "test")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{url}: {response:?}");
    let jobs = bed.wait_selfserve_jobs(1).await;
    assert_eq!(
        jobs[0].action,
        JobAction::CancelRequest { request_id: brid }
    );
    assert_eq!(jobs[0].outcome, Some(JobOutcome::CancelledPending));
    let br = bed.wait_request_complete(brid).await;
    assert_eq!(br.claimed_at, 0, "{br:?}");

    // Nothing reacts until a scan sees it.
    assert!(
        bed.calls_named(&task_id, STATE_CALLS).is_empty(),
        "{:?}",
        bed.calls(&task_id)
    );
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_some());

    scan(&bed, bed.clock.now_secs()).await;
    bed.wait_untracked(&task_id).await;
    // The cancellation's task-exception reaches the bridge, which no longer tracks the task.
    bed.wait_processed(
        "task-exception",
        &format!("task-exception/{task_id}/0/canceled"),
    )
    .await;

    // Taskcluster: cancelled by the bridge, never claimed.
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec!["cancelTask/-/200"],
        "{:?}",
        bed.calls(&task_id)
    );
    assert_eq!(bed.run_states(&task_id), vec![run("exception", "canceled")]);
    // Scheduler DB: the request stays as self-serve left it, no Build; self-serve was not
    // asked again.
    let after = bed.buildrequest(brid).await;
    assert_eq!(after, br);
    assert!(bed.builds(brid).await.is_empty());
    assert_eq!(bed.selfserve.jobs().len(), 1, "{:?}", bed.selfserve.jobs());
    // Bridge DB: forgotten.
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    bed.shutdown().await;
}

// ---- 3. What a reclaim refused tells. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reclaim_refused_after_the_deadline_stops_the_build_through_selfserve_and_forgets_the_task()
 {
    let bed = Bed::start(Options::default()).await;
    let (task_id, brid, _) = running_task(&bed).await;
    let build_id = bed.builds(brid).await[0].id;
    // The deadline's task-exception is held back: the reclaim's 409 alone must tell.
    let held = bed.hold_tc_messages("task-exception").await;

    // One hour and a minute later the deadline passed while the Build runs.
    let tick = advance(&bed, 3660);
    held.wait_held(1).await;
    assert_eq!(
        bed.run_states(&task_id),
        vec![run("exception", "deadline-exceeded")]
    );
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_some());
    assert!(bed.selfserve.jobs().is_empty());

    scan(&bed, tick).await;
    let jobs = bed.wait_selfserve_jobs(1).await;
    let br = bed.wait_request_complete(brid).await;
    bed.wait_untracked(&task_id).await;

    // Taskcluster: the reclaim was refused; nothing else changed the task.
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec!["claimTask/0/200", "reclaimTask/0/409"],
        "{:?}",
        bed.calls(&task_id)
    );
    assert_eq!(
        bed.run_states(&task_id),
        vec![run("exception", "deadline-exceeded")]
    );
    // Self-serve stopped the Build; Buildbot completed the request as CANCELLED.
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].action, JobAction::CancelBuild { build_id });
    assert_eq!(jobs[0].branch, "mozilla-inbound");
    assert_eq!(jobs[0].who, "buildbot-bridge");
    assert_eq!(
        jobs[0].outcome,
        Some(JobOutcome::Stopped {
            master: bed.master_settings().name
        })
    );
    assert_eq!(br.results, Some(6), "{br:?}");
    let builds = bed.builds(brid).await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert!(builds[0].finish_time.is_some(), "{builds:?}");

    // The stopped Build's log_uploaded and the late task-exception change nothing.
    bed.wait_processed(
        "build-finished",
        &format!(
            "build-finished/{}/{BUILDER}/{}",
            bed.master_settings().name,
            builds[0].number
        ),
    )
    .await;
    assert_eq!(held.release().await, 1);
    bed.wait_processed(
        "task-exception",
        &format!("task-exception/{task_id}/0/deadline-exceeded"),
    )
    .await;
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec!["claimTask/0/200", "reclaimTask/0/409"],
        "{:?}",
        bed.calls(&task_id)
    );
    assert_eq!(bed.selfserve.jobs().len(), 1, "{:?}", bed.selfserve.jobs());
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    bed.shutdown().await;
}

/// A reclaim answered `status` (404: the task expired and is gone; 403: not allowed) forgets
/// the task and touches nothing else.
async fn a_reclaim_answered(status: u16) {
    let bed = Bed::start(Options::default()).await;
    let (task_id, brid, _) = running_task(&bed).await;

    let tick = advance(&bed, 800);
    bed.tc.inject_fault("reclaimTask", Fault::Status(status), 1);
    scan(&bed, tick).await;

    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec![
            "claimTask/0/200".to_owned(),
            format!("reclaimTask/0/{status}")
        ],
        "{:?}",
        bed.calls(&task_id)
    );
    // Nothing cancelled on either side.
    assert_eq!(bed.run_states(&task_id), vec![running()]);
    assert!(
        bed.selfserve.jobs().is_empty(),
        "{:?}",
        bed.selfserve.jobs()
    );
    assert_build_running(&bed, brid).await;

    // Later scans have nothing left to do for it.
    let tick = advance(&bed, 60);
    scan(&bed, tick).await;
    assert_eq!(bed.calls_named(&task_id, STATE_CALLS).len(), 2);
    assert!(bed.queue.dead_letters(10).await.unwrap().is_empty());
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reclaim_answered_404_forgets_the_task() {
    a_reclaim_answered(404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reclaim_answered_403_forgets_the_task() {
    a_reclaim_answered(403).await;
}

// ---- 4. Reconciliation of lost Buildbot events. ----

/// A task for [`BUILDER`] on a revision of its own, so that the master does not merge its
/// request with another's into one Build (a merged Build follows its first request's script).
async fn create_on_revision(bed: &Bed, script: Value, revision: usize) -> String {
    let mut payload = bed.payload(BUILDER, script);
    payload["sourcestamp"]["revision"] = json!(format!("{revision:040x}"));
    bed.create(bed.definition(payload)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_whose_started_event_is_lost_gets_its_task_claimed_by_the_scan() {
    let bed = Bed::start(Options {
        faults: PulseFaults {
            drop_started: 1.0,
            ..PulseFaults::default()
        },
        ..Options::default()
    })
    .await;
    // A Build of 5 minutes (sandbox clock): runs until the clock is moved.
    let task_id = bed
        .create_for(BUILDER, json!({"sandbox_duration_ms": 300_000}))
        .await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    let build = bed.wait_builds(brid, 1).await.remove(0);

    // No started event: the task stays pending and unclaimed.
    assert_eq!(bed.run_states(&task_id), vec![("pending".to_owned(), None)]);
    let row = bed.bbb.get_task(&task_id).await.unwrap().unwrap();
    assert_eq!(row.taken_until, None, "{row:?}");

    scan(&bed, bed.clock.now_secs()).await;
    bed.wait_run_running(&task_id, 0).await;
    let row = wait_claim_recorded(&bed, &task_id).await;

    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec!["claimTask/0/200"],
        "{:?}",
        bed.calls(&task_id)
    );
    assert_eq!(
        row.taken_until,
        Some(tc_taken_until(&bed.status(&task_id), 0)),
        "{row:?}"
    );
    let build_key = format!("{}/{BUILDER}/{}", bed.master_settings().name, build.number);
    assert_eq!(
        row.claimed_by.as_deref(),
        Some(build_key.as_str()),
        "{row:?}"
    );
    // Claimed while the Build runs.
    assert_build_running(&bed, brid).await;

    // The Build ends; its log_uploaded resolves the task without a second claim.
    bed.clock.advance(chrono::Duration::minutes(6));
    bed.wait_state(&task_id, "completed").await;
    bed.wait_untracked(&task_id).await;
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec!["claimTask/0/200", "reportCompleted/0/200"],
        "{:?}",
        bed.calls(&task_id)
    );
    let props = bed.properties_artifact(&task_id, 0);
    assert!(props.get("reconciled").is_none(), "{props:#}");
    let br = bed.buildrequest(brid).await;
    assert!(br.complete && br.results == Some(0), "{br:?}");
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builds_whose_log_uploaded_is_lost_get_their_tasks_resolved_by_the_scan_after_the_grace_period()
 {
    let bed = Bed::start(Options {
        faults: PulseFaults {
            drop_log_uploaded: 1.0,
            ..PulseFaults::default()
        },
        ..Options::default()
    })
    .await;
    let ok = create_on_revision(&bed, json!({}), 1).await;
    let failed = create_on_revision(&bed, json!({"sandbox_results": "FAILURE"}), 2).await;
    let mut brids = Vec::new();
    for task_id in [&ok, &failed] {
        let brid = bed
            .wait_buildrequest(task_id)
            .await
            .buildrequest_id
            .unwrap();
        bed.wait_request_complete(brid).await;
        wait_claim_recorded(&bed, task_id).await;
        brids.push(brid);
    }
    assert_eq!(bed.buildrequest(brids[0]).await.results, Some(0));
    assert_eq!(bed.buildrequest(brids[1]).await.results, Some(2));

    // Within the grace period the scan waits for the finished event.
    scan(&bed, bed.clock.now_secs()).await;
    for task_id in [&ok, &failed] {
        assert_eq!(
            bed.calls_named(task_id, STATE_CALLS),
            vec!["claimTask/0/200"],
            "{:?}",
            bed.calls(task_id)
        );
        assert!(bed.bbb.get_task(task_id).await.unwrap().is_some());
        assert_eq!(bed.run_states(task_id), vec![running()]);
    }

    // Past it, the scan resolves both from the scheduler DB.
    let tick = advance(&bed, PAST_GRACE_SECS);
    scan(&bed, tick).await;
    bed.wait_untracked(&ok).await;
    bed.wait_untracked(&failed).await;

    assert_eq!(bed.run_states(&ok), vec![run("completed", "completed")]);
    assert_eq!(bed.run_states(&failed), vec![run("failed", "failed")]);
    assert_eq!(
        bed.calls_named(&ok, STATE_CALLS),
        vec!["claimTask/0/200", "reportCompleted/0/200"],
        "{:?}",
        bed.calls(&ok)
    );
    assert_eq!(
        bed.calls_named(&failed, STATE_CALLS),
        vec!["claimTask/0/200", "reportFailed/0/200"],
        "{:?}",
        bed.calls(&failed)
    );
    for (task_id, brid) in [(&ok, brids[0]), (&failed, brids[1])] {
        let props = bed.properties_artifact(task_id, 0);
        assert!(props.get("reconciled").is_some(), "{props:#}");
        assert_eq!(props["taskId"], json!([task_id, "bbb"]), "{props:#}");
        assert_eq!(props["request_ids"][0], json!([brid]), "{props:#}");
        assert_eq!(props["buildername"][0], json!(BUILDER), "{props:#}");
        let task_expires: chrono::DateTime<chrono::Utc> = bed.status(task_id)["expires"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        for a in bed.tc.artifacts(task_id, 0) {
            assert!(a.expires <= task_expires, "{a:?}");
        }
    }

    // A later scan finds nothing left.
    let tick = advance(&bed, 60);
    scan(&bed, tick).await;
    assert_eq!(bed.calls_named(&ok, STATE_CALLS).len(), 2);
    assert_eq!(bed.calls_named(&failed, STATE_CALLS).len(), 2);
    assert_eq!(bed.bbb.count_tasks().await.unwrap(), 0);
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_fifth_of_the_masters_messages_lost_two_hundred_tasks_all_end_resolved_once_and_right()
 {
    const TASKS: usize = 200;
    let bed = Bed::start(Options {
        faults: PulseFaults {
            drop_started: 0.2,
            drop_finished: 0.2,
            drop_log_uploaded: 0.2,
            ..PulseFaults::default()
        },
        build_duration: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let result = if i % 2 == 0 { "SUCCESS" } else { "FAILURE" };
        let task_id = create_on_revision(
            &bed,
            json!({"sandbox_results": result, "sandbox_duration_ms": 100}),
            i,
        )
        .await;
        tasks.push((task_id, i % 2 == 0));
    }

    // Every request injected and built.
    let mut brids = Vec::new();
    for (task_id, _) in &tasks {
        wait_until(
            &format!("a BuildRequest for {task_id}"),
            Duration::from_secs(120),
            || async {
                bed.sched
                    .buildrequest_for_task(task_id)
                    .await
                    .unwrap()
                    .is_some()
            },
        )
        .await;
        brids.push(
            bed.sched
                .buildrequest_for_task(task_id)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    wait_until(
        "every BuildRequest complete",
        Duration::from_secs(180),
        || async {
            bed.sched
                .buildrequests(&brids)
                .await
                .unwrap()
                .iter()
                .filter(|r| r.complete)
                .count()
                == TASKS
        },
    )
    .await;

    // Scan, a grace period apart, until every task is resolved.
    let resolved = |bed: &Bed| {
        tasks
            .iter()
            .filter(|(t, _)| {
                matches!(
                    bed.status(t)["state"].as_str(),
                    Some("completed" | "failed")
                )
            })
            .count()
    };
    let mut scans = 0;
    while resolved(&bed) < TASKS {
        assert!(
            scans < 8,
            "after {scans} scans only {} of {TASKS} tasks are resolved; unresolved: {:?}",
            resolved(&bed),
            tasks
                .iter()
                .filter(|(t, _)| !matches!(
                    bed.status(t)["state"].as_str(),
                    Some("completed" | "failed")
                ))
                .map(|(t, _)| (t.clone(), bed.status(t)["runs"].clone()))
                .collect::<Vec<_>>()
        );
        let tick = advance(&bed, PAST_GRACE_SECS);
        scan(&bed, tick).await;
        scans += 1;
    }
    // Let late messages and their jobs run out before counting calls.
    wait_until(
        "the master's messages all delivered",
        Duration::from_secs(60),
        || async { bed.pulse_ready("build/").await == 0 },
    )
    .await;
    wait_drained(&bed, &["build-started", "build-finished", "task-check"]).await;

    let brs = bed.sched.buildrequests(&brids).await.unwrap();
    let mut reconciled = 0;
    for ((task_id, success), brid) in tasks.iter().zip(&brids) {
        let br = brs.iter().find(|r| r.id == *brid).unwrap();
        let calls = bed.calls(task_id);
        let (state, report, result) = if *success {
            ("completed", "reportCompleted", 0)
        } else {
            ("failed", "reportFailed", 2)
        };
        assert_eq!(br.results, Some(result), "{br:?}");
        assert_eq!(
            bed.run_states(task_id),
            vec![run(state, state)],
            "{task_id}: {calls:?}"
        );
        assert_eq!(
            bed.calls_named(task_id, STATE_CALLS),
            vec!["claimTask/0/200".to_owned(), format!("{report}/0/200")],
            "{task_id}: claimed once, resolved once: {calls:?}"
        );
        let props = bed.properties_artifact(task_id, 0);
        assert_eq!(props["taskId"], json!([task_id, "bbb"]));
        if props.get("reconciled").is_some() {
            reconciled += 1;
        }
    }
    assert!(
        reconciled > 0,
        "with a fifth of log_uploaded lost, some tasks were resolved by the scan"
    );
    assert_eq!(bed.bbb.count_tasks().await.unwrap(), 0);
    assert!(
        bed.selfserve.jobs().is_empty(),
        "{:?}",
        bed.selfserve.jobs()
    );
    assert!(bed.queue.dead_letters(10).await.unwrap().is_empty());
    tracing::info!("{reconciled} of {TASKS} tasks resolved by the scan in {scans} scan(s)");
    bed.shutdown().await;
}

// The scan's cost over 100,000 tracked tasks is measured in `workers/tests/scan_cost.rs`,
// alone in its test binary so its statement counts are exact.
