//! `bbb-scheduler`: decides *when* periodic work happens; the workers do it.
//!
//! It holds no state of its own and may run as any number of replicas.
use bbb_shared::queue::JobQueue;
use tokio::sync::watch;

/// Runs until `shutdown` turns true.
pub async fn run(queue: JobQueue, mut shutdown: watch::Receiver<bool>) {
    tracing::info!(
        "scheduler ready (queue prefix {}), no periodic job kinds registered",
        queue.settings().prefix
    );
    let _ = shutdown.wait_for(|s| *s).await;
}
