//! The re-drive ledger: a topic beside each dead-letter topic
//! (`<dlq>.redriven`) with one small record per dead letter re-driven, its
//! key the dead letter's `<partition>/<offset>`. Reading it tells what went
//! back before, so a second run does not send it again.

use std::collections::HashSet;

use platform_core::kafka::{self, LogContext, Retention};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::{DlqError, Origin, ScanError, scan};

/// The ledger of `dead_letter_topic`.
pub fn ledger_topic(dead_letter_topic: &str) -> String {
    format!("{dead_letter_topic}.redriven")
}

/// The DLQ coordinates re-driven before (an empty set while there is no
/// ledger yet).
pub async fn load_ledger(
    brokers: &str,
    dead_letter_topic: &str,
) -> Result<HashSet<(i32, i64)>, DlqError> {
    let mut done = HashSet::new();
    let read = scan::<DlqError>(brokers, &ledger_topic(dead_letter_topic), async |record| {
        let coordinates = record
            .key_str()
            .split_once('/')
            .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)));
        if let Some(coordinates) = coordinates {
            done.insert(coordinates);
        }
        Ok(())
    })
    .await;
    match read {
        Ok(()) | Err(DlqError::Scan(ScanError::NoTopic(_))) => Ok(done),
        Err(error) => Err(error),
    }
}

/// Creates the ledger where it is missing: one partition, kept until
/// deleted, replicated like the dead-letter topic.
pub async fn ensure_ledger(brokers: &str, dead_letter_topic: &str) -> Result<(), DlqError> {
    let replication = replication_of(brokers, dead_letter_topic)?;
    kafka::ensure_topics(
        brokers,
        &[ledger_topic(dead_letter_topic)],
        1,
        replication,
        Retention::Forever,
        None,
    )
    .await?;
    Ok(())
}

/// Writes that the dead letter at `partition`/`offset` went to `to`.
pub async fn record_redrive(
    producer: &FutureProducer<LogContext>,
    dead_letter_topic: &str,
    partition: i32,
    offset: i64,
    to: &Origin,
) -> Result<(), DlqError> {
    let ledger = ledger_topic(dead_letter_topic);
    let key = format!("{partition}/{offset}");
    let value = format!("{}/{}/{}", to.topic, to.partition, to.offset);
    producer
        .send(
            FutureRecord::to(&ledger).key(&key).payload(&value),
            Timeout::After(std::time::Duration::from_secs(30)),
        )
        .await
        .map_err(|(error, _)| DlqError::Kafka(error))?;
    Ok(())
}

fn replication_of(brokers: &str, topic: &str) -> Result<i32, DlqError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer<LogContext> =
        kafka::client_config(brokers).create_with_context(LogContext)?;
    let metadata = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .first()
        .and_then(|t| t.partitions().first())
        .map_or(1, |p| p.replicas().len().max(1) as i32))
}
