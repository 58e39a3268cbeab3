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
