//! The worker runtime: an apalis worker per job kind, supervised, each job run under the
//! per-taskId lock, with retries and dead letters handled here rather than by apalis-redis.
//!
//! Why not apalis-redis's own retries: it ignores `max_attempts` (25, hard-coded) and any
//! requested delay, and a job that kills its process is re-queued forever without counting an
//! attempt. So every job returns `Ok` to apalis once this runtime has decided its fate:
//! - success -> done;
//! - task locked by another job -> waits in place up to [`LOCK_PATIENCE`], then re-pushed with
//!   a short delay (not failed, not spun on);
//! - transient error -> re-pushed with capped exponential backoff, attempt + 1;
//! - permanent error, or attempts exhausted -> dead-letter list with the error;
//! - a job that crashes workers (its start count passes `max_attempts` without an outcome) ->
//!   dead-letter list.
//!
//! Supervision: any Redis error ends an apalis worker's run; the supervisor restarts it under
//! a new name (`host-pid-kind-incarnation`), because apalis-redis refuses a name whose
//! heartbeat is still fresh. Shutdown: the worker stops fetching and drains in-flight jobs;
//! locks stay renewed while a job drains, so a job re-queued as orphaned meanwhile finds its
//! task locked instead of running beside it.
use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use apalis::prelude::*;
use apalis_redis::{ConnectionManager, RedisStorage};
use bbb_shared::{
    jobs::Job,
    lock::Locks,
    queue::{DeadLetter, Envelope, JobQueue},
    stats::{self, Outcome, WorkerInfo},
};
use chrono::Utc;
use redis::AsyncCommands;
use tokio::sync::watch;

/// How long a job waits in place for its task's lock before it is re-queued with
/// `lock_busy_delay`: long enough for the short jobs that usually hold it, short enough not to
/// tie up a worker slot behind a long one.
pub const LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth retrying with backoff: 5xx, 429, connection errors, a busy database.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help: recorded in the dead-letter list.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
    /// Another job holds a task this job needs: re-queue shortly.
    #[error("task {0} is locked by another job")]
    Locked(String),
}

pub type JobResult = Result<(), JobError>;
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a handler gets besides its job.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub queue: JobQueue,
    pub locks: Locks,
    /// This worker's name (host-pid-kind-incarnation).
    pub worker: String,
    /// The bridge's peers; `None` in a pool that runs only the probe job.
    pub bridge: Option<std::sync::Arc<crate::bridge::Bridge>>,
}

impl JobContext {
    /// The bridge's peers, or a permanent error in a pool started without them.
    pub fn bridge(&self) -> Result<&crate::bridge::Bridge, JobError> {
        self.bridge.as_deref().ok_or_else(|| {
            JobError::Permanent(anyhow::anyhow!("this worker has no bridge connections"))
        })
    }
}

type HandlerFn<J> = Arc<dyn Fn(JobContext, J) -> BoxFuture<JobResult> + Send + Sync>;

/// Retry and lock policy.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub lock_busy_delay: Duration,
    /// A job that found its task locked this many times in a row is dead-lettered.
    pub max_lock_waits: u32,
    /// How often an idle worker looks for due jobs.
    pub poll_interval: Duration,
}

impl RuntimeSettings {
    /// Delay before retry number `attempt` (1-based): base * 2^(attempt-1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.retry_base
            .checked_mul(factor)
            .map_or(self.retry_max, |d| d.min(self.retry_max))
    }
}

/// One job kind, bound to its handler.
pub struct Runner<J: Job> {
    handler: HandlerFn<J>,
    ctx: JobContext,
    settings: RuntimeSettings,
}

impl<J: Job> Runner<J> {
    pub fn new<F, Fut>(ctx: JobContext, settings: RuntimeSettings, handler: F) -> Self
    where
        F: Fn(JobContext, J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        Self {
            handler: Arc::new(move |c, j| Box::pin(handler(c, j))),
            ctx,
            settings,
        }
    }

    fn starts_key(&self) -> String {
        format!("{}:starts", self.ctx.queue.settings().queue_name(J::NAME))
    }

    /// Runs one job to its outcome. Returns `Err` only when Redis itself failed, so that
    /// apalis keeps the job.
    pub async fn process(&self, env: Envelope<J>, id: &str) -> Result<(), QueueFailure> {
        let mut conn = self.ctx.queue.connection();
        let starts: u32 = conn.hincr(self.starts_key(), id, 1).await?;
        let _: () = conn.expire(self.starts_key(), 7 * 24 * 3600).await?;
        let span = tracing::info_span!("job", kind = J::NAME, key = %env.key, job_id = %id);
        let _enter = span.enter();
        if starts > self.settings.max_attempts {
            tracing::error!(
                "job {} ({}) started {starts} times without finishing: a worker crashed on it each time; dead-lettered",
                env.key,
                J::NAME
            );
            self.dead_letter(&env, format!("crashed a worker {} times", starts - 1))
                .await?;
            self.count(Outcome::Failed).await;
            return self.forget(id).await;
        }
        drop(_enter);

        let started = std::time::Instant::now();
        let outcome = self.run_locked(&env).await;
        let elapsed = started.elapsed();
        let outcome_label = match &outcome {
            Ok(()) => "ok",
            Err(JobError::Locked(_)) => "locked",
            Err(JobError::Transient(_)) => "transient",
            Err(JobError::Permanent(_)) => "permanent",
        };
        metrics::counter!("bbb_jobs_total", "kind" => J::NAME, "outcome" => outcome_label)
            .increment(1);
        metrics::histogram!("bbb_job_duration_seconds", "kind" => J::NAME)
            .record(elapsed.as_secs_f64());

        match outcome {
            Ok(()) => {
                tracing::debug!(kind = J::NAME, key = %env.key, "job {} done", env.key);
                self.count(Outcome::Done).await;
            }
            Err(JobError::Locked(task_id)) if env.lock_waits >= self.settings.max_lock_waits => {
                tracing::error!(
                    task_id = %task_id,
                    "job {} waited {} times for task {task_id}; dead-lettered",
                    env.key,
                    env.lock_waits
                );
                self.dead_letter(
                    &env,
                    format!(
                        "task {task_id} stayed locked through {} waits",
                        env.lock_waits
                    ),
                )
                .await?;
                self.count(Outcome::Failed).await;
            }
            Err(JobError::Locked(task_id)) => {
                let mut next = env.clone();
                next.lock_waits += 1;
                // Spread the retries of jobs queued behind the same lock.
                let jitter = Duration::from_millis(rand::random_range(0..500));
                self.repush(&next, self.settings.lock_busy_delay + jitter)
                    .await?;
                metrics::counter!("bbb_lock_waits_total", "kind" => J::NAME).increment(1);
                tracing::debug!(
                    task_id = %task_id,
                    "job {} waits: task {task_id} is locked by another job",
                    env.key
                );
            }
            Err(JobError::Transient(e)) if env.attempt + 1 < self.settings.max_attempts => {
                let mut next = env.clone();
                next.attempt += 1;
                next.last_error = Some(format!("{e:#}"));
                let delay = self.settings.backoff(next.attempt);
                tracing::warn!(
                    "job {} failed (attempt {} of {}), retrying in {delay:?}: {e:#}",
                    env.key,
                    next.attempt,
                    self.settings.max_attempts
                );
                self.repush(&next, delay).await?;
                self.count(Outcome::Retried).await;
            }
            Err(e) => {
                let attempts = env.attempt + 1;
                tracing::error!(
                    "job {} failed for good after {attempts} attempt(s); dead-lettered: {e}",
                    env.key
                );
                let mut last = env.clone();
                last.attempt = attempts;
                self.dead_letter(&last, e.to_string()).await?;
                self.count(Outcome::Failed).await;
            }
        }
        self.forget(id).await
    }

    /// Counts an outcome for `bbb queue`; a failure to count is not the job's failure.
    async fn count(&self, outcome: Outcome) {
        let mut conn = self.ctx.queue.connection();
        let prefix = &self.ctx.queue.settings().prefix;
        if let Err(e) = stats::record(&mut conn, prefix, J::NAME, outcome).await {
            tracing::debug!("counting a {} outcome failed: {e}", J::NAME);
        }
    }

    async fn run_locked(&self, env: &Envelope<J>) -> JobResult {
        let guard = match env.job.lock_key() {
            Some(task_id) => match self.ctx.locks.acquire_within(&task_id, LOCK_PATIENCE).await {
                Ok(Some(g)) => Some(g),
                Ok(None) => return Err(JobError::Locked(task_id)),
                Err(e) => return Err(JobError::Transient(e.into())),
            },
            None => None,
        };
        let result = (self.handler)(self.ctx.clone(), env.job.clone()).await;
        if let Some(g) = guard {
            if g.is_lost() {
                tracing::warn!("job {} ran past the loss of its lock", env.key);
            }
            if let Err(e) = g.release().await {
                // The lock expires by itself; the outcome stands.
                tracing::warn!("releasing the lock of job {} failed: {e}", env.key);
            }
        }
        result
    }

    async fn repush(&self, next: &Envelope<J>, delay: Duration) -> Result<(), QueueFailure> {
        let id = format!("{}-a{}-l{}", next.origin_id, next.attempt, next.lock_waits);
        self.ctx.queue.push_envelope(&id, next, delay).await?;
        Ok(())
    }

    async fn dead_letter(&self, env: &Envelope<J>, reason: String) -> Result<(), QueueFailure> {
        let letter = DeadLetter {
            id: ulid::Ulid::generate().to_string(),
            source: "job".into(),
            queue: J::NAME.into(),
            reason,
            failed_at: Utc::now(),
            attempts: env.attempt,
            exchange: None,
            routing_key: None,
            body: None,
            body_truncated: false,
            envelope: serde_json::to_value(env).ok(),
        };
        self.ctx.queue.dead_letter(&letter).await?;
        Ok(())
    }

    async fn forget(&self, id: &str) -> Result<(), QueueFailure> {
        let mut conn = self.ctx.queue.connection();
        let _: () = conn.hdel(self.starts_key(), id).await?;
        Ok(())
    }
}

/// Redis failed while recording a job's outcome: apalis keeps the job and it runs again.
#[derive(Debug, thiserror::Error)]
#[error("recording the job outcome failed: {0}")]
pub struct QueueFailure(String);

impl From<redis::RedisError> for QueueFailure {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

impl From<bbb_shared::queue::QueueError> for QueueFailure {
    fn from(e: bbb_shared::queue::QueueError) -> Self {
        Self(e.to_string())
    }
}

async fn apalis_handler<J: Job>(
    env: Envelope<J>,
    id: TaskId,
    runner: Data<Arc<Runner<J>>>,
) -> Result<(), BoxDynError> {
    runner.process(env, &id.to_string()).await?;
    Ok(())
}

/// This host's name (the container's name under Docker).
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// A unique name per worker incarnation.
pub fn worker_name(kind: &str, incarnation: u64) -> String {
    let host = host_name();
    let nonce: u16 = rand::random();
    format!(
        "{host}-{}-{kind}-{incarnation}-{nonce:04x}",
        std::process::id()
    )
}

/// Runs the apalis worker of one job kind until `shutdown` turns true, restarting it with
/// capped backoff whenever it stops on an error.
pub async fn supervise<J: Job>(
    runner: Arc<Runner<J>>,
    conn: ConnectionManager,
    mut shutdown: watch::Receiver<bool>,
) {
    let settings = runner.ctx.queue.settings().clone();
    let concurrency = runner.settings.concurrency.max(1);
    let poll = runner.settings.poll_interval;
    let mut incarnation = 0u64;
    let mut backoff = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            return;
        }
        incarnation += 1;
        let name = worker_name(J::NAME, incarnation);
        let storage: RedisStorage<Envelope<J>> =
            RedisStorage::new(conn.clone()).with_config(settings.apalis_config(J::NAME));
        let backend = storage.poll_with_interval(poll);
        let worker = WorkerBuilder::new(name.clone())
            .backend(backend)
            .concurrency(concurrency)
            .data(runner.clone())
            .build(apalis_handler::<J>);
        let mut stop = shutdown.clone();
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        };
        let started = std::time::Instant::now();
        tracing::info!(worker = %name, "worker {name} takes {} jobs", J::NAME);
        let info = WorkerInfo {
            kind: J::NAME.into(),
            concurrency,
            host: host_name(),
            pid: std::process::id(),
            started_at: Utc::now(),
        };
        let mut registry = conn.clone();
        if let Err(e) = stats::register_worker(&mut registry, &settings.prefix, &name, &info).await
        {
            tracing::debug!(worker = %name, "registering worker {name} failed: {e}");
        }
        let watchdog = stalled(
            conn.clone(),
            settings.apalis_config(J::NAME).workers_set(),
            name.clone(),
            settings.heartbeat * u32::try_from(settings.missed_heartbeats + 1).unwrap_or(u32::MAX),
            shutdown.clone(),
        );
        let drained = tokio::select! {
            outcome = worker.run_until(signal) => match outcome {
                Ok(()) => *shutdown.borrow(),
                Err(e) => {
                    metrics::counter!("bbb_worker_restarts_total", "kind" => J::NAME).increment(1);
                    tracing::warn!(worker = %name, "worker {name} stopped on an error, restarting in {backoff:?}: {e}");
                    false
                }
            },
            silent = watchdog => {
                // Its in-flight jobs are orphans now: another worker re-queues them, and the
                // per-task locks keep them from running twice at once.
                metrics::counter!("bbb_worker_restarts_total", "kind" => J::NAME).increment(1);
                tracing::warn!(worker = %name, "worker {name} sent no heartbeat for {silent:?}: restarting it");
                false
            }
        };
        if let Err(e) = stats::unregister_worker(&mut registry, &settings.prefix, &name).await {
            tracing::debug!(worker = %name, "unregistering worker {name} failed: {e}");
        }
        if drained {
            tracing::info!(worker = %name, "worker {name} drained and stopped");
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(200);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Resolves when the worker `name` has not refreshed its heartbeat in Redis for `limit` (a
/// worker whose poll loop lost its wake-up stops silently); never while shutting down, when
/// a draining worker legitimately stops heartbeating.
async fn stalled(
    mut conn: ConnectionManager,
    workers_set: String,
    name: String,
    limit: Duration,
    shutdown: watch::Receiver<bool>,
) -> Duration {
    let period = (limit / 4).max(Duration::from_millis(250));
    loop {
        tokio::time::sleep(period).await;
        if *shutdown.borrow() {
            std::future::pending::<()>().await;
        }
        let seen: Option<f64> = match conn.zscore(&workers_set, &name).await {
            Ok(seen) => seen,
            Err(_) => continue, // Redis trouble ends the worker's run by itself
        };
        let Some(seen) = seen else { continue };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let silent = Duration::from_secs_f64((now - seen).max(0.0));
        if silent > limit {
            return silent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = RuntimeSettings {
            concurrency: 1,
            max_attempts: 10,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            lock_busy_delay: Duration::from_secs(1),
            max_lock_waits: 10,
            poll_interval: Duration::from_millis(100),
        };
        let got: Vec<u64> = (1..=7).map(|a| s.backoff(a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(s.backoff(200), Duration::from_secs(30));
    }
}
