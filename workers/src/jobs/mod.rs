//! One file per job handler; [`register`] is the one list of every job kind a worker runs.
pub mod build_finished;
pub mod build_started;
pub mod builds;
pub mod probe;
pub mod reflect_scan;
pub mod task_check;
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
        use bbb_shared::jobs::{BRIDGE_KINDS, Job, Probe};
        let mut kinds = Vec::new();
        if self.bridge {
            kinds.extend(BRIDGE_KINDS);
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
    let mut start = Starter {
        set,
        ctx,
        settings,
        conn,
        shutdown,
    };
    if which.bridge {
        start.kind(task_pending::run);
        start.kind(task_exception::run);
        start.kind(build_started::run);
        start.kind(build_finished::run);
        start.kind(reflect_scan::run);
        start.kind(task_check::run);
    }
    if which.probe {
        start.kind(probe::run);
    }
}

/// Starts the supervised apalis worker of one job kind.
struct Starter<'a> {
    set: &'a mut JoinSet<()>,
    ctx: &'a JobContext,
    settings: &'a RuntimeSettings,
    conn: &'a ConnectionManager,
    shutdown: &'a watch::Receiver<bool>,
}

impl Starter<'_> {
    fn kind<J, F, Fut>(&mut self, handler: F)
    where
        J: bbb_shared::jobs::Job,
        F: Fn(JobContext, J) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::runtime::JobResult> + Send + 'static,
    {
        let runner = Arc::new(Runner::new(
            self.ctx.clone(),
            self.settings.clone(),
            handler,
        ));
        self.set
            .spawn(supervise(runner, self.conn.clone(), self.shutdown.clone()));
    }
}
