//! The bridge's database on the real servers: every query of `BridgeDb` on PostgreSQL,
//! MariaDB and SQLite, each test in a database of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bbb_shared::bridgedb::{BridgeDb, TrackedTask};
use bbb_shared::dburl::{DbUrl, Engine};
use bbb_shared::testing::TestDb;
use sqlx::AssertSqlSafe;

/// Runs each named `async fn(Engine)` once per engine, as `<name>::on_<engine>`.
macro_rules! on_every_engine {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            use bbb_shared::dburl::Engine;
            #[tokio::test]
            async fn on_postgres() {
                super::$test(Engine::Postgres).await
            }
            #[tokio::test]
            async fn on_mysql() {
                super::$test(Engine::MySql).await
            }
            #[tokio::test]
            async fn on_sqlite() {
                super::$test(Engine::Sqlite).await
            }
        }
    )*};
}

on_every_engine!(
    migrations_apply_to_an_empty_database_and_again_as_a_no_op,
    an_original_tasks_table_is_adopted_with_its_rows,
    a_task_is_inserted_once_and_a_duplicate_returns_false,
    get_task_returns_the_highest_run_of_the_task,
    update_run_id_only_moves_forward,
    buildrequest_ids_are_stored_and_found_in_one_query,
    taken_until_is_stored_for_the_run,
    delete_task_removes_every_run_of_the_task,
    keyset_pages_cover_every_task_exactly_once,
    concurrent_writers_all_succeed,
);

async fn fresh(engine: Engine) -> (TestDb, BridgeDb) {
    let test_db = TestDb::create(engine).await.unwrap();
    let db = BridgeDb::connect(test_db.url()).await.unwrap();
    assert_eq!(db.engine(), engine);
    db.migrate().await.unwrap();
    (test_db, db)
}

fn task(task_id: &str, run_id: i64) -> TrackedTask {
    TrackedTask {
        task_id: task_id.to_owned(),
        run_id,
        buildrequest_id: None,
        created_date: 1_446_575_000,
        processed_date: 1_446_575_010,
        taken_until: None,
        buildername: Some("Linux x86-64 mozilla-inbound build".to_owned()),
        branch: Some("integration/mozilla-inbound".to_owned()),
        claimed_by: None,
        task_expires: Some(1_478_111_000),
    }
}

/// Runs SQL text on the database outside `BridgeDb`, as another program would.
async fn raw_sql(url: &DbUrl, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url.expose()).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

async fn migrations_apply_to_an_empty_database_and_again_as_a_no_op(engine: Engine) {
    let (_test_db, db) = fresh(engine).await;
    db.migrate().await.unwrap();
    // The columns of both migrations are there.
    let t = task("fNdN0Jx9TmKf0yv7uJ3Q1w", 0);
    assert!(db.insert_task(&t).await.unwrap());
    assert_eq!(db.get_task(&t.task_id).await.unwrap(), Some(t));
    db.close().await;
}

/// The original's table as SQLAlchemy created it: every column nullable, quoted mixed-case
/// names, `ix_tasks_*` indexes, with rows.
fn original_table(engine: Engine) -> &'static str {
    match engine {
        Engine::MySql => {
            "CREATE TABLE tasks (
                `buildrequestId` INTEGER, `taskId` VARCHAR(32), `runId` INTEGER,
                `createdDate` INTEGER, `processedDate` INTEGER, `takenUntil` INTEGER,
                UNIQUE (`taskId`, `runId`));
            CREATE INDEX `ix_tasks_buildrequestId` ON tasks (`buildrequestId`);
            CREATE INDEX `ix_tasks_taskId` ON tasks (`taskId`);
            CREATE INDEX `ix_tasks_takenUntil` ON tasks (`takenUntil`);
            INSERT INTO tasks VALUES (101, 'adoptedTaskAAAAAAAAAAA', 0, 1446575000, 1446575010, NULL);
            INSERT INTO tasks VALUES (102, 'adoptedTaskBBBBBBBBBBB', 1, 1446575001, 1446575011, 1446576000);"
        }
        Engine::Postgres | Engine::Sqlite => {
            r#"CREATE TABLE tasks (
                "buildrequestId" INTEGER, "taskId" VARCHAR(32), "runId" INTEGER,
                "createdDate" INTEGER, "processedDate" INTEGER, "takenUntil" INTEGER,
                UNIQUE ("taskId", "runId"));
            CREATE INDEX "ix_tasks_buildrequestId" ON tasks ("buildrequestId");
            CREATE INDEX "ix_tasks_taskId" ON tasks ("taskId");
            CREATE INDEX "ix_tasks_takenUntil" ON tasks ("takenUntil");
            INSERT INTO tasks VALUES (101, 'adoptedTaskAAAAAAAAAAA', 0, 1446575000, 1446575010, NULL);
            INSERT INTO tasks VALUES (102, 'adoptedTaskBBBBBBBBBBB', 1, 1446575001, 1446575011, 1446576000);"#
        }
    }
}

async fn an_original_tasks_table_is_adopted_with_its_rows(engine: Engine) {
    let test_db = TestDb::create(engine).await.unwrap();
    raw_sql(test_db.url(), original_table(engine)).await;
    let db = BridgeDb::connect(test_db.url()).await.unwrap();
    db.migrate().await.unwrap();

    assert_eq!(db.count_tasks().await.unwrap(), 2);
    assert_eq!(
        db.get_task("adoptedTaskBBBBBBBBBBB").await.unwrap(),
        Some(TrackedTask {
            task_id: "adoptedTaskBBBBBBBBBBB".to_owned(),
            run_id: 1,
            buildrequest_id: Some(102),
            created_date: 1_446_575_001,
            processed_date: 1_446_575_011,
            taken_until: Some(1_446_576_000),
            buildername: None,
            branch: None,
            claimed_by: None,
            task_expires: None,
        })
    );
    let by_brid = db.tasks_by_buildrequest_ids(&[101]).await.unwrap();
    assert_eq!(by_brid.len(), 1);
    assert_eq!(by_brid[0].task_id, "adoptedTaskAAAAAAAAAAA");
    assert_eq!(by_brid[0].taken_until, None);
    // The adopted table keeps working: its unique constraint, new rows, updates.
    assert!(
        !db.insert_task(&task("adoptedTaskAAAAAAAAAAA", 0))
            .await
            .unwrap()
    );
    assert!(
        db.insert_task(&task("newTaskCCCCCCCCCCCCCCC", 0))
            .await
            .unwrap()
    );
    assert!(db.update_run_id("adoptedTaskAAAAAAAAAAA", 1).await.unwrap());
    assert_eq!(db.count_tasks().await.unwrap(), 3);
    db.close().await;
}

async fn a_task_is_inserted_once_and_a_duplicate_returns_false(engine: Engine) {
    let (_test_db, db) = fresh(engine).await;
    let t = task("fNdN0Jx9TmKf0yv7uJ3Q1w", 0);
    assert!(db.insert_task(&t).await.unwrap());
    let mut again = t.clone();
    again.processed_date += 60;
    assert!(!db.insert_task(&again).await.unwrap());
    assert_eq!(db.get_task(&t.task_id).await.unwrap(), Some(t.clone()));
    // Same taskId, another run: a distinct row.
    assert!(db.insert_task(&task(&t.task_id, 1)).await.unwrap());
    // taskIds are case-sensitive slugs.
    assert!(
        db.insert_task(&task("fndn0jx9tmkf0yv7uj3q1w", 0))
            .await
            .unwrap()
    );
    assert_eq!(db.get_task("nOtTracked000000000000").await.unwrap(), None);
    db.close().await;
}

async fn get_task_returns_the_highest_run_of_the_task(engine: Engine) {
    let (_test_db, db) = fresh(engine).await;
    for run_id in [0, 2, 1] {
        assert!(
            db.insert_task(&task("multiRunTask0000000000", run_id))
                .await
                .unwrap()
        );
    }
    let got = db
        .get_task("multiRunTask0000000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.run_id, 2);
    assert_eq!(db.count_tasks().await.unwrap(), 1);
    db.close().await;
}

async fn update_run_id_only_moves_forward(engine: Engine) {
    let (_test_db, db) = fresh(engine).await;
    let id = "rerunTask0000000000000";
    assert!(db.insert_task(&task(id, 1)).await.unwrap());
    db.set_taken_until(id, 1, 1_446_576_000).await.unwrap();

    assert!(!db.update_run_id(id, 0).await.unwrap(), "backwards");
    assert!(!db.update_run_id(id, 1).await.unwrap(), "same run");
    assert_eq!(db.get_task(id).await.unwrap().unwrap().run_id, 1);

    assert!(db.update_run_id(id, 3).await.unwrap());
    let moved = db.get_task(id).await.unwrap().unwrap();
    assert_eq!(
        (moved.run_id, moved.taken_until),
        (3, None),
        "the old run's claim is gone"
    );
    assert!(!db.update_run_id(id, 2).await.unwrap());
    assert!(!db.update_run_id("nOtTracked000000000000", 5).await.unwrap());
    // A claim held by a Build is released by the move to a new run.
    db.set_claim(id, 3, Some(1_446_577_000), Some("bm71/linux/1210"))
        .await
        .unwrap();
    let claimed = db.get_task(id).await.unwrap().unwrap();
    assert_eq!(
        (claimed.taken_until, claimed.claimed_by.as_deref()),
        (Some(1_446_577_000), Some("bm71/linux/1210"))
    );
    assert!(db.update_run_id(id, 4).await.unwrap());
    assert_eq!(db.get_task(id).await.unwrap().unwrap().claimed_by, None);
    db.set_claim(id, 4, Some(1_446_578_000), Some("bm71/linux/1211"))
        .await
        .unwrap();
    db.set_claim(id, 4, None, None).await.unwrap();
    let cleared = db.get_task(id).await.unwrap().unwrap();
    assert_eq!((cleared.taken_until, cleared.claimed_by), (None, None));
    db.close().await;
}

async fn buildrequest_ids_are_stored_and_found_in_one_query(engine: Engine) {
    let (_test_db, db) = fresh(engine).await;
    for (i, id) in [
        "brTaskA000000000000000",
        "brTaskB000000000000000",
        "brTaskC000000000000000",
    ]
    .iter()
    .enumerate()
    {
        assert!(db.insert_task(&task(id, 0)).await.unwrap());
        db.set_buildrequest_id(id, 0, 86_737_608 + i as i64)
            .await
            .unwrap();
    }
    // Another run of the task is not touched.
    db.set_buildrequest_id("brTaskA000000000000000", 7, 1)
        .await
        .unwrap();

    let found = db
        .tasks_by_buildrequest_ids(&[86_737_610, 86_737_608, 999])
        .await
        .unwrap();
    let found: Vec<_> = found
        .iter()
        .map(|t| (t.buildrequest_id, t.task_id.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (Some(86_737_608), "brTaskA000000000000000"),
            (Some(86_737_610), "brTaskC000000000000000"),
        ]
    );
    assert!(db.tasks_by_buildrequest_ids(&[]).await.unwrap().is_empty());
    // More ids than one statement takes.
    let many: Vec<i64> = (86_737_000..86_740_000).collect();
    assert_eq!(db.tasks_by_buildrequest_ids(&many).await.unwrap().len(), 3);
    db.close().await;
}

async fn taken_until_is_stored_for_the_run(engine: Engine) {
    let (_test_db, db) = fresh(engine).await;
    let id = "claimedTask00000000000";
    assert!(db.insert_task(&task(id, 0)).await.unwrap());
    db.set_taken_until(id, 0, 1_446_576_000).await.unwrap();
    assert_eq!(
        db.get_task(id).await.unwrap().unwrap().taken_until,
        Some(1_446_576_000)
    );
    // A claim of another run does not land on this one.
    db.set_taken_until(id, 1, 1_446_579_999).await.unwrap();
    assert_eq!(
        db.get_task(id).await.unwrap().unwrap().taken_until,
        Some(1_446_576_000)
    );
    db.close().await;
}

async fn delete_task_removes_every_run_of_the_task(engine: Engine) {
    let (_test_db, db) = fresh(engine).await;
    assert!(
        db.insert_task(&task("doneTask00000000000000", 0))
            .await
            .unwrap()
    );
    assert!(
        db.insert_task(&task("doneTask00000000000000", 1))
            .await
            .unwrap()
    );
    assert!(
        db.insert_task(&task("keptTask00000000000000", 0))
            .await
            .unwrap()
    );
    assert_eq!(db.delete_task("doneTask00000000000000").await.unwrap(), 2);
    assert_eq!(db.delete_task("doneTask00000000000000").await.unwrap(), 0);
    assert_eq!(db.get_task("doneTask00000000000000").await.unwrap(), None);
    assert_eq!(db.count_tasks().await.unwrap(), 1);
    db.close().await;
}

async fn keyset_pages_cover_every_task_exactly_once(engine: Engine) {
    let (_test_db, db) = fresh(engine).await;
    // Mixed case and digits, as slugs are; one task with two runs.
    let mut ids: Vec<String> = (0..23)
        .map(|i| format!("{}pageTask{i:013}", ["A", "b", "Z", "0", "_"][i % 5]))
        .collect();
    for id in &ids {
        assert!(db.insert_task(&task(id, 0)).await.unwrap());
    }
    let two_runs = ids[4].clone();
    assert!(db.insert_task(&task(&two_runs, 1)).await.unwrap());
    assert_eq!(db.count_tasks().await.unwrap(), 23);

    let mut seen: Vec<TrackedTask> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = db.list_tasks_page(after.as_deref(), 5).await.unwrap();
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        after = Some(last.task_id.clone());
        seen.extend(page);
    }
    let mut seen_ids: Vec<String> = seen.iter().map(|t| t.task_id.clone()).collect();
    let in_page_order = seen_ids.clone();
    seen_ids.sort();
    seen_ids.dedup();
    ids.sort();
    assert_eq!(seen_ids, ids, "every task, once");
    assert_eq!(in_page_order.len(), 23, "no task twice");
    let multi = seen.iter().find(|t| t.task_id == two_runs).unwrap();
    assert_eq!(multi.run_id, 1, "a task is listed with its latest run");
    assert!(db.list_tasks_page(Some("~"), 5).await.unwrap().is_empty());
    db.close().await;
}

async fn concurrent_writers_all_succeed(engine: Engine) {
    let (_test_db, db) = fresh(engine).await;
    let db = Arc::new(db);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let db = Arc::clone(&db);
            tokio::spawn(async move {
                for i in 0..15 {
                    let id = format!("w{w}concurrent{i:010}");
                    assert!(db.insert_task(&task(&id, 0)).await.unwrap());
                    db.set_buildrequest_id(&id, 0, w * 100 + i).await.unwrap();
                    assert!(db.update_run_id(&id, 1).await.unwrap());
                    db.set_taken_until(&id, 1, 1_446_576_000).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(db.count_tasks().await.unwrap(), 8 * 15);
    db.close().await;
}

#[tokio::test]
async fn a_connect_error_names_the_server_but_not_the_password() {
    for raw in [
        "postgres://bbb:sekrit-pw@127.0.0.1:5432/no_such_database_bbb",
        "mysql://bbb:sekrit-pw@127.0.0.1:3306/no_such_database_bbb",
    ] {
        let url = DbUrl::parse(raw).unwrap();
        let Err(error) = BridgeDb::connect(&url).await else {
            panic!("connected to {url}");
        };
        let text = error.to_string();
        assert!(text.contains("127.0.0.1"), "{text}");
        assert!(!text.contains("sekrit-pw"), "{text}");
        assert!(!format!("{error:?}").contains("sekrit-pw"));
        assert!(
            !error.is_transient(),
            "refused credentials need a human: {error}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error() {
    let url = DbUrl::parse("postgres://bbb:sekrit-pw@127.0.0.1:1/bbb").unwrap();
    let Err(error) = BridgeDb::connect(&url).await else {
        panic!("connected to {url}");
    };
    assert!(error.is_transient(), "{error}");
    assert!(!error.to_string().contains("sekrit-pw"), "{error}");
}
