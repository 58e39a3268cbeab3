//! The scan's cost does not grow with a query per task: with 100,000 tracked tasks it issues
//! one page query and two batched scheduler-DB queries per page. Alone in its test binary, so
//! the process-wide statement counters see only this scan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/scan_fixture.rs"]
mod scan_fixture;

use bbb_shared::bridgedb::statements_run;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanning_100000_tracked_tasks_issues_three_queries_per_page() {
    const N: usize = 100_000;
    let f = scan_fixture::fixture(N).await;
    let before = ["list_tasks_page", "buildrequests", "builds_for"].map(statements_run);
    let started = std::time::Instant::now();
    let report = bbb_workers::jobs::reflect_scan::scan(&f.bridge, &f.queue, f.now)
        .await
        .unwrap();
    eprintln!("scan of {N} tracked tasks: {:?}", started.elapsed());
    let after = ["list_tasks_page", "buildrequests", "builds_for"].map(statements_run);
    assert_eq!(report.scanned, N);
    assert_eq!(
        report.queued,
        N / 1000,
        "only the tasks due for a reclaim get a check"
    );
    let pages = N / 500;
    assert_eq!(
        after[0] - before[0],
        pages as u64 + 1,
        "one page query per page (and the empty last one)"
    );
    assert_eq!(
        after[1] - before[1],
        pages as u64,
        "one buildrequests query per page"
    );
    assert_eq!(
        after[2] - before[2],
        pages as u64,
        "one builds query per page"
    );
    assert_eq!(
        f.queue.pending_count("task-check").await.unwrap(),
        (N / 1000) as u64
    );
    scan_fixture::cleanup(&f).await;
}
