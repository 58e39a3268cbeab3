//! The per-taskId lock on the real Redis: exclusion, release, expiry, fencing, and waiting a
//! little for a lock that is about to be freed. Each test has its own key prefix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bbb_shared::{lock::Locks, secret::SecretUrl};

async fn locks(ttl: Duration) -> (Locks, String) {
    let conn = bbb_shared::queue::connect(&SecretUrl::new("redis://127.0.0.1:6379/0"))
        .await
        .unwrap();
    let prefix = format!(
        "bbbtest-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    (Locks::new(conn, prefix.clone(), ttl), prefix)
}

async fn cleanup(prefix: &str) {
    let mut conn = bbb_shared::queue::connect(&SecretUrl::new("redis://127.0.0.1:6379/0"))
        .await
        .unwrap();
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, format!("{prefix}:*"))
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::AsyncCommands::del(&mut conn, keys).await.unwrap();
    }
}

#[tokio::test]
async fn one_holder_at_a_time_and_a_later_holder_has_a_larger_fence() {
    let (locks, prefix) = locks(Duration::from_secs(30)).await;
    let first = locks.try_acquire("T").await.unwrap().expect("free");
    assert!(locks.try_acquire("T").await.unwrap().is_none(), "held");
    assert!(
        locks.try_acquire("U").await.unwrap().is_some(),
        "another task is another lock"
    );
    let fence = first.fence();
    assert!(first.release().await.unwrap(), "released by its owner");
    let second = locks.try_acquire("T").await.unwrap().expect("free again");
    assert!(second.fence() > fence);
    second.release().await.unwrap();
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_dropped_guard_frees_the_task_when_its_ttl_runs_out_and_cannot_free_the_next_holder() {
    let (locks, prefix) = locks(Duration::from_millis(300)).await;
    let crashed = locks.try_acquire("T").await.unwrap().expect("free");
    // A holder that stops renewing (its process died) keeps the lock for the ttl only.
    let stale = Locks::new(
        bbb_shared::queue::connect(&SecretUrl::new("redis://127.0.0.1:6379/0"))
            .await
            .unwrap(),
        prefix.clone(),
        Duration::from_millis(300),
    );
    drop(crashed);
    let started = Instant::now();
    let next = loop {
        if let Some(g) = stale.try_acquire("T").await.unwrap() {
            break g;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(locks.try_acquire("T").await.unwrap().is_none());
    next.release().await.unwrap();
    cleanup(&prefix).await;
}

#[tokio::test]
async fn acquire_within_waits_for_a_short_holder_and_gives_up_on_a_long_one() {
    let (locks, prefix) = locks(Duration::from_secs(30)).await;
    let holder = locks.try_acquire("T").await.unwrap().expect("free");
    let freed = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        holder.release().await.unwrap()
    });
    let got = locks
        .acquire_within("T", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(got.is_some(), "the lock was freed within the patience");
    assert!(freed.await.unwrap());

    let started = Instant::now();
    let none = locks
        .acquire_within("T", Duration::from_millis(200))
        .await
        .unwrap();
    assert!(none.is_none(), "still held by `got`");
    assert!(started.elapsed() >= Duration::from_millis(150));
    got.unwrap().release().await.unwrap();
    cleanup(&prefix).await;
}
