//! A Kafka record copied out of the client, for tools and tests that keep,
//! compare or re-send records after the consumer has moved on.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// One record as read from a topic, owned.
#[derive(Debug, Clone, Default)]
pub struct CapturedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub payload: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl CapturedRecord {
    /// Copies everything out of a received message.
    pub fn from_message(message: &impl Message) -> Self {
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The last header of that name, as text: where a writer appends its own
    /// header after the ones a record came with (the dead-letter headers),
    /// the last one is the writer's.
    pub fn last_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The record as its dead-letter copy borrows it.
    pub fn original(&self) -> crate::dead_letter::Original<'_> {
        crate::dead_letter::Original {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key.as_deref(),
            payload: self.payload.as_deref(),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice()))
                .collect(),
        }
    }

    /// The key as text ("" when absent or not UTF-8).
    pub fn key_str(&self) -> &str {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or("")
    }

    /// Its headers, as a producer takes them.
    pub fn owned_headers(&self) -> OwnedHeaders {
        self.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            })
        })
    }
}

/// Sends `record`'s key, value and headers, unchanged, to `topic` and waits
/// for the broker's acknowledgement (30 s at most).
pub async fn send_copy<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    topic: &str,
    record: &CapturedRecord,
) -> Result<(), KafkaError> {
    let mut future: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(topic).headers(record.owned_headers());
    if let Some(key) = record.key.as_deref() {
        future = future.key(key);
    }
    if let Some(payload) = record.payload.as_deref() {
        future = future.payload(payload);
    }
    producer
        .send(future, Timeout::After(Duration::from_secs(30)))
        .await
        .map(|_| ())
        .map_err(|(error, _)| error)
}
