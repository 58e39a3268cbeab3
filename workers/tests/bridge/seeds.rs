//! The three scenarios of the seed documents.
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_simple_successful_build_completes_its_task() {
    let bed = Bed::start(Options::default()).await;
    let task_id = bed.create_for(BUILDER, json!({})).await;
    let row = bed.wait_buildrequest(&task_id).await;
    let brid = row.buildrequest_id.unwrap();
    let status = bed.wait_state(&task_id, "completed").await;
    bed.wait_untracked(&task_id).await;

    assert_eq!(status["runs"].as_array().unwrap().len(), 1);
    let br = bed.buildrequest(brid).await;
    assert!(br.complete && br.results == Some(0));
    assert_eq!(bed.sched.build_ids(brid).await.unwrap().len(), 1);
    assert_eq!(
        bed.count_calls(&task_id, "claimTask", 200),
        1,
        "{:?}",
        bed.calls(&task_id)
    );
    assert_eq!(
        bed.count_calls(&task_id, "claimTask", 409),
        0,
        "no extra claim: {:?}",
        bed.calls(&task_id)
    );
    assert_eq!(bed.count_calls(&task_id, "reportCompleted", 200), 1);
    assert_eq!(
        bed.artifact_names(&task_id, 0),
        vec!["public/logs/live_backing.log.gz", "public/properties.json"]
    );
    let props = bed.properties_artifact(&task_id, 0);
    assert_eq!(props["taskId"], json!([task_id, "bbb"]));
    assert_eq!(props["product"], json!(["firefox", "bbb"]));
    bed.shutdown().await;
}

/// Seed scenario 2, "Build fails initially, succeeds upon retry": the RETRY resolves run 0 as
/// an exception and reruns the task; Buildbot retries the same BuildRequest with a new Build,
/// the rerun's task-pending only moves the tracked run (no second BuildRequest), and the new
/// Build completes run 1. The Builds last until the clock is moved, so each step of the seed
/// happens in its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_that_fails_with_retry_then_succeeds_completes_the_rerun_of_the_same_buildrequest()
{
    let bed = Bed::start(Options::default()).await;
    let task_id = bed
        .create_for(
            BUILDER,
            json!({"sandbox_results": "RETRY,SUCCESS", "sandbox_duration_ms": 600_000}),
        )
        .await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    bed.wait_builds(brid, 1).await;
    bed.wait_run_running(&task_id, 0).await;

    // The Build fails, marked RETRY; Buildbot starts a new Build for the same request.
    bed.clock.advance(chrono::Duration::minutes(11));
    bed.wait_builds(brid, 2).await;
    bed.wait_run_running(&task_id, 1).await;
    bed.wait_processed("task-pending", &format!("task-pending/{task_id}/1"))
        .await;
    wait_until(
        "the bridge DB tracks run 1, claimed",
        std::time::Duration::from_secs(60),
        || async {
            bed.bbb
                .get_task(&task_id)
                .await
                .unwrap()
                .is_some_and(|r| r.run_id == 1 && r.taken_until.is_some())
        },
    )
    .await;
    let row = bed.bbb.get_task(&task_id).await.unwrap().unwrap();
    assert_eq!(row.buildrequest_id, Some(brid), "{row:?}");
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);

    // The new Build completes successfully.
    bed.clock.advance(chrono::Duration::minutes(11));
    let status = bed.wait_state(&task_id, "completed").await;
    bed.wait_untracked(&task_id).await;

    // Taskcluster: run 0 exception (malformed-payload), run 1 (a rerun) completed.
    assert_eq!(
        bed.run_states(&task_id),
        vec![
            ("exception".to_owned(), Some("malformed-payload".to_owned())),
            ("completed".to_owned(), Some("completed".to_owned())),
        ]
    );
    assert_eq!(status["runs"][1]["reasonCreated"], "rerun");
    let calls = bed.calls(&task_id);
    let claims_409 = bed.count_calls(&task_id, "claimTask", 409);
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
    // When the retried Build starts before the rerun's task-pending, its claim of the old
    // run answers 409 once and the bridge follows the rerun; nothing else conflicts.
    assert!(claims_409 <= 1, "{calls:?}");
    assert_eq!(bed.count_calls(&task_id, "cancelTask", 200), 0);

    // Properties on both runs, each from its own Build.
    for run in [0, 1] {
        let names = bed.artifact_names(&task_id, run);
        assert!(
            names.contains(&"public/properties.json".to_owned()),
            "run {run}: {names:?}"
        );
        let props = bed.properties_artifact(&task_id, run);
        assert_eq!(props["taskId"], json!([task_id, "bbb"]));
        assert_eq!(props["request_ids"], json!([[brid], "postrun.py"]));
    }
    assert_ne!(
        bed.properties_artifact(&task_id, 0)["buildnumber"],
        bed.properties_artifact(&task_id, 1)["buildnumber"]
    );

    // Scheduler DB: one BuildRequest, two Builds of it, complete with SUCCESS.
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    let br = bed.wait_request_complete(brid).await;
    assert_eq!(br.results, Some(0));
    let builds = bed.builds(brid).await;
    assert_eq!(builds.len(), 2, "{builds:?}");
    assert!(builds.iter().all(|b| b.finish_time.is_some()), "{builds:?}");
    assert_ne!(builds[0].number, builds[1].number);

    // Bridge DB: forgotten once the retry finished; nothing was cancelled.
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    assert!(
        bed.selfserve.jobs().is_empty(),
        "{:?}",
        bed.selfserve.jobs()
    );
    bed.shutdown().await;
}

/// Seed scenario 3, "Task exceeds deadline before Build starts": Taskcluster resolves the task
/// deadline-exceeded and the bridge cancels the BuildRequest through self-serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_past_its_deadline_before_its_build_starts_has_its_buildrequest_cancelled() {
    let bed = Bed::start(Options::default()).await;
    let task_id = bed.create_for(IDLE_BUILDER, json!({})).await;
    let row = bed.wait_buildrequest(&task_id).await;
    let brid = row.buildrequest_id.unwrap();
    let br = bed.buildrequest(brid).await;
    assert!(!br.complete && br.claimed_at == 0, "{br:?}");
    assert_eq!(bed.status(&task_id)["state"], "pending");

    bed.clock.advance(chrono::Duration::hours(2));
    bed.wait_state(&task_id, "exception").await;
    bed.wait_untracked(&task_id).await;
    let jobs = bed.wait_selfserve_jobs(1).await;

    // Taskcluster resolved it; the bridge neither claimed nor resolved anything.
    assert_eq!(
        bed.run_states(&task_id),
        vec![("exception".to_owned(), Some("deadline-exceeded".to_owned()))]
    );
    assert_eq!(
        bed.calls_named(&task_id, STATE_CALLS),
        Vec::<String>::new(),
        "{:?}",
        bed.calls(&task_id)
    );

    // Self-serve cancelled the pending request.
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(
        job.action,
        bbb_sandbox::selfserve::JobAction::CancelRequest { request_id: brid }
    );
    assert_eq!(job.branch, "mozilla-inbound");
    assert_eq!(job.who, "buildbot-bridge");
    assert_eq!(
        job.outcome,
        Some(bbb_sandbox::selfserve::JobOutcome::CancelledPending)
    );

    // Scheduler DB: complete as FAILURE, never claimed, no Build.
    let br = bed.wait_request_complete(brid).await;
    assert_eq!(br.results, Some(2), "{br:?}");
    assert_eq!(br.claimed_at, 0, "{br:?}");
    assert!(bed.sched.build_ids(brid).await.unwrap().is_empty());
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);

    // Bridge DB: the row is gone.
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    bed.shutdown().await;
}
