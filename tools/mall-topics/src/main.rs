//! `mall-topics`: watch the saga on the wire.
//!
//! Reads the three event topics (and the dead-letter topics) from the start
//! and prints one line per record: where it sits, its CloudEvents type and
//! id, and the protobuf payload decoded. It uses explicit start offsets, so it
//! needs no consumer group and no ListOffsets support from the broker.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mall_saga::Topics;
use platform_core::cloudevents::{TIME, TYPE};
use platform_core::dead_letter::ERROR_HEADER;
use platform_core::kafka::client_config;
use platform_core::settings::{BrokerArgs, TopicPrefixArgs};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Command line of `mall-topics`.
#[derive(Debug, Parser)]
#[command(version, about = "Print every saga event on the mall topics, decoded")]
struct Cli {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    prefix: TopicPrefixArgs,
    /// Keep watching for new events instead of exiting once the topics are quiet.
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let topics = Topics::new(&cli.prefix.topic_prefix);
    let consumer: StreamConsumer = client_config(&cli.broker.brokers)
        .set("group.id", "mall-topics")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create a Kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics.all() {
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .with_context(|| {
                format!(
                    "cannot read metadata of {topic} from {}",
                    cli.broker.brokers
                )
            })?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            assignment.add_partition_offset(&topic, partition.id(), Offset::Offset(0))?;
        }
    }
    consumer.assign(&assignment)?;
    // Without --follow, lines are sorted by ce_time so one order's chain reads top to bottom.
    let mut lines: Vec<(String, String)> = Vec::new();
    loop {
        let message = match tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await {
            Ok(message) => message?,
            Err(_) if cli.follow => continue,
            Err(_) => break,
        };
        let header = |name: &str| {
            message
                .headers()
                .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let key = message
            .key()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if cli.order.is_some_and(|id| id.to_string() != key) {
            continue;
        }
        let event_type = header(TYPE);
        let error = header(ERROR_HEADER);
        let time = header(TIME);
        let line = format!(
            "{time} {topic}[{partition}@{offset}] key={key} {event_type} {body}{dead}",
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            body = decode(&event_type, message.payload().unwrap_or_default()),
            dead = if error.is_empty() {
                String::new()
            } else {
                format!(" dead-lettered: {error}")
            },
        );
        if cli.follow {
            println!("{line}");
        } else {
            lines.push((time, line));
        }
    }
    lines.sort();
    for (_, line) in lines {
        println!("{line}");
    }
    Ok(())
}
