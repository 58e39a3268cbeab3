//! One file per job handler; [`register`] is the one list of every job kind a worker runs.
pub mod probe;

use std::sync::Arc;

use apalis_redis::ConnectionManager;
use tokio::{sync::watch, task::JoinSet};

use crate::runtime::{JobContext, Runner, RuntimeSettings, supervise};

/// Which job kinds this process takes.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// The runtime's own probe job (tests and diagnostics).
    pub probe: bool,
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
    if which.probe {
        let runner = Arc::new(Runner::new(ctx.clone(), settings.clone(), probe::run));
        set.spawn(supervise(runner, conn.clone(), shutdown.clone()));
    }
}
