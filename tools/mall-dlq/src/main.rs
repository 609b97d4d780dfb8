//! `mall-dlq`: list, show and re-drive dead letters, and step a consumer
//! over one record.
//!
//! ```text
//! mall-dlq list    --service delivery [--reason TEXT] [--type CE_TYPE] [--order ID]
//! mall-dlq show    --service delivery --partition 0 --offset 12
//! mall-dlq redrive --service delivery --reason "database" --dry-run [--again]
//! mall-dlq skip    --service delivery --topic mall.order.events --partition 0 --offset 7 --reason "why"
//! ```
//!
//! Everything printed that came from a record is clipped and has its
//! control characters escaped, so a record cannot rewrite the screen.
#![allow(clippy::print_stdout)]

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use mall_dlq::{Decision, Selection, origin, read_one, redrive_selected, scan};
use mall_saga::{Service, Topics};
use platform_core::dead_letter::{ERROR_HEADER, GROUP_HEADER};
use platform_core::echo::{echo, echo_bytes};
use platform_core::record::CapturedRecord;
use platform_core::settings::{BrokerArgs, TopicPrefixArgs};

/// Command line of `mall-dlq`.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Inspect a dead-letter topic, re-drive records to their original topic, step a consumer over a record"
)]
struct Cli {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    prefix: TopicPrefixArgs,
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
    /// Send the selected dead letters back to their original topic: only to
    /// a topic the group consumes, only what its consumer would not refuse
    /// at once, and each only once.
    Redrive {
        #[command(flatten)]
        target: Target,
        /// Print what would be re-driven and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Send again what was re-driven before (the ledger
        /// `<dlq>.redriven` says what), and copies that came back from a
        /// re-drive.
        #[arg(long)]
        again: bool,
    },
    /// Step the service's consumer over one record it cannot get past: a
    /// copy goes to the group's dead-letter topic, marked, and the consumer
    /// moves on within a retry.
    Skip {
        /// The consuming service (`order`, `delivery`, `inventory`).
        #[arg(long)]
        service: String,
        /// The topic the record is on.
        #[arg(long)]
        topic: String,
        /// Its partition.
        #[arg(long)]
        partition: i32,
        /// Its offset.
        #[arg(long)]
        offset: i64,
        /// Why, for the dead letter's `dlq_error`.
        #[arg(long)]
        reason: String,
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
    fn topic(&self, topics: &Topics) -> anyhow::Result<String> {
        match (&self.topic, &self.service) {
            (Some(topic), _) => Ok(topic.clone()),
            (None, Some(name)) => Ok(topics.dead_letters_of(named(name)?)),
            (None, None) => bail!("give --service or --topic"),
        }
    }

    /// The service whose group the DLQ belongs to.
    fn service(&self, topics: &Topics) -> anyhow::Result<Service> {
        let topic = self.topic(topics)?;
        Service::ALL
            .into_iter()
            .find(|s| topics.dead_letters_of(*s) == topic)
            .with_context(|| {
                format!(
                    "{} is not the dead-letter topic of a service",
                    echo(&topic, 80)
                )
            })
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

fn named(name: &str) -> anyhow::Result<Service> {
    Service::named(name).with_context(|| format!("no service called {}", echo(name, 40)))
}

/// A header for printing: the last of its name (the consumer's), escaped.
fn shown(record: &CapturedRecord, name: &str) -> String {
    record
        .last_header(name)
        .map_or_else(|| "-".to_owned(), |value| echo(value, 200))
}

fn line(record: &CapturedRecord) -> String {
    let from = origin(record).map_or_else(
        || "?".to_owned(),
        |o| format!("{}[{}@{}]", echo(&o.topic, 80), o.partition, o.offset),
    );
    format!(
        "{}[{}@{}] key={} type={} from={} group={} reason={}",
        record.topic,
        record.partition,
        record.offset,
        echo_bytes(record.key.as_deref().unwrap_or_default(), 40),
        record
            .header(platform_core::cloudevents::TYPE)
            .map_or_else(|| "-".to_owned(), |t| echo(t, 80)),
        from,
        shown(record, GROUP_HEADER),
        shown(record, ERROR_HEADER),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let topics = Topics::new(&cli.prefix.topic_prefix);
    match &cli.command {
        Command::List(target) => {
            let topic = target.topic(&topics)?;
            let selection = target.selection();
            let mut selected = 0;
            scan::<mall_dlq::DlqError>(&cli.broker.brokers, &topic, async |record| {
                if selection.matches(&record) {
                    selected += 1;
                    println!("{}", line(&record));
                }
                Ok(())
            })
            .await
            .with_context(|| format!("cannot read {topic} from {}", cli.broker.brokers))?;
            println!("{selected} dead letters selected");
        }
        Command::Show { target } => {
            let topic = target.topic(&topics)?;
            let selection = target.selection();
            scan::<mall_dlq::DlqError>(&cli.broker.brokers, &topic, async |record| {
                if !selection.matches(&record) {
                    return Ok(());
                }
                println!("{}", line(&record));
                for (name, value) in &record.headers {
                    println!("  header {} = {}", echo(name, 80), echo_bytes(value, 400));
                }
                println!(
                    "  key     {}",
                    echo_bytes(record.key.as_deref().unwrap_or_default(), 400)
                );
                let payload = record.payload.as_deref().unwrap_or_default();
                println!(
                    "  payload {} bytes: {:02x?}",
                    payload.len(),
                    &payload[..payload.len().min(4096)]
                );
                Ok(())
            })
            .await
            .with_context(|| format!("cannot read {topic} from {}", cli.broker.brokers))?;
        }
        Command::Redrive {
            target,
            dry_run,
            again,
        } => {
            let service = target.service(&topics)?;
            let tally = redrive_selected(
                &cli.broker.brokers,
                &topics,
                service,
                &target.selection(),
                *dry_run,
                *again,
                |decision| match decision {
                    Decision::Kept(record, why) => println!("kept {}: {why}", line(record)),
                    Decision::Sent(record, to) if *dry_run => {
                        println!("would re-drive {} to {}", line(record), to.topic)
                    }
                    Decision::Sent(record, to) => {
                        println!("re-drove {} to {}", line(record), to.topic)
                    }
                },
            )
            .await
            .with_context(|| format!("cannot re-drive from {}", topics.dead_letters_of(service)))?;
            let verb = if *dry_run {
                "would be re-driven"
            } else {
                "re-driven"
            };
            println!("{} dead letters {verb}, {} kept", tally.sent, tally.kept);
        }
        Command::Skip {
            service,
            topic,
            partition,
            offset,
            reason,
        } => {
            let service = named(service)?;
            if !topics.read_by(service).contains(topic) {
                bail!(
                    "the {} service does not read {}",
                    service.name(),
                    echo(topic, 80)
                );
            }
            let record = read_one(&cli.broker.brokers, topic, *partition, *offset)?;
            mall_dlq::skip(&cli.broker.brokers, &topics, service, &record, reason).await?;
            println!(
                "marked {topic}[{partition}@{offset}] key={} to be stepped over by the {} consumer; \
                 its copy is in {}",
                echo_bytes(record.key.as_deref().unwrap_or_default(), 40),
                service.name(),
                topics.dead_letters_of(service)
            );
        }
    }
    Ok(())
}
