//! `mall-topics`: watch the saga on the wire.
//!
//! Reads the three event topics (and the dead-letter topics) from the start
//! and prints one line per record: where it sits, its CloudEvents type and
//! id, and the protobuf payload decoded. Without `--follow` it reads each
//! topic to the end it had at the start (its high watermark) and exits;
//! it never joins a consumer group.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mall_saga::Topics;
use platform_core::cloudevents::{TIME, TYPE};
use platform_core::dead_letter::ERROR_HEADER;
use platform_core::echo::echo;
use platform_core::kafka::client_config;
use platform_core::record::CapturedRecord;
use platform_core::scan::{ScanError, scan};
use platform_core::settings::{BrokerArgs, TopicPrefixArgs};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

/// Command line of `mall-topics`.
#[derive(Debug, Parser)]
#[command(version, about = "Print every saga event on the mall topics, decoded")]
struct Cli {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    prefix: TopicPrefixArgs,
    /// Keep watching for new events instead of exiting at the end the topics
    /// had when it started.
    #[arg(long, short)]
    follow: bool,
    /// Only show events of this order id.
    #[arg(long)]
    order: Option<i64>,
}

fn decode(event_type: &str, bytes: &[u8]) -> String {
    match mall_proto::describe(event_type, bytes) {
        Some(Ok(shown)) => shown,
        Some(Err(error)) => format!("<undecodable: {error}>"),
        None => format!("<{} bytes>", bytes.len()),
    }
}

/// One printed line for `record`, or `None` when `--order` filters it out.
fn line(record: &CapturedRecord, order: Option<i64>) -> Option<(String, String)> {
    let key = record.key_str();
    if order.is_some_and(|id| id.to_string() != key) {
        return None;
    }
    let header = |name: &str| record.header(name).unwrap_or_default().to_owned();
    let (event_type, error, time) = (header(TYPE), header(ERROR_HEADER), header(TIME));
    let line = format!(
        "{time} {topic}[{partition}@{offset}] key={key} {event_type} {body}{dead}",
        key = echo(key, 40),
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        body = decode(&event_type, record.payload.as_deref().unwrap_or_default()),
        dead = if error.is_empty() {
            String::new()
        } else {
            format!(" dead-lettered: {}", echo(&error, 300))
        },
    );
    Some((time, line))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let topics = Topics::new(&cli.prefix.topic_prefix);
    let brokers = &cli.broker.brokers;
    if !cli.follow {
        // Every topic as it stood now, to its end (its high watermark);
        // lines sorted by ce_time so one order's chain reads top to bottom.
        let mut lines = Vec::new();
        for topic in topics.all() {
            let read = scan(brokers, &topic, async |record| {
                lines.extend(line(&record, cli.order));
                Ok::<(), ScanError>(())
            })
            .await;
            match read {
                Ok(()) | Err(ScanError::NoTopic(_)) => {}
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("cannot read {topic} from {brokers}"));
                }
            }
        }
        lines.sort();
        for (_, line) in lines {
            println!("{line}");
        }
        return Ok(());
    }
    let consumer: StreamConsumer = client_config(brokers)
        .set("group.id", "mall-topics")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create a Kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics.all() {
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .with_context(|| format!("cannot read metadata of {topic} from {brokers}"))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            assignment.add_partition_offset(&topic, partition.id(), Offset::Offset(0))?;
        }
    }
    consumer.assign(&assignment)?;
    loop {
        let message = consumer.recv().await?;
        if let Some((_, line)) = line(&CapturedRecord::from_message(&message), cli.order) {
            println!("{line}");
        }
    }
}
