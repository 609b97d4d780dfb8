//! Records an operator told the consumer to step over (`mall-dlq skip`).
//!
//! The tool copies the record to the group's dead-letter topic with
//! `dlq_skip: true`, so the skip is recorded where every other dead letter
//! is. A watcher reads that topic from the start of the topics' retention
//! (an older mark names a record that no longer exists) and keeps the
//! coordinates of the marks meant for this group; a lane consults them
//! before it handles a record and while it waits on one, so a record the
//! lane is stuck on is stepped over within a retry.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use platform_core::dead_letter::{
    GROUP_HEADER, OFFSET_HEADER, PARTITION_HEADER, SKIP_HEADER, TOPIC_HEADER,
};
use platform_core::kafka::{self, LogContext};
use platform_core::retry::Patience;

/// The most marks kept: operators write them by hand, one per record.
const MAX_MARKS: usize = 10_000;

/// Where a record sits.
type Coordinates = (String, i32, i64);

/// The coordinates the operator asked this group to step over.
#[derive(Debug, Default)]
pub struct Skips {
    marked: Mutex<HashSet<Coordinates>>,
}

impl Skips {
    /// Whether the record at these coordinates is to be stepped over.
    pub fn contains(&self, topic: &str, partition: i32, offset: i64) -> bool {
        let marked = self.marked.lock().unwrap_or_else(PoisonError::into_inner);
        !marked.is_empty() && marked.contains(&(topic.to_owned(), partition, offset))
    }

    fn insert(&self, coordinates: Coordinates) {
        let mut marked = self.marked.lock().unwrap_or_else(PoisonError::into_inner);
        if marked.len() >= MAX_MARKS {
            tracing::warn!(
                kept = MAX_MARKS,
                "Too many skip marks; the oldest are forgotten."
            );
            marked.clear();
        }
        marked.insert(coordinates);
    }
}

/// The last header of `name`, as text (the one the writer appended).
fn last<'a>(message: &'a impl Message, name: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// The coordinates a dead letter marks for skipping by `group`, if it is
/// such a mark.
pub fn mark_of(message: &impl Message, group: &str) -> Option<Coordinates> {
    if last(message, SKIP_HEADER) != Some("true") || last(message, GROUP_HEADER) != Some(group) {
        return None;
    }
    Some((
        last(message, TOPIC_HEADER)?.to_owned(),
        last(message, PARTITION_HEADER)?.parse().ok()?,
        last(message, OFFSET_HEADER)?.parse().ok()?,
    ))
}

/// Reads `dead_letter_topic` from `lookback` ago until `stop`, adding
/// every mark for `group` to `skips`; retries with backoff while the broker
/// is away.
pub async fn watch(
    brokers: String,
    dead_letter_topic: String,
    group: String,
    lookback: Duration,
    skips: std::sync::Arc<Skips>,
    stop: CancellationToken,
) {
    let mut patience = Patience::new();
    while !stop.is_cancelled() {
        match follow(
            &brokers,
            &dead_letter_topic,
            &group,
            lookback,
            &skips,
            &stop,
        )
        .await
        {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, topic = %dead_letter_topic, "Cannot read skip marks yet; retrying.");
                if !patience.sleep(&stop).await {
                    return;
                }
            }
        }
    }
}

async fn follow(
    brokers: &str,
    topic: &str,
    group: &str,
    lookback: Duration,
    skips: &Skips,
    stop: &CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    // The group's own id, which librdkafka needs to assign partitions; it
    // never joins the group (no subscription) and commits nothing, so it
    // only needs Read on the dead-letter topic beside the group's rights.
    let consumer: StreamConsumer<LogContext> = kafka::client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create_with_context(LogContext)?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let since = SystemTime::now()
        .checked_sub(lookback)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let mut wanted = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        wanted.add_partition_offset(topic, partition.id(), Offset::Offset(since))?;
    }
    let start = consumer.offsets_for_times(wanted, Duration::from_secs(10))?;
    consumer.assign(&start)?;
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            message = consumer.recv() => message?,
        };
        if let Some(coordinates) = mark_of(&message, group) {
            tracing::warn!(
                topic = %coordinates.0,
                partition = coordinates.1,
                offset = coordinates.2,
                "An operator marked a record to be stepped over."
            );
            skips.insert(coordinates);
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    use super::*;

    fn dead_letter(headers: &[(&str, &str)]) -> OwnedMessage {
        let headers = headers.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        });
        OwnedMessage::new(
            None,
            None,
            "mall.delivery.dlq".into(),
            Timestamp::NotAvailable,
            0,
            3,
            Some(headers),
        )
    }

    #[test]
    fn only_a_mark_for_this_group_counts_and_its_last_headers_decide() {
        let mark = [
            (TOPIC_HEADER, "planted"),
            (TOPIC_HEADER, "mall.order.events"),
            (PARTITION_HEADER, "2"),
            (OFFSET_HEADER, "41"),
            (GROUP_HEADER, "mall.delivery"),
            (SKIP_HEADER, "true"),
        ];
        assert_eq!(
            mark_of(&dead_letter(&mark), "mall.delivery"),
            Some(("mall.order.events".to_owned(), 2, 41))
        );
        assert_eq!(mark_of(&dead_letter(&mark), "mall.inventory"), None);
        assert_eq!(mark_of(&dead_letter(&mark[..5]), "mall.delivery"), None);
        let skips = Skips::default();
        assert!(!skips.contains("mall.order.events", 2, 41));
        skips.insert(("mall.order.events".to_owned(), 2, 41));
        assert!(skips.contains("mall.order.events", 2, 41));
        assert!(!skips.contains("mall.order.events", 2, 42));
    }
}
