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
use mall_platform::kafka::{Topics, client_config};
use mall_proto::{delivery::v1 as delivery, inventory::v1 as inventory, order::v1 as order};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Command line of `mall-topics`.
#[derive(Debug, Parser)]
#[command(version, about = "Print every saga event on the mall topics, decoded")]
struct Cli {
    /// Comma-separated bootstrap brokers.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    brokers: String,
    /// Topic prefix.
    #[arg(
        long = "topic-prefix",
        env = "KAFKA_TOPIC_PREFIX",
        default_value = "mall"
    )]
    prefix: String,
    /// Keep watching for new events instead of exiting once the topics are quiet.
    #[arg(long, short)]
    follow: bool,
    /// Only show events of this order id.
    #[arg(long)]
    order: Option<i64>,
}

fn decode(event_type: &str, bytes: &[u8]) -> String {
    fn show<M: prost::Message + Default + std::fmt::Debug>(bytes: &[u8]) -> String {
        M::decode(bytes).map_or_else(|e| format!("<undecodable: {e}>"), |m| format!("{m:?}"))
    }
    match event_type {
        "mall.order.v1.OrderCreated" => show::<order::OrderCreated>(bytes),
        "mall.order.v1.OrderApproved" => show::<order::OrderApproved>(bytes),
        "mall.order.v1.OrderRejected" => show::<order::OrderRejected>(bytes),
        "mall.order.v1.OrderCancelled" => show::<order::OrderCancelled>(bytes),
        "mall.delivery.v1.DeliveryStarted" => show::<delivery::DeliveryStarted>(bytes),
        "mall.delivery.v1.DeliveryFailed" => show::<delivery::DeliveryFailed>(bytes),
        "mall.delivery.v1.DeliveryCancelled" => show::<delivery::DeliveryCancelled>(bytes),
        "mall.inventory.v1.StockDecreased" => show::<inventory::StockDecreased>(bytes),
        "mall.inventory.v1.StockDecreaseFailed" => show::<inventory::StockDecreaseFailed>(bytes),
        "mall.inventory.v1.StockIncreased" => show::<inventory::StockIncreased>(bytes),
        _ => format!("<{} bytes>", bytes.len()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let topics = Topics::new(&cli.prefix);
    let consumer: StreamConsumer = client_config(&cli.brokers)
        .set("group.id", "mall-topics")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create a Kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics.all() {
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .with_context(|| format!("cannot read metadata of {topic} from {}", cli.brokers))?;
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
        let event_type = header("ce_type");
        let error = header("dlq_error");
        let time = header("ce_time");
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
