//! The worker runtime on a real Redis: per-taskId locks, retries, dead letters, supervision,
//! shutdown, and the apalis-redis pitfalls it must survive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bbb_shared::queue::Enqueued;
use common::*;
use redis::AsyncCommands;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_never_run_jobs_of_the_same_task_at_once_but_different_tasks_overlap() {
    let bed = Bed::new().await;
    let a = bed.start_pool(bed.setup()).await;
    let b = bed.start_pool(bed.setup()).await;
    for i in 0..6 {
        for task in ["taskA", "taskB", "taskC"] {
            bed.queue
                .enqueue(bed.probe(&format!("{task}-{i}"), task, 150))
                .await
                .unwrap();
        }
    }
    let records = bed.wait_records(18, Duration::from_secs(60)).await;
    let task_of = |r: &Record| r.id.split('-').next().unwrap().to_owned();
    let mut different_tasks_overlapped = false;
    for (i, x) in records.iter().enumerate() {
        for y in &records[i + 1..] {
            if task_of(x) == task_of(y) {
                assert!(
                    !x.overlaps(y),
                    "{x:?} and {y:?} ran at the same time for one task"
                );
            } else if x.overlaps(y) {
                different_tasks_overlapped = true;
            }
        }
    }
    assert!(
        different_tasks_overlapped,
        "jobs of different tasks should run in parallel"
    );
    let workers: std::collections::HashSet<_> = records.iter().map(|r| r.worker.clone()).collect();
    assert!(
        workers.len() >= 2,
        "both pools should have taken jobs: {workers:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_idempotency_key_enqueued_twice_is_one_job() {
    let bed = Bed::new().await;
    let p = bed.probe("dup", "taskD", 0);
    assert_eq!(bed.queue.enqueue(p.clone()).await.unwrap(), Enqueued::New);
    assert_eq!(
        bed.queue.enqueue(p.clone()).await.unwrap(),
        Enqueued::Duplicate
    );
    let pool = bed.start_pool(bed.setup()).await;
    bed.wait_records(1, Duration::from_secs(30)).await;
    // Even after the job ran, the key is remembered for the retention window.
    assert_eq!(bed.queue.enqueue(p).await.unwrap(), Enqueued::Duplicate);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bed.records().await.len(), 1);
    // The retention window is a real TTL, not "forever" and not "expired at once".
    let mut conn = bed.conn.clone();
    let keys: Vec<String> = conn
        .keys(format!("{}:probe:idempotency:*", bed.prefix))
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = conn.ttl(&keys[0]).await.unwrap();
    assert!(ttl > 500 && ttl <= 600, "idempotency TTL {ttl}");
    pool.shutdown().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_is_renewed_through_a_job_longer_than_its_expiry() {
    let bed = Bed::new().await;
    let mut setup = bed.setup();
    setup.lock_ttl = Duration::from_millis(600);
    let pool = bed.start_pool(setup.clone()).await;
    let other = bed.start_pool(setup).await;
    bed.queue
        .enqueue(bed.probe("long", "taskL", 2500))
        .await
        .unwrap();
    // Let the long job start, then queue a second job of the same task.
    wait_until(
        "the long job holds its lock",
        Duration::from_secs(20),
        || {
            let mut conn = bed.conn.clone();
            let key = format!("{}:lock:taskL", bed.prefix);
            async move { conn.exists::<_, bool>(key).await.unwrap() }
        },
    )
    .await;
    bed.queue
        .enqueue(bed.probe("short", "taskL", 10))
        .await
        .unwrap();
    let records = bed.wait_records(2, Duration::from_secs(30)).await;
    assert!(!records[0].overlaps(&records[1]), "{records:?}");
    assert_eq!(
        records[0].id, "long",
        "the short job waited for the lock: {records:?}"
    );
    pool.shutdown().await;
    other.shutdown().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_always_fails_stops_after_the_configured_attempts_and_is_dead_lettered() {
    let bed = Bed::new().await;
    let mut setup = bed.setup();
    setup.runtime.max_attempts = 3;
    let pool = bed.start_pool(setup).await;
    let mut probe = bed.probe("doomed", "taskF", 0);
    probe.fail_times = u32::MAX;
    bed.queue.enqueue(probe).await.unwrap();
    wait_until("a dead letter", Duration::from_secs(30), || async {
        !bed.queue.dead_letters(10).await.unwrap().is_empty()
    })
    .await;
    let letters = bed.queue.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].queue, "probe");
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].reason.contains("fails on purpose"),
        "{}",
        letters[0].reason
    );
    // Give a wrongly scheduled fourth attempt the time to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut conn = bed.conn.clone();
    let runs: u32 = conn
        .get(format!("{}:failures:doomed", bed.record_key()))
        .await
        .unwrap();
    assert_eq!(runs, 3, "the job ran exactly max_attempts times");
    assert_eq!(bed.queue.pending_count("probe").await.unwrap(), 0);
    pool.shutdown().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transient_failure_is_retried_with_backoff_and_then_succeeds() {
    let bed = Bed::new().await;
    let pool = bed.start_pool(bed.setup()).await;
    let mut probe = bed.probe("flaky", "taskR", 0);
    probe.fail_times = 2;
    bed.queue.enqueue(probe).await.unwrap();
    let records = bed.wait_records(1, Duration::from_secs(30)).await;
    assert_eq!(records[0].id, "flaky");
    assert!(bed.queue.dead_letters(10).await.unwrap().is_empty());
    pool.shutdown().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_whose_redis_connection_is_killed_keeps_working_after_reconnecting() {
    let bed = Bed::new().await;
    let pool = bed.start_pool(bed.setup()).await;
    bed.queue
        .enqueue(bed.probe("before", "taskK", 0))
        .await
        .unwrap();
    bed.wait_records(1, Duration::from_secs(30)).await;
    // Kill exactly this pool's connection (not the other tests').
    let mut pool_conn = pool.conn.clone();
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut pool_conn)
        .await
        .unwrap();
    let mut conn = bed.conn.clone();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    for i in 0..5 {
        bed.queue
            .enqueue(bed.probe(&format!("after-{i}"), "taskK", 0))
            .await
            .unwrap();
    }
    bed.wait_records(6, Duration::from_secs(60)).await;
    pool.shutdown().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_restarted_at_once_on_the_same_host_keeps_working() {
    let bed = Bed::new().await;
    let first = bed.start_pool(bed.setup()).await;
    bed.queue
        .enqueue(bed.probe("one", "taskS", 0))
        .await
        .unwrap();
    bed.wait_records(1, Duration::from_secs(30)).await;
    // A crash: the process is gone without any clean-up, its heartbeats still fresh.
    first.handle.abort();
    let second = bed.start_pool(bed.setup()).await;
    bed.queue
        .enqueue(bed.probe("two", "taskS", 0))
        .await
        .unwrap();
    // "one" may run again first: aborted between its record and its ack, it is an orphan the
    // new pool re-queues (at-least-once). "two" must run.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !bed.records().await.iter().any(|r| r.id == "two") {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted pool never ran the new job: {:?}",
            bed.records().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.shutdown().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_during_a_long_job_does_not_let_another_worker_run_it_at_the_same_time() {
    let bed = Bed::new().await;
    let first = bed.start_pool(bed.setup()).await;
    bed.queue
        .enqueue(bed.probe("long", "taskG", 4000))
        .await
        .unwrap();
    wait_until(
        "the long job holds its lock",
        Duration::from_secs(20),
        || {
            let mut conn = bed.conn.clone();
            let key = format!("{}:lock:taskG", bed.prefix);
            async move { conn.exists::<_, bool>(key).await.unwrap() }
        },
    )
    .await;
    // Another worker is alive and polling while the first drains (its orphan timeout, 2 s, is
    // shorter than the job).
    let second = bed.start_pool(bed.setup()).await;
    first.shutdown().await;
    let records = bed.wait_records(1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records_after = bed.records().await;
    for (i, x) in records_after.iter().enumerate() {
        for y in &records_after[i + 1..] {
            assert!(!x.overlaps(y), "{x:?} overlapped {y:?}");
        }
    }
    assert_eq!(records[0].id, "long");
    second.shutdown().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_of_50000_due_jobs_drains_completely_with_several_workers() {
    let bed = Bed::new().await;
    const N: usize = 50_000;
    // Push the backlog before any worker runs, so all of it is due at once.
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        tasks.push(bed.probe(&format!("b{i}"), &format!("task{}", i % 500), 0));
    }
    for chunk in tasks.chunks(1000) {
        let futs = chunk.iter().cloned().map(|p| bed.queue.enqueue(p));
        for r in futures::future::join_all(futs).await {
            r.unwrap();
        }
    }
    let mut setup = bed.setup();
    setup.runtime.concurrency = 32;
    let pools = vec![
        bed.start_pool(setup.clone()).await,
        bed.start_pool(setup.clone()).await,
        bed.start_pool(setup).await,
    ];
    wait_until("the backlog to drain", Duration::from_secs(600), || async {
        bed.queue.pending_count("probe").await.unwrap() == 0
    })
    .await;
    let mut conn = bed.conn.clone();
    let recorded: usize = conn.llen(bed.record_key()).await.unwrap();
    assert!(recorded >= N, "{recorded} of {N} jobs ran");
    let ids: std::collections::HashSet<String> =
        bed.records().await.into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), N, "every job ran");
    for p in pools {
        p.shutdown().await;
    }
    bed.cleanup().await;
}
