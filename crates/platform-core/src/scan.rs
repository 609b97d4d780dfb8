//! Reading a topic as it stood when the reading began, for the operator
//! tools (`mall-dlq`, `mall-topics`): record by record (memory stays bounded
//! however large the topic is), up to the end each partition had at the
//! start (its high watermark), even if records keep arriving; never "until
//! nothing came for a while".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{LogContext, client_config};
use crate::record::CapturedRecord;

/// Why a topic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The broker could not be asked.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A topic does not exist.
    #[error("topic {0} does not exist")]
    NoTopic(String),
    /// No record at those coordinates.
    #[error("{topic} has no record at partition {partition}, offset {offset}")]
    NoRecord {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
}

/// Timeout of each broker call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn reader(brokers: &str) -> Result<BaseConsumer<LogContext>, ScanError> {
    // A group id librdkafka needs to assign partitions; it never joins the
    // group (no subscription) and commits nothing.
    Ok(client_config(brokers)
        .set("group.id", "platform-scan")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create_with_context(LogContext)?)
}

fn partitions(consumer: &BaseConsumer<LogContext>, topic: &str) -> Result<Vec<i32>, ScanError> {
    let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ScanError::NoTopic(topic.to_owned()));
    }
    Ok(partitions)
}

/// Calls `each` with every record of `topic`, from the start of each
/// partition to the end it had when the call began, partition by partition
/// in offset order. A partition whose position passes its end without a
/// record there (a gap left by compaction, a transaction marker) is done
/// as well, so the scan never waits for a record that will not come.
///
/// (A command-line tool's reader: it polls in place for up to half a
/// second at a time.)
pub async fn scan<E: From<ScanError>>(
    brokers: &str,
    topic: &str,
    mut each: impl AsyncFnMut(CapturedRecord) -> Result<(), E>,
) -> Result<(), E> {
    let consumer = reader(brokers)?;
    for partition in partitions(&consumer, topic)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, CALL_TIMEOUT)
            .map_err(ScanError::from)?;
        if high <= low {
            continue;
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(low))
            .map_err(ScanError::from)?;
        consumer.assign(&assignment).map_err(ScanError::from)?;
        let mut ends = HashMap::from([(partition, high)]);
        while !ends.is_empty() {
            match consumer.poll(Duration::from_millis(500)) {
                Some(message) => {
                    let record = CapturedRecord::from_message(&message.map_err(ScanError::from)?);
                    if record.offset + 1 >= high {
                        ends.clear();
                    }
                    if record.offset < high {
                        each(record).await?;
                    }
                }
                None => {
                    let position = consumer.position().map_err(ScanError::from)?;
                    let passed = position
                        .find_partition(topic, partition)
                        .and_then(|p| match p.offset() {
                            Offset::Offset(at) => Some(at >= high),
                            _ => None,
                        })
                        .unwrap_or(false);
                    if passed {
                        ends.clear();
                    }
                }
            }
        }
    }
    Ok(())
}

/// The one record at `topic`/`partition`/`offset`.
pub fn read_one(
    brokers: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<CapturedRecord, ScanError> {
    let missing = || ScanError::NoRecord {
        topic: topic.to_owned(),
        partition,
        offset,
    };
    let consumer = reader(brokers)?;
    if !partitions(&consumer, topic)?.contains(&partition) {
        return Err(missing());
    }
    let (low, high) = consumer.fetch_watermarks(topic, partition, CALL_TIMEOUT)?;
    if !(low..high).contains(&offset) {
        return Err(missing());
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    while started.elapsed() < CALL_TIMEOUT * 3 {
        if let Some(message) = consumer.poll(Duration::from_millis(500)) {
            let record = CapturedRecord::from_message(&message?);
            return if record.offset == offset {
                Ok(record)
            } else {
                Err(missing())
            };
        }
    }
    Err(missing())
}
