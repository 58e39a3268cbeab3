#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The self-serve emulator (BuildAPI and its agent) and `allthethings.json`, over real HTTP,
//! against real MariaDB and SQLite scheduler DBs, emulated masters and a real RabbitMQ. Every
//! scenario runs on both engines; every wait polls a condition.
use std::{net::SocketAddr, time::Duration};

use bbb_sandbox::{
    buildbot::{Masters, builder_dir},
    selfserve::{Job, JobOutcome, SelfServe, allthethings_router, serve},
};
use bbb_shared::dburl::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

const OTHER_BUILDER: &str = "release-mozilla-beta-firefox_signing";
const MASTER: &str = "ss-bm01.bbb.test:/builds/buildbot/build1/master";

mod common;
use common::*;

// ---------------------------------------------------------------------------------------------
// Test support: tests/common/mod.rs.
// ---------------------------------------------------------------------------------------------

/// A world with self-serve on it, and optionally one master serving [`BUILDER`].
struct Env {
    w: World,
    masters: Masters,
    selfserve: SelfServe,
    http: reqwest::Client,
    base: String,
}

impl Env {
    async fn new(engine: Engine, master: Option<Duration>, fresh_404: Duration) -> Env {
        let w = World::new(engine).await;
        let masters = Masters::new();
        if let Some(duration) = master {
            masters.insert(w.master(settings(MASTER, &w.bus, duration)).await);
        }
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let selfserve = SelfServe::start(
            listen,
            "/buildapi/self-serve/",
            "/builders/allthethings.json",
            vec![BUILDER.to_owned(), OTHER_BUILDER.to_owned()],
            &w.db.url,
            masters.clone(),
            w.clock.clone(),
            fresh_404,
        )
        .await
        .unwrap();
        let base = format!("http://{}/buildapi/self-serve", selfserve.addr());
        Env {
            w,
            masters,
            selfserve,
            http: reqwest::Client::new(),
            base,
        }
    }

    /// `DELETE {base}/{path}`, as the bridge sends it when `user` is set.
    async fn delete(&self, path: &str, user: bool, accept_json: bool) -> (StatusCode, String) {
        let mut request = self.http.delete(format!("{}/{path}", self.base));
        if user {
            request = request.header("X-Remote-User", "buildbot-bridge");
        }
        if accept_json {
            request = request.header("Accept", "application/json");
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn job_done(&self, id: i64) -> Job {
        eventually(&format!("self-serve job {id}"), || async {
            self.selfserve.job(id).filter(|j| j.completed_at.is_some())
        })
        .await
    }

    async fn close(self) {
        self.selfserve.shutdown().await;
        self.masters.shutdown().await;
        self.w.close().await;
    }
}

fn not_found(what: &str, id: i64, branch: &str) -> Value {
    json!({"status": "FAILED", "msg": format!("{what} {id} not found on branch {branch}")})
}

fn accepted_job(body: &str) -> i64 {
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["status"], "OK", "{body}");
    body["request_id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellation_without_a_remote_user_is_denied() {
    for engine in ENGINES {
        let env = Env::new(engine, None, Duration::ZERO).await;
        let brid = env
            .w
            .inject(&spec(&task_id(), "r", env.w.clock.now_secs(), json!({})))
            .await;
        let path = format!("mozilla-inbound/request/{brid}?format=json");
        assert_eq!(
            env.delete(&path, false, true).await,
            (StatusCode::FORBIDDEN, "ACCESS DENIED!".to_owned()),
            "{engine}"
        );
        let (status, body) = env.delete("mozilla-inbound/build/1", false, false).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::FORBIDDEN, "ACCESS DENIED!")
        );
        assert!(env.selfserve.jobs().is_empty());
        assert!(!env.w.request(brid).await.complete);
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_ids_mismatched_branches_and_bad_ids_are_rejected() {
    for engine in ENGINES {
        let env = Env::new(engine, None, Duration::ZERO).await;
        let brid = env
            .w
            .inject(&spec(&task_id(), "r", env.w.clock.now_secs(), json!({})))
            .await;
        let unknown = brid + 1000;

        let (status, body) = env
            .delete(&format!("mozilla-inbound/request/{unknown}"), true, false)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{engine}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            not_found("Request", unknown, "mozilla-inbound")
        );
        let (status, body) = env.delete(&format!("try/request/{brid}"), true, true).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            not_found("Request", brid, "try")
        );
        let (status, body) = env.delete("mozilla-inbound/build/123456", true, true).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            not_found("Build", 123_456, "mozilla-inbound")
        );
        let (status, _) = env.delete("mozilla-inbound/request/abc", true, true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = env.delete("mozilla-inbound/build/1.5", true, true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        assert!(env.selfserve.jobs().is_empty(), "{engine}");
        assert!(!env.w.request(brid).await.complete);
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_pending_request_completes_it_as_failure_without_a_message() {
    for engine in ENGINES {
        // No master yet: the request stays pending.
        let env = Env::new(engine, None, Duration::ZERO).await;
        let w = &env.w;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs() - 100, json!({})))
            .await;
        let (status, body) = env
            .delete(
                &format!("mozilla-inbound/request/{brid}?format=json"),
                true,
                false,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{engine}: {body}");
        let job = env.job_done(accepted_job(&body)).await;
        assert_eq!(job.outcome, Some(JobOutcome::CancelledPending));
        assert_eq!(job.who, "buildbot-bridge");

        let request = w.request(brid).await;
        assert!(request.complete, "{engine}");
        assert_eq!(request.results, Some(2));
        assert_eq!(request.claimed_at, 0);
        assert_eq!(request.claimed_by_name, None);
        assert!(request.complete_at.is_some());
        assert!(w.builds(brid).await.is_empty());
        assert_eq!(
            buildset_results(&w.db.url, request.buildsetid)
                .await
                .as_deref(),
            Some("2")
        );

        // A master now serving the builder builds the next request and never the cancelled one;
        // its messages are the only ones on the exchange.
        env.masters.insert(
            w.master(settings(MASTER, &w.bus, Duration::from_millis(30)))
                .await,
        );
        let sentinel = w
            .inject(&spec(&task_id(), "s", w.clock.now_secs(), json!({})))
            .await;
        w.complete(sentinel).await;
        w.message("log_uploaded", sentinel, 1).await;
        assert!(w.builds(brid).await.is_empty());
        assert!(
            w.bus.all().iter().all(|m| m.request_ids() == [sentinel]),
            "{engine}: nothing published for the cancelled request"
        );
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_running_build_finishes_it_cancelled_with_its_events() {
    for engine in ENGINES {
        let env = Env::new(engine, Some(Duration::from_secs(3600)), Duration::ZERO).await;
        let w = &env.w;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        let build = eventually("a builds row", || async { w.builds(brid).await.pop() }).await;
        let (status, body) = env
            .delete(
                &format!("mozilla-inbound/build/{}?format=json", build.id),
                true,
                false,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{engine}: {body}");
        let job_id = accepted_job(&body);

        let request = w.complete(brid).await;
        assert_eq!(request.results, Some(6), "{engine}");
        assert!(w.builds(brid).await[0].finish_time.is_some());
        let finished = w.message("finished", brid, 1).await;
        assert_eq!(finished[0].payload()["results"], 6);
        let log = w.message("log_uploaded", brid, 1).await;
        assert_eq!(log[0].build()["results"], 6);
        assert_eq!(
            log[0].routing_key,
            format!(
                "build.{}.{}.log_uploaded",
                builder_dir(BUILDER),
                build.number
            )
        );

        let job = env.job_done(job_id).await;
        assert_eq!(
            job.outcome,
            Some(JobOutcome::Stopped {
                master: MASTER.to_owned()
            })
        );
        let status: Value = env
            .http
            .get(format!("{}/jobs/{job_id}", env.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["action"], "cancel_build");
        assert_eq!(status["build_id"], build.id);
        assert_eq!(status["outcome"]["outcome"], "stopped");
        assert!(status["completed_at"].is_i64());
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_claimed_request_stops_its_build() {
    for engine in ENGINES {
        let env = Env::new(engine, Some(Duration::from_secs(3600)), Duration::ZERO).await;
        let w = &env.w;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        eventually("a builds row", || async { w.builds(brid).await.pop() }).await;
        let (status, body) = env
            .delete(&format!("mozilla-inbound/request/{brid}"), true, true)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{engine}: {body}");
        let request = w.complete(brid).await;
        assert_eq!(request.results, Some(6), "{engine}");
        assert_ne!(request.claimed_at, 0);
        let finished = w.message("finished", brid, 1).await;
        assert_eq!(finished[0].payload()["results"], 6);
        w.message("log_uploaded", brid, 1).await;
        let job = env.job_done(accepted_job(&body)).await;
        assert_eq!(
            job.outcome,
            Some(JobOutcome::Stopped {
                master: MASTER.to_owned()
            })
        );
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_complete_request_or_finished_build_changes_nothing() {
    for engine in ENGINES {
        let env = Env::new(engine, Some(Duration::from_millis(30)), Duration::ZERO).await;
        let w = &env.w;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        let before = w.complete(brid).await;
        assert_eq!(before.results, Some(0));
        w.message("log_uploaded", brid, 1).await;
        let builds = w.builds(brid).await;
        let published = w.bus.all().len();

        // No JSON asked: BuildAPI answers with a page.
        let response = env
            .http
            .delete(format!("{}/mozilla-inbound/request/{brid}", env.base))
            .header("X-Remote-User", "buildbot-bridge")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{engine}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(response.text().await.unwrap().contains("job 1"));
        assert_eq!(
            env.job_done(1).await.outcome,
            Some(JobOutcome::AlreadyComplete)
        );

        let (status, _) = env
            .delete(
                &format!("mozilla-inbound/build/{}", builds[0].id),
                true,
                false,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            env.job_done(2).await.outcome,
            Some(JobOutcome::AlreadyComplete)
        );

        assert_eq!(w.request(brid).await, before, "{engine}");
        assert_eq!(w.builds(brid).await, builds);
        assert_eq!(w.bus.all().len(), published);
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_requests_are_not_found_when_configured() {
    for engine in ENGINES {
        let env = Env::new(engine, None, Duration::from_secs(60)).await;
        let w = &env.w;
        let brid = w
            .inject(&spec(&task_id(), "r", w.clock.now_secs(), json!({})))
            .await;
        let (status, body) = env
            .delete(&format!("mozilla-inbound/request/{brid}"), true, true)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{engine}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            not_found("Request", brid, "mozilla-inbound")
        );
        assert!(env.selfserve.jobs().is_empty());

        w.clock.advance(chrono::Duration::seconds(61));
        // BuildAPI also takes a prefix of the branch.
        let (status, body) = env
            .delete(&format!("integration/request/{brid}"), true, true)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{engine}: {body}");
        let job = env.job_done(accepted_job(&body)).await;
        assert_eq!(job.outcome, Some(JobOutcome::CancelledPending));
        assert_eq!(w.request(brid).await.results, Some(2));
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allthethings_lists_the_builders() {
    for engine in ENGINES {
        let env = Env::new(engine, None, Duration::ZERO).await;
        let url = format!("http://{}/builders/allthethings.json", env.selfserve.addr());
        let doc: Value = env
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut names: Vec<&String> = doc["builders"].as_object().unwrap().keys().collect();
        names.sort_unstable();
        assert_eq!(names, [BUILDER, OTHER_BUILDER], "{engine}");
        let builder = &doc["builders"][BUILDER];
        assert_eq!(builder["shortname"], builder_dir(BUILDER).as_str());
        assert_eq!(builder["slavebuilddir"], builder_dir(BUILDER).as_str());
        assert!(builder["properties"].is_object() && builder["slavepool"].is_string());
        for key in ["schedulers", "master_builders", "slavepools"] {
            assert!(doc[key].is_object(), "{key}");
        }

        // On a port of its own, as a config may put it.
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let other = serve(
            listen,
            allthethings_router("/att/allthethings.json", &[BUILDER.to_owned()]),
        )
        .await
        .unwrap();
        let doc: Value = env
            .http
            .get(format!("http://{}/att/allthethings.json", other.addr()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(doc["builders"][BUILDER].is_object());
        other.shutdown().await;
        env.close().await;
    }
}
