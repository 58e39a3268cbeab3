//! Benchmark: the periodic scan over many tracked tasks (SQLite). Prints the scan time.
//! `cargo bench -p bbb-workers --bench scan [-- ROWS]` (default 100,000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/scan_fixture.rs"]
mod scan_fixture;

#[tokio::main]
async fn main() {
    let rows: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let f = scan_fixture::fixture(rows).await;
    let mut times = Vec::new();
    for i in 0..3 {
        let started = std::time::Instant::now();
        let report = bbb_workers::jobs::reflect_scan::scan(&f.bridge, &f.queue, f.now + i)
            .await
            .unwrap();
        times.push(started.elapsed());
        assert_eq!(report.scanned, rows);
    }
    times.sort();
    let median = times[1];
    println!(
        "scan: {rows} tracked tasks in {:.3} s (median of 3; {:.0} tasks/s)",
        median.as_secs_f64(),
        rows as f64 / median.as_secs_f64()
    );
    scan_fixture::cleanup(&f).await;
}
