//! Cancelling a task in Taskcluster: the bridge follows on the Buildbot side through
//! self-serve, stopping the running Build or cancelling the pending BuildRequest.
use bbb_sandbox::selfserve::{JobAction, JobOutcome};
use serde_json::json;

use crate::harness::*;

/// A Build this long (sandbox clock time) runs until it is stopped.
const LONG_MS: u64 = 600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_task_while_its_build_runs_stops_the_build_through_selfserve() {
    let bed = Bed::start(Options::default()).await;
    let task_id = bed
        .create_for(BUILDER, json!({"sandbox_duration_ms": LONG_MS}))
        .await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    let build_id = bed.wait_builds(brid, 1).await[0].id;
    bed.wait_run_running(&task_id, 0).await;
    wait_until(
        "the claim recorded",
        std::time::Duration::from_secs(60),
        || async {
            bed.bbb
                .get_task(&task_id)
                .await
                .unwrap()
                .is_some_and(|r| r.taken_until.is_some())
        },
    )
    .await;

    bed.cancel_in_tc(&task_id).await;
    let jobs = bed.wait_selfserve_jobs(1).await;
    let br = bed.wait_request_complete(brid).await;
    bed.wait_untracked(&task_id).await;

    // Self-serve was asked to stop the Build, and the master stopped it.
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job.action, JobAction::CancelBuild { build_id });
    assert_eq!(job.branch, "mozilla-inbound");
    assert_eq!(job.who, "buildbot-bridge");
    assert_eq!(
        job.outcome,
        Some(JobOutcome::Stopped {
            master: bed.master_settings().name
        })
    );

    // Scheduler DB: the Build finished, the request is complete as CANCELLED.
    let builds = bed.builds(brid).await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert!(builds[0].finish_time.is_some(), "{builds:?}");
    assert!(br.complete, "{br:?}");
    assert_eq!(br.results, Some(6), "{br:?}");
    assert_ne!(br.claimed_at, 0, "{br:?}");

    // Taskcluster: canceled by the test's cancelTask only; the Build's outputs attached.
    assert_eq!(
        bed.run_states(&task_id),
        vec![("exception".to_owned(), Some("canceled".to_owned()))]
    );
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec!["claimTask/0/200", "cancelTask/-/200"],
        "{:?}",
        bed.calls(&task_id)
    );
    let names = bed.artifact_names(&task_id, 0);
    assert!(
        names.contains(&"public/properties.json".to_owned()),
        "{names:?}"
    );

    // Bridge DB: the row is gone once the finished event was handled.
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_pending_task_cancels_its_buildrequest_through_selfserve() {
    let bed = Bed::start(Options::default()).await;
    let task_id = bed.create_for(IDLE_BUILDER, json!({})).await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    assert_eq!(bed.status(&task_id)["state"], "pending");

    bed.cancel_in_tc(&task_id).await;
    bed.wait_untracked(&task_id).await;
    let jobs = bed.wait_selfserve_jobs(1).await;
    let br = bed.wait_request_complete(brid).await;

    // Self-serve cancelled the request before any master took it.
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job.action, JobAction::CancelRequest { request_id: brid });
    assert_eq!(job.branch, "mozilla-inbound");
    assert_eq!(job.who, "buildbot-bridge");
    assert_eq!(job.outcome, Some(JobOutcome::CancelledPending));

    // Scheduler DB: complete as FAILURE, never claimed, no Build.
    assert_eq!(br.results, Some(2), "{br:?}");
    assert_eq!(br.claimed_at, 0, "{br:?}");
    assert!(bed.sched.build_ids(brid).await.unwrap().is_empty());

    // Taskcluster: canceled by the test; the bridge neither claimed nor resolved anything.
    assert_eq!(
        bed.run_states(&task_id),
        vec![("exception".to_owned(), Some("canceled".to_owned()))]
    );
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        vec!["cancelTask/-/200"],
        "{:?}",
        bed.calls(&task_id)
    );
    assert!(bed.artifact_names(&task_id, 0).is_empty());

    // Bridge DB: the row is deleted.
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    bed.shutdown().await;
}
