//! Tasks the bridge must refuse or leave alone (BRIDGE.md "TC task-pending", steps 1-3), and a
//! task-pending for a task the queue does not know ("Flaws of the original").
use serde_json::{Value, json};

use crate::harness::*;

/// The task was claimed and reported `malformed-payload`, and nothing else: no BuildRequest,
/// no tracked row, no dead letter.
async fn assert_rejected(bed: &Bed, task_id: &str) {
    bed.wait_processed("task-pending", &format!("task-pending/{task_id}/0"))
        .await;
    let status = bed.wait_state(task_id, "exception").await;
    assert_eq!(
        bed.run_states(task_id),
        vec![("exception".to_owned(), Some("malformed-payload".to_owned()))],
        "{status:#}"
    );
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs[0]["workerGroup"], "bbb-e2e", "claimed as the bridge");
    assert_eq!(
        bed.calls(task_id),
        vec!["task/-/200", "claimTask/0/200", "reportException/0/200"]
    );
    assert_eq!(bed.buildrequests_of(task_id).await, 0, "no BuildRequest");
    assert!(
        bed.bbb.get_task(task_id).await.unwrap().is_none(),
        "no tracked row"
    );
    assert!(bed.queue.dead_letters(100).await.unwrap().is_empty());
}

/// The task completed through one Build: one claim, one reportCompleted, the request done
/// with SUCCESS, the row gone.
async fn assert_completed(bed: &Bed, task_id: &str) {
    bed.wait_state(task_id, "completed").await;
    bed.wait_untracked(task_id).await;
    let brid = bed
        .sched
        .buildrequest_for_task(task_id)
        .await
        .unwrap()
        .expect("a BuildRequest was injected");
    assert_eq!(
        bed.run_states(task_id),
        vec![("completed".to_owned(), Some("completed".to_owned()))]
    );
    assert_eq!(
        bed.count_calls(task_id, "claimTask", 200),
        1,
        "{:?}",
        bed.calls(task_id)
    );
    assert_eq!(
        bed.count_calls(task_id, "reportCompleted", 200),
        1,
        "{:?}",
        bed.calls(task_id)
    );
    assert_eq!(bed.count_calls(task_id, "reportException", 200), 0);
    let br = bed.buildrequest(brid).await;
    assert!(br.complete && br.results == Some(0), "{br:?}");
    assert_eq!(bed.buildrequests_of(task_id).await, 1);
}

fn without_product(mut payload: Value) -> Value {
    payload["properties"]
        .as_object_mut()
        .unwrap()
        .remove("product");
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payload_without_a_product_is_reported_malformed_and_gets_no_buildrequest() {
    let bed = Bed::start(Options::default()).await;
    let payload = without_product(bed.payload(BUILDER, json!({})));
    let task_id = bed.create(bed.definition(payload)).await;
    assert_rejected(&bed, &task_id).await;
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payload_with_an_unknown_top_level_key_is_reported_malformed_and_gets_no_buildrequest() {
    let bed = Bed::start(Options::default()).await;
    let mut payload = bed.payload(BUILDER, json!({}));
    payload["upload_to_task_id"] = json!("whatever");
    let task_id = bed.create(bed.definition(payload)).await;
    assert_rejected(&bed, &task_id).await;
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payload_with_an_empty_buildername_is_reported_malformed_and_gets_no_buildrequest() {
    let bed = Bed::start(Options::default()).await;
    let task_id = bed.create_for("", json!({})).await;
    assert_rejected(&bed, &task_id).await;
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restricted_builder_without_the_bridge_scope_is_reported_malformed() {
    let bed = Bed::start(Options::default()).await;
    let bare = bed.create_for(RELEASE_BUILDER, json!({})).await;
    // A scope for another builder, and a star that does not cover this one, do not count.
    let mut def = bed.definition(bed.payload(RELEASE_BUILDER, json!({})));
    def["scopes"] = json!([
        format!("buildbot-bridge:builder-name:{BUILDER}"),
        "buildbot-bridge:builder-name:nightly-*",
        "queue:route:*",
    ]);
    let wrong = bed.create(def).await;
    assert_rejected(&bed, &bare).await;
    assert_rejected(&bed, &wrong).await;
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restricted_builder_with_any_form_of_the_bridge_scope_is_built_and_completed() {
    let bed = Bed::start(Options::default()).await;
    let forms = [
        format!("buildbot-bridge:builder-name:{RELEASE_BUILDER}"),
        format!("project:releng:buildbot-bridge:builder-name:{RELEASE_BUILDER}"),
        "buildbot-bridge:builder-name:release-*".to_owned(),
        "project:releng:buildbot-bridge:*".to_owned(),
    ];
    let mut tasks = Vec::new();
    for scope in &forms {
        let mut def = bed.definition(bed.payload(RELEASE_BUILDER, json!({})));
        def["scopes"] = json!([scope]);
        tasks.push((scope, bed.create(def).await));
    }
    for (scope, task_id) in &tasks {
        eprintln!("scope {scope}: task {task_id}");
        assert_completed(&bed, task_id).await;
    }
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ignored_builder_is_not_touched_at_all_and_its_task_stays_pending() {
    let bed = Bed::start(Options::default()).await;
    let task_id = bed.create_for(IGNORED_BUILDER, json!({})).await;
    bed.wait_processed("task-pending", &format!("task-pending/{task_id}/0"))
        .await;
    assert_eq!(
        bed.calls(&task_id),
        vec!["task/-/200"],
        "only the definition is fetched: no claim, no report"
    );
    assert_eq!(bed.status(&task_id)["state"], "pending");
    assert_eq!(bed.run_states(&task_id), vec![("pending".to_owned(), None)]);
    assert_eq!(bed.buildrequests_of(&task_id).await, 0);
    assert!(bed.bbb.get_task(&task_id).await.unwrap().is_none());
    assert!(bed.queue.dead_letters(100).await.unwrap().is_empty());
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_builder_missing_from_allthethings_is_reported_malformed_without_a_buildrequest() {
    let bed = Bed::start(Options::default()).await;
    let task_id = bed
        .create_for("Linux x86-64 mozilla-central build", json!({}))
        .await;
    assert_rejected(&bed, &task_id).await;
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_pending_for_a_task_the_queue_does_not_know_leaves_no_failure_and_the_next_task_completes()
 {
    let bed = Bed::start(Options::default()).await;
    let ghost = bbb_sandbox::tc::slugid();
    let now = bed.clock.now();
    let ts =
        |d: chrono::DateTime<chrono::Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let status = json!({
        "taskId": ghost, "provisionerId": "buildbot-bridge", "workerType": "buildbot-bridge",
        "taskQueueId": "buildbot-bridge/buildbot-bridge", "schedulerId": "gecko-level-3",
        "projectId": "none", "taskGroupId": ghost, "priority": "lowest",
        "deadline": ts(now + chrono::Duration::hours(1)), "expires": ts(now + chrono::Duration::days(30)),
        "retriesLeft": 5, "state": "pending",
        "runs": [{"runId": 0, "state": "pending", "reasonCreated": "scheduled", "scheduled": ts(now)}],
    });
    bed.publish_task_pending(&status, 0).await;
    bed.wait_processed("task-pending", &format!("task-pending/{ghost}/0"))
        .await;
    assert_eq!(
        bed.calls(&ghost),
        vec!["task/-/404"],
        "asked once, not retried"
    );
    assert!(
        bed.queue.dead_letters(100).await.unwrap().is_empty(),
        "no job failure left behind"
    );
    assert!(bed.bbb.get_task(&ghost).await.unwrap().is_none());
    assert_eq!(bed.buildrequests_of(&ghost).await, 0);

    let task_id = bed.create_for(BUILDER, json!({})).await;
    assert_completed(&bed, &task_id).await;
    assert!(bed.queue.dead_letters(100).await.unwrap().is_empty());
    bed.shutdown().await;
}
