//! `bbb`: the operator's command. Wiring only; each subcommand calls into the crates.
use anyhow::Context;
use bbb_shared::{bridgedb::BridgeDb, config::Config, telemetry};
use clap::{Parser, Subcommand};

/// Operate a bbb installation: apply the bridge DB's migrations, check a configuration.
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
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            println!("{}: OK", cli.common.config.display());
            println!("{}", config.summary());
        }
    }
    Ok(())
}
