//! `outbox-relay`: publishes one database's outbox table to Kafka; its
//! `prepare` command readies a table it does not own, its `parked`
//! commands list and retry the rows it set aside.

use std::fmt::Write as _;
use std::io::Write as _;

use clap::{Parser, Subcommand};
use outbox_relay::RelayConfig;
use platform_core::echo::echo;

/// Command line of the relay.
#[derive(Debug, Parser)]
#[command(version, about = "Publishes a PostgreSQL outbox table to Kafka")]
struct Cli {
    #[command(flatten)]
    config: RelayConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Adds what the relay needs to a table it does not own (an ordering
    /// column drawn under a per-key lock, its own columns, indexes; an
    /// older relay's NOTIFY trigger goes): reads the table first, refuses what ordering cannot
    /// rest on before changing anything, then runs only what is missing in
    /// one transaction. Run it as the table's owner; the application's
    /// INSERTs stay as they are, whatever the writer's rights.
    Prepare {
        /// Print the SQL it would run on the table as it is, and change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Rows the relay parked because the broker can never take them.
    Parked {
        #[command(subcommand)]
        action: Parked,
    },
}

#[derive(Debug, Subcommand)]
enum Parked {
    /// One line per parked row: id, key, topic, type, size, when, why.
    List,
    /// Puts parked rows back in line; the active relay tries them again.
    Retry {
        /// The rows to retry, by id (repeatable).
        #[arg(long = "id", required_unless_present = "all")]
        ids: Vec<i64>,
        /// Every parked row.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform_core::telemetry::init();
    let Cli { config, command } = Cli::parse();
    let report = match command {
        None => return relay(config).await,
        Some(Command::Prepare { dry_run }) => prepare(&config, dry_run).await?,
        Some(Command::Parked {
            action: Parked::List,
        }) => parked(&config).await?,
        Some(Command::Parked {
            action: Parked::Retry { ids, all },
        }) => {
            let ids = (!all).then_some(ids.as_slice());
            let retried = outbox_relay::retry_parked(&config, ids).await?;
            format!(
                "{retried} parked rows put back in line in {}\n",
                config.table
            )
        }
    };
    // A reader that stopped early (`| head`) is no error of ours.
    match std::io::stdout().lock().write_all(report.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// The SQL `prepare` ran (or, with `dry_run`, would run), and the outcome.
async fn prepare(config: &RelayConfig, dry_run: bool) -> anyhow::Result<String> {
    let statements = outbox_relay::prepare_table(config, dry_run).await?;
    let mut report = String::new();
    for statement in &statements {
        writeln!(report, "{statement};")?;
    }
    if dry_run {
        writeln!(
            report,
            "-- dry run: nothing was changed in {}",
            config.table
        )?;
    } else {
        writeln!(report, "-- {} is ready for the relay", config.table)?;
    }
    Ok(report)
}

/// One line per parked row, then how many.
async fn parked(config: &RelayConfig) -> anyhow::Result<String> {
    let rows = outbox_relay::parked_rows(config).await?;
    let mut report = String::new();
    for row in &rows {
        writeln!(
            report,
            "id={} key={} topic={} type={} payload={} bytes parked_at={} reason={}",
            row.id,
            echo(&row.key, 40),
            echo(&row.topic, 80),
            echo(&row.event_type, 80),
            row.payload_bytes,
            row.parked_at,
            echo(&row.reason, 300)
        )?;
    }
    writeln!(report, "{} parked rows in {}", rows.len(), config.table)?;
    Ok(report)
}

/// Runs the relay until a signal, serving its metrics and health.
async fn relay(config: RelayConfig) -> anyhow::Result<()> {
    // Kept until the relay stopped, so the last spans are exported.
    let _traces = platform_core::traces::install_from_env();
    let shutdown = platform_core::shutdown::on_signal();
    let running = outbox_relay::start(config, shutdown).await?;
    running.wait().await?;
    Ok(())
}
