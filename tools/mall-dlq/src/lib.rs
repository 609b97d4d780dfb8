//! Dead letters: read a dead-letter topic, select records by reason, type,
//! order or offset range, and re-drive them to the topic they came from.
//!
//! Re-driving is safe because every consumer keeps an inbox: a record whose
//! event was applied meanwhile is rejected as a duplicate, and one that never
//! was is applied now. A re-driven record goes to its original topic, so
//! every group reading that topic sees it again; each group's inbox decides.

mod select;

use std::time::Duration;

use platform_core::kafka::{LogContext, client_config};
use platform_core::record::CapturedRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

pub use select::{Origin, REDRIVEN_FROM_HEADER, Selection, for_redrive, origin};

/// Timeout of each broker call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the dead-letter commands.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The broker could not be asked.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The dead-letter topic does not exist.
    #[error("topic {0} does not exist")]
    NoTopic(String),
    /// A selected record has no original coordinates.
    #[error("dead letter {topic}/{partition}/{offset} has no dlq_original_topic header")]
    NoOrigin {
        /// DLQ topic.
        topic: String,
        /// DLQ partition.
        partition: i32,
        /// DLQ offset.
        offset: i64,
    },
}

/// Reads every record of `topic`, from the start of each partition to the
/// end it had when the call began.
pub fn read_all(brokers: &str, topic: &str) -> Result<Vec<CapturedRecord>, DlqError> {
    let consumer: BaseConsumer<LogContext> = client_config(brokers)
        .set("group.id", "mall-dlq")
        .set("enable.auto.commit", "false")
        .create_with_context(LogContext)?;
    let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(DlqError::NoTopic(topic.to_owned()));
    }
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for &partition in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, CALL_TIMEOUT)?;
        if high > low {
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
            ends.insert(partition, high);
        }
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    while !ends.is_empty() {
        let Some(message) = consumer.poll(CALL_TIMEOUT) else {
            continue;
        };
        let record = CapturedRecord::from_message(&message?);
        if ends
            .get(&record.partition)
            .is_some_and(|end| record.offset + 1 >= *end)
        {
            ends.remove(&record.partition);
        }
        records.push(record);
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// A producer for re-driving, idempotent like every producer of the mall.
pub fn producer(brokers: &str) -> Result<FutureProducer<LogContext>, KafkaError> {
    platform_core::kafka::idempotent_producer(brokers)
}

/// Sends `dead` back to its original topic (see [`for_redrive`]) and waits
/// for the broker's acknowledgement; returns where it went.
pub async fn redrive(
    producer: &FutureProducer<LogContext>,
    dead: &CapturedRecord,
) -> Result<Origin, DlqError> {
    let to = origin(dead).ok_or_else(|| DlqError::NoOrigin {
        topic: dead.topic.clone(),
        partition: dead.partition,
        offset: dead.offset,
    })?;
    let record = for_redrive(dead);
    platform_core::record::send_copy(producer, &to.topic, &record).await?;
    Ok(to)
}
