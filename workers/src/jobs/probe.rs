//! The probe job: proves the runtime. It sleeps for its duration, fails transiently as often
//! as asked, and records `start_ms,end_ms,id,worker` in a Redis list on success so that tests
//! can check that runs for one taskId never overlapped.
use anyhow::Context;
use bbb_shared::jobs::Probe;
use redis::AsyncCommands;

use crate::runtime::{JobContext, JobError, JobResult};

pub async fn run(ctx: JobContext, job: Probe) -> JobResult {
    if job.crash {
        tracing::error!("probe {} aborts this process on purpose", job.id);
        std::process::abort();
    }
    let mut conn = ctx.queue.connection();
    let start = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(std::time::Duration::from_millis(job.duration_ms)).await;
    if job.fail_times > 0 {
        let failures: u32 = conn
            .incr(format!("{}:failures:{}", job.record_to, job.id), 1)
            .await
            .context("counting probe failures")
            .map_err(JobError::Transient)?;
        if failures <= job.fail_times {
            return Err(JobError::Transient(anyhow::anyhow!(
                "probe {} fails on purpose ({failures} of {})",
                job.id,
                job.fail_times
            )));
        }
    }
    let end = chrono::Utc::now().timestamp_millis();
    let record = format!("{start},{end},{},{}", job.id, ctx.worker);
    let _: () = conn
        .rpush(&job.record_to, record)
        .await
        .context("recording a probe run")
        .map_err(JobError::Transient)?;
    Ok(())
}
