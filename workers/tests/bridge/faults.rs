//! Failures around the bridge: Taskcluster errors, a worker killed mid-job, and the original's
//! config file (BRIDGE.md "Where the new design must go further", "Configuration").
use std::time::Duration;

use bbb_sandbox::tc::Fault;
use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn taskcluster_failing_twice_on_claim_and_on_report_still_completes_the_task_exactly_once() {
    let bed = Bed::start(Options::default()).await;
    bed.tc.inject_fault("claimTask", Fault::Status(500), 2);
    bed.tc
        .inject_fault("reportCompleted", Fault::Status(500), 2);
    let task_id = bed.create_for(BUILDER, json!({})).await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    bed.wait_state(&task_id, "completed").await;
    bed.wait_untracked(&task_id).await;

    let calls = bed.calls(&task_id);
    assert_eq!(
        bed.run_states(&task_id),
        vec![("completed".to_owned(), Some("completed".to_owned()))]
    );
    assert_eq!(bed.count_calls(&task_id, "claimTask", 500), 2, "{calls:?}");
    assert_eq!(bed.count_calls(&task_id, "claimTask", 200), 1, "{calls:?}");
    assert_eq!(bed.count_calls(&task_id, "claimTask", 409), 0, "{calls:?}");
    assert_eq!(
        bed.count_calls(&task_id, "reportCompleted", 500),
        2,
        "{calls:?}"
    );
    assert_eq!(
        bed.count_calls(&task_id, "reportCompleted", 200),
        1,
        "{calls:?}"
    );
    // The successes come after the failures.
    let pos = |c: &str| calls.iter().position(|x| x == c).unwrap();
    assert!(pos("claimTask/0/500") < pos("claimTask/0/200"), "{calls:?}");
    assert!(
        pos("reportCompleted/0/500") < pos("reportCompleted/0/200"),
        "{calls:?}"
    );
    assert_eq!(
        bed.artifact_names(&task_id, 0),
        vec!["public/logs/live_backing.log.gz", "public/properties.json"]
    );
    let br = bed.buildrequest(brid).await;
    assert!(br.complete && br.results == Some(0), "{br:?}");
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    assert!(bed.queue.dead_letters(100).await.unwrap().is_empty());
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_in_the_middle_of_build_finished_is_taken_over_and_the_task_resolved_once()
{
    let mut bed = Bed::start(Options {
        pool: false,
        ..Options::default()
    })
    .await;
    // The child worker's reportCompleted hangs (longer than the whole test): it is inside
    // BuildFinished, artifacts attached, when it is killed.
    bed.tc.inject_fault(
        "reportCompleted",
        Fault::Latency(Duration::from_secs(120)),
        1,
    );
    let mut child = bed.spawn_worker_process();
    let task_id = bed.create_for(BUILDER, json!({})).await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    wait_until(
        "the child inside BuildFinished (artifacts created)",
        Duration::from_secs(60),
        || async {
            bed.count_calls(&task_id, "createArtifact", 200) >= 2
                && bed.artifact_names(&task_id, 0).len() == 2
        },
    )
    .await;
    assert_eq!(bed.count_calls(&task_id, "reportCompleted", 200), 0);
    assert_eq!(bed.status(&task_id)["state"], "running");
    assert!(
        bed.bbb.get_task(&task_id).await.unwrap().is_some(),
        "still tracked"
    );
    child.kill9();
    // Had the child not sent its reportCompleted yet, the hang must not hit its successor.
    bed.tc.clear_faults();

    bed.start_pool().await;
    bed.wait_state(&task_id, "completed").await;
    bed.wait_untracked(&task_id).await;
    bed.wait_processed(
        "build-finished",
        &format!(
            "build-finished/{}/{BUILDER}/{}",
            bed.master_settings().name,
            bed.builds_of(brid).await[0].number
        ),
    )
    .await;

    let calls = bed.calls(&task_id);
    assert_eq!(
        bed.run_states(&task_id),
        vec![("completed".to_owned(), Some("completed".to_owned()))],
        "one run, resolved once"
    );
    assert_eq!(
        bed.count_calls(&task_id, "reportCompleted", 200),
        1,
        "{calls:?}"
    );
    assert_eq!(bed.count_calls(&task_id, "claimTask", 200), 1, "{calls:?}");
    assert_eq!(bed.count_calls(&task_id, "reportFailed", 200), 0);
    assert_eq!(bed.count_calls(&task_id, "reportException", 200), 0);
    assert_eq!(
        bed.artifact_names(&task_id, 0),
        vec!["public/logs/live_backing.log.gz", "public/properties.json"]
    );
    let props = bed.properties_artifact(&task_id, 0);
    assert_eq!(props["taskId"], json!([task_id, "bbb"]));
    let br = bed.buildrequest(brid).await;
    assert!(br.complete && br.results == Some(0), "{br:?}");
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    assert!(bed.queue.dead_letters(100).await.unwrap().is_empty());
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_original_config_json_shape_runs_the_whole_flow_unchanged() {
    let sample: Value = serde_json::from_str(include_str!(
        "../../../shared/tests/fixtures/original-sample.json"
    ))
    .unwrap();
    let bed = Bed::start(Options {
        base_config: Some(sample.clone()),
        ..Options::default()
    })
    .await;
    // The file's own keys are what the bridge runs with.
    assert_eq!(bed.raw_config()["tc_worker_group"], "buildbot-bridge");
    assert_eq!(bed.raw_config()["reflector"], sample["reflector"]);
    assert_eq!(
        bed.raw_config()["tclistener"]["logfile"],
        sample["tclistener"]["logfile"]
    );

    let task_id = bed.create_for(BUILDER, json!({})).await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    let status = bed.wait_state(&task_id, "completed").await;
    bed.wait_untracked(&task_id).await;

    let run = &status["runs"][0];
    assert_eq!(run["workerGroup"], "buildbot-bridge", "{status:#}");
    assert_eq!(run["workerId"], "buildbot-bridge", "{status:#}");
    assert_eq!(
        bed.run_states(&task_id),
        vec![("completed".to_owned(), Some("completed".to_owned()))]
    );
    assert_eq!(bed.count_calls(&task_id, "claimTask", 200), 1);
    assert_eq!(bed.count_calls(&task_id, "reportCompleted", 200), 1);
    assert_eq!(
        bed.artifact_names(&task_id, 0),
        vec!["public/logs/live_backing.log.gz", "public/properties.json"]
    );
    let br = bed.buildrequest(brid).await;
    assert!(br.complete && br.results == Some(0), "{br:?}");
    assert_eq!(bed.buildrequests_of(&task_id).await, 1);
    // Restricted builders from the file still apply (here overridden to the same pattern).
    let restricted = bed.create_for(RELEASE_BUILDER, json!({})).await;
    let st = bed.wait_state(&restricted, "exception").await;
    assert_eq!(st["runs"][0]["reasonResolved"], "malformed-payload");
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_while_uploading_properties_json_is_taken_over_and_the_artifact_is_present()
{
    let mut bed = Bed::start(Options {
        pool: false,
        ..Options::default()
    })
    .await;
    // The child's finishArtifact of properties.json hangs: created and uploaded, not finished.
    bed.tc.inject_fault(
        "finishArtifact",
        Fault::Latency(Duration::from_secs(120)),
        1,
    );
    let mut child = bed.spawn_worker_process();
    let task_id = bed.create_for(BUILDER, json!({})).await;
    let brid = bed
        .wait_buildrequest(&task_id)
        .await
        .buildrequest_id
        .unwrap();
    wait_until(
        "properties.json uploaded by the child",
        Duration::from_secs(60),
        || async {
            bed.tc
                .artifacts(&task_id, 0)
                .iter()
                .any(|a| a.name == "public/properties.json" && a.bytes.is_some())
        },
    )
    .await;
    child.kill9();
    bed.tc.clear_faults();
    eprintln!("calls before takeover: {:?}", bed.calls(&task_id));

    bed.start_pool().await;
    bed.wait_state(&task_id, "completed").await;
    bed.wait_untracked(&task_id).await;
    let calls = bed.calls(&task_id);
    assert_eq!(
        bed.run_states(&task_id),
        vec![("completed".to_owned(), Some("completed".to_owned()))]
    );
    assert_eq!(
        bed.count_calls(&task_id, "reportCompleted", 200),
        1,
        "{calls:?}"
    );
    let artifacts = bed.tc.artifacts(&task_id, 0);
    let names: Vec<&str> = artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["public/logs/live_backing.log.gz", "public/properties.json"]
    );
    for a in &artifacts {
        assert!(
            a.present,
            "{} is not downloadable: {a:?}; calls {calls:?}",
            a.name
        );
    }
    let props = bed.properties_artifact(&task_id, 0);
    assert_eq!(props["taskId"], json!([task_id, "bbb"]));
    let br = bed.buildrequest(brid).await;
    assert!(br.complete && br.results == Some(0), "{br:?}");
    bed.shutdown().await;
}
