//! The per-taskId lock: at most one job touching a given Taskcluster task runs at a time,
//! across every worker on every host.
//!
//! Protocol: `SET <prefix>:lock:<taskId> <token> NX PX <ttl>` acquires; a guard renews the
//! expiry every `ttl/3` while the job runs (compare-and-renew in Lua); release deletes the key
//! only if it still holds this owner's token (compare-and-delete), so a holder whose lock
//! expired can never free someone else's. A process killed with its lock held blocks the task
//! for at most `ttl`. Each acquisition also bumps a fencing counter, which handlers can compare
//! before a protected write.
use std::{sync::Arc, time::Duration};

use redis::{AsyncCommands, Script, aio::ConnectionManager};
use tokio::{sync::watch, task::JoinHandle};

/// How often [`Locks::acquire_within`] tries again.
pub const LOCK_POLL: Duration = Duration::from_millis(20);

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

#[derive(Clone)]
pub struct Locks {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    renew: Arc<Script>,
    release: Arc<Script>,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Locks {
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>, ttl: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            ttl,
            renew: Arc::new(Script::new(RENEW)),
            release: Arc::new(Script::new(RELEASE)),
        }
    }

    pub fn key(&self, task_id: &str) -> String {
        format!("{}:lock:{task_id}", self.prefix)
    }

    /// Tries for up to `patience`, every [`LOCK_POLL`]: most jobs hold a task for a few
    /// milliseconds (a Build's `started` event often arrives while the task-pending job that
    /// injected its request is finishing), so waiting briefly in place is much sooner than a
    /// re-queued job coming back. `Ok(None)` after that: the caller re-queues.
    pub async fn acquire_within(
        &self,
        task_id: &str,
        patience: Duration,
    ) -> redis::RedisResult<Option<LockGuard>> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(guard) = self.try_acquire(task_id).await? {
                return Ok(Some(guard));
            }
            if tokio::time::Instant::now() + LOCK_POLL > deadline {
                return Ok(None);
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// Tries once. `Ok(None)` means another job holds the task: the caller re-queues, it does
    /// not spin.
    pub async fn try_acquire(&self, task_id: &str) -> redis::RedisResult<Option<LockGuard>> {
        let key = self.key(task_id);
        let token = ulid::Ulid::generate().to_string();
        let mut conn = self.conn.clone();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let acquired: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await?;
        if acquired.is_none() {
            return Ok(None);
        }
        let fence: i64 = conn.incr(format!("{key}:fence"), 1).await?;
        let (lost_tx, lost_rx) = watch::channel(false);
        let renewer = tokio::spawn(renew_loop(
            conn.clone(),
            self.renew.clone(),
            key.clone(),
            token.clone(),
            self.ttl,
            lost_tx,
        ));
        Ok(Some(LockGuard {
            conn,
            release: self.release.clone(),
            key,
            token,
            fence,
            lost: lost_rx,
            renewer: Some(renewer),
        }))
    }
}

async fn renew_loop(
    mut conn: ConnectionManager,
    script: Arc<Script>,
    key: String,
    token: String,
    ttl: Duration,
    lost: watch::Sender<bool>,
) {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        match script
            .key(&key)
            .arg(&token)
            .arg(ttl_ms)
            .invoke_async::<i64>(&mut conn)
            .await
        {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(lock = %key, "lock {key} was lost (expired and taken over)");
                let _ = lost.send(true);
                return;
            }
            // A transient Redis error: keep trying until the ttl runs out.
            Err(e) => tracing::warn!(lock = %key, "renewing lock {key} failed: {e}"),
        }
    }
}

/// A held lock. Dropping it stops the renewal; call [`LockGuard::release`] to free it at once
/// (otherwise it frees itself when the ttl runs out).
#[derive(Debug)]
pub struct LockGuard {
    conn: ConnectionManager,
    release: Arc<Script>,
    key: String,
    token: String,
    fence: i64,
    lost: watch::Receiver<bool>,
    renewer: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Monotonic per task: a later holder always has a larger fence.
    pub fn fence(&self) -> i64 {
        self.fence
    }

    /// True once renewal found the lock gone (the job overran a Redis outage longer than ttl).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    pub async fn release(mut self) -> redis::RedisResult<bool> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let deleted: i64 = self
            .release
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(deleted == 1)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}
