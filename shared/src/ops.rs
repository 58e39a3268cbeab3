//! The operations endpoint every process serves with `--metrics-addr`: Prometheus
//! `/metrics`, liveness `/healthz` and readiness `/readyz`.
//!
//! `/healthz` answers 200 while the process runs (a container orchestrator restarts it
//! otherwise). `/readyz` runs the process's readiness checks (Redis, RabbitMQ, databases)
//! concurrently, each with a short timeout, and answers 200 when all pass, 503 naming the
//! failing ones otherwise. A process may mount more routes (the scheduler's status page).
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Histogram buckets for every `*_seconds` metric: from a fast Redis round trip to a slow
/// Taskcluster call.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The named checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(String, CheckFn)>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.checks.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check; its error text is shown in `/readyz` (never put secrets in it).
    pub fn check<F, Fut, E>(mut self, name: &str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let f = Arc::new(f);
        self.checks.push((
            name.to_owned(),
            Arc::new(move || {
                let fut = f();
                Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
            }),
        ));
        self
    }

    /// Adds a Redis `PING` check on `conn`.
    pub fn redis(self, conn: &redis::aio::ConnectionManager) -> Self {
        let conn = conn.clone();
        self.check("redis", move || {
            let mut conn = conn.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(drop)
            }
        })
    }

    /// Runs every check; the failures, by name, with their reason.
    pub async fn failures(&self) -> Vec<(String, String)> {
        let runs = self.checks.iter().map(|(name, f)| {
            let fut = f();
            async move {
                match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some((name.clone(), e)),
                    Err(_) => Some((name.clone(), format!("no answer within {CHECK_TIMEOUT:?}"))),
                }
            }
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The process's Prometheus recorder, installed on first use; every `metrics::` call of the
/// process is recorded from then on.
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    // Two threads racing here: the loser's recorder is dropped and its handle unused.
    if HANDLE.set(handle.clone()).is_ok() {
        metrics::set_global_recorder(recorder)
            .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
        describe();
        return Ok(handle);
    }
    HANDLE
        .get()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the metrics recorder vanished"))
}

/// One-line help texts of the main families, shown by Prometheus and Grafana.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "bbb_jobs_total",
        "Jobs run, by kind and outcome (ok, locked, transient, permanent)"
    );
    describe_histogram!("bbb_job_duration_seconds", "Time one job run took, by kind");
    describe_counter!(
        "bbb_dead_letters_total",
        "Messages and jobs put in the dead-letter list"
    );
    describe_counter!(
        "bbb_pulse_messages_total",
        "Pulse messages consumed, by exchange"
    );
    describe_counter!(
        "bbb_lock_waits_total",
        "Jobs re-queued because their task was locked by another job"
    );
    describe_counter!(
        "bbb_reconciliations_total",
        "Repairs made by the periodic scan, by kind"
    );
    describe_histogram!(
        "bbb_tc_call_seconds",
        "Taskcluster queue call latency, by call and status"
    );
    describe_histogram!(
        "bbb_selfserve_call_seconds",
        "Self-serve call latency, by call and status"
    );
    describe_histogram!(
        "bbb_db_statement_seconds",
        "Database statement latency, by statement"
    );
    describe_gauge!("bbb_queue_waiting", "Jobs ready to run, by kind");
    describe_gauge!(
        "bbb_queue_oldest_waiting_seconds",
        "Age of the oldest job ready to run, by kind"
    );
}

/// What `/metrics`, `/healthz` and `/readyz` need.
#[derive(Clone)]
struct OpsState {
    prometheus: PrometheusHandle,
    readiness: Readiness,
    process: &'static str,
}

/// The routes of the operations endpoint.
pub fn router(process: &'static str, readiness: Readiness) -> anyhow::Result<Router> {
    let state = OpsState {
        prometheus: prometheus()?,
        readiness,
        process,
    };
    Ok(Router::new()
        .route("/metrics", get(metrics_route))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state))
}

async fn metrics_route(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.prometheus.render(),
    )
}

async fn healthz(State(s): State<OpsState>) -> impl IntoResponse {
    format!("ok: {} is running\n", s.process)
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    let failures = s.readiness.failures().await;
    if failures.is_empty() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let mut body = String::from("not ready\n");
    for (name, reason) in failures {
        body.push_str(&format!("{name}: {reason}\n"));
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// Binds `addr` (failing at once when it cannot) and serves `routes` plus the operations
/// routes until `shutdown` turns true. Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    process: &'static str,
    readiness: Readiness,
    routes: Option<Router>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let mut app = router(process, readiness)?;
    if let Some(routes) = routes {
        app = app.merge(routes);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics address {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let prometheus = prometheus()?;
    tokio::spawn(async move {
        // Keeps histograms' rolling summaries and idle metrics tidy.
        let upkeep = async {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                prometheus.run_upkeep();
            }
        };
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { crate::process::stopped(&mut shutdown).await });
        tokio::select! {
            r = server => if let Err(e) = r {
                tracing::error!("the metrics endpoint on {bound} stopped: {e}");
            },
            () = upkeep => {}
        }
    });
    tracing::info!("metrics on http://{bound}/metrics, health on /healthz and /readyz");
    Ok(bound)
}
