//! The status page on a real Redis, as a browser shows it: known jobs in the queues, a few
//! history samples, the page served on a free port and rendered by headless Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use axum::body::Body;
use bbb_scheduler::status::{self, Sample, StatusDocument};
use bbb_shared::{
    inspect::InspectSettings,
    jobs::{BRIDGE_KINDS, ReflectScan, TaskException, TaskPending},
    queue::{JobQueue, QueueSettings},
    secret::SecretUrl,
    stats,
};
use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use redis::{AsyncCommands, aio::ConnectionManager};
use tower::ServiceExt;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

fn unique_prefix() -> String {
    format!(
        "bbbtest-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    )
}

async fn connect() -> ConnectionManager {
    bbb_shared::queue::connect(&SecretUrl::new("redis://127.0.0.1:6379/0"))
        .await
        .unwrap()
}

fn queue(conn: ConnectionManager, prefix: &str) -> JobQueue {
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

fn settings(prefix: &str) -> InspectSettings {
    InspectSettings {
        prefix: prefix.to_owned(),
        kinds: BRIDGE_KINDS.iter().map(|k| (*k).to_owned()).collect(),
        pulse: None,
    }
}

fn pending(n: u32) -> TaskPending {
    TaskPending {
        task_id: format!("task-{n}"),
        run_id: 0,
        scheduled: None,
    }
}

async fn redis_keys(conn: &ConnectionManager, prefix: &str) -> Vec<String> {
    let mut conn = conn.clone();
    conn.keys(format!("{prefix}:*")).await.unwrap_or_default()
}

async fn delete_keys(conn: &ConnectionManager, prefix: &str) {
    let mut c = conn.clone();
    for key in redis_keys(conn, prefix).await {
        let _: Result<(), _> = c.del(key).await;
    }
}

/// Runs `body`, then deletes the prefix's keys whether it passed or panicked.
async fn with_cleanup<F: Future<Output = ()>>(conn: &ConnectionManager, prefix: &str, body: F) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    delete_keys(conn, prefix).await;
    assert!(
        redis_keys(conn, prefix).await.is_empty(),
        "the test's keys are gone"
    );
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The samples of the history taken at or after `since`.
async fn samples_since(
    conn: &ConnectionManager,
    prefix: &str,
    since: DateTime<Utc>,
) -> Vec<Sample> {
    let history = status::history(conn, prefix, Utc::now()).await.unwrap();
    history.into_iter().filter(|s| s.at >= since).collect()
}

/// Samples until the history holds `n` samples taken at or after `since`.
async fn sample_until(
    conn: &ConnectionManager,
    settings: &InspectSettings,
    since: DateTime<Utc>,
    n: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        status::sample_every(conn, settings, Duration::from_millis(300))
            .await
            .unwrap();
        let taken = samples_since(conn, &settings.prefix, since).await.len();
        if taken >= n {
            assert_eq!(taken, n, "one sample appended at a time");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the history never reached {n} samples"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pushes the samples a sampler running for the past hour would have left (one every two
/// minutes, ending two minutes ago), and one older than the hour.
async fn seed_last_hour(conn: &ConnectionManager, prefix: &str, now: DateTime<Utc>) {
    let mut c = conn.clone();
    let key = status::history_key(prefix);
    for minutes_ago in [70i64].into_iter().chain((1..=29).rev().map(|i| i * 2)) {
        let i = u64::try_from(minutes_ago).unwrap();
        let sample = Sample {
            at: now - TimeDelta::minutes(minutes_ago),
            waiting: 4 + (i * 7) % 13,
            delayed: 2 + i % 4,
            running: i % 3,
            done_per_min: 10 + (i * 11) % 17,
            waiting_by_kind: Default::default(),
        };
        let _: () = c
            .lpush(&key, serde_json::to_string(&sample).unwrap())
            .await
            .unwrap();
    }
}

/// Runs headless Chromium on `url` with `extra` arguments, in a fresh profile.
async fn chromium(extra: &[String], url: &str) -> std::process::Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run `scripts/services chromium` to install it"
    );
    let profile = std::env::temp_dir().join(format!("bbb-chromium-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&profile).unwrap();
    let mut command = tokio::process::Command::new(CHROMIUM);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(CHROMIUM_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?}"))
        .expect("chromium starts");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The text of each cell of the queue table's row of `kind`.
fn queue_row(dom: &str, kind: &str) -> Vec<String> {
    let table_start = dom
        .find("<table id=\"queues\"")
        .unwrap_or_else(|| panic!("no queue table in the page:\n{dom}"));
    let table = &dom[table_start..];
    let table = &table[..table.find("</table>").unwrap()];
    let row_start = table
        .find(&format!("<tr data-kind=\"{kind}\""))
        .unwrap_or_else(|| panic!("no row for {kind} in the queue table:\n{table}"));
    let row = &table[row_start..];
    let row = &row[..row.find("</tr>").unwrap()];
    row.split("<td")
        .skip(1)
        .map(|cell| {
            let text = &cell[cell.find('>').unwrap() + 1..];
            text[..text.find("</td>").unwrap()].trim().to_owned()
        })
        .collect()
}

fn test_output_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_queues_and_an_hour_chart_in_a_browser() {
    let prefix = unique_prefix();
    let conn = connect().await;
    with_cleanup(&conn, &prefix, async {
        let q = queue(conn.clone(), &prefix);
        let settings = settings(&prefix);
        q.enqueue(pending(1)).await.unwrap();
        q.enqueue(pending(2)).await.unwrap();
        q.enqueue(TaskException {
            task_id: "task-x".to_owned(),
            run_id: Some(0),
            reason: Some("canceled".to_owned()),
        })
        .await
        .unwrap();
        for tick in [60, 120] {
            q.enqueue_after(ReflectScan { tick }, Duration::from_secs(3600))
                .await
                .unwrap();
        }
        // Twelve jobs done in the last whole minute (and in this one, should it end).
        let minute = stats::epoch_minute(Utc::now());
        let mut c = conn.clone();
        for m in [minute - 1, minute] {
            let key = stats::counter_key(&prefix, "task-pending", stats::Outcome::Done, m);
            let _: () = c.set_ex(key, 12, 600).await.unwrap();
        }

        let started = Utc::now();
        seed_last_hour(&conn, &prefix, started).await;
        for round in 1..=3u32 {
            q.enqueue(pending(2 + round)).await.unwrap();
            sample_until(&conn, &settings, started, round as usize).await;
        }
        let taken = samples_since(&conn, &prefix, started).await;
        let waiting: Vec<u64> = taken.iter().map(|s| s.waiting).collect();
        assert_eq!(
            waiting,
            [4, 5, 6],
            "task-pending 3..5 plus one task-exception"
        );
        assert!(taken.iter().all(|s| s.delayed == 2 && s.running == 0));
        assert!(taken.iter().all(|s| s.done_per_min == 12));
        assert_eq!(taken[2].waiting_by_kind.get("task-pending"), Some(&5));
        let history = status::history(&conn, &prefix, Utc::now()).await.unwrap();
        assert_eq!(
            history.len(),
            29 + 3,
            "the sample older than an hour is left out"
        );

        let app = status::router(conn.clone(), settings);
        let response = app
            .clone()
            .oneshot(
                axum::http::Request::get("/status.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let doc: StatusDocument = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc.history, history);
        assert_eq!(doc.snapshot.prefix, prefix);

        let response = app
            .clone()
            .oneshot(axum::http::Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-store");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/status");

        let dom = chromium(&["--dump-dom".to_owned()], &url).await;
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert!(dom.contains("<title>bbb status: "), "{dom}");
        // Cells: kind, waiting, delayed, running, done 1h, failed 1h, dead, oldest, jobs/s, workers.
        let pending_row = queue_row(&dom, "task-pending");
        assert_eq!(pending_row[0], "task-pending");
        assert_eq!(pending_row[1], "5", "task-pending waiting: {pending_row:?}");
        assert_eq!(pending_row[2], "0");
        let exception_row = queue_row(&dom, "task-exception");
        assert_eq!(
            exception_row[1], "1",
            "task-exception waiting: {exception_row:?}"
        );
        let scan_row = queue_row(&dom, "reflect-scan");
        assert_eq!(scan_row[1], "0", "reflect-scan waiting: {scan_row:?}");
        assert_eq!(scan_row[2], "2", "reflect-scan delayed: {scan_row:?}");
        for kind in BRIDGE_KINDS {
            assert_eq!(queue_row(&dom, kind).len(), 10, "{kind}: ten columns");
        }
        let chart_start = dom
            .find("<svg id=\"chart\"")
            .unwrap_or_else(|| panic!("no chart in the page:\n{dom}"));
        let chart = &dom[chart_start..];
        let chart = &chart[..chart.find("</svg>").unwrap()];
        assert_eq!(
            chart.matches("<polyline").count(),
            2,
            "depth and throughput lines: {chart}"
        );
        assert!(chart.contains("class=\"depth\"") && chart.contains("class=\"done\""));

        let dir = test_output_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("status-page.png");
        let _ = std::fs::remove_file(&png);
        chromium(
            &[
                format!("--screenshot={}", png.display()),
                "--window-size=1280,1000".to_owned(),
            ],
            &url,
        )
        .await;
        let size = std::fs::metadata(&png)
            .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()))
            .len();
        assert!(
            size > 20_000,
            "the screenshot is {size} bytes: too small for the page"
        );
        let png = png.canonicalize().unwrap_or(png);
        println!("status page screenshot: {}", png.display());
        server.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sampling_at_the_same_moment_append_one_sample() {
    let prefix = unique_prefix();
    let conn = connect().await;
    with_cleanup(&conn, &prefix, async {
        let settings = settings(&prefix);
        queue(conn.clone(), &prefix)
            .enqueue(pending(1))
            .await
            .unwrap();
        let every = Duration::from_secs(10);
        let (a, b) = tokio::join!(
            status::sample_every(&conn, &settings, every),
            status::sample_every(&conn, &settings, every),
        );
        a.unwrap();
        b.unwrap();
        status::sample_every(&conn, &settings, every).await.unwrap();
        let history = status::history(&conn, &prefix, Utc::now()).await.unwrap();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].waiting, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_samples_an_idle_installation_and_stops_on_shutdown() {
    let prefix = unique_prefix();
    let conn = connect().await;
    with_cleanup(&conn, &prefix, async {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let sampler = tokio::spawn(status::run_sampler(
            conn.clone(),
            settings(&prefix),
            Duration::from_millis(200),
            rx,
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        while status::history(&conn, &prefix, Utc::now())
            .await
            .unwrap()
            .len()
            < 2
        {
            assert!(Instant::now() < deadline, "the sampler never sampled twice");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let history = status::history(&conn, &prefix, Utc::now()).await.unwrap();
        assert!(
            history
                .iter()
                .all(|s| s.depth() == 0 && s.done_per_min == 0)
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), sampler)
            .await
            .expect("the sampler stops within 10 s")
            .unwrap();
    })
    .await;
}
