//! Reading topics back and injecting raw records, as an outside observer.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

pub use mall_platform::record::CapturedRecord as Record;

/// Reads every partition of `topic` from offset 0 until at least `at_least`
/// records arrived and the topic stayed quiet for a moment, or `deadline`
/// passed. Explicit offsets avoid ListOffsets, which some brokers answer slowly.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    at_least: usize,
    deadline: Duration,
) -> Vec<Record> {
    let consumer: StreamConsumer = mall_platform::kafka::client_config(brokers)
        .set("group.id", crate::unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(0))
            .expect("partition offset");
    }
    consumer.assign(&assignment).expect("assign");
    let started = Instant::now();
    let mut records = Vec::new();
    while started.elapsed() < deadline {
        let quiet = if records.len() >= at_least {
            Duration::from_millis(1500)
        } else {
            Duration::from_secs(5)
        };
        match tokio::time::timeout(quiet, consumer.recv()).await {
            Ok(Ok(message)) => records.push(Record::from_message(&message)),
            Ok(Err(error)) => panic!("reading {topic} failed: {error}"),
            Err(_) if records.len() >= at_least => break,
            Err(_) => {}
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// The first record of CloudEvents type `ce_type` on `topic`, reading every
/// partition from the start; fails the test if there is none.
pub async fn first_of_type(brokers: &str, topic: &str, ce_type: &str) -> Record {
    read_topic(
        brokers,
        topic,
        crate::mall::PARTITIONS,
        1,
        Duration::from_secs(20),
    )
    .await
    .into_iter()
    .find(|r| r.header("ce_type") == Some(ce_type))
    .unwrap_or_else(|| panic!("no {ce_type} on {topic}"))
}

/// A producer for injecting records.
pub fn producer(brokers: &str) -> FutureProducer {
    mall_platform::kafka::client_config(brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("test producer")
}

/// Sends `record`'s key, value and headers, unchanged, to `topic`.
pub async fn inject(producer: &FutureProducer, topic: &str, record: &Record) {
    mall_platform::record::send_copy(producer, topic, record)
        .await
        .unwrap_or_else(|e| panic!("injecting into {topic} failed: {e}"));
}

/// Builds records the way the mall's producers write them.
pub trait EventRecord {
    /// A record as a producer of the mall would write it: key and subject the
    /// order id, CloudEvents headers, protobuf value.
    fn event<M: prost::Message + prost::Name>(order_id: i64, event: &M) -> Self;
}

impl EventRecord for Record {
    fn event<M: prost::Message + prost::Name>(order_id: i64, event: &M) -> Self {
        let key = order_id.to_string();
        let headers = [
            ("ce_specversion", "1.0".to_owned()),
            ("ce_id", uuid::Uuid::new_v4().to_string()),
            ("ce_source", "/test".to_owned()),
            ("ce_type", M::full_name()),
            ("ce_subject", key.clone()),
            ("content-type", "application/protobuf".to_owned()),
        ];
        Self {
            topic: String::new(),
            partition: 0,
            offset: 0,
            key: Some(key.into_bytes()),
            payload: Some(event.encode_to_vec()),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_bytes()))
                .collect(),
        }
    }
}
