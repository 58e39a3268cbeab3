//! `bbb-worker`: the interchangeable worker pool.
//!
//! # Layout
//! - [`runtime`]: apalis workers per job kind, the per-taskId lock around each job, retries
//!   with backoff, dead letters, supervision and graceful shutdown.
//! - [`jobs`]: one file per job handler and the one registration list.
//!
//! [`run`] wires them: it is what `main.rs` and the tests call.
pub mod allowed;
pub mod artifacts;
pub mod bridge;
pub mod jobs;
pub mod runtime;
pub mod validate;

use std::time::Duration;

use bbb_shared::{
    lock::Locks,
    queue::{JobQueue, QueueSettings},
};
use tokio::{sync::watch, task::JoinSet};

use crate::{
    jobs::Registration,
    runtime::{JobContext, RuntimeSettings},
};

/// Everything a worker process needs, already connected.
#[derive(Debug, Clone)]
pub struct WorkerSetup {
    pub queue_settings: QueueSettings,
    pub runtime: RuntimeSettings,
    pub lock_ttl: Duration,
    pub jobs: Registration,
    /// The bridge's peers, needed by the bridge's jobs.
    pub bridge: Option<std::sync::Arc<bridge::Bridge>>,
}

/// Runs the worker pool until `shutdown` turns true, then drains in-flight jobs and returns.
pub async fn run(
    conn: apalis_redis::ConnectionManager,
    setup: WorkerSetup,
    shutdown: watch::Receiver<bool>,
) {
    let queue = JobQueue::new(conn.clone(), setup.queue_settings.clone());
    let locks = Locks::new(
        conn.clone(),
        setup.queue_settings.prefix.clone(),
        setup.lock_ttl,
    );
    let ctx = JobContext {
        queue: queue.clone(),
        locks,
        worker: runtime::worker_name("pool", 0),
        bridge: setup.bridge.clone(),
    };
    let mut set = JoinSet::new();
    jobs::register(
        &mut set,
        &setup.jobs,
        &ctx,
        &setup.runtime,
        &conn,
        &shutdown,
    );
    set.spawn(janitor(queue, setup.jobs.clone(), shutdown.clone()));
    while set.join_next().await.is_some() {}
}

/// Frees the storage of finished jobs every few seconds.
async fn janitor(queue: JobQueue, jobs: Registration, mut shutdown: watch::Receiver<bool>) {
    let kinds = jobs.kinds();
    loop {
        for kind in &kinds {
            if let Err(e) = queue.vacuum(kind, 1000).await {
                tracing::debug!("vacuuming finished {kind} jobs failed: {e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
