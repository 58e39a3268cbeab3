//! A small `bbb demo` run end to end (emulators, the three bridge processes, every outcome),
//! then the last `/metrics` scrape of each process: the named families are there with
//! plausible values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

const TASKS: usize = 40;

/// The value of one sample line (`name{labels} value`), if the scrape has it.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The sum of every sample of a family whose line starts with `prefix`.
fn sum(scrape: &str, prefix: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn read(dir: &Path, binary: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{binary}.prom")))
        .unwrap_or_else(|e| panic!("{binary}.prom: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_run_ends_right_and_every_process_exposes_its_metrics() {
    let bin = Path::new(env!("CARGO_BIN_EXE_bbb"));
    for sibling in ["bbb-ingest", "bbb-worker", "bbb-scheduler"] {
        let path = bin.with_file_name(sibling);
        assert!(
            path.exists(),
            "{} missing: run the tests with `cargo test --workspace`",
            path.display()
        );
    }
    let tmp = std::env::temp_dir().join(format!(
        "bbb-demo-test-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    ));
    let metrics = tmp.join("metrics");
    let out = tokio::process::Command::new(bin)
        .args([
            "demo",
            "--tasks",
            &TASKS.to_string(),
            "--deadline-secs",
            "4",
        ])
        .args(["--timeout", "240"])
        .arg("--dir")
        .arg(tmp.join("run"))
        .arg("--metrics-out")
        .arg(&metrics)
        .env_remove("BBB_CONFIG")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bbb demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("every task ended as expected"), "{stdout}");
    for outcome in [
        "success",
        "failure",
        "retry-then-success",
        "cancel",
        "deadline",
        "malformed-payload",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(outcome)),
            "no {outcome} row:\n{stdout}"
        );
    }
    assert!(stdout.contains(&format!("{TASKS} tasks in")), "{stdout}");

    let ingest = read(&metrics, "bbb-ingest");
    assert!(
        sum(&ingest, "bbb_pulse_messages_total{") >= TASKS as f64,
        "every task-pending message was consumed:\n{ingest}"
    );
    assert!(ingest.contains("bbb_jobs_enqueued_total"), "{ingest}");

    let worker = read(&metrics, "bbb-worker");
    let pending_ok = sample(
        &worker,
        "bbb_jobs_total{kind=\"task-pending\",outcome=\"ok\"}",
    )
    .unwrap_or(0.0);
    assert!(pending_ok >= TASKS as f64, "task-pending ok: {pending_ok}");
    assert!(
        sum(
            &worker,
            "bbb_jobs_total{kind=\"build-finished\",outcome=\"ok\"}"
        ) > 0.0,
        "{worker}"
    );
    assert!(
        sum(&worker, "bbb_tc_call_seconds_count{") > TASKS as f64,
        "Taskcluster calls are timed:\n{worker}"
    );
    assert!(
        worker.contains("bbb_tc_call_seconds_bucket{"),
        "histograms have buckets"
    );
    assert!(sum(&worker, "bbb_db_statement_seconds_count{") > 0.0);
    assert!(sum(&worker, "bbb_selfserve_call_seconds_count{") > 0.0);

    let scheduler = read(&metrics, "bbb-scheduler");
    for family in [
        "bbb_scheduler_ticks_total",
        "bbb_queue_waiting",
        "bbb_queue_oldest_waiting_seconds",
        "bbb_workers_alive",
    ] {
        assert!(
            scheduler.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{scheduler}"
        );
    }
    assert!(
        sum(&scheduler, "bbb_workers_alive{") >= 6.0,
        "one live worker per job kind:\n{scheduler}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
