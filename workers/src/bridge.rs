//! What the bridge's job handlers talk to, connected once per worker process, and how their
//! failures are classified for the runtime (transient: retry with backoff; permanent: dead
//! letter).
use std::sync::Arc;

use bbb_shared::{
    bridgedb::{BridgeDb, DbError},
    config::{ArtifactStorage, BuilderPattern, Config},
    selfserve::{SelfServe, SelfServeError},
    tc::{TcError, TcQueue},
};

use crate::{allowed::AllowedBuilders, runtime::JobError};

pub struct Bridge {
    pub tc: TcQueue,
    pub bbb: BridgeDb,
    pub sched: bbb_shared::schedulerdb::SchedulerDb,
    pub selfserve: SelfServe,
    pub allowed: AllowedBuilders,
    pub ignored: Vec<BuilderPattern>,
    pub restricted: Vec<BuilderPattern>,
    pub artifact_storage: ArtifactStorage,
    pub root_url: String,
    /// For legacy `s3` artifact uploads.
    pub http: reqwest::Client,
    /// The scan's interval, reclaim margin and page size.
    pub reflector: bbb_shared::config::ReflectorConfig,
    /// Redis, for state that must outlive a crashed attempt (an artifact upload in progress).
    pub redis: apalis_redis::ConnectionManager,
    pub redis_prefix: String,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("tc", &self.tc)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Connects to both databases and builds the clients.
    pub async fn connect(config: &Config) -> anyhow::Result<Arc<Bridge>> {
        use anyhow::Context;
        let bbb = BridgeDb::connect(&config.bbb_db)
            .await
            .with_context(|| format!("connecting to the bridge DB {}", config.bbb_db))?;
        let sched = bbb_shared::schedulerdb::SchedulerDb::connect(&config.buildbot_scheduler_db)
            .await
            .with_context(|| {
                format!(
                    "connecting to the scheduler DB {}",
                    config.buildbot_scheduler_db
                )
            })?;
        Ok(Arc::new(Bridge {
            tc: TcQueue::from_config(config)?,
            bbb,
            sched,
            selfserve: SelfServe::new(config.selfserve_url.clone()),
            allowed: AllowedBuilders::new(
                config.allowed_builders_url.clone(),
                config.allowed_builders.clone(),
            ),
            ignored: config.ignored_builders.clone(),
            restricted: config.restricted_builders.clone(),
            artifact_storage: config.artifact_storage,
            root_url: config.taskcluster.root_url.clone(),
            http: reqwest::Client::new(),
            reflector: config.reflector.clone(),
            redis: bbb_shared::queue::connect(&config.redis.url)
                .await
                .with_context(|| format!("connecting to Redis at {}", config.redis.url))?,
            redis_prefix: config.redis.prefix.clone(),
        }))
    }
}

/// Turns a peer's error into the runtime's retry decision.
pub trait Classify {
    fn job_error(self) -> JobError;
}

impl Classify for TcError {
    fn job_error(self) -> JobError {
        if self.is_transient() {
            JobError::Transient(self.into())
        } else {
            JobError::Permanent(self.into())
        }
    }
}

impl Classify for DbError {
    fn job_error(self) -> JobError {
        if self.is_transient() {
            JobError::Transient(self.into())
        } else {
            JobError::Permanent(self.into())
        }
    }
}

impl Classify for SelfServeError {
    fn job_error(self) -> JobError {
        if self.is_transient() {
            JobError::Transient(self.into())
        } else {
            JobError::Permanent(self.into())
        }
    }
}

/// `?`-friendly: `db.call().await.classify()?`.
pub trait ClassifyResult<T> {
    fn classify(self) -> Result<T, JobError>;
}

impl<T, E: Classify> ClassifyResult<T> for Result<T, E> {
    fn classify(self) -> Result<T, JobError> {
        self.map_err(Classify::job_error)
    }
}
