//! Every SQL statement against Buildbot 0.8's scheduler database (FORMATS.md section 2), on
//! MySQL/MariaDB (production), SQLite (development masters) and PostgreSQL.
//!
//! # Ownership
//! Buildbot owns this schema: the bridge inserts rows (a BuildRequest with its sourcestamp,
//! buildset and properties) and reads buildrequests and builds; it never creates or alters a
//! table. The schema is kept here as SQL ([`BUILDBOT08_SCHEMA_MYSQL`], ...) only so that tests
//! and emulators can build a scheduler DB ([`create_buildbot08_schema`]).
//!
//! # Stored forms
//! Other systems parse what the bridge writes (Treeherder reads the reason, postrun the
//! properties), so the forms are exact: buildset `external_idstring = "taskId:<taskId>"`,
//! `reason = "Created by BBB for task <taskId>"`; every property value is the compact JSON
//! `[value, "bbb"]`; the sourcestamp branch is stored shortened ([`shorten_branch`]).
//!
//! # Atomicity
//! [`SchedulerDb::inject_buildrequest`] inserts its four kinds of rows in one transaction, the
//! buildrequest last. On MyISAM tables (which production masters used) the transaction gives no
//! atomicity, but the order keeps a failure harmless: masters only schedule buildrequests, and
//! a buildset without one is never looked at.
use serde_json::{Map, Value};
use sqlx::Row;

pub use crate::bridgedb::DbError;
use crate::bridgedb::{
    DEADLOCK_ATTEMPTS, IN_LIST_CHUNK, Pool, SqliteMode, Stmt, deadlock_backoff, is_deadlock_victim,
    on_pool,
};
use crate::dburl::{DbUrl, Engine};

/// The Buildbot 0.8 schema in MySQL's dialect. For tests and emulators only.
pub const BUILDBOT08_SCHEMA_MYSQL: &str = include_str!("../sql/buildbot08-mysql.sql");
/// The Buildbot 0.8 schema in SQLite's dialect. For tests and emulators only.
pub const BUILDBOT08_SCHEMA_SQLITE: &str = include_str!("../sql/buildbot08-sqlite.sql");
/// The Buildbot 0.8 schema in PostgreSQL's dialect. For tests and emulators only.
pub const BUILDBOT08_SCHEMA_POSTGRES: &str = include_str!("../sql/buildbot08-postgres.sql");

/// The `source` of every property the bridge writes.
const PROPERTY_SOURCE: &str = "bbb";

/// What to schedule: one BuildRequest for one Taskcluster task.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRequestSpec {
    pub task_id: String,
    pub buildername: String,
    /// 1 for high-priority tasks, else 0 (BRIDGE.md).
    pub priority: i64,
    /// The run's scheduled time, epoch s.
    pub submitted_at: i64,
    /// As given in the payload; stored shortened.
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: Option<String>,
    pub project: Option<String>,
    /// The payload's properties; each is stored as `[value, "bbb"]`, plus `taskId`.
    pub properties: Map<String, Value>,
}

/// A row of `buildrequests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    pub id: i64,
    pub buildsetid: i64,
    pub buildername: String,
    pub priority: i64,
    /// 0 while unclaimed (and forever, for a request cancelled before it started).
    pub claimed_at: i64,
    pub claimed_by_name: Option<String>,
    pub complete: bool,
    /// Buildbot result code once complete (SUCCESS 0 .. CANCELLED 6).
    pub results: Option<i64>,
    pub submitted_at: i64,
    pub complete_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct BuildRequestRow {
    id: i64,
    buildsetid: i64,
    buildername: String,
    priority: i64,
    claimed_at: i64,
    claimed_by_name: Option<String>,
    complete: i64,
    results: Option<i64>,
    submitted_at: i64,
    complete_at: Option<i64>,
}

impl From<BuildRequestRow> for BuildRequest {
    fn from(r: BuildRequestRow) -> Self {
        BuildRequest {
            id: r.id,
            buildsetid: r.buildsetid,
            buildername: r.buildername,
            priority: r.priority,
            claimed_at: r.claimed_at,
            claimed_by_name: r.claimed_by_name,
            complete: r.complete != 0,
            results: r.results,
            submitted_at: r.submitted_at,
            complete_at: r.complete_at,
        }
    }
}

/// A row of `builds`: one per request a Build serves (merged requests share `number`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Build {
    pub id: i64,
    pub number: i64,
    pub brid: i64,
    pub start_time: i64,
    pub finish_time: Option<i64>,
}

/// `"https://hg.mozilla.org/integration/mozilla-inbound/"` -> `"integration/mozilla-inbound"`:
/// a URL becomes its path without surrounding slashes; anything else only loses surrounding
/// slashes.
pub fn shorten_branch(branch: &str) -> String {
    let path = match url::Url::parse(branch) {
        Ok(url) if url.has_host() => url.path().to_owned(),
        _ => branch.to_owned(),
    };
    path.trim_matches('/').to_owned()
}

// Buildbot's columns are lower case, so only placeholders differ between the spellings.
// PostgreSQL reads INTEGER/SMALLINT columns through CAST(.. AS BIGINT) to decode as i64.

const INSERT_SOURCESTAMP: Stmt = Stmt {
    name: "insert_sourcestamp",
    standard: "INSERT INTO sourcestamps (branch, revision, patchid, repository, project) VALUES ($1, $2, NULL, $3, $4) RETURNING CAST(id AS BIGINT)",
    mysql: "INSERT INTO sourcestamps (branch, revision, patchid, repository, project) VALUES (?, ?, NULL, ?, ?)",
};

const INSERT_BUILDSET: Stmt = Stmt {
    name: "insert_buildset",
    standard: "INSERT INTO buildsets (external_idstring, reason, sourcestampid, submitted_at, complete, complete_at, results) VALUES ($1, $2, $3, $4, 0, NULL, NULL) RETURNING CAST(id AS BIGINT)",
    mysql: "INSERT INTO buildsets (external_idstring, reason, sourcestampid, submitted_at, complete, complete_at, results) VALUES (?, ?, ?, ?, 0, NULL, NULL)",
};

/// Prefix: the caller appends the bound rows.
const INSERT_BUILDSET_PROPERTIES: Stmt = Stmt {
    name: "insert_buildset_properties",
    standard: "INSERT INTO buildset_properties (buildsetid, property_name, property_value) ",
    mysql: "INSERT INTO buildset_properties (buildsetid, property_name, property_value) ",
};

const INSERT_BUILDREQUEST: Stmt = Stmt {
    name: "insert_buildrequest",
    standard: "INSERT INTO buildrequests (buildsetid, buildername, priority, claimed_at, claimed_by_name, claimed_by_incarnation, complete, results, submitted_at, complete_at) VALUES ($1, $2, $3, 0, NULL, NULL, 0, NULL, $4, NULL) RETURNING CAST(id AS BIGINT)",
    mysql: "INSERT INTO buildrequests (buildsetid, buildername, priority, claimed_at, claimed_by_name, claimed_by_incarnation, complete, results, submitted_at, complete_at) VALUES (?, ?, ?, 0, NULL, NULL, 0, NULL, ?, NULL)",
};

/// Names, in errors, of the injection's transaction boundaries.
const BEGIN_INJECTION: &str = "begin_inject_buildrequest";
const COMMIT_INJECTION: &str = "commit_inject_buildrequest";

macro_rules! buildrequest_select {
    (standard) => {
        "SELECT CAST(id AS BIGINT) AS id, CAST(buildsetid AS BIGINT) AS buildsetid, buildername, CAST(priority AS BIGINT) AS priority, CAST(COALESCE(claimed_at, 0) AS BIGINT) AS claimed_at, claimed_by_name, CAST(COALESCE(complete, 0) AS BIGINT) AS complete, CAST(results AS BIGINT) AS results, CAST(submitted_at AS BIGINT) AS submitted_at, CAST(complete_at AS BIGINT) AS complete_at FROM buildrequests"
    };
    (mysql) => {
        "SELECT id, buildsetid, buildername, priority, COALESCE(claimed_at, 0) AS claimed_at, claimed_by_name, COALESCE(complete, 0) AS complete, results, submitted_at, complete_at FROM buildrequests"
    };
}

const BUILDREQUEST: Stmt = Stmt {
    name: "buildrequest",
    standard: concat!(buildrequest_select!(standard), " WHERE id = $1"),
    mysql: concat!(buildrequest_select!(mysql), " WHERE id = ?"),
};

/// Prefix: the caller appends the bound list and `)`.
const BUILDREQUESTS: Stmt = Stmt {
    name: "buildrequests",
    standard: concat!(buildrequest_select!(standard), " WHERE id IN ("),
    mysql: concat!(buildrequest_select!(mysql), " WHERE id IN ("),
};

const BUILD_IDS: Stmt = Stmt {
    name: "build_ids",
    standard: "SELECT CAST(id AS BIGINT) FROM builds WHERE brid = $1 ORDER BY id",
    mysql: "SELECT id FROM builds WHERE brid = ? ORDER BY id",
};

/// Prefix: the caller appends the bound list and `)`.
const BUILDS_FOR: Stmt = Stmt {
    name: "builds_for",
    standard: "SELECT CAST(id AS BIGINT) AS id, CAST(number AS BIGINT) AS number, CAST(brid AS BIGINT) AS brid, CAST(start_time AS BIGINT) AS start_time, CAST(finish_time AS BIGINT) AS finish_time FROM builds WHERE brid IN (",
    mysql: "SELECT id, number, brid, start_time, finish_time FROM builds WHERE brid IN (",
};

const COUNT_BUILDS: Stmt = Stmt {
    name: "count_builds",
    standard: "SELECT COUNT(*) FROM builds WHERE brid = $1",
    mysql: "SELECT COUNT(*) FROM builds WHERE brid = ?",
};

const BRANCH_OF: Stmt = Stmt {
    name: "branch_of",
    standard: "SELECT ss.branch FROM buildrequests br JOIN buildsets bs ON bs.id = br.buildsetid JOIN sourcestamps ss ON ss.id = bs.sourcestampid WHERE br.id = $1",
    mysql: "SELECT ss.branch FROM buildrequests br JOIN buildsets bs ON bs.id = br.buildsetid JOIN sourcestamps ss ON ss.id = bs.sourcestampid WHERE br.id = ?",
};

const BUILDSET_PROPERTIES: Stmt = Stmt {
    name: "buildset_properties",
    standard: "SELECT property_name, property_value FROM buildset_properties WHERE buildsetid = $1",
    mysql: "SELECT property_name, property_value FROM buildset_properties WHERE buildsetid = ?",
};

/// Finds the request the bridge injected for a task (its buildset's external_idstring).
const BUILDREQUEST_FOR_TASK: Stmt = Stmt {
    name: "buildrequest_for_task",
    standard: "SELECT CAST(br.id AS BIGINT) FROM buildsets bs JOIN buildrequests br ON br.buildsetid = bs.id WHERE bs.external_idstring = $1 ORDER BY br.id LIMIT 1",
    mysql: "SELECT br.id FROM buildsets bs JOIN buildrequests br ON br.buildsetid = bs.id WHERE bs.external_idstring = ? ORDER BY br.id LIMIT 1",
};

/// Prefix: the caller appends the bound list and `)`.
const TASK_IDS_OF: Stmt = Stmt {
    name: "task_ids_of",
    standard: "SELECT CAST(br.id AS BIGINT), bp.property_value FROM buildrequests br JOIN buildset_properties bp ON bp.buildsetid = br.buildsetid WHERE bp.property_name = 'taskId' AND br.id IN (",
    mysql: "SELECT br.id, bp.property_value FROM buildrequests br JOIN buildset_properties bp ON bp.buildsetid = br.buildsetid WHERE bp.property_name = 'taskId' AND br.id IN (",
};

/// The rows [`SchedulerDb::inject_buildrequest`] writes, computed before any statement runs.
struct Injection {
    branch: Option<String>,
    revision: Option<String>,
    repository: String,
    project: String,
    external_idstring: String,
    reason: String,
    /// (name, JSON text `[value, "bbb"]`), `taskId` included.
    properties: Vec<(String, String)>,
}

impl Injection {
    fn new(spec: &BuildRequestSpec) -> Injection {
        let property = |value: &Value| {
            Value::Array(vec![value.clone(), Value::from(PROPERTY_SOURCE)]).to_string()
        };
        let mut properties: Vec<(String, String)> = spec
            .properties
            .iter()
            .filter(|(name, _)| name.as_str() != "taskId")
            .map(|(name, value)| (name.clone(), property(value)))
            .collect();
        properties.push((
            "taskId".to_owned(),
            property(&Value::from(spec.task_id.as_str())),
        ));
        Injection {
            branch: spec.branch.as_deref().map(shorten_branch),
            revision: spec.revision.clone(),
            repository: spec.repository.clone().unwrap_or_default(),
            project: spec.project.clone().unwrap_or_default(),
            external_idstring: format!("taskId:{}", spec.task_id),
            reason: format!("Created by BBB for task {}", spec.task_id),
            properties,
        }
    }
}

/// Runs one insert inside the injection's transaction and yields the new row's id:
/// `RETURNING` on PostgreSQL and SQLite, `LAST_INSERT_ID()` on MySQL.
macro_rules! insert_returning_id {
    (returning, $conn:expr, $query:expr) => {
        $query
            .fetch_one(&mut *$conn)
            .await
            .and_then(|row| row.try_get::<i64, _>(0))
    };
    (last_insert_id, $conn:expr, $query:expr) => {
        $query.execute(&mut *$conn).await.and_then(|done| {
            i64::try_from(done.last_insert_id()).map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
    };
}

/// The body of [`SchedulerDb::inject_buildrequest`] for one engine: one attempt, whose
/// transaction is rolled back (dropped uncommitted) on any error.
macro_rules! inject {
    ($pool:expr, $sql:ident, $id:tt, $spec:expr, $rows:expr) => {
        async {
            let (spec, rows) = ($spec, $rows);
            let fail = |statement: &'static str| move |error| DbError::Query { statement, error };
            let mut tx = $pool.begin().await.map_err(fail(BEGIN_INJECTION))?;
            let sourcestamp_id = insert_returning_id!(
                $id,
                tx,
                sqlx::query(INSERT_SOURCESTAMP.$sql)
                    .bind(&rows.branch)
                    .bind(&rows.revision)
                    .bind(&rows.repository)
                    .bind(&rows.project)
            )
            .map_err(fail(INSERT_SOURCESTAMP.name))?;
            let buildset_id = insert_returning_id!(
                $id,
                tx,
                sqlx::query(INSERT_BUILDSET.$sql)
                    .bind(&rows.external_idstring)
                    .bind(&rows.reason)
                    .bind(sourcestamp_id)
                    .bind(spec.submitted_at)
            )
            .map_err(fail(INSERT_BUILDSET.name))?;
            let mut properties = sqlx::QueryBuilder::new(INSERT_BUILDSET_PROPERTIES.$sql);
            properties.push_values(&rows.properties, |mut row, (name, value)| {
                row.push_bind(buildset_id).push_bind(name).push_bind(value);
            });
            properties
                .build()
                .execute(&mut *tx)
                .await
                .map_err(fail(INSERT_BUILDSET_PROPERTIES.name))?;
            let brid = insert_returning_id!(
                $id,
                tx,
                sqlx::query(INSERT_BUILDREQUEST.$sql)
                    .bind(buildset_id)
                    .bind(&spec.buildername)
                    .bind(spec.priority)
                    .bind(spec.submitted_at)
            )
            .map_err(fail(INSERT_BUILDREQUEST.name))?;
            tx.commit().await.map_err(fail(COMMIT_INJECTION))?;
            Ok::<i64, DbError>(brid)
        }
        .await
    };
}

/// Buildbot 0.8's scheduler database.
pub struct SchedulerDb {
    pool: Pool,
}

impl SchedulerDb {
    /// Opens a small pool. SQLite: waits when the master holds the lock, and leaves the
    /// database's journal mode as Buildbot set it.
    pub async fn connect(url: &DbUrl) -> Result<SchedulerDb, DbError> {
        Ok(SchedulerDb {
            pool: Pool::connect(url, SqliteMode::Foreign).await?,
        })
    }

    pub fn engine(&self) -> Engine {
        self.pool.engine()
    }

    /// Closes every connection (waits for connections in use to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers (`SELECT 1`); the readiness check.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        self.pool.ping().await
    }

    /// Creates a BuildRequest for the task, in one transaction: a sourcestamp, a buildset,
    /// its properties and the buildrequest (claimed_at 0, complete 0). Returns the
    /// buildrequest's id. Not idempotent by itself: callers insert the tracked row first.
    pub async fn inject_buildrequest(&self, spec: &BuildRequestSpec) -> Result<i64, DbError> {
        let rows = Injection::new(spec);
        let mut attempt: u32 = 1;
        loop {
            let result: Result<i64, DbError> = match &self.pool {
                Pool::Postgres(p) => inject!(p, standard, returning, spec, &rows),
                Pool::MySql(p) => inject!(p, mysql, last_insert_id, spec, &rows),
                Pool::Sqlite(p) => inject!(p, standard, returning, spec, &rows),
            };
            match result {
                // The transaction was rolled back: nothing of it remains, run it again.
                Err(DbError::Query { ref error, .. })
                    if attempt < DEADLOCK_ATTEMPTS && is_deadlock_victim(error) =>
                {
                    tokio::time::sleep(deadlock_backoff(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// The request injected for `task_id`, found by its buildset's `external_idstring`: makes
    /// injection idempotent when a crash came between the injection and recording its id.
    pub async fn buildrequest_for_task(&self, task_id: &str) -> Result<Option<i64>, DbError> {
        let external = format!("taskId:{task_id}");
        on_pool!(&self.pool, &BUILDREQUEST_FOR_TASK, |p, sql| {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(&external)
                .fetch_optional(p)
                .await
        })
    }

    /// The `taskId` property of each request's buildset, for the requests that have one:
    /// (brid, taskId), ordered by brid. One statement per 1000 ids.
    pub async fn task_ids_of(&self, brids: &[i64]) -> Result<Vec<(i64, String)>, DbError> {
        let mut found = Vec::new();
        for chunk in brids.chunks(IN_LIST_CHUNK) {
            let rows = on_pool!(&self.pool, &TASK_IDS_OF, |p, sql| {
                let mut query = sqlx::QueryBuilder::new(sql);
                let mut list = query.separated(", ");
                for brid in chunk {
                    list.push_bind(*brid);
                }
                query.push(")");
                query.build_query_as::<(i64, String)>().fetch_all(p).await
            })?;
            found.extend(rows.into_iter().filter_map(|(brid, raw)| {
                let value: Value = serde_json::from_str(&raw).ok()?;
                let task_id = value.get(0)?.as_str()?.to_owned();
                Some((brid, task_id))
            }));
        }
        found.sort();
        Ok(found)
    }

    pub async fn buildrequest(&self, brid: i64) -> Result<Option<BuildRequest>, DbError> {
        let row = on_pool!(&self.pool, &BUILDREQUEST, |p, sql| {
            sqlx::query_as::<_, BuildRequestRow>(sql)
                .bind(brid)
                .fetch_optional(p)
                .await
        })?;
        Ok(row.map(BuildRequest::from))
    }

    /// The buildrequests among `brids` that exist, ordered by id. One statement per
    /// 1000 ids.
    pub async fn buildrequests(&self, brids: &[i64]) -> Result<Vec<BuildRequest>, DbError> {
        let mut requests = Vec::new();
        for chunk in brids.chunks(IN_LIST_CHUNK) {
            let rows = on_pool!(&self.pool, &BUILDREQUESTS, |p, sql| {
                let mut query = sqlx::QueryBuilder::new(sql);
                let mut list = query.separated(", ");
                for brid in chunk {
                    list.push_bind(*brid);
                }
                query.push(")");
                query.build_query_as::<BuildRequestRow>().fetch_all(p).await
            })?;
            requests.extend(rows.into_iter().map(BuildRequest::from));
        }
        requests.sort_by_key(|r| r.id);
        Ok(requests)
    }

    /// The ids of the builds rows of the request (one per attempt: a RETRY adds one), ordered.
    pub async fn build_ids(&self, brid: i64) -> Result<Vec<i64>, DbError> {
        on_pool!(&self.pool, &BUILD_IDS, |p, sql| {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(brid)
                .fetch_all(p)
                .await
        })
    }

    /// The builds rows of all the requests, ordered by id. One statement per
    /// 1000 ids.
    pub async fn builds_for(&self, brids: &[i64]) -> Result<Vec<Build>, DbError> {
        let mut builds = Vec::new();
        for chunk in brids.chunks(IN_LIST_CHUNK) {
            let rows = on_pool!(&self.pool, &BUILDS_FOR, |p, sql| {
                let mut query = sqlx::QueryBuilder::new(sql);
                let mut list = query.separated(", ");
                for brid in chunk {
                    list.push_bind(*brid);
                }
                query.push(")");
                query.build_query_as::<Build>().fetch_all(p).await
            })?;
            builds.extend(rows);
        }
        builds.sort_by_key(|b| b.id);
        Ok(builds)
    }

    pub async fn count_builds(&self, brid: i64) -> Result<i64, DbError> {
        on_pool!(&self.pool, &COUNT_BUILDS, |p, sql| {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(brid)
                .fetch_one(p)
                .await
        })
    }

    /// The branch of the request's sourcestamp, as stored. `None` when the request does not
    /// exist or its sourcestamp has no branch.
    pub async fn branch_of(&self, brid: i64) -> Result<Option<String>, DbError> {
        let branch = on_pool!(&self.pool, &BRANCH_OF, |p, sql| {
            sqlx::query_scalar::<_, Option<String>>(sql)
                .bind(brid)
                .fetch_optional(p)
                .await
        })?;
        Ok(branch.flatten())
    }

    /// The buildset's properties: name -> the decoded `[value, source]` array. A value that is
    /// not JSON (not written by Buildbot or the bridge) is kept as a JSON string, with a
    /// warning, rather than failing the caller forever.
    pub async fn buildset_properties(
        &self,
        buildsetid: i64,
    ) -> Result<Map<String, Value>, DbError> {
        let rows = on_pool!(&self.pool, &BUILDSET_PROPERTIES, |p, sql| {
            sqlx::query_as::<_, (String, String)>(sql)
                .bind(buildsetid)
                .fetch_all(p)
                .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(name, raw)| {
                let value = serde_json::from_str(&raw).unwrap_or_else(|error| {
                    tracing::warn!(
                        buildsetid,
                        property = %name,
                        %error,
                        "buildset {buildsetid} property {name} is not JSON; kept as text"
                    );
                    Value::String(raw)
                });
                (name, value)
            })
            .collect())
    }
}

/// Creates Buildbot 0.8's five tables (and their indexes) when missing.
///
/// For tests and emulators only: a real master's database belongs to Buildbot.
pub async fn create_buildbot08_schema(db: &SchedulerDb) -> Result<(), DbError> {
    let fail = |error| DbError::Query {
        statement: "create_buildbot08_schema",
        error,
    };
    match &db.pool {
        Pool::Postgres(p) => sqlx::raw_sql(BUILDBOT08_SCHEMA_POSTGRES)
            .execute(p)
            .await
            .map(|_| ()),
        Pool::MySql(p) => sqlx::raw_sql(BUILDBOT08_SCHEMA_MYSQL)
            .execute(p)
            .await
            .map(|_| ()),
        Pool::Sqlite(p) => sqlx::raw_sql(BUILDBOT08_SCHEMA_SQLITE)
            .execute(p)
            .await
            .map(|_| ()),
    }
    .map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_branch_url_is_shortened_to_its_path() {
        assert_eq!(
            shorten_branch("https://hg.mozilla.org/integration/mozilla-inbound/"),
            "integration/mozilla-inbound"
        );
        assert_eq!(
            shorten_branch("https://hg.mozilla.org/mozilla-central"),
            "mozilla-central"
        );
    }

    #[test]
    fn a_branch_that_is_not_a_url_only_loses_surrounding_slashes() {
        assert_eq!(
            shorten_branch("integration/mozilla-inbound"),
            "integration/mozilla-inbound"
        );
        assert_eq!(
            shorten_branch("/releases/mozilla-beta/"),
            "releases/mozilla-beta"
        );
        assert_eq!(shorten_branch("try"), "try");
        assert_eq!(shorten_branch(""), "");
    }

    #[test]
    fn properties_are_stored_as_compact_value_source_pairs_with_the_task_id() {
        let mut properties = Map::new();
        properties.insert("product".into(), Value::from("firefox"));
        properties.insert("taskId".into(), Value::from("spoofed"));
        properties.insert("n".into(), serde_json::json!({"a": [1, 2]}));
        let spec = BuildRequestSpec {
            task_id: "fNdN0Jx9TmKf0yv7uJ3Q1w".into(),
            buildername: "b".into(),
            priority: 0,
            submitted_at: 0,
            branch: None,
            revision: None,
            repository: None,
            project: None,
            properties,
        };
        let rows = Injection::new(&spec);
        assert_eq!(
            rows.properties,
            vec![
                ("n".to_owned(), r#"[{"a":[1,2]},"bbb"]"#.to_owned()),
                ("product".to_owned(), r#"["firefox","bbb"]"#.to_owned()),
                (
                    "taskId".to_owned(),
                    r#"["fNdN0Jx9TmKf0yv7uJ3Q1w","bbb"]"#.to_owned()
                ),
            ]
        );
        assert_eq!(rows.external_idstring, "taskId:fNdN0Jx9TmKf0yv7uJ3Q1w");
        assert_eq!(
            rows.reason,
            "Created by BBB for task fNdN0Jx9TmKf0yv7uJ3Q1w"
        );
        assert_eq!((rows.repository.as_str(), rows.project.as_str()), ("", ""));
    }
}
