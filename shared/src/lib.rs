//! `bbb-shared`: everything more than one bbb process needs.
//!
//! # Layout
//! - [`config`]: the layered configuration (the original `config.json` shape, new keys,
//!   `TASKCLUSTER_*` / `BBB_*` environment overrides) and [`secret::Secret`], the type that
//!   keeps access tokens and passwords out of logs.
//! - [`dburl`]: database URLs in the original (SQLAlchemy) and sqlx forms.
//! - [`bridgedb`]: every SQL statement of the bridge's own database (tracked tasks), on
//!   PostgreSQL, MySQL/MariaDB and SQLite, with the migrations under `migrations/`.
//! - [`schedulerdb`]: every SQL statement against Buildbot 0.8's scheduler database, which
//!   Buildbot owns: the bridge reads and inserts rows, it never creates or alters tables.
//! - [`inspect`]: the snapshot of queues, Pulse queues and live workers operators look at.
//! - [`jobs`]: one type per job kind with its stable name, idempotency key and lock key.
//! - [`queue`]: idempotent enqueueing on Redis (through apalis-redis), dead letters.
//! - [`lock`]: the per-taskId Redis lock (token, expiry, renewal, compare-and-delete).
//! - [`ops`]: `--metrics-addr`: Prometheus `/metrics`, `/healthz`, `/readyz`.
//! - [`process`]: the flags every binary shares and the shutdown signal.
//! - [`selfserve`]: the BuildAPI self-serve client (cancel Builds and BuildRequests).
//! - [`tc`]: the Taskcluster queue client, its calls typed and their failures classified.
//! - [`stats`]: per-minute job outcome counters and the live-worker registry in Redis.
//! - [`telemetry`]: logging set-up in one place.
pub mod bridgedb;
pub mod config;
pub mod dburl;
pub mod inspect;
pub mod jobs;
pub mod lock;
pub mod ops;
pub mod process;
pub mod queue;
pub mod schedulerdb;
pub mod secret;
pub mod selfserve;
pub mod stats;
pub mod tc;
pub mod telemetry;
/// Fresh databases on the real servers for tests (feature `testing`).
#[cfg(feature = "testing")]
pub mod testing;
