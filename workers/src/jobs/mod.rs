//! One file per job handler; [`register`] is the one list of every job kind a worker runs.
pub mod build_finished;
pub mod build_started;
pub mod builds;
pub mod probe;
pub mod task_exception;
pub mod task_pending;

use std::sync::Arc;

use apalis_redis::ConnectionManager;
use tokio::{sync::watch, task::JoinSet};

use crate::runtime::{JobContext, Runner, RuntimeSettings, supervise};

/// Which job kinds this process takes.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// The bridge's jobs: task-pending, task-exception, build-started, build-finished.
    pub bridge: bool,
    /// The runtime's own probe job (tests and diagnostics).
    pub probe: bool,
}

impl Registration {
    /// The job kinds registered, by name.
    pub fn kinds(&self) -> Vec<&'static str> {
        use bbb_shared::jobs::{
            BuildFinished, BuildStarted, Job, Probe, TaskException, TaskPending,
        };
        let mut kinds = Vec::new();
        if self.bridge {
            kinds.extend([
                TaskPending::NAME,
                TaskException::NAME,
                BuildStarted::NAME,
                BuildFinished::NAME,
            ]);
        }
        if self.probe {
            kinds.push(Probe::NAME);
        }
        kinds
    }
}

/// Starts one supervised apalis worker per registered job kind.
pub fn register(
    set: &mut JoinSet<()>,
    which: &Registration,
    ctx: &JobContext,
    settings: &RuntimeSettings,
    conn: &ConnectionManager,
    shutdown: &watch::Receiver<bool>,
) {
    if which.bridge {
        let s = settings;
        set.spawn(supervise(
            Arc::new(Runner::new(ctx.clone(), s.clone(), task_pending::run)),
            conn.clone(),
            shutdown.clone(),
        ));
        set.spawn(supervise(
            Arc::new(Runner::new(ctx.clone(), s.clone(), task_exception::run)),
            conn.clone(),
            shutdown.clone(),
        ));
        set.spawn(supervise(
            Arc::new(Runner::new(ctx.clone(), s.clone(), build_started::run)),
            conn.clone(),
            shutdown.clone(),
        ));
        set.spawn(supervise(
            Arc::new(Runner::new(ctx.clone(), s.clone(), build_finished::run)),
            conn.clone(),
            shutdown.clone(),
        ));
    }
    if which.probe {
        let runner = Arc::new(Runner::new(ctx.clone(), settings.clone(), probe::run));
        set.spawn(supervise(runner, conn.clone(), shutdown.clone()));
    }
}
