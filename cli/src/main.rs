//! `bbb`: the operator's command. Wiring only; each subcommand calls into the crates.
use anyhow::Context;
use bbb_sandbox::system::{Parts, Sandbox};
use bbb_shared::{bridgedb::BridgeDb, config::Config, telemetry};
use clap::{Parser, Subcommand};

/// Operate a bbb installation: apply the bridge DB's migrations, check a configuration, run
/// the local emulators of Taskcluster, Buildbot and self-serve.
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
    telemetry::init(cli.common.log_format);
    let config = Config::load(&cli.common.config)?;
    match cli.command {
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
            println!("{}: OK", cli.common.config.display());
            println!("{}", config.summary());
        }
    }
    Ok(())
}
