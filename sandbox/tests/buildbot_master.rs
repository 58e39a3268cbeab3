#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The emulated Buildbot 0.8 master against real MariaDB and SQLite scheduler DBs and a real
//! RabbitMQ: claims, builds rows, completion, merge, RETRY, concurrent masters, re-stamping,
//! take-over after a restart, and the Pulse fault options. Every scenario runs on both
//! engines; every wait polls a condition.
use std::time::Duration;

use bbb_sandbox::buildbot::{PulseFaults, builder_dir};
use serde_json::{Value, json};

mod common;
use common::*;

// ---------------------------------------------------------------------------------------------
// Test support: tests/common/mod.rs.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claimed_request_gets_a_builds_row_and_a_started_message() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let name = "bm01.bbb.test:/builds/buildbot/build1/master";
        let master = w
            .master(settings(name, &w.bus, Duration::from_secs(3600)))
            .await;
        let task = task_id();
        let brid = w
            .inject(&spec(&task, "abc123", w.clock.now_secs(), json!({})))
            .await;

        let builds = eventually("a builds row", || async {
            let b = w.builds(brid).await;
            (!b.is_empty()).then_some(b)
        })
        .await;
        assert_eq!(builds.len(), 1, "{engine}");
        assert_eq!(builds[0].finish_time, None);
        let request = w.request(brid).await;
        assert_eq!(request.claimed_by_name.as_deref(), Some(name));
        assert!(
            (request.claimed_at - w.clock.now_secs()).abs() < 10,
            "{engine}"
        );
        assert!(!request.complete);
        let incarnation = scalar(
            &w.db.url,
            "SELECT claimed_by_incarnation FROM buildrequests WHERE id = ?",
            brid,
        )
        .await
        .unwrap();
        assert_eq!(incarnation, master.incarnation());
        assert!(incarnation.starts_with(&format!("pid{}-boot", std::process::id())));

        let started = w.message("started", brid, 1).await.remove(0);
        let number = builds[0].number;
        assert_eq!(
            started.routing_key,
            format!("build.{}.{number}.started", builder_dir(BUILDER))
        );
        assert_eq!(
            started.routing_key,
            format!("build.linux_x86-64_mozilla-inbound_build.{number}.started")
        );
        let meta = &started.body["_meta"];
        assert_eq!(meta["exchange"], w.bus.exchange.as_str());
        assert_eq!(meta["routing_key"], started.routing_key.as_str());
        assert_eq!(meta["serializer"], "json");
        assert_eq!(meta["master_name"], name);
        assert_eq!(meta["master_incarnation"], master.incarnation());
        assert!(meta["message_id"].is_string());
        let sent = meta["sent"].as_str().unwrap();
        assert!(
            sent.ends_with("-08:00") || sent.ends_with("-07:00"),
            "{sent}"
        );
        assert_eq!(started.payload()["request_ids"], json!([brid]));
        let build = started.build();
        assert_eq!(build["builderName"], BUILDER);
        assert_eq!(build["number"], number);
        assert_eq!(build["results"], Value::Null);
        assert_eq!(build["times"][1], Value::Null);
        assert_eq!(
            build["sourceStamp"]["branch"],
            "integration/mozilla-inbound"
        );
        assert_eq!(build["sourceStamp"]["revision"], "abc123");
        assert_eq!(build["reason"], format!("Created by BBB for task {task}"));
        assert_eq!(
            property(build, "taskId"),
            Some((json!(task), "bbb".to_owned()))
        );
        assert_eq!(
            property(build, "product"),
            Some((json!("firefox"), "bbb".to_owned()))
        );
        assert_eq!(
            property(build, "buildername"),
            Some((json!(BUILDER), "Builder".to_owned()))
        );
        assert_eq!(
            property(build, "buildnumber"),
            Some((json!(number), "Build".to_owned()))
        );
        assert_eq!(
            property(build, "branch"),
            Some((json!("mozilla-inbound"), "Builder".to_owned()))
        );
        assert_eq!(property(build, "slavename").unwrap().1, "BuildSlave");
        let names: Vec<&str> = build["properties"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "properties are sorted");

        master.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_successful_build_completes_its_request_then_sends_finished_and_log_uploaded() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let master = w
            .master(settings(
                "bm02.bbb.test:/m",
                &w.bus,
                Duration::from_millis(100),
            ))
            .await;
        let task = task_id();
        let submitted_at = w.clock.now_secs() - 30;
        let brid = w
            .inject(&spec(&task, "def456", submitted_at, json!({})))
            .await;

        let request = w.complete(brid).await;
        assert_eq!(request.results, Some(0), "{engine}");
        assert!(request.complete_at.is_some());
        assert_eq!(request.claimed_by_name.as_deref(), Some("bm02.bbb.test:/m"));
        let builds = w.builds(brid).await;
        assert_eq!(builds.len(), 1);
        assert!(builds[0].finish_time.is_some());
        assert_eq!(
            buildset_results(&w.db.url, request.buildsetid)
                .await
                .as_deref(),
            Some("0")
        );

        let log = w.message("log_uploaded", brid, 1).await.remove(0);
        let kinds: Vec<String> = w
            .bus
            .all()
            .iter()
            .filter(|m| m.request_ids().contains(&brid))
            .map(|m| m.kind().to_owned())
            .collect();
        assert_eq!(kinds, ["started", "finished", "log_uploaded"], "{engine}");
        let number = builds[0].number;
        let dir = builder_dir(BUILDER);

        let finished = w.bus.of("finished", brid).remove(0);
        assert_eq!(
            finished.routing_key,
            format!("build.{dir}.{number}.finished")
        );
        assert_eq!(finished.payload()["results"], 0);
        assert_eq!(finished.payload()["request_ids"], json!([brid]));
        assert_eq!(finished.build()["builderName"], BUILDER);
        assert_eq!(finished.build()["results"], 0);
        assert_eq!(finished.build()["text"], json!(["build", "successful"]));
        assert!(
            finished.build()["times"][0].is_string() && finished.build()["times"][1].is_string()
        );

        assert_eq!(
            log.routing_key,
            format!("build.{dir}.{number}.log_uploaded")
        );
        assert_eq!(log.body["_meta"]["routing_key"], log.routing_key.as_str());
        let payload_keys: Vec<&String> = log.payload().as_object().unwrap().keys().collect();
        assert_eq!(payload_keys, ["build"]);
        let build = log.build();
        assert_eq!(build["builderName"], dir.as_str());
        assert_eq!(build["results"], 0);
        assert_eq!(
            property(build, "buildername"),
            Some((json!(BUILDER), "Builder".to_owned()))
        );
        assert_eq!(
            property(build, "taskId"),
            Some((json!(task), "bbb".to_owned()))
        );
        let (log_url, source) = property(build, "log_url").unwrap();
        assert_eq!(source, "postrun.py");
        assert!(
            log_url.as_str().unwrap().starts_with("https://"),
            "{log_url}"
        );
        assert_eq!(
            property(build, "request_ids"),
            Some((json!([brid]), "postrun.py".to_owned()))
        );
        assert_eq!(
            property(build, "request_times"),
            Some((
                json!({ brid.to_string(): submitted_at }),
                "postrun.py".to_owned()
            ))
        );
        let (statusdb_id, _) = property(build, "statusdb_id").unwrap();
        assert!(statusdb_id.is_i64());
        assert_eq!(log.body["_meta"]["message_id"], statusdb_id);

        master.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compatible_requests_are_merged_into_one_build() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let now = w.clock.now_secs();
        // Injected before the master starts, so that its first poll sees them all.
        let a = w
            .inject(&spec(&task_id(), "same", now - 20, json!({})))
            .await;
        let b = w
            .inject(&spec(&task_id(), "same", now - 10, json!({})))
            .await;
        let other = w
            .inject(&spec(&task_id(), "different", now - 15, json!({})))
            .await;
        let master = w
            .master(settings(
                "bm03.bbb.test:/m",
                &w.bus,
                Duration::from_millis(100),
            ))
            .await;
        for brid in [a, b, other] {
            assert_eq!(w.complete(brid).await.results, Some(0), "{engine}");
        }
        let merged = w.sched.builds_for(&[a, b]).await.unwrap();
        assert_eq!(merged.len(), 2, "one builds row per request ({engine})");
        assert_eq!(merged[0].number, merged[1].number, "same Build number");
        assert_eq!(merged[0].start_time, merged[1].start_time);
        let separate = w.builds(other).await;
        assert_eq!(separate.len(), 1);
        assert_ne!(separate[0].number, merged[0].number);

        let started = w.message("started", a, 1).await;
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].payload()["request_ids"], json!([a, b]));
        let finished = w.message("finished", a, 1).await;
        assert_eq!(finished[0].payload()["request_ids"], json!([a, b]));
        let log = w.message("log_uploaded", b, 1).await.remove(0);
        assert_eq!(log.request_ids(), vec![a, b]);
        let (times, _) = property(log.build(), "request_times").unwrap();
        assert_eq!(
            times,
            json!({a.to_string(): now - 20, b.to_string(): now - 10})
        );
        let other_started = w.message("started", other, 1).await;
        assert_eq!(other_started[0].payload()["request_ids"], json!([other]));

        master.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_request_is_built_again_under_the_same_id() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let master = w
            .master(settings(
                "bm04.bbb.test:/m",
                &w.bus,
                Duration::from_millis(100),
            ))
            .await;
        // Each Build lasts 10 minutes of clock time: the test moves the clock to end them.
        let script = json!({"sandbox_results": "RETRY,SUCCESS", "sandbox_duration_ms": 600_000});
        let brid = w
            .inject(&spec(&task_id(), "r1", w.clock.now_secs(), script))
            .await;

        eventually("the first Build", || async {
            (w.builds(brid).await.len() == 1).then_some(())
        })
        .await;
        w.clock.advance(chrono::Duration::seconds(601));
        let builds = eventually("the second Build, running", || async {
            let b = w.builds(brid).await;
            (b.len() == 2 && b[1].finish_time.is_none()).then_some(b)
        })
        .await;
        assert!(builds[0].finish_time.is_some(), "{engine}");
        assert!(builds[1].number > builds[0].number, "a new number");
        let request = w.request(brid).await;
        assert!(
            !request.complete,
            "not complete before the last Build ({engine})"
        );
        assert_eq!(request.claimed_by_name.as_deref(), Some("bm04.bbb.test:/m"));
        let first = w.message("log_uploaded", brid, 1).await.remove(0);
        assert_eq!(first.build()["results"], 5);
        assert_eq!(first.build()["number"], builds[0].number);

        w.clock.advance(chrono::Duration::seconds(601));
        let request = w.complete(brid).await;
        assert_eq!(request.results, Some(0));
        let builds = w.builds(brid).await;
        assert_eq!(builds.len(), 2, "same brid, two builds rows ({engine})");
        assert!(builds.iter().all(|b| b.finish_time.is_some()));

        let finished = w.message("finished", brid, 2).await;
        let results: Vec<&Value> = finished.iter().map(|m| &m.payload()["results"]).collect();
        assert_eq!(results, [&json!(5), &json!(0)]);
        let started = w.message("started", brid, 2).await;
        assert_eq!(started[0].payload()["request_ids"], json!([brid]));
        assert_eq!(started[1].build()["number"], builds[1].number);
        let logs = w.message("log_uploaded", brid, 2).await;
        assert_eq!(logs[1].build()["results"], 0);

        master.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_masters_never_claim_the_same_request() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let a = w
            .master(settings(
                "bm05a.bbb.test:/m",
                &w.bus,
                Duration::from_millis(30),
            ))
            .await;
        let b = w
            .master(settings(
                "bm05b.bbb.test:/m",
                &w.bus,
                Duration::from_millis(30),
            ))
            .await;
        let mut brids = Vec::new();
        for i in 0..30 {
            // Distinct revisions: no merging, one Build per request.
            let rev = format!("rev{i}");
            brids.push(
                w.inject(&spec(&task_id(), &rev, w.clock.now_secs(), json!({})))
                    .await,
            );
        }
        for &brid in &brids {
            let r = w.complete(brid).await;
            assert!(
                [a.name(), b.name()].contains(&r.claimed_by_name.as_deref().unwrap()),
                "{engine}"
            );
            assert_eq!(
                w.builds(brid).await.len(),
                1,
                "request {brid} built once ({engine})"
            );
        }
        for &brid in &brids {
            w.message("log_uploaded", brid, 1).await;
        }
        for &brid in &brids {
            let started = w.bus.of("started", brid);
            assert_eq!(
                started.len(),
                1,
                "one started message for {brid} ({engine})"
            );
        }
        a.shutdown().await;
        b.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_builds_restamp_their_claims_every_ten_minutes() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let master = w
            .master(settings(
                "bm06.bbb.test:/m",
                &w.bus,
                Duration::from_secs(7200),
            ))
            .await;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        eventually("a builds row", || async {
            (!w.builds(brid).await.is_empty()).then_some(())
        })
        .await;
        let first = w.request(brid).await.claimed_at;
        // Past the stale limit: only the re-stamp keeps other polls (ours included) away.
        w.clock.advance(chrono::Duration::seconds(3700));
        eventually("a re-stamped claim", || async {
            (w.request(brid).await.claimed_at >= first + 3700).then_some(())
        })
        .await;
        assert_eq!(
            w.builds(brid).await.len(),
            1,
            "not claimed again ({engine})"
        );
        assert_eq!(master.running_requests(), vec![brid]);
        master.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_master_takes_over_the_claims_of_its_previous_incarnation() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let name = "bm07.bbb.test:/m";
        let script = json!({"sandbox_duration_ms": 3_600_000});
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), script))
            .await;
        let old = w
            .master(settings(name, &w.bus, Duration::from_millis(50)))
            .await;
        eventually("a builds row", || async {
            (!w.builds(brid).await.is_empty()).then_some(())
        })
        .await;
        let old_incarnation = old.incarnation().to_owned();
        old.shutdown().await;
        // Same name, new incarnation: the request left claimed is claimed again at once.
        let new = w
            .master(settings(name, &w.bus, Duration::from_millis(50)))
            .await;
        assert_ne!(new.incarnation(), old_incarnation);
        eventually("a second builds row", || async {
            (w.builds(brid).await.len() == 2).then_some(())
        })
        .await;
        let incarnation = scalar(
            &w.db.url,
            "SELECT claimed_by_incarnation FROM buildrequests WHERE id = ?",
            brid,
        )
        .await;
        assert_eq!(incarnation.as_deref(), Some(new.incarnation()), "{engine}");
        new.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_can_drop_every_started_message() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let mut s = settings("bm08.bbb.test:/m", &w.bus, Duration::from_millis(50));
        s.faults = PulseFaults {
            drop_started: 1.0,
            ..Default::default()
        };
        let master = w.master(s).await;
        let brids = [
            w.inject(&spec(&task_id(), "r1", w.clock.now_secs(), json!({})))
                .await,
            w.inject(&spec(&task_id(), "r2", w.clock.now_secs(), json!({})))
                .await,
        ];
        for brid in brids {
            assert_eq!(w.complete(brid).await.results, Some(0));
            // Messages are published in order: once log_uploaded is in, started would be too.
            w.message("log_uploaded", brid, 1).await;
            assert_eq!(w.bus.of("finished", brid).len(), 1, "{engine}");
        }
        assert!(
            w.bus.all().iter().all(|m| m.kind() != "started"),
            "{engine}"
        );
        master.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_can_drop_every_nth_message_of_a_kind() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let master = w
            .master(settings(
                "bm09.bbb.test:/m",
                &w.bus,
                Duration::from_millis(50),
            ))
            .await;
        master.set_faults(PulseFaults {
            drop_log_uploaded_every: 2,
            ..Default::default()
        });
        let mut brids = Vec::new();
        for i in 0..3 {
            let brid = w
                .inject(&spec(
                    &task_id(),
                    &format!("r{i}"),
                    w.clock.now_secs(),
                    json!({}),
                ))
                .await;
            w.complete(brid).await;
            w.message("finished", brid, 1).await;
            brids.push(brid);
        }
        // The third log_uploaded is kept; the second was queued before it.
        w.message("log_uploaded", brids[2], 1).await;
        assert_eq!(w.bus.of("log_uploaded", brids[0]).len(), 1, "{engine}");
        assert_eq!(w.bus.of("log_uploaded", brids[1]).len(), 0, "{engine}");
        master.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_can_duplicate_its_messages() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let mut s = settings("bm10.bbb.test:/m", &w.bus, Duration::from_millis(50));
        s.faults = PulseFaults {
            duplicate: 1.0,
            ..Default::default()
        };
        let master = w.master(s).await;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        w.complete(brid).await;
        for kind in ["started", "finished", "log_uploaded"] {
            let copies = w.message(kind, brid, 2).await;
            assert_eq!(copies.len(), 2, "{kind} twice ({engine})");
            assert_eq!(copies[0].body, copies[1].body, "identical copies");
        }
        master.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_can_delay_and_reorder_its_messages() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let mut s = settings("bm11.bbb.test:/m", &w.bus, Duration::from_millis(50));
        s.faults = PulseFaults {
            reorder: true,
            delay_ms: 200,
            ..Default::default()
        };
        let master = w.master(s).await;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        let request = w.complete(brid).await;
        assert_eq!(request.results, Some(0));
        w.message("log_uploaded", brid, 1).await;
        let kinds: Vec<String> = w.bus.all().iter().map(|m| m.kind().to_owned()).collect();
        assert_eq!(kinds, ["finished", "started", "log_uploaded"], "{engine}");
        master.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_build_finishes_cancelled_and_sends_its_events() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let master = w
            .master(settings(
                "bm12.bbb.test:/m",
                &w.bus,
                Duration::from_secs(3600),
            ))
            .await;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        let build = eventually("a builds row", || async { w.builds(brid).await.pop() }).await;
        assert!(
            !master.stop_build(build.id + 1000).await.unwrap(),
            "unknown build"
        );
        assert!(master.stop_build(build.id).await.unwrap());
        let request = w.complete(brid).await;
        assert_eq!(request.results, Some(6), "{engine}");
        assert_eq!(
            buildset_results(&w.db.url, request.buildsetid)
                .await
                .as_deref(),
            Some("2")
        );
        let finished = w.message("finished", brid, 1).await;
        assert_eq!(finished[0].payload()["results"], 6);
        let log = w.message("log_uploaded", brid, 1).await;
        assert_eq!(log[0].build()["results"], 6);
        assert!(
            !master.stop_request(brid).await.unwrap(),
            "no longer running"
        );
        master.shutdown().await;
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scripted_null_log_url_is_sent_as_the_string_null() {
    for engine in ENGINES {
        let w = World::new(engine).await;
        let master = w
            .master(settings(
                "bm13.bbb.test:/m",
                &w.bus,
                Duration::from_millis(50),
            ))
            .await;
        let script = json!({"sandbox_log_url": "null", "sandbox_results": "FAILURE"});
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), script))
            .await;
        assert_eq!(w.complete(brid).await.results, Some(2), "{engine}");
        let log = w.message("log_uploaded", brid, 1).await.remove(0);
        assert_eq!(
            property(log.build(), "log_url"),
            Some((json!("null"), "postrun.py".to_owned()))
        );
        master.shutdown().await;
        w.close().await;
    }
}
