//! BRIDGE.md's result table, end to end: each Buildbot result of a Build and what the bridge
//! makes of it in Taskcluster (resolution, properties and log artifacts), in the scheduler DB
//! and in its own DB; and the RETRY race where the retried Build starts before the rerun's
//! task-pending is handled.
use std::time::Duration;

use bbb_sandbox::selfserve::{JobAction, JobOutcome};
use serde_json::json;

use crate::harness::*;

/// A Build this long (sandbox clock time) runs until the test moves the clock or stops it.
const LONG_MS: u64 = 600_000;

fn log_url(name: &str) -> String {
    format!("https://archive.example.org/buildbot-logs/results-{name}.txt.gz")
}

fn run(state: &str, reason: &str) -> (String, Option<String>) {
    (state.to_owned(), Some(reason.to_owned()))
}

/// One Build with the scripted `result` resolves its task: `calls` are the task's claims and
/// resolutions in the queue, `resolved` its only run's final state and reason, `br_results`
/// the BuildRequest's result in the scheduler DB. The artifacts are on the run and the row is
/// deleted.
async fn a_build_resolves_its_task(
    result: &str,
    calls: &[&str],
    resolved: (&str, &str),
    br_results: i64,
) {
    let bed = Bed::start(Options::default()).await;
    let url = log_url(result);
    let task_id = bed
        .create_for(
            BUILDER,
            json!({"sandbox_results": result, "sandbox_log_url": url}),
        )
        .await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    bed.wait_state(&task_id, resolved.0).await;
    bed.wait_untracked(&task_id).await;

    // Taskcluster.
    assert_eq!(
        bed.run_states(&task_id),
        vec![run(resolved.0, resolved.1)],
        "{result}"
    );
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        calls,
        "{result}: {:?}",
        bed.calls(&task_id)
    );
    bed.assert_build_outputs(&task_id, 0, &url);

    // Scheduler DB: the request is complete with the Build's result; one Build.
    let br = bed.wait_request_complete(brid).await;
    assert_eq!(br.results, Some(br_results), "{result}: {br:?}");
    assert_ne!(br.claimed_at, 0, "{br:?}");
    let builds = bed.builds(brid).await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert!(builds[0].finish_time.is_some(), "{builds:?}");
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);

    // Bridge DB: the row is gone; nothing was cancelled through self-serve.
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    assert!(
        bed.selfserve.jobs().is_empty(),
        "{:?}",
        bed.selfserve.jobs()
    );
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_successful_build_completes_its_task() {
    a_build_resolves_its_task(
        "SUCCESS",
        &["claimTask/0/200", "reportCompleted/0/200"],
        ("completed", "completed"),
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_with_warnings_fails_its_task() {
    a_build_resolves_its_task(
        "WARNINGS",
        &["claimTask/0/200", "reportFailed/0/200"],
        ("failed", "failed"),
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_build_fails_its_task() {
    a_build_resolves_its_task(
        "FAILURE",
        &["claimTask/0/200", "reportFailed/0/200"],
        ("failed", "failed"),
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_exception_resolves_its_task_as_malformed_payload() {
    a_build_resolves_its_task(
        "EXCEPTION",
        &["claimTask/0/200", "reportException/0/200"],
        ("exception", "malformed-payload"),
        4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_cancelled_in_buildbot_has_the_bridge_cancel_its_task() {
    a_build_resolves_its_task(
        "CANCELLED",
        &["claimTask/0/200", "cancelTask/-/200"],
        ("exception", "canceled"),
        6,
    )
    .await;
}

/// RETRY: run 0 resolves as an exception and the task is rerun; the row stays (same
/// BuildRequest, now on run 1) until the retried Build finishes. The Builds last until the
/// clock is moved, so each step is observed before the next one happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_build_reruns_its_task_and_the_row_stays_until_the_retry_finishes() {
    let bed = Bed::start(Options::default()).await;
    let url = log_url("RETRY");
    let task_id = bed
        .create_for(
            BUILDER,
            json!({"sandbox_results": "RETRY,SUCCESS", "sandbox_duration_ms": LONG_MS, "sandbox_log_url": url}),
        )
        .await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    bed.wait_builds(brid, 1).await;
    bed.wait_run_running(&task_id, 0).await;

    // The first Build ends with RETRY; Buildbot starts the second one for the same request.
    bed.clock.advance(chrono::Duration::minutes(11));
    bed.wait_builds(brid, 2).await;
    bed.wait_run_running(&task_id, 1).await;
    wait_until(
        "the bridge DB tracks run 1, claimed",
        Duration::from_secs(60),
        || async {
            bed.bbb
                .get_task(&task_id)
                .await
                .unwrap()
                .is_some_and(|r| r.run_id == 1 && r.taken_until.is_some())
        },
    )
    .await;
    let status = bed.status(&task_id);
    assert_eq!(
        bed.run_states(&task_id),
        vec![
            run("exception", "malformed-payload"),
            ("running".to_owned(), None)
        ]
    );
    assert_eq!(status["runs"][1]["reasonCreated"], "rerun");
    bed.assert_build_outputs(&task_id, 0, &url);
    assert!(bed.artifact_names(&task_id, 1).is_empty());
    let row = bed.bbb.get_task(&task_id).await.unwrap().unwrap();
    assert_eq!(row.buildrequest_id, Some(brid), "{row:?}");
    let br = bed.buildrequest(brid).await;
    assert!(!br.complete && br.claimed_at != 0, "{br:?}");
    let builds = bed.builds(brid).await;
    assert!(builds[0].finish_time.is_some() && builds[1].finish_time.is_none());

    // The retried Build succeeds.
    bed.clock.advance(chrono::Duration::minutes(11));
    bed.wait_state(&task_id, "completed").await;
    bed.wait_untracked(&task_id).await;

    assert_eq!(
        bed.run_states(&task_id),
        vec![
            run("exception", "malformed-payload"),
            run("completed", "completed")
        ]
    );
    let calls = bed.calls(&task_id);
    assert!(
        bed.count_calls(&task_id, "claimTask", 409) <= 1,
        "{calls:?}"
    );
    let resolution: Vec<String> = bed
        .calls_named(&task_id, STATE_CALLS)
        .into_iter()
        .filter(|c| c != "claimTask/0/409")
        .collect();
    assert_eq!(
        resolution,
        vec![
            "claimTask/0/200",
            "reportException/0/200",
            "rerunTask/-/200",
            "claimTask/1/200",
            "reportCompleted/1/200",
        ],
        "{calls:?}"
    );
    bed.assert_build_outputs(&task_id, 0, &url);
    bed.assert_build_outputs(&task_id, 1, &url);
    let br = bed.wait_request_complete(brid).await;
    assert_eq!(br.results, Some(0), "{br:?}");
    assert_eq!(bed.builds(brid).await.len(), 2);
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    assert!(
        bed.selfserve.jobs().is_empty(),
        "{:?}",
        bed.selfserve.jobs()
    );
    bed.shutdown().await;
}

/// The RETRY race of the original: the retried Build starts before the rerun's task-pending is
/// handled. The started handler finds run 0 resolved (409), reads the task status and claims
/// run 1 at once; the late task-pending then changes nothing and no Build is cancelled.
///
/// The order is forced: the rerun's task-pending is held back on Pulse (the bridge's queue is
/// unbound from the exchange and the message kept, then republished once run 1 is claimed),
/// and the Builds last until the clock is moved, so the late task-pending is handled while the
/// retried Build still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_build_that_starts_before_the_rerun_is_pending_claims_the_rerun_when_it_starts() {
    let bed = Bed::start(Options::default()).await;
    let task_id = bed
        .create_for(
            BUILDER,
            json!({"sandbox_results": "RETRY,SUCCESS", "sandbox_duration_ms": LONG_MS}),
        )
        .await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    // The first task-pending has been handled; hold back the next one (the rerun's).
    let held = bed.hold_tc_messages("task-pending").await;
    bed.wait_builds(brid, 1).await;
    bed.wait_run_running(&task_id, 0).await;

    // The first Build ends with RETRY; the second one starts and claims the rerun.
    bed.clock.advance(chrono::Duration::minutes(11));
    bed.wait_builds(brid, 2).await;
    bed.wait_run_running(&task_id, 1).await;
    wait_until(
        "the bridge DB tracks run 1, claimed",
        Duration::from_secs(60),
        || async {
            bed.bbb
                .get_task(&task_id)
                .await
                .unwrap()
                .is_some_and(|r| r.run_id == 1 && r.taken_until.is_some())
        },
    )
    .await;
    let claimed = bed.bbb.get_task(&task_id).await.unwrap().unwrap();
    held.wait_held(1).await;
    assert_eq!(
        bed.count_calls(&task_id, "task", 200),
        1,
        "the rerun's task-pending was not handled yet: {:?}",
        bed.calls(&task_id)
    );
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec![
            "claimTask/0/200",
            "reportException/0/200",
            "rerunTask/-/200",
            "claimTask/0/409",
            "claimTask/1/200",
        ],
        "{:?}",
        bed.calls(&task_id)
    );

    // The rerun's task-pending arrives late, while the retried Build runs: nothing changes.
    assert_eq!(held.release().await, 1);
    bed.wait_processed("task-pending", &format!("task-pending/{task_id}/1"))
        .await;
    assert_eq!(bed.count_calls(&task_id, "task", 200), 2);
    assert_eq!(
        bed.bbb.get_task(&task_id).await.unwrap().as_ref(),
        Some(&claimed)
    );
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    assert_eq!(bed.count_calls(&task_id, "claimTask", 200), 2);

    // The retried Build succeeds.
    bed.clock.advance(chrono::Duration::minutes(11));
    bed.wait_state(&task_id, "completed").await;
    bed.wait_untracked(&task_id).await;

    let calls = bed.calls(&task_id);
    let at = |call: &str| {
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("no {call} in {calls:?}"))
    };
    let rerun_pending = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| *c == "task/-/200")
        .nth(1)
        .map(|(i, _)| i)
        .unwrap();
    // Run 1 was claimed when its Build started: before the rerun's task-pending fetched the
    // task, before anything was attached to or reported for run 1.
    assert!(at("claimTask/1/200") < rerun_pending, "{calls:?}");
    assert!(
        at("claimTask/1/200") < at("createArtifact/1/200"),
        "{calls:?}"
    );
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec![
            "claimTask/0/200",
            "reportException/0/200",
            "rerunTask/-/200",
            "claimTask/0/409",
            "claimTask/1/200",
            "reportCompleted/1/200",
        ],
        "{calls:?}"
    );
    assert_eq!(
        bed.run_states(&task_id),
        vec![
            run("exception", "malformed-payload"),
            run("completed", "completed")
        ]
    );
    for r in [0, 1] {
        assert_eq!(
            bed.properties_artifact(&task_id, r)["taskId"],
            json!([task_id, "bbb"])
        );
    }

    // One BuildRequest, two Builds, nothing cancelled, the row gone.
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    let br = bed.wait_request_complete(brid).await;
    assert_eq!(br.results, Some(0), "{br:?}");
    let builds = bed.builds(brid).await;
    assert_eq!(builds.len(), 2, "{builds:?}");
    assert!(builds.iter().all(|b| b.finish_time.is_some()));
    assert!(
        bed.selfserve.jobs().is_empty(),
        "{:?}",
        bed.selfserve.jobs()
    );
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    bed.shutdown().await;
}

/// CANCELLED after a cancel in Taskcluster: the bridge stops the Build through self-serve, the
/// master finishes it CANCELLED, the bridge attaches the artifacts and does not cancel the
/// task again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_cancelled_because_its_task_was_cancelled_in_taskcluster_is_not_cancelled_again() {
    let bed = Bed::start(Options::default()).await;
    let url = log_url("CANCELLED-by-tc");
    let task_id = bed
        .create_for(
            BUILDER,
            json!({"sandbox_duration_ms": LONG_MS, "sandbox_log_url": url}),
        )
        .await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    let build_id = bed.wait_builds(brid, 1).await[0].id;
    bed.wait_run_running(&task_id, 0).await;

    bed.cancel_in_tc(&task_id).await;
    bed.wait_untracked(&task_id).await;
    let br = bed.wait_request_complete(brid).await;

    assert_eq!(bed.run_states(&task_id), vec![run("exception", "canceled")]);
    // The only cancelTask is the test's own.
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec!["claimTask/0/200", "cancelTask/-/200"],
        "{:?}",
        bed.calls(&task_id)
    );
    bed.assert_build_outputs(&task_id, 0, &url);

    assert_eq!(br.results, Some(6), "{br:?}");
    let builds = bed.builds(brid).await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert!(builds[0].finish_time.is_some(), "{builds:?}");
    let jobs = bed.wait_selfserve_jobs(1).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].action, JobAction::CancelBuild { build_id });
    assert_eq!(
        jobs[0].outcome,
        Some(JobOutcome::Stopped {
            master: bed.master_settings().name
        })
    );
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    bed.shutdown().await;
}

/// CANCELLED after the deadline passed in Taskcluster: the queue resolves the running task
/// deadline-exceeded, the bridge stops the Build through self-serve, attaches the artifacts
/// and leaves the resolution alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_cancelled_because_its_task_passed_its_deadline_leaves_the_task_deadline_exceeded()
{
    let bed = Bed::start(Options::default()).await;
    let url = log_url("CANCELLED-by-deadline");
    // Longer than the task's deadline (1 h), so that only the cancellation ends it.
    let task_id = bed
        .create_for(
            BUILDER,
            json!({"sandbox_duration_ms": 10 * 3_600_000u64, "sandbox_log_url": url}),
        )
        .await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    let build_id = bed.wait_builds(brid, 1).await[0].id;
    bed.wait_run_running(&task_id, 0).await;

    bed.clock.advance(chrono::Duration::hours(2));
    bed.wait_state(&task_id, "exception").await;
    bed.wait_untracked(&task_id).await;
    let br = bed.wait_request_complete(brid).await;

    assert_eq!(
        bed.run_states(&task_id),
        vec![run("exception", "deadline-exceeded")]
    );
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec!["claimTask/0/200"],
        "{:?}",
        bed.calls(&task_id)
    );
    bed.assert_build_outputs(&task_id, 0, &url);

    assert_eq!(br.results, Some(6), "{br:?}");
    let builds = bed.builds(brid).await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert!(builds[0].finish_time.is_some(), "{builds:?}");
    let jobs = bed.wait_selfserve_jobs(1).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].action, JobAction::CancelBuild { build_id });
    assert!(
        matches!(jobs[0].outcome, Some(JobOutcome::Stopped { .. })),
        "{jobs:?}"
    );
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    bed.shutdown().await;
}

/// The events of two Builds of one request handled out of order: the retried Build's
/// `started` and `log_uploaded` (SUCCESS) reach the bridge before the first Build's
/// `log_uploaded` (RETRY) - a Pulse backlog, or the first event's job waiting for the task's
/// lock while the short retried Build runs. Whatever the order, the task must end completed
/// through the events, not stay running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_of_a_retried_request_handled_out_of_order_still_complete_the_task() {
    let bed = Bed::start(Options::default()).await;
    let task_id = bed
        .create_for(
            BUILDER,
            // 5 min each: both end within the 20 min claim of run 0.
            json!({"sandbox_results": "RETRY,SUCCESS", "sandbox_duration_ms": 300_000}),
        )
        .await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    bed.wait_builds(brid, 1).await;
    wait_until(
        "run 0 claimed for the first Build",
        Duration::from_secs(60),
        || async {
            bed.bbb
                .get_task(&task_id)
                .await
                .unwrap()
                .is_some_and(|r| r.claimed_by.is_some())
        },
    )
    .await;

    // Both Builds run and finish while their events are held back.
    let held = bed.hold_build_messages().await;
    bed.clock.advance(chrono::Duration::minutes(6));
    bed.wait_builds(brid, 2).await;
    bed.clock.advance(chrono::Duration::minutes(6));
    bed.wait_request_complete(brid).await;
    held.wait_held(3).await;

    // The retried Build's events first; the first Build's log_uploaded once they are handled.
    let mut late = None;
    let released = held
        .release_ordered(|m| {
            let first = m
                .iter()
                .position(|(key, _)| key.ends_with(".0.log_uploaded"))
                .unwrap();
            late = Some(m.remove(first));
        })
        .await;
    assert_eq!(
        released.len(),
        2,
        "{:?}",
        released.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    let master = bed.master_settings().name;
    // The retried Build's events reach the bridge first: their jobs wait for the first Build's
    // outcome (the run is still held by it) instead of being dropped.
    let retried = format!("build-finished/{master}/{BUILDER}/1");
    wait_until(
        "the retried Build's finished job",
        Duration::from_secs(60),
        || bed.was_enqueued("build-finished", &retried),
    )
    .await;
    let (key, body) = late.unwrap();
    bed.publisher
        .publish_raw(&bed.config.bblistener.pulse_exchange, &key, &body)
        .await
        .unwrap();
    let status = bed.wait_state(&task_id, "completed").await;
    bed.wait_untracked(&task_id).await;
    let runs = status["runs"].as_array().unwrap();
    let last = u32::try_from(runs.len() - 1).unwrap();
    assert_eq!(runs[runs.len() - 1]["state"], "completed");
    let props = bed.properties_artifact(&task_id, last);
    assert_eq!(props["buildnumber"], json!([1, "Build"]));
    assert_eq!(bed.count_calls(&task_id, "cancelTask", 200), 0);
    assert!(
        bed.selfserve.jobs().is_empty(),
        "{:?}",
        bed.selfserve.jobs()
    );
    bed.shutdown().await;
}
