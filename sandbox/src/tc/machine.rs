//! The queue's state machine: every transition of a task and its runs, with the real queue's
//! conflict rules and the Pulse messages each transition publishes (FORMATS.md 1.2).
//!
//! Transitions are plain functions of the stored state and `now` (the sandbox clock), so the
//! HTTP layer, the background resolver and the unit tests all drive the same code. Each returns
//! the messages to publish, in order; the caller publishes them after the change is stored and
//! before it answers, as the real queue does.
//!
//! Time-driven changes ([`State::settle`]) run both from the background resolver and before
//! every API access to a task, so a test that moves the clock sees them at once: past the
//! deadline an unresolved task's latest run becomes exception/deadline-exceeded (never
//! retried); otherwise a running latest run whose `takenUntil` has passed becomes
//! exception/claim-expired and, with retries left, a pending retry run is added; a task whose
//! dependencies are satisfied gets its pending run 0; a task past `expires` disappears.
use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use super::{
    error::ApiError,
    events::{self, ExceptionBy, Msg},
    model::{MAX_RUNS, Run, RunState, StoredObject, Task, fmt_time},
};

/// Every task and object the queue holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub tasks: HashMap<String, Task>,
    /// The object service's objects, by name (`t/<taskId>/<runId>/<artifact>`).
    pub objects: HashMap<String, StoredObject>,
}

/// What reportCompleted / reportFailed resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Failed,
}

impl Outcome {
    fn state(self) -> RunState {
        match self {
            Outcome::Completed => RunState::Completed,
            Outcome::Failed => RunState::Failed,
        }
    }

    fn exchange(self) -> &'static str {
        match self {
            Outcome::Completed => "task-completed",
            Outcome::Failed => "task-failed",
        }
    }
}

/// reportException reasons, and the reasonCreated of the retry run some of them add.
pub(crate) fn exception_retry_reason(reason: &str) -> Option<Option<&'static str>> {
    match reason {
        "worker-shutdown" => Some(Some("retry")),
        "intermittent-task" => Some(Some("task-retry")),
        "malformed-payload" | "resource-unavailable" | "internal-error" => Some(None),
        _ => None,
    }
}

impl State {
    /// Applies what time (and other tasks) decided for `task_id` by `now`.
    pub fn settle(&mut self, task_id: &str, now: DateTime<Utc>) -> Vec<Msg> {
        let Some(task) = self.tasks.get(task_id) else {
            return Vec::new();
        };
        if now >= task.expires {
            self.tasks.remove(task_id);
            self.objects
                .retain(|name, _| !name.starts_with(&format!("t/{task_id}/")));
            return Vec::new();
        }
        let ready = task.runs.is_empty() && now < task.deadline && self.dependencies_met(task);
        let Some(task) = self.tasks.get_mut(task_id) else {
            return Vec::new();
        };
        let mut msgs = task.timeouts(now);
        if ready {
            msgs.extend(task.schedule("scheduled", now));
        }
        msgs
    }

    fn dependencies_met(&self, task: &Task) -> bool {
        task.dependencies.iter().all(|d| {
            self.tasks.get(d).is_some_and(|dep| match dep.runs.last() {
                Some(r) if task.requires_completed => r.state == RunState::Completed,
                Some(r) => r.state.is_resolved(),
                None => false,
            })
        })
    }

    /// Tasks with something for [`State::settle`] to do at `now`.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<String> {
        self.tasks
            .values()
            .filter(|t| {
                now >= t.expires
                    || (t.is_unresolved() && now >= t.deadline)
                    || t.runs.last().is_some_and(|r| {
                        r.state == RunState::Running && r.taken_until.is_some_and(|u| now > u)
                    })
                    || (t.runs.is_empty() && self.dependencies_met(t))
            })
            .map(|t| t.task_id.clone())
            .collect()
    }
}

impl Task {
    /// Adds the first pending run (`scheduled`), or a rerun's.
    pub fn schedule(&mut self, reason: &'static str, now: DateTime<Utc>) -> Vec<Msg> {
        self.runs.push(Run::pending(reason, now));
        let run_id = self.latest_run_id().unwrap_or(0);
        vec![events::task_pending(self, run_id, true)]
    }

    /// Deadline, else claim expiry.
    pub fn timeouts(&mut self, now: DateTime<Utc>) -> Vec<Msg> {
        if self.is_unresolved() && now >= self.deadline {
            return self.cancel_as("deadline-exceeded", now, ExceptionBy::Deadline);
        }
        let task_id = self.task_id.clone();
        let Some(run) = self.runs.last_mut() else {
            return Vec::new();
        };
        let expired = run.state == RunState::Running && run.taken_until.is_some_and(|u| now > u);
        if !expired {
            return Vec::new();
        }
        run.resolve(RunState::Exception, "claim-expired", now);
        tracing::debug!(task_id, "claim expired");
        let run_id = self.latest_run_id().unwrap_or(0);
        let mut msgs = vec![];
        let retry = self.retry("retry", now);
        msgs.push(events::task_exception(self, run_id, ExceptionBy::Worker));
        if retry {
            msgs.push(events::task_pending(self, run_id + 1, true));
        }
        msgs
    }

    /// Adds a retry run if retries (and runs) are left.
    fn retry(&mut self, reason: &'static str, now: DateTime<Utc>) -> bool {
        if self.retries_left == 0 || self.runs.len() >= MAX_RUNS {
            return false;
        }
        self.retries_left -= 1;
        self.runs.push(Run::pending(reason, now));
        true
    }

    /// The real queue's `cancel_task(reason)`: unscheduled gets a run 0 resolved at once;
    /// pending or running, the latest run is resolved exception/`reason`; resolved, no change.
    /// Publishes task-exception when the latest run is (now or already) exception/`reason`.
    fn cancel_as(&mut self, reason: &str, now: DateTime<Utc>, by: ExceptionBy) -> Vec<Msg> {
        match self.runs.last_mut() {
            None => {
                let mut run = Run::pending("exception", now);
                run.resolve(RunState::Exception, reason, now);
                self.runs.push(run);
            }
            Some(run) if !run.state.is_resolved() => run.resolve(RunState::Exception, reason, now),
            Some(_) => {}
        }
        let last = self.runs.last();
        if last.is_some_and(|r| {
            r.state == RunState::Exception && r.reason_resolved.as_deref() == Some(reason)
        }) {
            let run_id = self.latest_run_id().unwrap_or(0);
            vec![events::task_exception(self, run_id, by)]
        } else {
            Vec::new()
        }
    }

    fn run_not_found(&self, run_id: u32) -> ApiError {
        ApiError::not_found(format!(
            "Run {run_id} not found on task `{}`.",
            self.task_id
        ))
    }

    fn past_deadline(&self, verb: &str) -> ApiError {
        ApiError::conflict(format!(
            "Task `{}` can't be {verb} past its deadline of {}.",
            self.task_id,
            fmt_time(self.deadline)
        ))
    }

    /// claimTask. Claims the latest run when pending; the worker holding it may claim again
    /// (same takenUntil, task-running published again).
    pub fn claim(
        &mut self,
        run_id: u32,
        worker_group: &str,
        worker_id: &str,
        now: DateTime<Utc>,
        claim_timeout: Duration,
    ) -> Result<Vec<Msg>, ApiError> {
        if self.deadline <= now {
            return Err(self.past_deadline("claimed"));
        }
        let latest = self.is_latest(run_id);
        let Some(run) = self.runs.get_mut(run_id as usize) else {
            return Err(self.run_not_found(run_id));
        };
        if latest && run.state == RunState::Pending {
            run.state = RunState::Running;
            run.worker_group = Some(worker_group.to_owned());
            run.worker_id = Some(worker_id.to_owned());
            run.taken_until = Some(now + claim_timeout);
            run.started = Some(now);
        }
        let ours = latest
            && run.state == RunState::Running
            && run.worker_group.as_deref() == Some(worker_group)
            && run.worker_id.as_deref() == Some(worker_id);
        if !ours {
            return Err(ApiError::conflict(format!(
                "Run {run_id} was already claimed by another worker."
            )));
        }
        Ok(vec![events::task_running(self, run_id)])
    }

    /// reclaimTask: a new takenUntil for the latest, running run. No message.
    pub fn reclaim(
        &mut self,
        run_id: u32,
        now: DateTime<Utc>,
        claim_timeout: Duration,
    ) -> Result<(), ApiError> {
        if self.run(run_id).is_none() {
            return Err(self.run_not_found(run_id));
        }
        if self.deadline <= now {
            return Err(self.past_deadline("reclaimed"));
        }
        let latest = self.is_latest(run_id);
        match self.runs.get_mut(run_id as usize) {
            Some(run) if latest && run.state == RunState::Running => {
                run.taken_until = Some(now + claim_timeout);
                Ok(())
            }
            _ => Err(ApiError::conflict(format!(
                "Run {run_id} on task `{}` is resolved or not running.",
                self.task_id
            ))),
        }
    }

    /// reportCompleted / reportFailed; a repeat of the same report succeeds and publishes
    /// again.
    pub fn report(
        &mut self,
        run_id: u32,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<Vec<Msg>, ApiError> {
        let target = outcome.state();
        let latest = self.is_latest(run_id);
        let task_id = self.task_id.clone();
        let Some(run) = self.runs.get_mut(run_id as usize) else {
            return Err(self.run_not_found(run_id));
        };
        if run.state != RunState::Running && run.state != target {
            return Err(ApiError::conflict(format!(
                "Run {run_id} of task `{task_id}` is not running or {}.",
                target.as_str()
            )));
        }
        if latest && run.state == RunState::Running {
            run.resolve(target, target.as_str(), now);
        }
        if !latest || run.state != target || run.reason_resolved.as_deref() != Some(target.as_str())
        {
            return Err(ApiError::conflict(format!(
                "Run {run_id} on task `{task_id}` is resolved or not running."
            )));
        }
        Ok(vec![events::task_resolved(
            self,
            run_id,
            outcome.exchange(),
        )])
    }

    /// reportException with an accepted `reason`: worker-shutdown and intermittent-task add a
    /// retry run while retries are left (and then publish task-pending instead of
    /// task-exception). The same reason again succeeds; another reason is a conflict.
    pub fn report_exception(
        &mut self,
        run_id: u32,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Msg>, ApiError> {
        let retry_reason = exception_retry_reason(reason).flatten();
        let latest = self.is_latest(run_id);
        let Some(run) = self.runs.get_mut(run_id as usize) else {
            return Err(self.run_not_found(run_id));
        };
        if latest && run.state == RunState::Running {
            run.resolve(RunState::Exception, reason, now);
            if let Some(r) = retry_reason {
                self.retry(r, now);
            }
        }
        let conflict = || {
            ApiError::conflict(format!(
                "Run {run_id} on task `{}` is resolved or not running.",
                self.task_id
            ))
        };
        let run = self.run(run_id).ok_or_else(conflict)?;
        if self.runs.len() > run_id as usize + 2
            || run.state != RunState::Exception
            || run.reason_resolved.as_deref() != Some(reason)
        {
            return Err(conflict());
        }
        let retried = self.runs.get(run_id as usize + 1).is_some_and(|r| {
            r.state == RunState::Pending && matches!(r.reason_created, "retry" | "task-retry")
        });
        if retried {
            Ok(vec![events::task_pending(self, run_id + 1, true)])
        } else {
            Ok(vec![events::task_exception(
                self,
                run_id,
                ExceptionBy::Worker,
            )])
        }
    }

    /// rerunTask: a new pending run (reasonCreated rerun, retries reset) unless one is pending
    /// or running already; at most [`MAX_RUNS`] runs.
    pub fn rerun(&mut self, now: DateTime<Utc>) -> Result<Vec<Msg>, ApiError> {
        if self.deadline < now {
            return Err(self.past_deadline("rescheduled"));
        }
        let active = matches!(self.state(), "pending" | "running");
        if !active {
            if self.runs.len() >= MAX_RUNS {
                return Err(ApiError::conflict(format!(
                    "Maximum number of runs reached ({MAX_RUNS})."
                )));
            }
            self.retries_left = self.retries;
            self.runs.push(Run::pending("rerun", now));
        }
        if self.state() == "pending" {
            let run_id = self.latest_run_id().unwrap_or(0);
            Ok(vec![events::task_pending(self, run_id, false)])
        } else {
            Ok(Vec::new())
        }
    }

    /// cancelTask: the latest run (or a new run 0) becomes exception/canceled; a resolved task
    /// is left alone. Never retried.
    pub fn cancel(&mut self, now: DateTime<Utc>) -> Result<Vec<Msg>, ApiError> {
        if self.deadline < now {
            return Err(self.past_deadline("canceled"));
        }
        Ok(self.cancel_as("canceled", now, ExceptionBy::Cancel))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tc::model::{TaskRequest, parse_time};
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse_time("2026-11-22T05:00:00Z").unwrap()
    }

    fn task(retries: u32) -> Task {
        let def = json!({
            "provisionerId": "prov", "workerType": "wt", "retries": retries, "routes": ["index.a"],
            "created": "2026-11-22T05:00:00Z", "deadline": "2026-11-22T08:00:00Z",
            "payload": {}, "metadata": {"name": "n", "description": "d", "owner": "o", "source": "s"},
        });
        let mut t = TaskRequest::parse("C4Anq1nwR_i_3PIWfaQGvA", &def)
            .unwrap()
            .into_task(now(), true)
            .unwrap();
        t.schedule("scheduled", now());
        t
    }

    const TIMEOUT: Duration = Duration::minutes(20);

    #[test]
    fn claim_by_another_worker_conflicts_and_the_holder_may_claim_again() {
        let mut t = task(5);
        let msgs = t.claim(0, "g", "w", now(), TIMEOUT).unwrap();
        assert_eq!(msgs[0].exchange, "task-running");
        assert_eq!(
            msgs[0].routing_key,
            "primary.C4Anq1nwR_i_3PIWfaQGvA.0.g.w.prov.wt.-.C4Anq1nwR_i_3PIWfaQGvA._"
        );
        assert_eq!(msgs[0].ccs, vec!["route.index.a".to_owned()]);
        let later = now() + Duration::minutes(1);
        assert!(t.claim(0, "g", "w", later, TIMEOUT).is_ok());
        assert_eq!(t.runs[0].taken_until, Some(now() + TIMEOUT));
        assert_eq!(
            t.claim(0, "g", "other", later, TIMEOUT).unwrap_err().code,
            "RequestConflict"
        );
        assert_eq!(
            t.claim(1, "g", "w", later, TIMEOUT).unwrap_err().code,
            "ResourceNotFound"
        );
    }

    #[test]
    fn an_expired_claim_is_retried_until_retries_run_out() {
        let mut t = task(1);
        t.claim(0, "g", "w", now(), TIMEOUT).unwrap();
        let msgs = t.timeouts(now() + TIMEOUT + Duration::seconds(1));
        let kinds: Vec<_> = msgs.iter().map(|m| m.exchange).collect();
        assert_eq!(kinds, ["task-exception", "task-pending"]);
        assert_eq!(t.runs[0].reason_resolved.as_deref(), Some("claim-expired"));
        assert_eq!((t.runs[1].reason_created, t.retries_left), ("retry", 0));
        t.claim(1, "g", "w", now() + TIMEOUT * 2, TIMEOUT).unwrap();
        let msgs = t.timeouts(now() + TIMEOUT * 4);
        assert_eq!(msgs.len(), 1);
        assert_eq!(t.state(), "exception");
    }

    #[test]
    fn the_deadline_resolves_without_worker_fields_in_the_routing_key() {
        let mut t = task(5);
        t.claim(0, "g", "w", now(), TIMEOUT).unwrap();
        let msgs = t.timeouts(t.deadline);
        assert_eq!(
            msgs[0].routing_key,
            "primary.C4Anq1nwR_i_3PIWfaQGvA.0._._.prov.wt.-.C4Anq1nwR_i_3PIWfaQGvA._"
        );
        assert!(msgs[0].body.get("workerGroup").is_none());
        assert_eq!(
            t.runs[0].reason_resolved.as_deref(),
            Some("deadline-exceeded")
        );
        assert_eq!(t.runs.len(), 1);
    }

    #[test]
    fn reports_are_idempotent_but_never_change_a_resolution() {
        let mut t = task(5);
        t.claim(0, "g", "w", now(), TIMEOUT).unwrap();
        assert!(t.report(0, Outcome::Completed, now()).is_ok());
        assert!(t.report(0, Outcome::Completed, now()).is_ok());
        assert_eq!(
            t.report(0, Outcome::Failed, now()).unwrap_err().code,
            "RequestConflict"
        );
        assert_eq!(
            t.report_exception(0, "internal-error", now())
                .unwrap_err()
                .code,
            "RequestConflict"
        );
    }

    #[test]
    fn worker_shutdown_retries_and_repeating_it_is_fine() {
        let mut t = task(5);
        t.claim(0, "g", "w", now(), TIMEOUT).unwrap();
        let msgs = t.report_exception(0, "worker-shutdown", now()).unwrap();
        assert_eq!(msgs[0].exchange, "task-pending");
        assert_eq!(msgs[0].body["runId"], 1);
        assert!(t.report_exception(0, "worker-shutdown", now()).is_ok());
        assert_eq!(
            t.report_exception(0, "internal-error", now())
                .unwrap_err()
                .code,
            "RequestConflict"
        );
        assert_eq!(t.runs.len(), 2);
    }

    #[test]
    fn a_pending_run_cannot_be_reported_on() {
        let mut t = task(5);
        assert_eq!(
            t.report_exception(0, "malformed-payload", now())
                .unwrap_err()
                .code,
            "RequestConflict"
        );
        assert_eq!(
            t.report(0, Outcome::Completed, now()).unwrap_err().code,
            "RequestConflict"
        );
    }

    #[test]
    fn rerun_adds_runs_up_to_fifty() {
        let mut t = task(0);
        for i in 0..49 {
            t.claim(i, "g", "w", now(), TIMEOUT).unwrap();
            t.report(i, Outcome::Failed, now()).unwrap();
            let msgs = t.rerun(now()).unwrap();
            assert!(msgs[0].body.get("task").is_none());
        }
        t.claim(49, "g", "w", now(), TIMEOUT).unwrap();
        t.report(49, Outcome::Failed, now()).unwrap();
        assert!(
            t.rerun(now())
                .unwrap_err()
                .message
                .contains("Maximum number of runs")
        );
    }

    #[test]
    fn cancel_keeps_the_worker_of_a_running_run_and_is_idempotent() {
        let mut t = task(5);
        t.claim(0, "g", "w", now(), TIMEOUT).unwrap();
        let msgs = t.cancel(now()).unwrap();
        assert_eq!(msgs[0].body["workerId"], "w");
        assert!(msgs[0].body.get("task").is_none());
        assert_eq!(t.runs[0].reason_resolved.as_deref(), Some("canceled"));
        assert_eq!(t.cancel(now()).unwrap().len(), 1);
        assert_eq!(t.runs.len(), 1);
    }
}
