//! Buildbot 0.8's scheduler DB on the real servers: every query of `SchedulerDb` on MariaDB,
//! SQLite and PostgreSQL, and the exact forms it stores, each test in a database of its own.
//! The tests read and write Buildbot's tables directly (as a master would) through sqlx's
//! `Any` driver, with literal SQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bbb_shared::dburl::{DbUrl, Engine};
use bbb_shared::schedulerdb::{
    BuildRequestSpec, SchedulerDb, create_buildbot08_schema, shorten_branch,
};
use bbb_shared::testing::TestDb;
use serde_json::{Map, Value, json};
use sqlx::{AnyPool, AssertSqlSafe, Row};

/// Runs each named `async fn(Engine)` once per engine, as `<name>::on_<engine>`.
macro_rules! on_every_engine {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            use bbb_shared::dburl::Engine;
            #[tokio::test]
            async fn on_mysql() {
                super::$test(Engine::MySql).await
            }
            #[tokio::test]
            async fn on_sqlite() {
                super::$test(Engine::Sqlite).await
            }
            #[tokio::test]
            async fn on_postgres() {
                super::$test(Engine::Postgres).await
            }
        }
    )*};
}

on_every_engine!(
    the_buildbot08_schema_can_be_created_twice,
    an_injected_buildrequest_is_stored_in_the_exact_forms,
    a_failed_injection_leaves_no_rows_behind,
    buildrequests_are_read_alone_and_many_in_one_query,
    builds_are_found_by_buildrequest,
    a_property_that_is_not_json_is_kept_as_text,
    a_request_is_found_by_its_task_and_tasks_by_their_requests,
);

const TASK_ID: &str = "fNdN0Jx9TmKf0yv7uJ3Q1w";

struct Fixture {
    // Dropped last: the database goes after every connection to it.
    _test_db: TestDb,
    db: SchedulerDb,
    /// Direct access to Buildbot's tables, as a master has.
    raw: AnyPool,
}

impl Fixture {
    async fn new(engine: Engine) -> Fixture {
        let test_db = TestDb::create(engine).await.unwrap();
        let db = SchedulerDb::connect(test_db.url()).await.unwrap();
        assert_eq!(db.engine(), engine);
        create_buildbot08_schema(&db).await.unwrap();
        let raw = any_pool(test_db.url()).await;
        Fixture {
            _test_db: test_db,
            db,
            raw,
        }
    }

    async fn execute(&self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&self.raw)
            .await
            .unwrap();
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&self.raw)
            .await
            .unwrap()
            .get(0)
    }

    async fn close(self) {
        self.raw.close().await;
        self.db.close().await;
    }
}

async fn any_pool(url: &DbUrl) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url.expose()).await.unwrap()
}

fn spec(task_id: &str) -> BuildRequestSpec {
    let mut properties = Map::new();
    properties.insert("product".into(), json!("firefox"));
    properties.insert("upload_to_task_id".into(), json!(true));
    properties.insert("platforms".into(), json!(["linux64", "win32"]));
    BuildRequestSpec {
        task_id: task_id.to_owned(),
        buildername: "Linux x86-64 mozilla-inbound build".to_owned(),
        priority: 1,
        submitted_at: 1_446_575_010,
        branch: Some("https://hg.mozilla.org/integration/mozilla-inbound/".to_owned()),
        revision: Some("bd3d049a39ad16c75357edacf9f0867246012b7c".to_owned()),
        repository: None,
        project: None,
        properties,
    }
}

async fn the_buildbot08_schema_can_be_created_twice(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    create_buildbot08_schema(&fixture.db).await.unwrap();
    for table in [
        "sourcestamps",
        "buildsets",
        "buildset_properties",
        "buildrequests",
        "builds",
    ] {
        assert_eq!(fixture.count(table).await, 0, "{table}");
    }
    fixture.close().await;
}

async fn an_injected_buildrequest_is_stored_in_the_exact_forms(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    let brid = fixture
        .db
        .inject_buildrequest(&spec(TASK_ID))
        .await
        .unwrap();

    let request = fixture.db.buildrequest(brid).await.unwrap().unwrap();
    assert_eq!(request.id, brid);
    assert_eq!(request.buildername, "Linux x86-64 mozilla-inbound build");
    assert_eq!(request.priority, 1);
    assert_eq!(request.claimed_at, 0);
    assert_eq!(request.claimed_by_name, None);
    assert!(!request.complete);
    assert_eq!(request.results, None);
    assert_eq!(request.submitted_at, 1_446_575_010);
    assert_eq!(request.complete_at, None);

    let buildset = sqlx::query(AssertSqlSafe(format!(
        "SELECT external_idstring, reason, sourcestampid, submitted_at, complete, complete_at, results \
         FROM buildsets WHERE id = {}",
        request.buildsetid
    )))
    .fetch_one(&fixture.raw)
    .await
    .unwrap();
    assert_eq!(
        buildset.get::<String, _>("external_idstring"),
        format!("taskId:{TASK_ID}")
    );
    assert_eq!(
        buildset.get::<String, _>("reason"),
        format!("Created by BBB for task {TASK_ID}")
    );
    assert_eq!(buildset.get::<i64, _>("submitted_at"), 1_446_575_010);
    assert_eq!(buildset.get::<i64, _>("complete"), 0);
    assert_eq!(buildset.get::<Option<i64>, _>("complete_at"), None);
    assert_eq!(buildset.get::<Option<i64>, _>("results"), None);

    let sourcestamp = sqlx::query(AssertSqlSafe(format!(
        "SELECT branch, revision, patchid, repository, project FROM sourcestamps WHERE id = {}",
        buildset.get::<i64, _>("sourcestampid")
    )))
    .fetch_one(&fixture.raw)
    .await
    .unwrap();
    assert_eq!(
        sourcestamp.get::<String, _>("branch"),
        "integration/mozilla-inbound"
    );
    assert_eq!(
        sourcestamp.get::<String, _>("revision"),
        "bd3d049a39ad16c75357edacf9f0867246012b7c"
    );
    assert_eq!(sourcestamp.get::<Option<i64>, _>("patchid"), None);
    assert_eq!(sourcestamp.get::<String, _>("repository"), "");
    assert_eq!(sourcestamp.get::<String, _>("project"), "");

    let mut stored: Vec<(String, String)> = sqlx::query(AssertSqlSafe(format!(
        "SELECT property_name, property_value FROM buildset_properties WHERE buildsetid = {}",
        request.buildsetid
    )))
    .fetch_all(&fixture.raw)
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect();
    stored.sort();
    let expected = [
        ("platforms", r#"[["linux64","win32"],"bbb"]"#),
        ("product", r#"["firefox","bbb"]"#),
        ("taskId", r#"["fNdN0Jx9TmKf0yv7uJ3Q1w","bbb"]"#),
        ("upload_to_task_id", r#"[true,"bbb"]"#),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(stored, expected);

    // The same, read back through the API.
    let properties = fixture
        .db
        .buildset_properties(request.buildsetid)
        .await
        .unwrap();
    assert_eq!(properties.len(), 4);
    assert_eq!(properties["product"], json!(["firefox", "bbb"]));
    assert_eq!(properties["taskId"], json!([TASK_ID, "bbb"]));
    assert_eq!(
        fixture.db.branch_of(brid).await.unwrap().as_deref(),
        Some("integration/mozilla-inbound")
    );
    assert_eq!(fixture.db.branch_of(brid + 1000).await.unwrap(), None);

    // A second injection gets its own rows; a branch that is not a URL is kept.
    let mut other = spec("otherTask0000000000000");
    other.branch = Some("try".to_owned());
    other.repository = Some("https://hg.mozilla.org/try".to_owned());
    other.priority = 0;
    let other_brid = fixture.db.inject_buildrequest(&other).await.unwrap();
    assert_ne!(other_brid, brid);
    assert_eq!(
        fixture.db.branch_of(other_brid).await.unwrap().as_deref(),
        Some("try")
    );
    assert_eq!(
        fixture
            .db
            .buildrequest(other_brid)
            .await
            .unwrap()
            .unwrap()
            .priority,
        0
    );
    assert_eq!(fixture.count("buildrequests").await, 2);
    assert_eq!(fixture.count("buildset_properties").await, 8);
    fixture.close().await;
}

async fn a_failed_injection_leaves_no_rows_behind(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    // The last insert of the transaction fails.
    fixture.execute("DROP TABLE buildrequests").await;
    let error = fixture
        .db
        .inject_buildrequest(&spec(TASK_ID))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("insert_buildrequest"), "{error}");
    assert!(!error.is_transient());
    for table in ["sourcestamps", "buildsets", "buildset_properties"] {
        assert_eq!(fixture.count(table).await, 0, "{table}");
    }
    fixture.close().await;
}

async fn a_request_is_found_by_its_task_and_tasks_by_their_requests(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    assert_eq!(
        fixture.db.buildrequest_for_task(TASK_ID).await.unwrap(),
        None
    );
    let a = fixture
        .db
        .inject_buildrequest(&spec(TASK_ID))
        .await
        .unwrap();
    let b = fixture
        .db
        .inject_buildrequest(&spec("otherTask0000000000000"))
        .await
        .unwrap();
    // A request of Buildbot's own, without a taskId property.
    fixture
        .execute(
            "INSERT INTO buildsets (external_idstring, reason, sourcestampid, submitted_at, complete) \
             VALUES (NULL, 'scheduler', 1, 1446575010, 0)",
        )
        .await;
    fixture
        .execute(
            "INSERT INTO buildrequests (buildsetid, buildername, priority, claimed_at, complete, submitted_at) \
             VALUES (3, 'Linux x86-64 mozilla-inbound build', 0, 0, 0, 1446575010)",
        )
        .await;
    assert_eq!(
        fixture.db.buildrequest_for_task(TASK_ID).await.unwrap(),
        Some(a)
    );
    assert_eq!(
        fixture.db.task_ids_of(&[b, a, b + 1, 999]).await.unwrap(),
        vec![
            (a, TASK_ID.to_owned()),
            (b, "otherTask0000000000000".to_owned())
        ]
    );
    fixture.close().await;
}

async fn buildrequests_are_read_alone_and_many_in_one_query(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    let mut brids = Vec::new();
    for i in 0..3 {
        let brid = fixture
            .db
            .inject_buildrequest(&spec(&format!("manyTask{i:014}")))
            .await
            .unwrap();
        brids.push(brid);
    }
    // A master claims the first and completes it; self-serve cancels the second before start.
    fixture
        .execute(&format!(
            "UPDATE buildrequests SET claimed_at = 1446575100, claimed_by_name = 'bm71:/builds/buildbot/build1', \
             claimed_by_incarnation = 'pid14770-boot1446339941', complete = 1, results = 0, complete_at = 1446578000 \
             WHERE id = {}",
            brids[0]
        ))
        .await;
    fixture
        .execute(&format!(
            "UPDATE buildrequests SET complete = 1, results = 2, complete_at = 1446575200 WHERE id = {}",
            brids[1]
        ))
        .await;

    let done = fixture.db.buildrequest(brids[0]).await.unwrap().unwrap();
    assert_eq!(
        (
            done.claimed_at,
            done.claimed_by_name.as_deref(),
            done.complete,
            done.results,
            done.complete_at
        ),
        (
            1_446_575_100,
            Some("bm71:/builds/buildbot/build1"),
            true,
            Some(0),
            Some(1_446_578_000)
        )
    );
    assert_eq!(
        fixture.db.buildrequest(brids[2] + 1000).await.unwrap(),
        None
    );

    let mut asked = vec![brids[2] + 1000, brids[2], brids[1], brids[0]];
    let many = fixture.db.buildrequests(&asked).await.unwrap();
    assert_eq!(many.iter().map(|r| r.id).collect::<Vec<_>>(), brids);
    let cancelled = &many[1];
    assert!(cancelled.complete && cancelled.claimed_at == 0 && cancelled.results == Some(2));
    assert!(!many[2].complete);
    assert!(fixture.db.buildrequests(&[]).await.unwrap().is_empty());
    // More ids than one statement takes.
    asked.extend(10_000..13_000);
    assert_eq!(fixture.db.buildrequests(&asked).await.unwrap().len(), 3);
    fixture.close().await;
}

async fn builds_are_found_by_buildrequest(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    let retried = fixture
        .db
        .inject_buildrequest(&spec("retriedTask00000000000"))
        .await
        .unwrap();
    let merged = fixture
        .db
        .inject_buildrequest(&spec("mergedTask000000000000"))
        .await
        .unwrap();
    let pending = fixture
        .db
        .inject_buildrequest(&spec("pendingTask00000000000"))
        .await
        .unwrap();
    // A RETRY: two builds rows for one request; then a Build serving two merged requests.
    fixture
        .execute(&format!(
            "INSERT INTO builds (number, brid, start_time, finish_time) VALUES (1210, {retried}, 1446575100, 1446575500);
             INSERT INTO builds (number, brid, start_time, finish_time) VALUES (1211, {retried}, 1446575600, NULL);
             INSERT INTO builds (number, brid, start_time, finish_time) VALUES (1211, {merged}, 1446575600, NULL);"
        ))
        .await;

    let retried_ids = fixture.db.build_ids(retried).await.unwrap();
    assert_eq!(retried_ids.len(), 2);
    assert!(retried_ids[0] < retried_ids[1]);
    assert_eq!(fixture.db.count_builds(retried).await.unwrap(), 2);
    assert_eq!(fixture.db.count_builds(merged).await.unwrap(), 1);
    assert_eq!(fixture.db.count_builds(pending).await.unwrap(), 0);
    assert!(fixture.db.build_ids(pending).await.unwrap().is_empty());

    let builds = fixture
        .db
        .builds_for(&[pending, merged, retried])
        .await
        .unwrap();
    let summary: Vec<_> = builds
        .iter()
        .map(|b| (b.number, b.brid, b.start_time, b.finish_time))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1210, retried, 1_446_575_100, Some(1_446_575_500)),
            (1211, retried, 1_446_575_600, None),
            (1211, merged, 1_446_575_600, None),
        ]
    );
    assert_eq!(builds[0].id, retried_ids[0]);
    assert!(fixture.db.builds_for(&[]).await.unwrap().is_empty());
    fixture.close().await;
}

async fn a_property_that_is_not_json_is_kept_as_text(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    fixture
        .execute(
            "INSERT INTO buildset_properties (buildsetid, property_name, property_value) VALUES (77, 'odd', 'not json');
             INSERT INTO buildset_properties (buildsetid, property_name, property_value) VALUES (77, 'even', '[2, \"Scheduler\"]');",
        )
        .await;
    let properties = fixture.db.buildset_properties(77).await.unwrap();
    assert_eq!(properties["odd"], Value::from("not json"));
    assert_eq!(properties["even"], json!([2, "Scheduler"]));
    assert!(fixture.db.buildset_properties(78).await.unwrap().is_empty());
    fixture.close().await;
}

#[test]
fn branch_urls_are_shortened_to_their_path() {
    assert_eq!(
        shorten_branch("https://hg.mozilla.org/integration/mozilla-inbound/"),
        "integration/mozilla-inbound"
    );
    assert_eq!(
        shorten_branch("/integration/mozilla-inbound/"),
        "integration/mozilla-inbound"
    );
}
