//! Worker processes killed with SIGKILL: nothing is lost, nothing runs twice at once, and a job
//! that keeps crashing its worker ends in the dead-letter list instead of looping forever.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use redis::AsyncCommands;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_job_leaves_a_job_that_another_worker_completes_after_the_lock_expires()
{
    let bed = Bed::new().await;
    let mut child = spawn_worker_process(&bed, 5);
    bed.queue
        .enqueue(bed.probe("long", "taskK9", 4000))
        .await
        .unwrap();
    let lock = format!("{}:lock:taskK9", bed.prefix);
    wait_until(
        "the child to hold the task's lock",
        Duration::from_secs(60),
        || {
            let mut conn = bed.conn.clone();
            let lock = lock.clone();
            async move { conn.exists::<_, bool>(lock).await.unwrap() }
        },
    )
    .await;
    // kill -9 in the middle of the job.
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = chrono::Utc::now().timestamp_millis();

    let mut setup = bed.setup();
    setup.queue_settings.heartbeat = Duration::from_millis(500);
    setup.queue_settings.missed_heartbeats = 4;
    let pool = bed.start_pool(setup).await;
    let records = bed.wait_records(1, Duration::from_secs(60)).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, "long");
    assert!(
        records[0].start >= killed_at,
        "the job ran again only after the kill: {records:?}"
    );
    pool.shutdown().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_crashes_its_worker_every_time_is_dead_lettered_after_max_attempts() {
    let bed = Bed::new().await;
    let mut probe = bed.probe("bomb", "taskBomb", 0);
    probe.crash = true;
    bed.queue.enqueue(probe).await.unwrap();
    // Keep a worker process alive: each one dies on the job, the next one takes it over.
    let mut spawned = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if !bed.queue.dead_letters(10).await.unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter after {spawned} crashes"
        );
        let mut child = spawn_worker_process(&bed, 2);
        spawned += 1;
        // Wait for this child to exit (crash), or for the dead letter to appear.
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if !bed.queue.dead_letters(10).await.unwrap().is_empty() {
                child.kill().unwrap();
                child.wait().unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let letters = bed.queue.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("crashed a worker 2 times"),
        "{}",
        letters[0].reason
    );
    assert!(
        spawned >= 3,
        "two crashes, then a third worker dead-letters it ({spawned} spawned)"
    );
    bed.cleanup().await;
}
