//! `bbb-scheduler`: decides *when* the periodic scan runs; the worker pool does it.
//!
//! apalis-cron ticks every second; on each tick that is a multiple of `reflector.interval`
//! the scheduler enqueues one [`ReflectScan`] whose idempotency key holds the tick, so any
//! number of replicas together enqueue exactly one scan per tick. The scheduler holds no
//! state: ticks missed while every replica was down are not replayed, and need not be (the
//! next scan looks at everything).
//!
//! [`status`] is the status page the scheduler serves on its operations port, and the
//! sampler that keeps its hour of history and the queue gauges.
pub mod status;

use std::str::FromStr;

use apalis_cron::CronScheduler;
use bbb_shared::{
    jobs::ReflectScan,
    queue::{Enqueued, JobQueue},
};
use futures::StreamExt;
use tokio::sync::watch;

/// The ticks (epoch seconds) at which a scan is due: multiples of `interval`.
pub fn is_scan_tick(tick: u64, interval: u64) -> bool {
    tick.is_multiple_of(interval.max(1))
}

/// Enqueues the scan of one tick. `Duplicate` means another replica already did.
pub async fn enqueue_scan(queue: &JobQueue, tick: u64) -> anyhow::Result<Enqueued> {
    let tick = i64::try_from(tick)?;
    Ok(queue.enqueue(ReflectScan { tick }).await?)
}

/// Runs until `shutdown` turns true.
pub async fn run(queue: JobQueue, interval: u64, mut shutdown: watch::Receiver<bool>) {
    let every_second = match cron::Schedule::from_str("* * * * * *") {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("the scheduler's cron schedule does not parse: {e}");
            return;
        }
    };
    let mut ticks = Box::pin(CronScheduler::new(every_second).into_stream());
    // Every outcome exists from the start, at zero, so that rates and alerts work at once.
    for outcome in ["enqueued", "duplicate", "error"] {
        metrics::counter!("bbb_scheduler_ticks_total", "outcome" => outcome).increment(0);
    }
    tracing::info!(
        "scheduler: a scan every {interval} s (queue prefix {})",
        queue.settings().prefix
    );
    loop {
        let tick = tokio::select! {
            t = ticks.next() => t,
            _ = bbb_shared::process::stopped(&mut shutdown) => return,
        };
        let tick = match tick {
            Some(Ok(t)) => t.get_timestamp(),
            Some(Err(e)) => {
                tracing::warn!("scheduler tick failed: {e}");
                continue;
            }
            None => {
                tracing::error!("the cron stream ended");
                return;
            }
        };
        if !is_scan_tick(tick, interval) {
            continue;
        }
        match enqueue_scan(&queue, tick).await {
            Ok(outcome) => {
                let label = if outcome == Enqueued::New {
                    "enqueued"
                } else {
                    "duplicate"
                };
                metrics::counter!("bbb_scheduler_ticks_total", "outcome" => label).increment(1);
                tracing::debug!("scan of tick {tick}: {label}");
            }
            Err(e) => {
                metrics::counter!("bbb_scheduler_ticks_total", "outcome" => "error").increment(1);
                tracing::warn!(
                    "could not enqueue the scan of tick {tick}: {e:#}; the next tick covers it"
                );
            }
        }
    }
}
