//! Scheduler replicas on a real Redis: together they enqueue exactly one scan per tick.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bbb_shared::{
    queue::{Enqueued, JobQueue, QueueSettings},
    secret::SecretUrl,
};
use redis::AsyncCommands;
use tokio::sync::watch;

async fn queue(prefix: &str) -> JobQueue {
    let conn = bbb_shared::queue::connect(&SecretUrl::new("redis://127.0.0.1:6379/0"))
        .await
        .unwrap();
    JobQueue::new(
        conn,
        QueueSettings {
            prefix: prefix.to_owned(),
            idempotency_ttl: Duration::from_secs(600),
            heartbeat: Duration::from_secs(1),
            missed_heartbeats: 5,
            fetch_batch: 1,
        },
    )
}

async fn scan_ticks(q: &JobQueue) -> Vec<i64> {
    let mut conn = q.connection();
    let keys: Vec<String> = conn
        .keys(format!(
            "{}:reflect-scan:idempotency:reflect-scan/*",
            q.settings().prefix
        ))
        .await
        .unwrap();
    let mut ticks: Vec<i64> = keys
        .iter()
        .map(|k| k.rsplit('/').next().unwrap().parse().unwrap())
        .collect();
    ticks.sort();
    ticks
}

async fn cleanup(q: &JobQueue) {
    let mut conn = q.connection();
    let keys: Vec<String> = conn
        .keys(format!("{}*", q.settings().prefix))
        .await
        .unwrap_or_default();
    for k in keys {
        let _: Result<(), _> = conn.del(k).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_replicas_running_for_ten_ticks_enqueue_exactly_ten_scans() {
    let prefix = format!(
        "bbbtest-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let q = queue(&prefix).await;
    let (stop, rx) = watch::channel(false);
    let a = tokio::spawn(bbb_scheduler::run(q.clone(), 1, rx.clone()));
    let b = tokio::spawn(bbb_scheduler::run(queue(&prefix).await, 1, rx));
    let deadline = Instant::now() + Duration::from_secs(30);
    while scan_ticks(&q).await.len() < 10 {
        assert!(Instant::now() < deadline, "ten ticks never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    a.await.unwrap();
    b.await.unwrap();
    let ticks = scan_ticks(&q).await;
    let jobs = q.pending_count("reflect-scan").await.unwrap();
    assert_eq!(
        jobs,
        ticks.len() as u64,
        "one scan job per tick, none twice: {ticks:?}"
    );
    assert!(ticks.len() >= 10);
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 1, "no tick missed: {ticks:?}");
    }
    cleanup(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_enqueuing_the_same_tick_at_once_make_one_scan() {
    let prefix = format!(
        "bbbtest-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let q = queue(&prefix).await;
    let mut outcomes = Vec::new();
    for tick in [1_800_000_000u64, 1_800_000_060] {
        let results =
            futures::future::join_all((0..8).map(|_| bbb_scheduler::enqueue_scan(&q, tick))).await;
        outcomes.push(
            results
                .into_iter()
                .map(Result::unwrap)
                .filter(|o| *o == Enqueued::New)
                .count(),
        );
    }
    assert_eq!(outcomes, vec![1, 1]);
    assert_eq!(q.pending_count("reflect-scan").await.unwrap(), 2);
    cleanup(&q).await;
}

#[test]
fn scans_fall_on_multiples_of_the_interval() {
    assert!(bbb_scheduler::is_scan_tick(1_800_000_000, 60));
    assert!(!bbb_scheduler::is_scan_tick(1_800_000_001, 60));
    assert!(bbb_scheduler::is_scan_tick(1_800_000_001, 1));
}
