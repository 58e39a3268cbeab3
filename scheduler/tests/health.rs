//! The operations endpoint of a real `bbb-scheduler` process: `/healthz`, `/metrics`, and
//! `/readyz` turning unready when its Redis stops and ready again when Redis is back. The
//! test runs its own `redis-server` on a free port, so stopping it touches no other test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server(port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server (scripts/services installs it)")
}

async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_redis_and_metrics_are_served() {
    let redis_port = free_port();
    let mut redis = redis_server(redis_port);
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/dev.json");
    let prefix = format!(
        "bbbtest-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let mut scheduler = Command::new(env!("CARGO_BIN_EXE_bbb-scheduler"))
        .arg("--config")
        .arg(&config)
        .args(["--metrics-addr", &metrics, "--sample-every", "1"])
        .env("BBB_REDIS_URL", format!("redis://127.0.0.1:{redis_port}/0"))
        .env("BBB_REDIS_PREFIX", &prefix)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://{metrics}");

    wait_for("/readyz to answer 200", || async {
        matches!(get(&format!("{base}/readyz")).await, Some((200, _)))
    })
    .await;
    let (status, body) = get(&format!("{base}/healthz")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    // The sampler sets the queue gauges once a second.
    wait_for("the queue gauges in /metrics", || async {
        get(&format!("{base}/metrics"))
            .await
            .is_some_and(|(_, m)| m.contains("bbb_queue_waiting{kind=\"build-finished\"} 0"))
    })
    .await;
    let (_, page) = get(&format!("{base}/status")).await.unwrap();
    assert!(page.contains("build-finished"), "{page}");

    redis.kill().await.unwrap();
    wait_for("/readyz to answer 503 once Redis is gone", || async {
        matches!(get(&format!("{base}/readyz")).await, Some((503, _)))
    })
    .await;
    let (_, unready) = get(&format!("{base}/readyz")).await.unwrap();
    assert!(unready.contains("redis"), "{unready}");
    let (status, _) = get(&format!("{base}/healthz")).await.unwrap();
    assert_eq!(status, 200, "liveness does not depend on Redis");
    assert!(
        scheduler.try_wait().unwrap().is_none(),
        "the scheduler keeps running without Redis"
    );

    let _redis = redis_server(redis_port);
    wait_for("/readyz to answer 200 again once Redis is back", || async {
        matches!(get(&format!("{base}/readyz")).await, Some((200, _)))
    })
    .await;
    scheduler.kill().await.unwrap();
}
