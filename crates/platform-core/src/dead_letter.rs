//! Dead-lettering: where records that can never be processed go.
//!
//! A poison record is copied, bytes and headers unchanged, to the consuming
//! service's dead-letter topic with the reason and its original coordinates
//! added as headers. Only after the broker acknowledged the copy does the
//! consumer move past the original, so nothing is ever dropped. A producer
//! that hit a fatal error is replaced rather than retried forever.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::kafka::{LogContext, idempotent_producer};

/// What every dead-letter header's name starts with; re-driving a record
/// strips them.
pub const HEADER_PREFIX: &str = "dlq_";
/// Header carrying the reason a record was dead-lettered.
pub const ERROR_HEADER: &str = "dlq_error";
/// Header carrying the original topic.
pub const TOPIC_HEADER: &str = "dlq_original_topic";
/// Header carrying the original partition.
pub const PARTITION_HEADER: &str = "dlq_original_partition";
/// Header carrying the original offset.
pub const OFFSET_HEADER: &str = "dlq_original_offset";
/// Header carrying the consumer group that refused it.
pub const GROUP_HEADER: &str = "dlq_consumer_group";

/// A producer bound to one dead-letter topic.
pub struct DeadLetters {
    producer: Mutex<Arc<FutureProducer<LogContext>>>,
    brokers: String,
    topic: String,
    group: String,
}

impl DeadLetters {
    /// Creates an idempotent producer for `topic`, on behalf of `group`.
    pub fn new(brokers: &str, topic: &str, group: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: Mutex::new(Arc::new(idempotent_producer(brokers)?)),
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            group: group.to_owned(),
        })
    }

    fn current(&self) -> Arc<FutureProducer<LogContext>> {
        Arc::clone(&self.producer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// After an idempotent producer's fatal error every later send fails,
    /// and after a send timed out it would bump its epoch when the broker
    /// returns (which Tansu 0.6 mishandles), so in both cases the producer
    /// is replaced; the caller's retry then goes through the new one.
    fn replace_if_broken(&self, used: &Arc<FutureProducer<LogContext>>, error: &KafkaError) {
        let timed_out = error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut);
        let Some((code, reason)) = used
            .client()
            .fatal_error()
            .or_else(|| timed_out.then(|| (RDKafkaErrorCode::MessageTimedOut, error.to_string())))
        else {
            return;
        };
        let mut slot = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&slot, used) {
            return; // Another lane replaced it already.
        }
        match idempotent_producer(&self.brokers) {
            Ok(fresh) => {
                tracing::warn!(?code, %reason, topic = %self.topic, "Dead-letter producer failed for good; replaced it.");
                *slot = Arc::new(fresh);
            }
            Err(error) => {
                tracing::error!(%error, "Cannot replace the dead-letter producer; retrying.")
            }
        }
    }

    /// The topic poison records go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Copies `message` to the dead-letter topic and waits for the broker's
    /// acknowledgement.
    pub async fn send(&self, message: &impl Message, reason: &str) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        for (key, value) in [
            (ERROR_HEADER, reason),
            (TOPIC_HEADER, message.topic()),
            (PARTITION_HEADER, partition.as_str()),
            (OFFSET_HEADER, offset.as_str()),
            (GROUP_HEADER, self.group.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        let producer = self.current();
        let sent = producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map(|_| ())
            .map_err(|(error, _)| error);
        if let Err(error) = &sent {
            self.replace_if_broken(&producer, error);
        }
        sent
    }
}
