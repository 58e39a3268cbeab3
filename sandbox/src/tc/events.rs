//! The queue's Pulse messages: which exchange, which routing key, which body, built from the
//! task as it is right after the change (the real queue's `exchanges.js`).
//!
//! Routing key: `primary.<taskId>.<runId>.<workerGroup>.<workerId>.<provisionerId>.<workerType>.
//! <schedulerId>.<taskGroupId>._`, `_` for what the message does not carry (task-defined has no
//! run, task-pending no worker, a deadline's task-exception no worker either). Each task route
//! `r` adds the key `route.<r>`. The real queue sends one message with a `CC` header; the
//! sandbox's [`Publisher`] takes a single routing key, so each CC key is a separate publish of
//! the same body (a queue bound to both a primary and a route pattern sees it twice).
use serde_json::{Value, json};

use super::model::{Artifact, Task, fmt_time};
use crate::pulse::Publisher;

/// One message to publish on `<basename>/<exchange>`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Msg {
    pub exchange: &'static str,
    pub routing_key: String,
    pub ccs: Vec<String>,
    pub body: Value,
}

fn part(v: Option<&str>) -> &str {
    match v {
        Some(s) if !s.is_empty() => s,
        _ => "_",
    }
}

/// The primary routing key.
pub(crate) fn routing_key(
    task: &Task,
    run_id: Option<u32>,
    worker: Option<(&str, &str)>,
) -> String {
    let run = run_id.map(|r| r.to_string());
    format!(
        "primary.{}.{}.{}.{}.{}.{}.{}.{}._",
        task.task_id,
        part(run.as_deref()),
        part(worker.map(|w| w.0)),
        part(worker.map(|w| w.1)),
        part(Some(&task.provisioner_id)),
        part(Some(&task.worker_type)),
        part(Some(&task.scheduler_id)),
        part(Some(&task.task_group_id)),
    )
}

fn msg(
    task: &Task,
    exchange: &'static str,
    run_id: Option<u32>,
    worker: Option<(&str, &str)>,
    mut body: Value,
) -> Msg {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("version".into(), json!(1));
    }
    Msg {
        exchange,
        routing_key: routing_key(task, run_id, worker),
        ccs: task.routes.iter().map(|r| format!("route.{r}")).collect(),
        body,
    }
}

fn worker_of(task: &Task, run_id: u32) -> Option<(String, String)> {
    let run = task.run(run_id)?;
    Some((run.worker_group.clone()?, run.worker_id.clone()?))
}

/// task-defined, with the status from before run 0 was added.
pub(crate) fn task_defined(task: &Task, status: Value) -> Msg {
    msg(
        task,
        "task-defined",
        None,
        None,
        json!({"status": status, "task": task.pulse_task()}),
    )
}

/// task-pending for `run_id`; `with_task` false for rerunTask, whose message has no `task`.
pub(crate) fn task_pending(task: &Task, run_id: u32, with_task: bool) -> Msg {
    let mut body = json!({"status": task.status(), "runId": run_id});
    if with_task {
        body["task"] = task.pulse_task();
    }
    msg(task, "task-pending", Some(run_id), None, body)
}

/// task-running for a claimed run.
pub(crate) fn task_running(task: &Task, run_id: u32) -> Msg {
    let worker = worker_of(task, run_id).unwrap_or_default();
    let taken_until = task.run(run_id).and_then(|r| r.taken_until).map(fmt_time);
    msg(
        task,
        "task-running",
        Some(run_id),
        Some((&worker.0, &worker.1)),
        json!({
            "status": task.status(),
            "runId": run_id,
            "workerGroup": worker.0,
            "workerId": worker.1,
            "takenUntil": taken_until,
        }),
    )
}

/// task-completed or task-failed (by the run's state).
pub(crate) fn task_resolved(task: &Task, run_id: u32, exchange: &'static str) -> Msg {
    let worker = worker_of(task, run_id).unwrap_or_default();
    msg(
        task,
        exchange,
        Some(run_id),
        Some((&worker.0, &worker.1)),
        json!({
            "status": task.status(),
            "runId": run_id,
            "task": task.pulse_task(),
            "workerGroup": worker.0,
            "workerId": worker.1,
        }),
    )
}

/// How a task-exception message is put together, which differs by who resolved the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExceptionBy {
    /// reportException and claim expiry: worker fields and `task`.
    Worker,
    /// cancelTask: the run's worker fields when it has them, no `task`.
    Cancel,
    /// The deadline: `task`, no worker fields.
    Deadline,
}

pub(crate) fn task_exception(task: &Task, run_id: u32, by: ExceptionBy) -> Msg {
    let worker = match by {
        ExceptionBy::Deadline => None,
        ExceptionBy::Worker | ExceptionBy::Cancel => worker_of(task, run_id),
    };
    let mut body = json!({"status": task.status(), "runId": run_id});
    if by != ExceptionBy::Cancel {
        body["task"] = task.pulse_task();
    }
    if let Some((group, id)) = &worker {
        body["workerGroup"] = json!(group);
        body["workerId"] = json!(id);
    }
    msg(
        task,
        "task-exception",
        Some(run_id),
        worker.as_ref().map(|(g, i)| (g.as_str(), i.as_str())),
        body,
    )
}

/// artifact-created, for an artifact that became present.
pub(crate) fn artifact_created(task: &Task, run_id: u32, artifact: &Artifact) -> Msg {
    let worker = worker_of(task, run_id).unwrap_or_default();
    msg(
        task,
        "artifact-created",
        Some(run_id),
        Some((&worker.0, &worker.1)),
        json!({
            "status": task.status(),
            "artifact": artifact.to_json(),
            "workerGroup": worker.0,
            "workerId": worker.1,
            "runId": run_id,
        }),
    )
}

/// Publishes `msgs` in order, each CC key after its primary key, waiting for the broker's
/// confirmation of each.
pub(crate) async fn publish(
    publisher: &Publisher,
    basename: &str,
    msgs: &[Msg],
) -> anyhow::Result<()> {
    for m in msgs {
        let exchange = format!("{basename}/{}", m.exchange);
        publisher
            .publish(&exchange, &m.routing_key, &m.body)
            .await?;
        for cc in &m.ccs {
            publisher.publish(&exchange, cc, &m.body).await?;
        }
    }
    Ok(())
}
