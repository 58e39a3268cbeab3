//! Parsing at the edge: a Pulse message becomes a typed job, nothing (a message that is valid
//! but not for us), or a [`Rejected`] reason for the dead-letter list. Nothing downstream sees
//! raw JSON.
use bbb_shared::config::PULSE_PURPOSES;
use bbb_shared::jobs::{
    BuildFinished, BuildInfo, BuildProperty, BuildStarted, TaskException, TaskPending,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// Which bridge queue a message came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    TaskPending,
    TaskException,
    BuildEvents,
}

impl Purpose {
    /// The purpose's name in queue names and dead letters, from the shared list that
    /// `bbb queue` reads too.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::TaskPending => PULSE_PURPOSES[0],
            Purpose::TaskException => PULSE_PURPOSES[1],
            Purpose::BuildEvents => PULSE_PURPOSES[2],
        }
    }
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    TaskPending(TaskPending),
    TaskException(TaskException),
    BuildStarted(BuildStarted),
    BuildFinished(BuildFinished),
    /// Well-formed but not something the bridge acts on (e.g. `build.*.*.finished`).
    Ignored(&'static str),
}

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

fn reject(msg: impl Into<String>) -> Rejected {
    Rejected(msg.into())
}

pub fn parse(
    purpose: Purpose,
    routing_key: &str,
    body: &[u8],
    max_bytes: usize,
) -> Result<Parsed, Rejected> {
    if body.len() > max_bytes {
        return Err(reject(format!(
            "oversized: {} bytes (limit {max_bytes})",
            body.len()
        )));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| reject(format!("not JSON: {e}")))?;
    match purpose {
        Purpose::TaskPending => task_pending(value).map(Parsed::TaskPending),
        Purpose::TaskException => task_exception(value).map(Parsed::TaskException),
        Purpose::BuildEvents => build_event(routing_key, value),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcMessage {
    status: TcStatus,
    run_id: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcStatus {
    task_id: String,
    #[serde(default)]
    runs: Vec<TcRun>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcRun {
    run_id: u32,
    #[serde(default)]
    scheduled: Option<String>,
    #[serde(default)]
    reason_resolved: Option<String>,
}

fn tc_message(value: Value) -> Result<TcMessage, Rejected> {
    let msg: TcMessage = serde_json::from_value(value)
        .map_err(|e| reject(format!("wrong shape for a Taskcluster message: {e}")))?;
    if !is_slug(&msg.status.task_id) {
        return Err(reject(format!(
            "status.taskId {:?} is not a 22-character slugid",
            msg.status.task_id
        )));
    }
    Ok(msg)
}

/// Taskcluster's slugid alphabet and length.
pub fn is_slug(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn task_pending(value: Value) -> Result<TaskPending, Rejected> {
    let msg = tc_message(value)?;
    let run_id = msg
        .run_id
        .or_else(|| msg.status.runs.last().map(|r| r.run_id))
        .ok_or_else(|| reject("task-pending without runId"))?;
    let scheduled = msg
        .status
        .runs
        .iter()
        .find(|r| r.run_id == run_id)
        .and_then(|r| r.scheduled.as_deref())
        .map(|s| DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc)))
        .transpose()
        .map_err(|e| reject(format!("run {run_id}: bad scheduled time: {e}")))?;
    Ok(TaskPending {
        task_id: msg.status.task_id,
        run_id,
        scheduled,
    })
}

fn task_exception(value: Value) -> Result<TaskException, Rejected> {
    let msg = tc_message(value)?;
    let run = match msg.run_id {
        Some(id) => msg.status.runs.iter().find(|r| r.run_id == id),
        None => msg.status.runs.last(),
    };
    Ok(TaskException {
        task_id: msg.status.task_id,
        run_id: msg.run_id.or(run.map(|r| r.run_id)),
        reason: run.and_then(|r| r.reason_resolved.clone()),
    })
}

#[derive(Deserialize)]
struct BbEnvelope {
    payload: BbPayload,
    #[serde(rename = "_meta", default)]
    meta: Option<BbMeta>,
}

#[derive(Deserialize)]
struct BbMeta {
    #[serde(default)]
    master_name: Option<String>,
}

#[derive(Deserialize)]
struct BbPayload {
    build: BbBuild,
    #[serde(default)]
    request_ids: Option<Vec<i64>>,
    #[serde(default)]
    results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BbBuild {
    builder_name: String,
    number: i64,
    #[serde(default)]
    results: Option<i64>,
    #[serde(default)]
    properties: Vec<(String, Value, String)>,
}

fn build_event(routing_key: &str, value: Value) -> Result<Parsed, Rejected> {
    let event = routing_key.rsplit('.').next().unwrap_or("");
    if !routing_key.starts_with("build.") || !matches!(event, "started" | "log_uploaded") {
        return Ok(Parsed::Ignored("not a build started/log_uploaded event"));
    }
    let env: BbEnvelope = serde_json::from_value(value)
        .map_err(|e| reject(format!("wrong shape for a Buildbot message: {e}")))?;
    let props: Vec<BuildProperty> = env
        .payload
        .build
        .properties
        .into_iter()
        .map(|(name, value, source)| BuildProperty {
            name,
            value,
            source,
        })
        .collect();
    let prop = |name: &str| props.iter().find(|p| p.name == name).map(|p| &p.value);
    let task_id = match prop("taskId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_slug(s) => Some(s.clone()),
        Some(other) => return Err(reject(format!("property taskId {other} is not a slugid"))),
    };
    // log_uploaded carries every request id in postrun's property; started in the payload.
    let request_ids = match (event, prop("request_ids")) {
        ("log_uploaded", Some(v)) => serde_json::from_value::<Vec<i64>>(v.clone())
            .map_err(|e| reject(format!("property request_ids: {e}")))?,
        _ => env.payload.request_ids.clone().unwrap_or_default(),
    };
    let log_url = match prop("log_url") {
        Some(Value::String(s)) if s != "null" && !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let results = env.payload.build.results.or(env.payload.results);
    let master = env
        .meta
        .and_then(|m| m.master_name)
        .unwrap_or_else(|| "unknown".to_owned());
    // log_uploaded names the builder by its directory; the `buildername` property has the full
    // name in every event, so both events of one Build get the same identity.
    let builder = match prop("buildername") {
        Some(Value::String(full)) => full.clone(),
        _ => env.payload.build.builder_name.clone(),
    };
    let build = BuildInfo {
        master,
        builder,
        buildnumber: env.payload.build.number,
        request_ids,
        task_id,
        properties: props,
    };
    Ok(match event {
        "started" => Parsed::BuildStarted(BuildStarted { build }),
        _ => Parsed::BuildFinished(BuildFinished {
            build,
            results,
            log_url,
        }),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LOG_UPLOADED: &str = r#"{"_meta":{"exchange":"exchange/build/","serializer":"json","routing_key":"build.mozilla-inbound-linux64.1210.log_uploaded",
  "master_name":"buildbot-master71.bb.releng.use1.mozilla.com:/builds/buildbot/build1/master",
  "master_incarnation":"pid14770-boot1446339941","message_id":79368986,"sent":"2015-11-03T11:14:00-08:00"},
 "payload":{"build":{"slave":"bld-linux64-spot-132","builderName":"mozilla-inbound-linux64","text":["build","successful"],
  "number":1210,"currentStep":null,"results":0,"blame":["dev@example.com"],"reason":"scheduler","eta":null,"steps":[],
  "sourceStamp":{"repository":"","hasPatch":false,"project":"","branch":"integration/mozilla-inbound",
   "revision":"bd3d049a39ad16c75357edacf9f0867246012b7c","changes":[]},
  "times":["2015-11-03T18:23:44+0000","2015-11-03T19:13:31+0000"],
  "properties":[["branch","mozilla-inbound","Builder"],["buildername","Linux x86-64 mozilla-inbound build","Builder"],
   ["buildnumber",1210,"Build"],
   ["log_url","http://archive.example.org/mozilla-inbound-linux64-bm71-build1-build1210.txt.gz","postrun.py"],
   ["product","firefox","Builder"],["request_ids",[86737608],"postrun.py"],["request_times",{"86737608":1446575010},"postrun.py"],
   ["revision","bd3d049a39ad16c75357edacf9f0867246012b7c","Build"],["slavename","bld-linux64-spot-132","BuildSlave"],
   ["statusdb_id",79368986,"postrun.py"],["taskId","fNdN0Jx9TmKf0yv7uJ3Q1w","bbb"]]}}}"#;

    const PENDING: &str = r#"{"version":1,
 "status":{"taskId":"C4Anq1nwR_i_3PIWfaQGvA","provisionerId":"buildbot-bridge","workerType":"buildbot-bridge",
  "taskQueueId":"buildbot-bridge/buildbot-bridge","schedulerId":"gecko-level-3","projectId":"none",
  "taskGroupId":"XKk1dNKmRauR36Mlf8bZWA","priority":"lowest",
  "deadline":"2026-11-23T05:00:00.000Z","expires":"2027-11-23T05:00:00.000Z","retriesLeft":4,"state":"pending",
  "runs":[
   {"runId":0,"state":"exception","reasonCreated":"scheduled","reasonResolved":"claim-expired",
    "workerGroup":"buildbot-bridge","workerId":"buildbot-bridge","takenUntil":"2026-11-22T05:40:00.000Z",
    "scheduled":"2026-11-22T05:19:58.120Z","started":"2026-11-22T05:20:00.000Z","resolved":"2026-11-22T05:40:03.511Z"},
   {"runId":1,"state":"pending","reasonCreated":"retry","scheduled":"2026-11-22T05:40:03.511Z"}]},
 "task":{"tags":{}},
 "runId":1}"#;

    #[test]
    fn a_real_task_pending_message_becomes_a_task_pending_job_for_its_last_run() {
        let Parsed::TaskPending(p) = parse(
            Purpose::TaskPending,
            "primary.x",
            PENDING.as_bytes(),
            1 << 20,
        )
        .unwrap() else {
            panic!("not a task-pending job");
        };
        assert_eq!(p.task_id, "C4Anq1nwR_i_3PIWfaQGvA");
        assert_eq!(p.run_id, 1);
        assert_eq!(
            p.scheduled.unwrap().to_rfc3339(),
            "2026-11-22T05:40:03.511+00:00"
        );
    }

    #[test]
    fn a_task_exception_message_carries_the_reason_of_its_run() {
        let body = PENDING.replace("\"runId\":1}", "\"runId\":0}");
        let Parsed::TaskException(e) = parse(
            Purpose::TaskException,
            "primary.x",
            body.as_bytes(),
            1 << 20,
        )
        .unwrap() else {
            panic!("not a task-exception job");
        };
        assert_eq!(
            (e.run_id, e.reason.as_deref()),
            (Some(0), Some("claim-expired"))
        );
    }

    #[test]
    fn a_real_log_uploaded_message_becomes_a_build_finished_job() {
        let rk = "build.mozilla-inbound-linux64.1210.log_uploaded";
        let Parsed::BuildFinished(f) =
            parse(Purpose::BuildEvents, rk, LOG_UPLOADED.as_bytes(), 1 << 20).unwrap()
        else {
            panic!("not a build-finished job");
        };
        assert_eq!(f.build.request_ids, vec![86737608]);
        assert_eq!(f.build.task_id.as_deref(), Some("fNdN0Jx9TmKf0yv7uJ3Q1w"));
        assert_eq!(f.build.buildnumber, 1210);
        assert_eq!(
            f.build.builder, "Linux x86-64 mozilla-inbound build",
            "the full name, not the directory"
        );
        assert_eq!(f.results, Some(0));
        assert!(f.log_url.unwrap().ends_with("build1210.txt.gz"));
        assert!(f.build.master.starts_with("buildbot-master71"));
        assert_eq!(
            f.build.properties_json()["product"],
            serde_json::json!(["firefox", "Builder"])
        );
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        let cases: &[(Purpose, &str, &str)] = &[
            (Purpose::TaskPending, "not json", "not JSON"),
            (Purpose::TaskPending, r#"{"status":{}}"#, "wrong shape"),
            (
                Purpose::TaskPending,
                r#"{"status":{"taskId":"short","runs":[]},"runId":0}"#,
                "slugid",
            ),
            (
                Purpose::TaskPending,
                r#"{"status":{"taskId":"C4Anq1nwR_i_3PIWfaQGvA","runs":[]}}"#,
                "without runId",
            ),
            (
                Purpose::TaskException,
                r#"{"status":{"taskId":7}}"#,
                "wrong shape",
            ),
            (
                Purpose::BuildEvents,
                r#"{"payload":{"build":{"number":"x"}}}"#,
                "wrong shape",
            ),
        ];
        for (purpose, body, want) in cases {
            let rk = "build.b.1.started";
            let err = parse(*purpose, rk, body.as_bytes(), 1 << 20).unwrap_err();
            assert!(err.0.contains(want), "{body}: {err}");
        }
        let err = parse(Purpose::TaskPending, "", &[b' '; 100], 10).unwrap_err();
        assert!(err.0.starts_with("oversized"));
    }

    #[test]
    fn a_started_build_without_task_id_is_still_a_job_and_other_events_are_ignored() {
        let body = r#"{"payload":{"request_ids":[5],"build":{"builderName":"b","number":3,"properties":[]}}}"#;
        let Parsed::BuildStarted(s) = parse(
            Purpose::BuildEvents,
            "build.b.3.started",
            body.as_bytes(),
            1 << 20,
        )
        .unwrap() else {
            panic!("not a started job");
        };
        assert_eq!(
            (
                s.build.task_id,
                s.build.request_ids,
                s.build.master.as_str()
            ),
            (None, vec![5], "unknown")
        );
        assert_eq!(
            parse(
                Purpose::BuildEvents,
                "build.b.3.finished",
                body.as_bytes(),
                1 << 20
            )
            .unwrap(),
            Parsed::Ignored("not a build started/log_uploaded event")
        );
    }
}
