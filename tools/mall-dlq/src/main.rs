//! `mall-dlq`: list, show and re-drive dead letters.
//!
//! ```text
//! mall-dlq list    --service delivery [--reason TEXT] [--type CE_TYPE] [--order ID]
//! mall-dlq show    --service delivery --partition 0 --offset 12
//! mall-dlq redrive --service delivery --reason "database" --dry-run
//! ```
#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mall_dlq::{Selection, origin, read_all, redrive};
use platform_core::dead_letter::{ERROR_HEADER, GROUP_HEADER};
use platform_core::kafka::TopicNames;
use platform_core::record::CapturedRecord;

/// Command line of `mall-dlq`.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Inspect a dead-letter topic and re-drive records to their original topic"
)]
struct Cli {
    /// Comma-separated bootstrap brokers.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    brokers: String,
    /// Topic prefix.
    #[arg(
        long = "topic-prefix",
        env = "KAFKA_TOPIC_PREFIX",
        default_value = "mall",
        global = true
    )]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One line per selected dead letter: where it is, where it came from, why.
    List(Target),
    /// Everything about one dead letter: headers, key and payload bytes.
    Show {
        #[command(flatten)]
        target: Target,
    },
    /// Send the selected dead letters back to their original topic.
    Redrive {
        #[command(flatten)]
        target: Target,
        /// Print what would be re-driven and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which DLQ and which of its records.
#[derive(Debug, Args)]
struct Target {
    /// The consuming service whose DLQ to read (`<prefix>.<service>.dlq`).
    #[arg(long, conflicts_with = "topic", required_unless_present = "topic")]
    service: Option<String>,
    /// A DLQ topic by name.
    #[arg(long)]
    topic: Option<String>,
    /// Only records whose reason contains this text.
    #[arg(long)]
    reason: Option<String>,
    /// Only records of this CloudEvents type.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only records of this order (record key).
    #[arg(long)]
    order: Option<String>,
    /// Only records in this DLQ partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Only records at or after this DLQ offset (with --offset: exactly it).
    #[arg(long = "from-offset", alias = "offset")]
    from_offset: Option<i64>,
    /// Only records at or before this DLQ offset.
    #[arg(long = "to-offset")]
    to_offset: Option<i64>,
}

impl Target {
    fn topic(&self, names: &TopicNames) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| names.dead_letters(self.service.as_deref().unwrap_or_default()))
    }

    fn selection(&self) -> Selection {
        Selection {
            reason: self.reason.clone(),
            event_type: self.event_type.clone(),
            order: self.order.clone(),
            partition: self.partition,
            from_offset: self.from_offset,
            to_offset: self.to_offset,
        }
    }
}

fn line(record: &CapturedRecord) -> String {
    let from = origin(record).map_or_else(
        || "?".to_owned(),
        |o| format!("{}[{}@{}]", o.topic, o.partition, o.offset),
    );
    format!(
        "{}[{}@{}] key={} type={} from={} group={} reason={}",
        record.topic,
        record.partition,
        record.offset,
        record.key_str(),
        record
            .header(platform_core::cloudevents::TYPE)
            .unwrap_or("-"),
        from,
        record.header(GROUP_HEADER).unwrap_or("-"),
        record.header(ERROR_HEADER).unwrap_or("-"),
    )
}

fn selected(cli: &Cli, target: &Target) -> anyhow::Result<Vec<CapturedRecord>> {
    let topic = target.topic(&TopicNames::new(&cli.prefix));
    let selection = target.selection();
    let records = read_all(&cli.brokers, &topic)
        .with_context(|| format!("cannot read {topic} from {}", cli.brokers))?;
    Ok(records
        .into_iter()
        .filter(|r| selection.matches(r))
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::List(target) => {
            let records = selected(&cli, target)?;
            for record in &records {
                println!("{}", line(record));
            }
            println!("{} dead letters selected", records.len());
        }
        Command::Show { target } => {
            for record in selected(&cli, target)? {
                println!("{}", line(&record));
                for (name, value) in &record.headers {
                    println!("  header {name} = {}", String::from_utf8_lossy(value));
                }
                println!(
                    "  key     {:?}",
                    record.key.as_deref().map(String::from_utf8_lossy)
                );
                println!(
                    "  payload {} bytes: {:02x?}",
                    record.payload.as_deref().map_or(0, <[u8]>::len),
                    record.payload.as_deref().unwrap_or_default()
                );
            }
        }
        Command::Redrive { target, dry_run } => {
            let records = selected(&cli, target)?;
            let producer = mall_dlq::producer(&cli.brokers)?;
            for record in &records {
                if *dry_run {
                    println!("would re-drive {}", line(record));
                    continue;
                }
                let to = redrive(&producer, record).await?;
                println!("re-drove {} to {}", line(record), to.topic);
            }
            let verb = if *dry_run {
                "would be re-driven"
            } else {
                "re-driven"
            };
            println!("{} dead letters {verb}", records.len());
        }
    }
    Ok(())
}
