//! Reading topics back and injecting raw records, as an outside observer.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use platform_core::cloudevents as ce;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

pub use platform_core::record::CapturedRecord as Record;

/// Where each partition ends: (topic, partition) → the offset after its
/// last record.
pub type Ends = HashMap<(String, i32), i64>;

/// The readers' client context: reaching a partition's end is what they
/// wait for, not an error worth a log line.
struct Reader;

impl ClientContext for Reader {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            eprintln!("test reader: {error}: {reason}");
        }
    }
}

impl ConsumerContext for Reader {}

fn reader(brokers: &str, group: &str) -> StreamConsumer<Reader> {
    platform_core::kafka::client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // An empty fetch answers at once, so the end is seen without waiting.
        .set("fetch.wait.max.ms", "10")
        .create_with_context(Reader)
        .expect("test consumer")
}

/// Reads every partition of `topic` from its start until the broker says
/// each one ended (partition EOF, from the fetch's high watermark) and at
/// least `at_least` records arrived; fails the test past `deadline`.
///
/// The end comes from fetching (the high watermark each fetch reports), so
/// it is the end the reader itself saw, whatever a broker's ListOffsets says.
async fn read_to_end(
    brokers: &str,
    topic: &str,
    partitions: i32,
    at_least: usize,
    deadline: Duration,
) -> (Vec<Record>, Ends) {
    let consumer = reader(brokers, &crate::env::unique_name("reader"));
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut ends: Ends = (0..partitions)
        .map(|p| ((topic.to_owned(), p), 0))
        .collect();
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut records = Vec::new();
    let started = Instant::now();
    while at_end.len() < partitions as usize || records.len() < at_least {
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(message)) => {
                at_end.remove(&message.partition());
                ends.insert(
                    (topic.to_owned(), message.partition()),
                    message.offset() + 1,
                );
                records.push(Record::from_message(&message));
            }
            Ok(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Ok(Err(error)) => panic!("reading {topic} failed: {error}"),
            Err(_) => panic!(
                "{topic}: {} records and {} of {partitions} partitions read to their end \
                 within {deadline:?}, {at_least} records wanted",
                records.len(),
                at_end.len()
            ),
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    (records, ends)
}

/// Where every partition of `topics` ends now.
pub async fn ends(brokers: &str, topics: &[String], partitions: i32) -> Ends {
    let reads = topics
        .iter()
        .map(|topic| read_to_end(brokers, topic, partitions, 0, Duration::from_secs(30)));
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flat_map(|(_, ends)| ends)
        .collect()
}

/// The offsets `group` committed on every partition of `topics` (0 where it
/// committed none).
pub async fn committed(
    brokers: &str,
    group: &str,
    topics: &[String],
    partitions: i32,
) -> KafkaResult<Ends> {
    let (brokers, group, topics) = (brokers.to_owned(), group.to_owned(), topics.to_vec());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = platform_core::kafka::client_config(&brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut wanted = TopicPartitionList::new();
        for topic in &topics {
            for partition in 0..partitions {
                wanted.add_partition(topic, partition);
            }
        }
        let found = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
        Ok(found
            .elements()
            .iter()
            .map(|e| {
                let at = match e.offset() {
                    Offset::Offset(n) => n,
                    _ => 0,
                };
                ((e.topic().to_owned(), e.partition()), at)
            })
            .collect())
    })
    .await
    .expect("committed-offsets task")
}

/// Every record on `topic` up to where the broker says each partition
/// ends, once there are at least `at_least`; fails the test if there are
/// not within `deadline`.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    at_least: usize,
    deadline: Duration,
) -> Vec<Record> {
    read_to_end(brokers, topic, partitions, at_least, deadline)
        .await
        .0
}

/// The first record of CloudEvents type `ce_type` on `topic`, reading every
/// partition from the start; fails the test if there is none.
pub async fn first_of_type(brokers: &str, topic: &str, ce_type: &str) -> Record {
    read_topic(
        brokers,
        topic,
        crate::settings::PARTITIONS,
        1,
        Duration::from_secs(20),
    )
    .await
    .into_iter()
    .find(|r| r.header(ce::TYPE) == Some(ce_type))
    .unwrap_or_else(|| panic!("no {ce_type} on {topic}"))
}

/// A producer for injecting records.
pub fn producer(brokers: &str) -> FutureProducer {
    platform_core::kafka::client_config(brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("test producer")
}

/// Sends `record`'s key, value and headers, unchanged, to `topic`.
pub async fn inject(producer: &FutureProducer, topic: &str, record: &Record) {
    platform_core::record::send_copy(producer, topic, record)
        .await
        .unwrap_or_else(|e| panic!("injecting into {topic} failed: {e}"));
}

/// Builds records the way the mall's producers write them.
pub trait EventRecord {
    /// A record as a producer of the mall would write it: key and subject the
    /// order id, CloudEvents headers (the producer's `ce_source`), protobuf
    /// value.
    fn event<M: prost::Message + prost::Name>(order_id: i64, event: &M) -> Self;
}

impl EventRecord for Record {
    fn event<M: prost::Message + prost::Name>(order_id: i64, event: &M) -> Self {
        let key = order_id.to_string();
        // Written as its producer writes it: with the producer's source,
        // which consumers check.
        let name = M::full_name();
        let producer = mall_saga::producer_of(&name)
            .unwrap_or_else(|| panic!("{name} is not an event of a mall service"));
        let headers = [
            (ce::SPECVERSION, ce::SPEC_VERSION.to_owned()),
            (ce::ID, uuid::Uuid::new_v4().to_string()),
            (ce::SOURCE, producer.source().to_owned()),
            (ce::TYPE, M::full_name()),
            (ce::SUBJECT, key.clone()),
            (ce::CONTENT_TYPE, ce::PROTOBUF_CONTENT_TYPE.to_owned()),
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
