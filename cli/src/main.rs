//! `bbb`: the operator's command. Wiring only; each subcommand calls into the crates.
mod dead_letters;
mod demo;
mod queue;
mod serve_status;
mod tasks;

use anyhow::Context;
use bbb_sandbox::system::{Parts, Sandbox};
use bbb_shared::{bridgedb::BridgeDb, telemetry};
use clap::{Parser, Subcommand};

/// Operate a bbb installation: look at the job queues, tracked tasks and dead letters, serve
/// the status page, apply the bridge DB's migrations, check a configuration, run the local
/// emulators of Taskcluster, Buildbot and self-serve, or the whole system as a demo.
#[derive(Debug, Parser)]
#[command(name = "bbb", version)]
struct Cli {
    #[command(flatten)]
    common: bbb_shared::process::CommonArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the job queues (waiting, delayed, running, age of the oldest waiting job, done
    /// and failed in the last hour, dead letters, jobs/s, live workers), the bridge's Pulse
    /// queues (ready, unacked, consumers, from RabbitMQ's management API at
    /// `pulse.management_url`, default port 15672 of the Pulse host) and the live workers,
    /// then say in plain words what looks wrong, or `all clear`.
    Queue(queue::QueueArgs),
    /// List the tasks the bridge tracks (bridge DB) with taskId, runId, BuildRequest id,
    /// builder and state: `pending` (not claimed yet), `running until <claim expiry>`, or
    /// `awaiting result` (claim expired, or BuildRequest complete in the scheduler DB).
    Tasks(tasks::TasksArgs),
    /// Inspect and act on the dead-letter list: jobs that failed for good and Pulse messages
    /// that could not be parsed (list, show, requeue, purge).
    DeadLetters {
        #[command(subcommand)]
        command: dead_letters::DeadLettersCommand,
    },
    /// Show the whole system working: start what is missing (Redis, RabbitMQ), the three
    /// emulators (SQLite for both databases) and bbb-ingest, bbb-worker and bbb-scheduler,
    /// send N tasks with a mix of outcomes (success, failure, retry-then-success, cancel,
    /// deadline, malformed payload), and print expected vs observed Taskcluster resolutions,
    /// tasks/s and pending -> resolved latency. Exits non-zero if any task ended wrong. No
    /// --config needed; with --external it sends the tasks to the system --config describes.
    Demo(demo::DemoArgs),
    /// Apply the bridge DB's migrations (PostgreSQL, MySQL/MariaDB or SQLite, by URL scheme).
    /// An existing `tasks` table of the original bridge is adopted in place, rows kept.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run local emulators of the Taskcluster queue (at `taskcluster_queue_config.rootUrl`),
    /// Buildbot 0.8 masters (on `buildbot_scheduler_db`, publishing on
    /// `bblistener.pulse_exchange`) and BuildAPI self-serve (at `selfserve_url`, with
    /// allthethings.json at `allowed_builders_url`), until SIGTERM. They accept the configured
    /// Taskcluster credentials with full scopes and create the Buildbot tables when missing.
    /// Emulator settings (builders, masters, claim timeout, extra clients) go in the optional
    /// `sandbox` section. With none of --tc/--buildbot/--selfserve, all three run.
    Sandbox {
        /// Run the Taskcluster queue emulator.
        #[arg(long)]
        tc: bool,
        /// Run the Buildbot master emulator(s).
        #[arg(long)]
        buildbot: bool,
        /// Run the self-serve emulator (and allthethings.json).
        #[arg(long)]
        selfserve: bool,
    },
    /// Serve the status page (job queues, Pulse queues, live workers, diagnosis and a chart
    /// of the last hour) on --addr at `/status` and `/status.json`, and sample its history
    /// into Redis every --sample-every seconds, until SIGTERM.
    ServeStatus(serve_status::Args),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load the configuration (file + environment), report the first problem by key, or
    /// print a summary with every secret masked.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Demo(args) = &cli.command {
        // The demo's own screen is its progress and summary; the processes log to files.
        telemetry::init_with_default(cli.common.log_format, "warn,sqlx=error");
        return demo::run(args, cli.common.config.as_deref()).await;
    }
    telemetry::init(cli.common.log_format);
    let config = cli.common.load_config()?;
    match cli.command {
        Command::Demo(_) => {}
        Command::Queue(args) => queue::run(&config, &args).await?,
        Command::Tasks(args) => tasks::run(&config, &args).await?,
        Command::DeadLetters { command } => dead_letters::run(&config, &command).await?,
        Command::ServeStatus(args) => serve_status::run(&config, args).await?,
        Command::Migrate => {
            let db = BridgeDb::connect(&config.bbb_db)
                .await
                .with_context(|| format!("connecting to the bridge DB {}", config.bbb_db))?;
            db.migrate()
                .await
                .with_context(|| format!("migrating the bridge DB {}", config.bbb_db))?;
            println!("bridge DB {} is up to date", config.bbb_db);
        }
        Command::Sandbox {
            tc,
            buildbot,
            selfserve,
        } => {
            let parts = if tc || buildbot || selfserve {
                Parts {
                    tc,
                    buildbot,
                    selfserve,
                }
            } else {
                Parts::ALL
            };
            let mut shutdown = bbb_shared::process::shutdown_signal();
            let sandbox = Sandbox::start_parts(&config, parts).await?;
            bbb_shared::process::stopped(&mut shutdown).await;
            sandbox.shutdown().await;
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            println!("{}: OK", cli.common.config_path()?.display());
            println!("{}", config.summary());
        }
    }
    Ok(())
}
