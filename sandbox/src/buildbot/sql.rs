//! Every SQL statement the emulated Buildbot side runs against the scheduler DB: the masters
//! (claim, builds rows, completion, RETRY re-queue, re-stamping) and the self-serve agent
//! (look-ups and the cancelled-before-start form). Separate from the bridge's own
//! `bbb_shared::schedulerdb` on purpose: this code plays Buildbot, that one plays the bridge.
//!
//! MySQL/MariaDB and SQLite, as Buildbot 0.8 masters ran on; both accept `?` placeholders, so
//! every statement has one spelling. Statements run one by one in autocommit mode, as
//! Buildbot 0.8 did on MyISAM: atomicity where it matters comes from the `WHERE` clause of a
//! single `UPDATE` (a claim changes a row only if it is still in the state the master saw).
use std::{str::FromStr as _, time::Duration};

use bbb_shared::dburl::{DbUrl, Engine};
use sqlx::{
    MySqlPool, SqlitePool,
    mysql::MySqlPoolOptions,
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
};

/// A failed statement, named.
#[derive(Debug, thiserror::Error)]
#[error("scheduler DB statement `{statement}` failed: {error}")]
pub struct SqlError {
    pub statement: &'static str,
    #[source]
    pub error: sqlx::Error,
}

/// How many times a statement runs when it keeps losing lock races.
const ATTEMPTS: u32 = 5;
const MAX_CONNECTIONS: u32 = 5;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an SQLite writer waits for another one (the bridge, another master).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The statement lost a race for a lock and was rolled back: running it again is safe.
fn is_lock_conflict(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(e) = error else {
        return false;
    };
    if let Some(mysql) = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT.
        return matches!(mysql.number(), 1213 | 1205);
    }
    // SQLite BUSY / LOCKED and their extended codes.
    matches!(
        e.code().as_deref(),
        Some("5" | "6" | "261" | "262" | "517" | "773")
    )
}

/// Runs `$body` (an expression with `.await`) on the pool, again after a lock conflict.
macro_rules! run {
    ($db:expr, $name:expr, |$p:ident| $body:expr) => {{
        let mut attempt: u32 = 1;
        loop {
            let result = match $db {
                BuildbotDb::MySql($p) => $body,
                BuildbotDb::Sqlite($p) => $body,
            };
            match result {
                Err(error) if attempt < ATTEMPTS && is_lock_conflict(&error) => {
                    let pause = 10u64 << (2 * attempt.min(4));
                    tokio::time::sleep(Duration::from_millis(
                        pause + rand::random_range(0..=pause),
                    ))
                    .await;
                    attempt += 1;
                }
                result => {
                    break result.map_err(|error| SqlError {
                        statement: $name,
                        error,
                    });
                }
            }
        }
    }};
}

/// The id of the row an `INSERT` created, on either engine.
trait InsertedId {
    fn inserted_id(&self) -> i64;
}

impl InsertedId for sqlx::mysql::MySqlQueryResult {
    fn inserted_id(&self) -> i64 {
        i64::try_from(self.last_insert_id()).unwrap_or(i64::MAX)
    }
}

impl InsertedId for sqlx::sqlite::SqliteQueryResult {
    fn inserted_id(&self) -> i64 {
        self.last_insert_rowid()
    }
}

/// A pending (or stale-claimed) request as the claim query returns it, with its sourcestamp.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Unclaimed {
    pub id: i64,
    pub buildsetid: i64,
    pub submitted_at: i64,
    /// As seen by the query: the claim only succeeds if these are unchanged.
    pub claimed_at: Option<i64>,
    pub claimed_by_name: Option<String>,
    pub claimed_by_incarnation: Option<String>,
    pub reason: Option<String>,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: Option<String>,
    pub project: Option<String>,
}

impl Unclaimed {
    /// Buildbot 0.8's `SourceStamp.canBeMergedWith`, without patches or changes: same branch,
    /// revision, repository and project.
    pub fn same_sourcestamp(&self, other: &Unclaimed) -> bool {
        (
            &self.branch,
            &self.revision,
            &self.repository,
            &self.project,
        ) == (
            &other.branch,
            &other.revision,
            &other.repository,
            &other.project,
        )
    }
}

/// What the self-serve agent needs to know about a request.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RequestState {
    pub id: i64,
    pub buildsetid: i64,
    pub complete: Option<i64>,
    pub claimed_at: Option<i64>,
    pub claimed_by_name: Option<String>,
    pub submitted_at: i64,
    pub branch: Option<String>,
}

impl RequestState {
    pub fn is_complete(&self) -> bool {
        self.complete.unwrap_or(0) != 0
    }

    pub fn is_claimed(&self) -> bool {
        self.claimed_at.unwrap_or(0) != 0
    }
}

/// What the self-serve agent needs to know about a builds row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BuildState {
    pub id: i64,
    pub brid: i64,
    pub finish_time: Option<i64>,
    pub complete: Option<i64>,
    pub claimed_by_name: Option<String>,
    pub branch: Option<String>,
}

impl BuildState {
    /// Finished, or its request is (a cancelled-before-start request has no running build).
    pub fn is_over(&self) -> bool {
        self.finish_time.is_some() || self.complete.unwrap_or(0) != 0
    }
}

const UNCLAIMED: &str = "SELECT br.id AS id, br.buildsetid AS buildsetid, br.submitted_at AS submitted_at, \
     br.claimed_at AS claimed_at, br.claimed_by_name AS claimed_by_name, \
     br.claimed_by_incarnation AS claimed_by_incarnation, bs.reason AS reason, \
     ss.branch AS branch, ss.revision AS revision, ss.repository AS repository, ss.project AS project \
     FROM buildrequests br \
     JOIN buildsets bs ON bs.id = br.buildsetid \
     JOIN sourcestamps ss ON ss.id = bs.sourcestampid \
     WHERE br.buildername = ? AND br.complete = 0 \
     AND (br.claimed_at < ? OR (br.claimed_by_name = ? AND br.claimed_by_incarnation != ?)) \
     ORDER BY br.priority DESC, bs.submitted_at ASC, br.id ASC \
     LIMIT 1000";

/// The claim: changes the row only if nobody claimed (or completed) it since it was read.
const CLAIM: &str = "UPDATE buildrequests \
     SET claimed_at = ?, claimed_by_name = ?, claimed_by_incarnation = ? \
     WHERE id = ? AND complete = 0 AND COALESCE(claimed_at, 0) = ? \
     AND COALESCE(claimed_by_name, '') = ? AND COALESCE(claimed_by_incarnation, '') = ?";

const RESTAMP: &str = "UPDATE buildrequests SET claimed_at = ? \
     WHERE id = ? AND complete = 0 AND claimed_by_name = ? AND claimed_by_incarnation = ?";

const PROPERTIES: &str =
    "SELECT property_name, property_value FROM buildset_properties WHERE buildsetid = ?";

const MAX_NUMBER: &str = "SELECT MAX(b.number) FROM builds b \
     JOIN buildrequests br ON br.id = b.brid WHERE br.buildername = ?";

const INSERT_BUILD: &str =
    "INSERT INTO builds (number, brid, start_time, finish_time) VALUES (?, ?, ?, NULL)";

const UNFINISHED_BUILD_BRID: &str = "SELECT brid FROM builds WHERE id = ? AND finish_time IS NULL";

const COUNT_BUILDS: &str = "SELECT COUNT(*) FROM builds WHERE brid = ?";

const FINISH_BUILD: &str = "UPDATE builds SET finish_time = ? WHERE id = ?";

const COMPLETE_REQUEST: &str = "UPDATE buildrequests SET complete = 1, results = ?, complete_at = ? \
     WHERE id = ? AND complete = 0";

/// RETRY: back to pending, for any master (this one included) to claim again.
const UNCLAIM: &str = "UPDATE buildrequests \
     SET claimed_at = 0, claimed_by_name = NULL, claimed_by_incarnation = NULL \
     WHERE id = ? AND complete = 0 AND claimed_by_name = ? AND claimed_by_incarnation = ?";

const BUILDSET_REQUESTS: &str = "SELECT complete, results FROM buildrequests WHERE buildsetid = ?";

const COMPLETE_BUILDSET: &str = "UPDATE buildsets SET complete = 1, results = ?, complete_at = ? \
     WHERE id = ? AND complete = 0";

const REQUEST_STATE: &str = "SELECT br.id AS id, br.buildsetid AS buildsetid, br.complete AS complete, \
     br.claimed_at AS claimed_at, br.claimed_by_name AS claimed_by_name, \
     br.submitted_at AS submitted_at, ss.branch AS branch \
     FROM buildrequests br \
     LEFT JOIN buildsets bs ON bs.id = br.buildsetid \
     LEFT JOIN sourcestamps ss ON ss.id = bs.sourcestampid \
     WHERE br.id = ?";

const BUILD_STATE: &str = "SELECT b.id AS id, b.brid AS brid, b.finish_time AS finish_time, \
     br.complete AS complete, br.claimed_by_name AS claimed_by_name, ss.branch AS branch \
     FROM builds b \
     JOIN buildrequests br ON br.id = b.brid \
     LEFT JOIN buildsets bs ON bs.id = br.buildsetid \
     LEFT JOIN sourcestamps ss ON ss.id = bs.sourcestampid \
     WHERE b.id = ?";

/// The self-serve agent's cancellation of a request no master has claimed.
const CANCEL_PENDING: &str = "UPDATE buildrequests SET complete = 1, results = 2, complete_at = ? \
     WHERE id = ? AND complete = 0 AND COALESCE(claimed_at, 0) = 0";

/// A connection pool on the scheduler DB, as a Buildbot 0.8 master holds one.
#[derive(Clone)]
pub enum BuildbotDb {
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

impl BuildbotDb {
    /// Opens a small pool. SQLite: waits when another writer holds the lock and leaves the
    /// journal mode alone. PostgreSQL is refused: Mozilla's masters ran on MySQL and SQLite.
    pub async fn connect(url: &DbUrl) -> anyhow::Result<BuildbotDb> {
        match url.engine() {
            Engine::MySql => Ok(BuildbotDb::MySql(
                MySqlPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(url.expose())
                    .await
                    .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?,
            )),
            Engine::Sqlite => {
                let options = SqliteConnectOptions::from_str(url.expose())
                    .map_err(|e| anyhow::anyhow!("SQLite URL {url}: {e}"))?
                    .busy_timeout(SQLITE_BUSY_TIMEOUT);
                Ok(BuildbotDb::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .connect_with(options)
                        .await
                        .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?,
                ))
            }
            Engine::Postgres => anyhow::bail!(
                "the emulated Buildbot 0.8 master runs on a MySQL/MariaDB or SQLite scheduler \
                 DB, not {url}"
            ),
        }
    }

    pub async fn close(&self) {
        match self {
            BuildbotDb::MySql(p) => p.close().await,
            BuildbotDb::Sqlite(p) => p.close().await,
        }
    }

    /// `get_unclaimed_buildrequests`: the builder's requests a master named `name` (this
    /// `incarnation`) may claim, best first.
    pub async fn unclaimed(
        &self,
        buildername: &str,
        stale_before: i64,
        name: &str,
        incarnation: &str,
    ) -> Result<Vec<Unclaimed>, SqlError> {
        run!(self, "unclaimed_buildrequests", |p| {
            sqlx::query_as::<_, Unclaimed>(UNCLAIMED)
                .bind(buildername)
                .bind(stale_before)
                .bind(name)
                .bind(incarnation)
                .fetch_all(p)
                .await
        })
    }

    /// Claims `request` for the master if it is still as read. True if this master has it.
    pub async fn claim(
        &self,
        request: &Unclaimed,
        now: i64,
        name: &str,
        incarnation: &str,
    ) -> Result<bool, SqlError> {
        let affected = run!(self, "claim_buildrequest", |p| {
            sqlx::query(CLAIM)
                .bind(now)
                .bind(name)
                .bind(incarnation)
                .bind(request.id)
                .bind(request.claimed_at.unwrap_or(0))
                .bind(request.claimed_by_name.as_deref().unwrap_or(""))
                .bind(request.claimed_by_incarnation.as_deref().unwrap_or(""))
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(affected == 1)
    }

    /// Re-stamps the claims of a running Build (every 10 minutes).
    pub async fn restamp(
        &self,
        brids: &[i64],
        now: i64,
        name: &str,
        incarnation: &str,
    ) -> Result<(), SqlError> {
        for brid in brids {
            run!(self, "restamp_buildrequest", |p| {
                sqlx::query(RESTAMP)
                    .bind(now)
                    .bind(brid)
                    .bind(name)
                    .bind(incarnation)
                    .execute(p)
                    .await
                    .map(|done| done.rows_affected())
            })?;
        }
        Ok(())
    }

    /// The buildset's properties as stored: (name, JSON text).
    pub async fn properties(&self, buildsetid: i64) -> Result<Vec<(String, String)>, SqlError> {
        run!(self, "buildset_properties", |p| {
            sqlx::query_as::<_, (String, String)>(PROPERTIES)
                .bind(buildsetid)
                .fetch_all(p)
                .await
        })
    }

    /// The highest build number any master used for the builder.
    pub async fn max_number(&self, buildername: &str) -> Result<Option<i64>, SqlError> {
        run!(self, "max_build_number", |p| {
            sqlx::query_scalar::<_, Option<i64>>(MAX_NUMBER)
                .bind(buildername)
                .fetch_one(p)
                .await
        })
    }

    /// Inserts a builds row (unfinished) and returns its id.
    pub async fn insert_build(&self, number: i64, brid: i64, start: i64) -> Result<i64, SqlError> {
        run!(self, "insert_build", |p| {
            sqlx::query(INSERT_BUILD)
                .bind(number)
                .bind(brid)
                .bind(start)
                .execute(p)
                .await
                .map(|done| done.inserted_id())
        })
    }

    /// The request of an unfinished builds row.
    pub async fn unfinished_build_brid(&self, build_id: i64) -> Result<Option<i64>, SqlError> {
        run!(self, "unfinished_build_brid", |p| {
            sqlx::query_scalar::<_, i64>(UNFINISHED_BUILD_BRID)
                .bind(build_id)
                .fetch_optional(p)
                .await
        })
    }

    /// How many builds rows the request has (its attempts, this one included).
    pub async fn count_builds(&self, brid: i64) -> Result<i64, SqlError> {
        run!(self, "count_builds", |p| {
            sqlx::query_scalar::<_, i64>(COUNT_BUILDS)
                .bind(brid)
                .fetch_one(p)
                .await
        })
    }

    pub async fn finish_builds(&self, build_ids: &[i64], now: i64) -> Result<(), SqlError> {
        for id in build_ids {
            run!(self, "finish_build", |p| {
                sqlx::query(FINISH_BUILD)
                    .bind(now)
                    .bind(id)
                    .execute(p)
                    .await
                    .map(|done| done.rows_affected())
            })?;
        }
        Ok(())
    }

    pub async fn complete_request(
        &self,
        brid: i64,
        results: i64,
        now: i64,
    ) -> Result<(), SqlError> {
        run!(self, "complete_buildrequest", |p| {
            sqlx::query(COMPLETE_REQUEST)
                .bind(results)
                .bind(now)
                .bind(brid)
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    pub async fn unclaim(&self, brid: i64, name: &str, incarnation: &str) -> Result<(), SqlError> {
        run!(self, "unclaim_buildrequest", |p| {
            sqlx::query(UNCLAIM)
                .bind(brid)
                .bind(name)
                .bind(incarnation)
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Completes the buildset once all its requests are: SUCCESS unless some request is
    /// neither SUCCESS nor WARNINGS (then FAILURE). Returns whether it was completed now.
    pub async fn maybe_complete_buildset(
        &self,
        buildsetid: i64,
        now: i64,
    ) -> Result<bool, SqlError> {
        let requests = run!(self, "buildset_requests", |p| {
            sqlx::query_as::<_, (Option<i64>, Option<i64>)>(BUILDSET_REQUESTS)
                .bind(buildsetid)
                .fetch_all(p)
                .await
        })?;
        if requests.is_empty() || requests.iter().any(|(c, _)| c.unwrap_or(0) == 0) {
            return Ok(false);
        }
        let results = if requests.iter().all(|(_, r)| matches!(r, Some(0 | 1))) {
            0
        } else {
            2
        };
        let affected = run!(self, "complete_buildset", |p| {
            sqlx::query(COMPLETE_BUILDSET)
                .bind(results)
                .bind(now)
                .bind(buildsetid)
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(affected == 1)
    }

    pub async fn request_state(&self, brid: i64) -> Result<Option<RequestState>, SqlError> {
        run!(self, "request_state", |p| {
            sqlx::query_as::<_, RequestState>(REQUEST_STATE)
                .bind(brid)
                .fetch_optional(p)
                .await
        })
    }

    pub async fn build_state(&self, build_id: i64) -> Result<Option<BuildState>, SqlError> {
        run!(self, "build_state", |p| {
            sqlx::query_as::<_, BuildState>(BUILD_STATE)
                .bind(build_id)
                .fetch_optional(p)
                .await
        })
    }

    /// Cancels a request no master has claimed: `complete=1, results=2 (FAILURE),
    /// complete_at=now`, claimed_at stays 0. False if it was claimed or completed meanwhile.
    pub async fn cancel_pending(&self, brid: i64, now: i64) -> Result<bool, SqlError> {
        let affected = run!(self, "cancel_pending_buildrequest", |p| {
            sqlx::query(CANCEL_PENDING)
                .bind(now)
                .bind(brid)
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(affected == 1)
    }
}
