//! How messages arrive: merged Builds, duplicate deliveries, build events missing, late or not
//! ours, and a Build starting before the bridge recorded its request (BRIDGE.md "Events and
//! what they do", "Flaws of the original", "Durable hand-off", "Idempotent jobs").
use std::time::Duration;

use bbb_sandbox::buildbot::PulseFaults;
use serde_json::json;

use crate::harness::*;

/// The task completed once through one Build: one claim, no extra claim, one
/// reportCompleted, both artifacts, the row gone.
async fn assert_completed_once(bed: &Bed, task_id: &str) {
    bed.wait_state(task_id, "completed").await;
    bed.wait_untracked(task_id).await;
    let calls = bed.calls(task_id);
    assert_eq!(
        bed.run_states(task_id),
        vec![("completed".to_owned(), Some("completed".to_owned()))]
    );
    assert_eq!(
        bed.count_calls(task_id, "claimTask", 200),
        1,
        "{task_id}: {calls:?}"
    );
    assert_eq!(
        bed.count_calls(task_id, "claimTask", 409),
        0,
        "{task_id}: {calls:?}"
    );
    assert_eq!(
        bed.count_calls(task_id, "reportCompleted", 200),
        1,
        "{task_id}: {calls:?}"
    );
    assert_eq!(
        bed.artifact_names(task_id, 0),
        vec!["public/logs/live_backing.log.gz", "public/properties.json"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_build_satisfying_two_tasks_requests_claims_and_completes_both_tasks() {
    let bed = Bed::start(Options {
        master: false,
        ..Options::default()
    })
    .await;
    let first = bed.create_for(BUILDER, json!({})).await;
    let second = bed.create_for(BUILDER, json!({})).await;
    let brid1 = bed.wait_buildrequest(&first).await.buildrequest_id.unwrap();
    let brid2 = bed
        .wait_buildrequest(&second)
        .await
        .buildrequest_id
        .unwrap();
    assert_ne!(brid1, brid2);
    let _master = bed.start_master().await;

    assert_completed_once(&bed, &first).await;
    assert_completed_once(&bed, &second).await;

    // One Build (one number) served both requests.
    let builds1 = bed.builds_of(brid1).await;
    let builds2 = bed.builds_of(brid2).await;
    assert_eq!(builds1.len(), 1, "{builds1:?}");
    assert_eq!(builds2.len(), 1, "{builds2:?}");
    assert_eq!(
        builds1[0].number, builds2[0].number,
        "merged into one Build"
    );
    for brid in [brid1, brid2] {
        let br = bed.buildrequest(brid).await;
        assert!(br.complete && br.results == Some(0), "{br:?}");
    }
    assert_eq!(bed.buildrequests_of(&first).await, 1);
    assert_eq!(bed.buildrequests_of(&second).await, 1);
    // Each task got the merged Build's properties, listing both requests.
    let mut both = vec![brid1, brid2];
    both.sort_unstable();
    for task_id in [&first, &second] {
        let props = bed.properties_artifact(task_id, 0);
        let mut ids: Vec<i64> = serde_json::from_value(props["request_ids"][0].clone()).unwrap();
        ids.sort_unstable();
        assert_eq!(ids, both, "{props:#}");
    }
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_task_pending_delivered_four_times_through_two_ingests_makes_one_buildrequest() {
    let bed = Bed::start(Options {
        ingests: 2,
        master: false,
        ..Options::default()
    })
    .await;
    let task_id = bed.create_for(BUILDER, json!({})).await;
    // The queue published it once; three more copies, concurrently.
    let status = bed.status(&task_id);
    futures::future::join_all((0..3).map(|_| bed.publish_task_pending(&status, 0))).await;

    let row = bed.wait_buildrequest(&task_id).await;
    wait_until(
        "every copy delivered to an ingest",
        Duration::from_secs(30),
        || async { bed.pulse_ready("task-pending").await == 0 },
    )
    .await;
    bed.wait_processed("task-pending", &format!("task-pending/{task_id}/0"))
        .await;
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    let again = bed.bbb.get_task(&task_id).await.unwrap().unwrap();
    assert_eq!(again.buildrequest_id, row.buildrequest_id);
    assert_eq!(again.run_id, 0);

    let _master = bed.start_master().await;
    assert_completed_once(&bed, &task_id).await;
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    assert_eq!(bed.queue.pending_count("task-pending").await.unwrap(), 0);
    assert!(bed.queue.dead_letters(100).await.unwrap().is_empty());
    let br = bed.buildrequest(row.buildrequest_id.unwrap()).await;
    assert!(br.complete && br.results == Some(0), "{br:?}");
    assert_eq!(bed.sched.count_builds(br.id).await.unwrap(), 1);
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_whose_started_event_is_lost_still_completes_its_task_from_log_uploaded() {
    let bed = Bed::start(Options {
        faults: PulseFaults {
            drop_started: 1.0,
            ..PulseFaults::default()
        },
        ..Options::default()
    })
    .await;
    let task_id = bed.create_for(BUILDER, json!({})).await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    assert_completed_once(&bed, &task_id).await;
    let br = bed.buildrequest(brid).await;
    assert!(br.complete && br.results == Some(0), "{br:?}");
    assert_eq!(bed.sched.count_builds(brid).await.unwrap(), 1);
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    let props = bed.properties_artifact(&task_id, 0);
    assert_eq!(props["taskId"], json!([task_id, "bbb"]));
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_started_event_arriving_after_log_uploaded_changes_nothing() {
    let bed = Bed::start(Options {
        faults: PulseFaults {
            drop_started: 1.0,
            ..PulseFaults::default()
        },
        ..Options::default()
    })
    .await;
    let task_id = bed.create_for(BUILDER, json!({})).await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    assert_completed_once(&bed, &task_id).await;
    let calls_before = bed.calls(&task_id);

    // The Build's started event, late: after log_uploaded was handled.
    let builds = bed.builds_of(brid).await;
    assert_eq!(builds.len(), 1);
    let number = builds[0].number;
    let props = json!([
        ["buildername", BUILDER, "Builder"],
        ["buildnumber", number, "Build"],
        ["product", "firefox", "bbb"],
        ["taskId", task_id, "bbb"],
    ]);
    bed.publish_build_event(
        BUILDER,
        number,
        "started",
        started_payload(BUILDER, number, &[brid], props),
    )
    .await;
    let master = bed.master_settings().name;
    bed.wait_processed(
        "build-started",
        &format!("build-started/{master}/{BUILDER}/{number}"),
    )
    .await;
    assert_eq!(
        bed.calls(&task_id),
        calls_before,
        "no call for a late start"
    );
    assert_eq!(
        bed.run_states(&task_id),
        vec![("completed".to_owned(), Some("completed".to_owned()))]
    );
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    assert!(bed.queue.dead_letters(100).await.unwrap().is_empty());
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_started_event_without_a_task_id_property_is_ignored() {
    let bed = Bed::start(Options::default()).await;
    // No master serves this builder: the request stays pending, the task unclaimed.
    let task_id = bed.create_for(IDLE_BUILDER, json!({})).await;
    let row = bed.wait_buildrequest(&task_id).await;
    let brid = row.buildrequest_id.unwrap();

    let number = 7;
    let props = json!([
        ["buildername", IDLE_BUILDER, "Builder"],
        ["buildnumber", number, "Build"],
        ["product", "firefox", "Builder"],
        ["slavename", "bld-linux64-spot-132", "BuildSlave"],
    ]);
    bed.publish_build_event(
        IDLE_BUILDER,
        number,
        "started",
        started_payload(IDLE_BUILDER, number, &[brid], props),
    )
    .await;
    let master = bed.master_settings().name;
    bed.wait_processed(
        "build-started",
        &format!("build-started/{master}/{IDLE_BUILDER}/{number}"),
    )
    .await;

    assert_eq!(bed.calls(&task_id), vec!["task/-/200"], "no claim");
    assert_eq!(bed.run_states(&task_id), vec![("pending".to_owned(), None)]);
    let after = bed.bbb.get_task(&task_id).await.unwrap().unwrap();
    assert_eq!(after.buildrequest_id, Some(brid));
    assert_eq!(after.taken_until, None);
    assert_eq!(after.claimed_by, None);
    let br = bed.buildrequest(brid).await;
    assert!(!br.complete && br.claimed_at == 0, "{br:?}");
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    assert!(bed.queue.dead_letters(100).await.unwrap().is_empty());
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_started_milliseconds_after_its_request_appeared_claims_the_task_at_start() {
    let bed = Bed::start(Options {
        master_poll: Duration::from_millis(5),
        ..Options::default()
    })
    .await;
    let task_id = bed
        .create_for(BUILDER, json!({"sandbox_duration_ms": 8000}))
        .await;
    wait_until("the task claimed", Duration::from_secs(30), || async {
        bed.count_calls(&task_id, "claimTask", 200) == 1
    })
    .await;
    // Claimed while the Build still runs: at its start, not by its finished event.
    let brid = bed
        .sched
        .buildrequest_for_task(&task_id)
        .await
        .unwrap()
        .expect("injected");
    let builds = bed.builds_of(brid).await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert_eq!(builds[0].finish_time, None, "the Build is still running");
    assert!(!bed.buildrequest(brid).await.complete);
    assert_eq!(bed.status(&task_id)["state"], "running");
    wait_until("the claim recorded", Duration::from_secs(30), || async {
        bed.bbb
            .get_task(&task_id)
            .await
            .unwrap()
            .is_some_and(|r| r.taken_until.is_some() && r.buildrequest_id == Some(brid))
    })
    .await;
    assert!(
        bed.builds_of(brid).await[0].finish_time.is_none(),
        "recorded before the Build finished"
    );

    assert_completed_once(&bed, &task_id).await;
    let br = bed.buildrequest(brid).await;
    assert!(br.complete && br.results == Some(0), "{br:?}");
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    bed.shutdown().await;
}
