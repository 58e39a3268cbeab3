//! The bridge's own database ("bbb db"): the tracked-task table `tasks` and every SQL
//! statement on it, on PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! # The table
//! One row per Taskcluster task the bridge has turned into a BuildRequest (BRIDGE.md, "Tracked
//! task"). It is the original bridge's table, adopted in place by migration 0001 (a database
//! that already has it keeps its rows), plus the nullable columns of migration 0002. The
//! migrations live in `migrations/<engine>/` at the workspace root and are embedded in the
//! binary.
//!
//! # Invariants
//! - (taskId, runId) is unique: [`BridgeDb::insert_task`] is the idempotency point of task
//!   creation, a duplicate returns `false` and never an error.
//! - In normal operation there is one row per taskId: a rerun moves the row's runId forward
//!   ([`BridgeDb::update_run_id`]) instead of inserting a second row. Rows adopted from the
//!   original may break this, so every read that returns "the" task takes its highest runId.
//! - All times are integer epoch seconds, as in the original.
//!
//! # Engines
//! Each statement is written twice at most (`Stmt`): once for PostgreSQL and SQLite (both take
//! `"quoted"` mixed-case names and `$n` placeholders) and once for MySQL/MariaDB (bare names,
//! which MySQL matches without regard to case, and `?`). Integer columns are `INTEGER` as the
//! original made them, so PostgreSQL reads them through `CAST(.. AS BIGINT)` to decode as `i64`.
//!
//! This module also holds the plumbing that [`crate::schedulerdb`] shares: [`DbError`] and the
//! per-engine connection pool.
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::dburl::{DbUrl, Engine};

/// A failure of either database. Carries the masked URL or the statement's name, never a
/// password; the driver's message is part of the text.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to database {url}: {error}")]
    Connect { url: String, error: sqlx::Error },
    #[error("migrating database {url} failed: {error}")]
    Migrate {
        url: String,
        error: sqlx::migrate::MigrateError,
    },
    #[error("database statement {statement} failed: {error}")]
    Query {
        statement: &'static str,
        error: sqlx::Error,
    },
}

impl DbError {
    /// Whether trying again later may succeed: the server is unreachable or restarting, the
    /// pool is exhausted, a lock could not be had in time, or the statement kept losing
    /// deadlocks after the few immediate retries. Everything else (refused credentials, bad
    /// SQL, constraint violations, undecodable rows, migration errors) needs a human.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Connect { error, .. } => !matches!(
                error,
                sqlx::Error::Configuration(_) | sqlx::Error::Database(_)
            ),
            DbError::Migrate { .. } => false,
            DbError::Query { error, .. } => match error {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(e) => {
                    is_deadlock_victim(error)
                        || is_lock_timeout(error)
                        // PostgreSQL: admin/crash shutdown, cannot_connect_now.
                        || matches!(e.code().as_deref(), Some("57P01" | "57P02" | "57P03"))
                }
                _ => false,
            },
        }
    }
}

/// The statement lost a lock race and was rolled back at once; running it again is safe and
/// usually succeeds. InnoDB in particular picks deadlock victims among concurrent single-row
/// writes to neighbouring index entries.
pub(crate) fn is_deadlock_victim(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(e) = error else {
        return false;
    };
    if let Some(mysql) = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return mysql.number() == 1213; // ER_LOCK_DEADLOCK
    }
    matches!(
        e.code().as_deref(),
        // PostgreSQL: serialization_failure, deadlock_detected.
        Some("40001" | "40P01")
        // SQLite (extended codes), returned without waiting: LOCKED, LOCKED_SHAREDCACHE,
        // BUSY_SNAPSHOT (a WAL reader that became a writer after someone else wrote).
        | Some("6" | "262" | "517")
    )
}

/// The statement waited for a lock as long as the server lets it (MySQL's
/// innodb_lock_wait_timeout, SQLite's busy timeout): worth trying later, not at once.
fn is_lock_timeout(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(e) = error else {
        return false;
    };
    if let Some(mysql) = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return mysql.number() == 1205; // ER_LOCK_WAIT_TIMEOUT
    }
    // SQLite: BUSY, BUSY_RECOVERY, BUSY_TIMEOUT.
    matches!(e.code().as_deref(), Some("5" | "261" | "773"))
}

/// How many times a statement runs when it keeps being picked as a deadlock victim.
pub(crate) const DEADLOCK_ATTEMPTS: u32 = 4;

/// Pause before running a statement again after losing a deadlock: 10, 40, 160 ms, with
/// jitter so that the two sides do not meet again.
pub(crate) fn deadlock_backoff(attempt: u32) -> Duration {
    let base = 10u64 << (2 * attempt.saturating_sub(1).min(4));
    Duration::from_millis(base + rand::random_range(0..=base))
}

/// Connections per pool: each process runs a handful of concurrent jobs, and a database
/// shared by many replicas must not run out of connections.
const MAX_CONNECTIONS: u32 = 5;
/// How long a statement waits for a free connection before failing (transiently).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an SQLite writer waits for another writer instead of failing with "database is
/// locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most values bound in one `WHERE .. IN (..)`: SQLite accepts 32766 parameters, MySQL
/// 65535; a longer list is read in several statements.
pub(crate) const IN_LIST_CHUNK: usize = 1000;

/// A connection pool of one of the three engines.
pub(crate) enum Pool {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// How to open an SQLite database.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqliteMode {
    /// Our own database: switch it to WAL so readers never block the writer and concurrent
    /// workers wait for each other rather than fail.
    OwnWal,
    /// Someone else's (Buildbot's): leave its journal mode alone, only wait when busy.
    Foreign,
}

impl Pool {
    pub(crate) async fn connect(url: &DbUrl, sqlite_mode: SqliteMode) -> Result<Pool, DbError> {
        let err = |error| DbError::Connect {
            url: url.masked(),
            error,
        };
        Ok(match url.engine() {
            Engine::Postgres => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(url.expose())
                    .await
                    .map_err(err)?,
            ),
            Engine::MySql => Pool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(url.expose())
                    .await
                    .map_err(err)?,
            ),
            Engine::Sqlite => {
                let in_memory = url.expose().contains(":memory:");
                let mut options = SqliteConnectOptions::from_str(url.expose())
                    .map_err(err)?
                    .busy_timeout(SQLITE_BUSY_TIMEOUT);
                if sqlite_mode == SqliteMode::OwnWal && !in_memory {
                    options = options
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal);
                }
                let mut pool = SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT);
                if in_memory {
                    // An in-memory database lives as long as one of its connections does.
                    pool = pool
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                }
                Pool::Sqlite(pool.connect_with(options).await.map_err(err)?)
            }
        })
    }

    pub(crate) fn engine(&self) -> Engine {
        match self {
            Pool::Postgres(_) => Engine::Postgres,
            Pool::MySql(_) => Engine::MySql,
            Pool::Sqlite(_) => Engine::Sqlite,
        }
    }

    /// Runs `SELECT 1`: the readiness check.
    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Pool::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
            Pool::MySql(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
            Pool::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Pool::Postgres(p) => p.close().await,
            Pool::MySql(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
}

/// One SQL statement in its two spellings. Both spellings take the same parameters in the same
/// order (MySQL's `?` are positional, so the standard spelling numbers `$1, $2, ..` in order of
/// appearance and never reuses one).
pub(crate) struct Stmt {
    /// Names the statement in errors and logs.
    pub(crate) name: &'static str,
    /// PostgreSQL and SQLite.
    pub(crate) standard: &'static str,
    /// MySQL and MariaDB.
    pub(crate) mysql: &'static str,
}

/// Runs `$body` against the pool of whichever engine `$pool` is, with `$p` bound to the
/// engine's pool and `$sql` to the statement's text in that engine's spelling. `$body` is an
/// expression of type `Result<T, sqlx::Error>` (it is type-checked once per engine, so it may use
/// any sqlx API generic over the database). A deadlock victim runs it again (it was rolled back),
/// up to [`DEADLOCK_ATTEMPTS`] times; errors become [`DbError::Query`] naming the statement.
macro_rules! on_pool {
    ($pool:expr, $stmt:expr, |$p:ident, $sql:ident| $body:expr) => {{
        let stmt: &$crate::bridgedb::Stmt = $stmt;
        let mut attempt: u32 = 1;
        let started = ::std::time::Instant::now();
        loop {
            $crate::bridgedb::count_statement(stmt.name);
            let result = match $pool {
                $crate::bridgedb::Pool::Postgres($p) => {
                    let $sql = stmt.standard;
                    $body
                }
                $crate::bridgedb::Pool::MySql($p) => {
                    let $sql = stmt.mysql;
                    $body
                }
                $crate::bridgedb::Pool::Sqlite($p) => {
                    let $sql = stmt.standard;
                    $body
                }
            };
            match result {
                Err(error)
                    if attempt < $crate::bridgedb::DEADLOCK_ATTEMPTS
                        && $crate::bridgedb::is_deadlock_victim(&error) =>
                {
                    ::tracing::debug!(
                        db.statement = stmt.name,
                        db.attempt = attempt,
                        %error,
                        "statement {} lost a deadlock; running it again",
                        stmt.name
                    );
                    ::tokio::time::sleep($crate::bridgedb::deadlock_backoff(attempt)).await;
                    attempt += 1;
                }
                result => {
                    ::metrics::histogram!("bbb_db_statement_seconds", "statement" => stmt.name)
                        .record(started.elapsed().as_secs_f64());
                    if result.is_err() {
                        ::metrics::counter!("bbb_db_errors_total", "statement" => stmt.name)
                            .increment(1);
                    }
                    break result.map_err(|error| $crate::bridgedb::DbError::Query {
                        statement: stmt.name,
                        error,
                    });
                }
            }
        }
    }};
}
pub(crate) use on_pool;

static STATEMENTS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<&'static str, u64>>,
> = std::sync::LazyLock::new(Default::default);

pub(crate) fn count_statement(name: &'static str) {
    if let Ok(mut map) = STATEMENTS.lock() {
        *map.entry(name).or_default() += 1;
    }
}

/// How many times this process ran the named statement (of either database module), retries
/// included: lets tests and benchmarks assert how many queries an operation costs.
pub fn statements_run(name: &str) -> u64 {
    STATEMENTS
        .lock()
        .map(|map| map.get(name).copied().unwrap_or(0))
        .unwrap_or(0)
}

/// One row of `tasks`. `buildername` and `branch` are NULL on rows adopted from the original.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TrackedTask {
    pub task_id: String,
    pub run_id: i64,
    pub buildrequest_id: Option<i64>,
    /// task.created, epoch s.
    pub created_date: i64,
    /// When the bridge took the task, epoch s.
    pub processed_date: i64,
    /// The current run's claim expiry, epoch s; `None` until claimed.
    pub taken_until: Option<i64>,
    pub buildername: Option<String>,
    pub branch: Option<String>,
    /// The Build holding the current run's claim (`<master>/<builder>/<number>`).
    pub claimed_by: Option<String>,
    /// The task's `expires`, epoch s (artifacts may not outlive it).
    pub task_expires: Option<i64>,
}

/// The columns of [`TrackedTask`], aliased to its field names.
macro_rules! standard_columns {
    () => {
        r#""taskId" AS task_id, CAST("runId" AS BIGINT) AS run_id, CAST("buildrequestId" AS BIGINT) AS buildrequest_id, CAST("createdDate" AS BIGINT) AS created_date, CAST("processedDate" AS BIGINT) AS processed_date, CAST("takenUntil" AS BIGINT) AS taken_until, buildername, branch, "claimedBy" AS claimed_by, CAST("taskExpires" AS BIGINT) AS task_expires"#
    };
}
macro_rules! mysql_columns {
    () => {
        "taskId AS task_id, runId AS run_id, buildrequestId AS buildrequest_id, createdDate AS created_date, processedDate AS processed_date, takenUntil AS taken_until, buildername, branch, claimedBy AS claimed_by, taskExpires AS task_expires"
    };
}

const INSERT_TASK: Stmt = Stmt {
    name: "insert_task",
    standard: r#"INSERT INTO tasks ("taskId", "runId", "buildrequestId", "createdDate", "processedDate", "takenUntil", buildername, branch, "taskExpires") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING"#,
    // No upsert form here: MySQL's ON DUPLICATE KEY UPDATE reports a found row as affected
    // (sqlx connects with CLIENT_FOUND_ROWS) and INSERT IGNORE would also swallow truncation.
    // The duplicate-key error is recognised instead.
    mysql: "INSERT INTO tasks (taskId, runId, buildrequestId, createdDate, processedDate, takenUntil, buildername, branch, taskExpires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
};

const GET_TASK: Stmt = Stmt {
    name: "get_task",
    standard: concat!(
        "SELECT ",
        standard_columns!(),
        r#" FROM tasks WHERE "taskId" = $1 ORDER BY "runId" DESC LIMIT 1"#
    ),
    mysql: concat!(
        "SELECT ",
        mysql_columns!(),
        " FROM tasks WHERE taskId = ? ORDER BY runId DESC LIMIT 1"
    ),
};

/// Prefix: the caller appends the bound list and `)`.
const TASKS_BY_BUILDREQUEST_IDS: Stmt = Stmt {
    name: "tasks_by_buildrequest_ids",
    standard: concat!(
        "SELECT ",
        standard_columns!(),
        r#" FROM tasks WHERE "buildrequestId" IN ("#
    ),
    mysql: concat!(
        "SELECT ",
        mysql_columns!(),
        " FROM tasks WHERE buildrequestId IN ("
    ),
};

const SET_BUILDREQUEST_ID: Stmt = Stmt {
    name: "set_buildrequest_id",
    standard: r#"UPDATE tasks SET "buildrequestId" = $1 WHERE "taskId" = $2 AND "runId" = $3"#,
    mysql: "UPDATE tasks SET buildrequestId = ? WHERE taskId = ? AND runId = ?",
};

/// Moves the task's latest row to a later run. Binds: new runId, taskId, new runId, taskId.
const UPDATE_RUN_ID: Stmt = Stmt {
    name: "update_run_id",
    standard: r#"UPDATE tasks SET "runId" = $1, "takenUntil" = NULL, "claimedBy" = NULL WHERE "taskId" = $2 AND "runId" < $3 AND "runId" = (SELECT MAX(latest."runId") FROM tasks latest WHERE latest."taskId" = $4)"#,
    // MySQL refuses a subquery on the table being updated unless it is materialised in a
    // derived table (error 1093).
    mysql: "UPDATE tasks SET runId = ?, takenUntil = NULL, claimedBy = NULL WHERE taskId = ? AND runId < ? AND runId = (SELECT latest.runId FROM (SELECT MAX(runId) AS runId FROM tasks WHERE taskId = ?) AS latest)",
};

const SET_TAKEN_UNTIL: Stmt = Stmt {
    name: "set_taken_until",
    standard: r#"UPDATE tasks SET "takenUntil" = $1 WHERE "taskId" = $2 AND "runId" = $3"#,
    mysql: "UPDATE tasks SET takenUntil = ? WHERE taskId = ? AND runId = ?",
};

/// Records a claim (its expiry and the Build holding it) or clears it (NULLs).
/// Binds: takenUntil, claimedBy, taskId, runId.
const SET_CLAIM: Stmt = Stmt {
    name: "set_claim",
    standard: r#"UPDATE tasks SET "takenUntil" = $1, "claimedBy" = $2 WHERE "taskId" = $3 AND "runId" = $4"#,
    mysql: "UPDATE tasks SET takenUntil = ?, claimedBy = ? WHERE taskId = ? AND runId = ?",
};

const DELETE_TASK: Stmt = Stmt {
    name: "delete_task",
    standard: r#"DELETE FROM tasks WHERE "taskId" = $1"#,
    mysql: "DELETE FROM tasks WHERE taskId = ?",
};

/// The latest row of each task after a taskId, in taskId order.
const LIST_TASKS_PAGE: Stmt = Stmt {
    name: "list_tasks_page",
    standard: concat!(
        "SELECT ",
        standard_columns!(),
        r#" FROM tasks WHERE "taskId" > $1 AND "runId" = (SELECT MAX(latest."runId") FROM tasks latest WHERE latest."taskId" = tasks."taskId") ORDER BY "taskId" LIMIT $2"#
    ),
    mysql: concat!(
        "SELECT ",
        mysql_columns!(),
        " FROM tasks WHERE taskId > ? AND runId = (SELECT MAX(latest.runId) FROM tasks latest WHERE latest.taskId = tasks.taskId) ORDER BY taskId LIMIT ?"
    ),
};

const COUNT_TASKS: Stmt = Stmt {
    name: "count_tasks",
    standard: r#"SELECT COUNT(DISTINCT "taskId") FROM tasks"#,
    mysql: "SELECT COUNT(DISTINCT taskId) FROM tasks",
};

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/mysql");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

/// The bridge's database. Cheap to share by reference; holds a small connection pool.
pub struct BridgeDb {
    pool: Pool,
    /// For errors: the URL with its password masked.
    masked_url: String,
}

impl BridgeDb {
    /// Opens a small pool (SQLite: WAL and a busy timeout, so concurrent workers wait for each
    /// other instead of failing with "database is locked"). Fails if the server is unreachable.
    pub async fn connect(url: &DbUrl) -> Result<BridgeDb, DbError> {
        Ok(BridgeDb {
            pool: Pool::connect(url, SqliteMode::OwnWal).await?,
            masked_url: url.masked(),
        })
    }

    pub fn engine(&self) -> Engine {
        self.pool.engine()
    }

    /// Applies the embedded migrations of this engine. Safe to run from several processes at
    /// once (sqlx takes a database lock on PostgreSQL and MySQL) and on a database of the
    /// original bridge, whose `tasks` rows are kept.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match &self.pool {
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
            Pool::MySql(p) => MYSQL_MIGRATIONS.run(p).await,
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
        }
        .map_err(|error| DbError::Migrate {
            url: self.masked_url.clone(),
            error,
        })
    }

    /// Closes every connection (waits for connections in use to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers (`SELECT 1`); the readiness check.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        self.pool.ping().await
    }

    /// Inserts a tracked row. `false` when (taskId, runId) is already tracked: a duplicate
    /// delivery, which is never an error.
    pub async fn insert_task(&self, t: &TrackedTask) -> Result<bool, DbError> {
        on_pool!(&self.pool, &INSERT_TASK, |p, sql| {
            let inserted = sqlx::query(sql)
                .bind(&t.task_id)
                .bind(t.run_id)
                .bind(t.buildrequest_id)
                .bind(t.created_date)
                .bind(t.processed_date)
                .bind(t.taken_until)
                .bind(&t.buildername)
                .bind(&t.branch)
                .bind(t.task_expires)
                .execute(p)
                .await;
            match inserted {
                Ok(done) => Ok(done.rows_affected() > 0),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// The task's row with the highest runId, if the task is tracked.
    pub async fn get_task(&self, task_id: &str) -> Result<Option<TrackedTask>, DbError> {
        on_pool!(&self.pool, &GET_TASK, |p, sql| {
            sqlx::query_as::<_, TrackedTask>(sql)
                .bind(task_id)
                .fetch_optional(p)
                .await
        })
    }

    /// Every row whose buildrequestId is in `brids`, ordered by buildrequestId. One statement
    /// per 1000 ids.
    pub async fn tasks_by_buildrequest_ids(
        &self,
        brids: &[i64],
    ) -> Result<Vec<TrackedTask>, DbError> {
        let mut tasks = Vec::new();
        for chunk in brids.chunks(IN_LIST_CHUNK) {
            let rows = on_pool!(&self.pool, &TASKS_BY_BUILDREQUEST_IDS, |p, sql| {
                let mut query = sqlx::QueryBuilder::new(sql);
                let mut list = query.separated(", ");
                for brid in chunk {
                    list.push_bind(*brid);
                }
                query.push(")");
                query.build_query_as::<TrackedTask>().fetch_all(p).await
            })?;
            tasks.extend(rows);
        }
        tasks.sort_by(|a, b| {
            (a.buildrequest_id, &a.task_id, a.run_id).cmp(&(
                b.buildrequest_id,
                &b.task_id,
                b.run_id,
            ))
        });
        Ok(tasks)
    }

    /// Records the BuildRequest made for the run. A row that no longer exists is left alone.
    pub async fn set_buildrequest_id(
        &self,
        task_id: &str,
        run_id: i64,
        brid: i64,
    ) -> Result<(), DbError> {
        on_pool!(&self.pool, &SET_BUILDREQUEST_ID, |p, sql| {
            sqlx::query(sql)
                .bind(brid)
                .bind(task_id)
                .bind(run_id)
                .execute(p)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Moves the task to a later run (a rerun after a Buildbot RETRY): only when `new_run_id`
    /// is greater than the task's highest runId. Also clears `takenUntil`, which was the
    /// previous run's claim: the new run is not claimed yet. Returns whether the row changed.
    pub async fn update_run_id(&self, task_id: &str, new_run_id: i64) -> Result<bool, DbError> {
        let done = on_pool!(&self.pool, &UPDATE_RUN_ID, |p, sql| {
            sqlx::query(sql)
                .bind(new_run_id)
                .bind(task_id)
                .bind(new_run_id)
                .bind(task_id)
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(done > 0)
    }

    /// Records the claim expiry of the run (epoch s). A row that no longer exists, or that has
    /// moved to another run, is left alone.
    /// Records the claim of run `run_id` (its expiry and the Build that holds it), or clears it
    /// with `None`s once the run is resolved.
    pub async fn set_claim(
        &self,
        task_id: &str,
        run_id: i64,
        taken_until: Option<i64>,
        claimed_by: Option<&str>,
    ) -> Result<(), DbError> {
        on_pool!(&self.pool, &SET_CLAIM, |p, sql| {
            sqlx::query(sql)
                .bind(taken_until)
                .bind(claimed_by)
                .bind(task_id)
                .bind(run_id)
                .execute(p)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn set_taken_until(
        &self,
        task_id: &str,
        run_id: i64,
        taken_until: i64,
    ) -> Result<(), DbError> {
        on_pool!(&self.pool, &SET_TAKEN_UNTIL, |p, sql| {
            sqlx::query(sql)
                .bind(taken_until)
                .bind(task_id)
                .bind(run_id)
                .execute(p)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Stops tracking the task (every run). Returns the number of rows deleted.
    pub async fn delete_task(&self, task_id: &str) -> Result<u64, DbError> {
        on_pool!(&self.pool, &DELETE_TASK, |p, sql| {
            sqlx::query(sql)
                .bind(task_id)
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })
    }

    /// Keyset pagination over tracked tasks in taskId order: up to `limit` tasks whose taskId
    /// is greater than `after_task_id` (from the start when `None`), each as its latest row.
    /// Pass the last taskId of a page to get the next; an empty page is the end. Rows inserted
    /// or deleted meanwhile may or may not be seen, but no task is seen twice.
    pub async fn list_tasks_page(
        &self,
        after_task_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TrackedTask>, DbError> {
        // Every taskId sorts after the empty string.
        let after = after_task_id.unwrap_or("");
        on_pool!(&self.pool, &LIST_TASKS_PAGE, |p, sql| {
            sqlx::query_as::<_, TrackedTask>(sql)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await
        })
    }

    /// The number of tracked tasks (distinct taskIds).
    pub async fn count_tasks(&self) -> Result<i64, DbError> {
        on_pool!(&self.pool, &COUNT_TASKS, |p, sql| {
            sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await
        })
    }
}
