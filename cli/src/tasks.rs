//! `bbb tasks`: the tasks the bridge tracks, as the bridge sees them.
//!
//! A task is `pending` until a Build claims it (`takenUntil` NULL), `running` while its claim
//! holds, and `awaiting result` once the claim time has passed or its BuildRequest is
//! complete in the scheduler DB (the finished event, or the periodic scan, resolves it next).
//! Rows are read a page at a time through the bridge DB's keyset pagination; the scheduler DB
//! is asked, one batch per page, only about claimed tasks whose claim still holds.
use anyhow::Context as _;
use bbb_shared::{
    bridgedb::{BridgeDb, TrackedTask},
    config::Config,
    schedulerdb::SchedulerDb,
};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::queue::{
    Align::{Left, Right},
    table,
};

/// Tracked rows read per bridge DB query.
const PAGE: u32 = 500;

#[derive(Debug, clap::Args)]
pub struct TasksArgs {
    /// Only tasks whose builder name matches this regular expression (anywhere in the name;
    /// anchor it with `^...$`). Rows adopted from the original bridge have no builder name and
    /// never match.
    #[arg(long, value_name = "PATTERN")]
    pub builder: Option<String>,

    /// Only tasks in this state.
    #[arg(long, value_enum)]
    pub state: Option<TaskState>,

    /// Only this task (its taskId).
    #[arg(long = "task", value_name = "ID")]
    pub task: Option<String>,

    /// Show at most N tasks, in taskId order.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,

    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A tracked task's state as the bridge sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Not claimed yet: the BuildRequest waits for a Build.
    Pending,
    /// Claimed by a Build, the claim still holds.
    Running,
    /// Claimed, and the claim time passed or the BuildRequest is complete.
    AwaitingResult,
}

/// One line of the output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskLine {
    pub task_id: String,
    pub run_id: i64,
    pub buildrequest_id: Option<i64>,
    pub builder: Option<String>,
    pub state: TaskState,
    /// Claim expiry, epoch s.
    pub taken_until: Option<i64>,
    /// The Build holding the claim (`<master>/<builder>/<number>`).
    pub claimed_by: Option<String>,
    /// Whether the BuildRequest is complete; `None` when not read.
    pub buildrequest_complete: Option<bool>,
}

impl TaskLine {
    fn describe_state(&self) -> String {
        match (self.state, self.taken_until) {
            (TaskState::Running, Some(until)) => format!("running until {}", time(until)),
            (TaskState::Running, None) | (TaskState::Pending, _) => "pending".to_owned(),
            (TaskState::AwaitingResult, _) => "awaiting result".to_owned(),
        }
    }
}

fn time(epoch: i64) -> String {
    DateTime::<Utc>::from_timestamp(epoch, 0).map_or_else(
        || epoch.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

/// The state of a row at `now`, given whether its BuildRequest is complete (if known).
pub fn state_of(task: &TrackedTask, buildrequest_complete: Option<bool>, now: i64) -> TaskState {
    match task.taken_until {
        None => TaskState::Pending,
        Some(until) if until <= now || buildrequest_complete == Some(true) => {
            TaskState::AwaitingResult
        }
        Some(_) => TaskState::Running,
    }
}

/// The scheduler DB, connected on first need; `Err` once it failed (the reason is printed
/// once, and states come from the claim times alone).
enum Scheduler {
    NotYet,
    Ready(SchedulerDb),
    Failed,
}

impl Scheduler {
    async fn complete(&mut self, config: &Config, brids: &[i64]) -> Option<Vec<(i64, bool)>> {
        if brids.is_empty() {
            return Some(Vec::new());
        }
        if matches!(self, Scheduler::NotYet) {
            *self = match SchedulerDb::connect(&config.buildbot_scheduler_db).await {
                Ok(db) => Scheduler::Ready(db),
                Err(e) => {
                    warn_scheduler(&e);
                    Scheduler::Failed
                }
            };
        }
        let Scheduler::Ready(db) = self else {
            return None;
        };
        match db.buildrequests(brids).await {
            Ok(requests) => Some(requests.into_iter().map(|r| (r.id, r.complete)).collect()),
            Err(e) => {
                warn_scheduler(&e);
                *self = Scheduler::Failed;
                None
            }
        }
    }
}

fn warn_scheduler(e: &dyn std::fmt::Display) {
    eprintln!(
        "note: the scheduler DB could not be read ({e}); a claimed task whose BuildRequest completed shows as running until its claim expires"
    );
}

/// Reads the matching tasks, at most `args.limit`.
pub async fn collect(config: &Config, args: &TasksArgs) -> anyhow::Result<Vec<TaskLine>> {
    let pattern = args
        .builder
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--builder is not a valid regular expression")?;
    let db = BridgeDb::connect(&config.bbb_db)
        .await
        .with_context(|| format!("connecting to the bridge DB {}", config.bbb_db))?;
    let now = Utc::now().timestamp();
    let mut scheduler = Scheduler::NotYet;
    let mut lines = Vec::new();
    let mut after: Option<String> = None;
    let mut last_page = false;
    while !last_page && lines.len() < args.limit {
        let page = match &args.task {
            Some(id) => {
                last_page = true;
                db.get_task(id)
                    .await
                    .with_context(|| {
                        format!("reading task {id} from the bridge DB {}", config.bbb_db)
                    })?
                    .into_iter()
                    .collect()
            }
            None => db
                .list_tasks_page(after.as_deref(), PAGE)
                .await
                .with_context(|| {
                    format!("reading tracked tasks from the bridge DB {}", config.bbb_db)
                })?,
        };
        let Some(last) = page.last() else { break };
        after = Some(last.task_id.clone());
        let page: Vec<TrackedTask> = page
            .into_iter()
            .filter(|t| match &pattern {
                Some(p) => t.buildername.as_deref().is_some_and(|b| p.is_match(b)),
                None => true,
            })
            .collect();
        // Only a claim that still holds needs the BuildRequest to tell running from done.
        let ask: Vec<i64> = if args.state == Some(TaskState::Pending) {
            Vec::new()
        } else {
            page.iter()
                .filter(|t| t.taken_until.is_some_and(|u| u > now))
                .filter_map(|t| t.buildrequest_id)
                .collect()
        };
        let complete = scheduler.complete(config, &ask).await;
        for task in page {
            let known = task.buildrequest_id.and_then(|brid| {
                complete
                    .as_ref()
                    .and_then(|c| c.iter().find(|(id, _)| *id == brid).map(|(_, done)| *done))
            });
            let state = state_of(&task, known, now);
            if args.state.is_some_and(|wanted| wanted != state) {
                continue;
            }
            lines.push(TaskLine {
                task_id: task.task_id,
                run_id: task.run_id,
                buildrequest_id: task.buildrequest_id,
                builder: task.buildername,
                state,
                taken_until: task.taken_until,
                claimed_by: task.claimed_by,
                buildrequest_complete: known,
            });
            if lines.len() >= args.limit {
                break;
            }
        }
    }
    db.close().await;
    if let Scheduler::Ready(s) = scheduler {
        s.close().await;
    }
    Ok(lines)
}

/// Prints the tasks as a table or JSON.
pub async fn run(config: &Config, args: &TasksArgs) -> anyhow::Result<()> {
    let lines = collect(config, args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    if lines.is_empty() {
        println!("no tracked task matches");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                l.task_id.clone(),
                l.run_id.to_string(),
                l.buildrequest_id
                    .map_or_else(|| "-".to_owned(), |b| b.to_string()),
                l.builder.clone().unwrap_or_else(|| "-".to_owned()),
                l.describe_state(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                ("taskId", Left),
                ("runId", Right),
                ("brid", Right),
                ("builder", Left),
                ("state", Left),
            ],
            &rows
        )
    );
    if lines.len() >= args.limit {
        println!("(first {} shown; --limit N shows more)", args.limit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(taken_until: Option<i64>) -> TrackedTask {
        TrackedTask {
            task_id: "T".into(),
            run_id: 0,
            buildrequest_id: Some(1),
            created_date: 0,
            processed_date: 0,
            taken_until,
            buildername: None,
            branch: None,
            claimed_by: None,
            task_expires: None,
        }
    }

    #[test]
    fn a_task_is_pending_until_claimed_then_running_until_its_claim_passes_or_its_request_completes()
     {
        assert_eq!(state_of(&task(None), Some(true), 100), TaskState::Pending);
        assert_eq!(state_of(&task(Some(200)), None, 100), TaskState::Running);
        assert_eq!(
            state_of(&task(Some(200)), Some(false), 100),
            TaskState::Running
        );
        assert_eq!(
            state_of(&task(Some(200)), Some(true), 100),
            TaskState::AwaitingResult
        );
        assert_eq!(
            state_of(&task(Some(100)), None, 100),
            TaskState::AwaitingResult
        );
    }
}
