//! Dead-lettering: sending the copy of a record that can never be
//! processed (see [`platform_envelope::dead_letter`] for what it carries)
//! to the consuming service's dead-letter topic. Only after the broker
//! acknowledged the copy does the consumer move past the original, so
//! nothing is ever dropped.
//!
//! Three rules keep one record from stopping a partition or steering a
//! re-drive:
//! - the original's own `dlq_*` headers are dropped, so the only
//!   dead-letter headers a copy carries are the ones the consumer wrote;
//! - a copy the producer or the broker refuses for its size is sent again
//!   truncated;
//! - a copy refused even so (it cannot succeed however often it is tried)
//!   is [`DeadLetterError::Undeliverable`]: the caller counts it, logs the
//!   coordinates (the original stays on its topic) and moves on.
//!
//! A producer that hit a fatal error is replaced rather than retried forever.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

pub use platform_envelope::dead_letter::*;

use crate::kafka::{LogContext, idempotent_producer};

/// How a dead letter was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The whole record, with the dead-letter headers.
    Whole,
    /// A truncated copy: the whole one was too large.
    Truncated,
}

/// Why a dead letter was not sent.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The broker or the network is unwell (or a permission is missing):
    /// waiting and trying again can succeed.
    #[error("cannot send the dead letter yet: {0}")]
    Transient(KafkaError),
    /// Even the truncated copy was refused for what it is: no retry can
    /// succeed.
    #[error("the dead letter can never be sent, not even truncated: {0}")]
    Undeliverable(KafkaError),
}

/// Whether the producer or the broker refused a record for what it is
/// (its size, its format), which no retry changes.
pub fn refused_for_good(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::BadMessage
        )
    )
}

/// A consumed message, as the dead-letter copy borrows it.
pub fn original_of(message: &impl Message) -> Original<'_> {
    Original {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        payload: message.payload(),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key, h.value.unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Sends `copy` to `topic` and waits for the broker's acknowledgement
/// (30 s at most).
pub async fn send_copy<C: rdkafka::ClientContext + 'static>(
    copy: &Copy,
    producer: &FutureProducer<C>,
    topic: &str,
) -> Result<(), KafkaError> {
    let headers = copy
        .headers
        .iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_slice()),
            })
        });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = copy.key.as_deref() {
        record = record.key(key);
    }
    if let Some(payload) = copy.payload.as_deref() {
        record = record.payload(payload);
    }
    producer
        .send(record, Timeout::After(Duration::from_secs(30)))
        .await
        .map(|_| ())
        .map_err(|(error, _)| error)
}

/// Sends `original` to `topic` as a dead letter: whole, or truncated when
/// the whole copy is refused for its size; `mark` adds headers to either.
pub async fn send_dead_letter<C: rdkafka::ClientContext + 'static>(
    producer: &FutureProducer<C>,
    topic: &str,
    original: &Original<'_>,
    reason: &str,
    group: &str,
    mark: &[(&str, &str)],
) -> Result<Sent, DeadLetterError> {
    let marked = |copy: Copy| {
        mark.iter()
            .fold(copy, |copy, (name, value)| copy.with_header(name, value))
    };
    match send_copy(
        &marked(Copy::whole(original, reason, group)),
        producer,
        topic,
    )
    .await
    {
        Ok(()) => return Ok(Sent::Whole),
        Err(error) if !refused_for_good(&error) => return Err(DeadLetterError::Transient(error)),
        Err(error) => tracing::warn!(
            %error,
            topic = original.topic,
            partition = original.partition,
            offset = original.offset,
            "Dead letter refused for its size; sending it truncated."
        ),
    }
    match send_copy(
        &marked(Copy::truncated(original, reason, group)),
        producer,
        topic,
    )
    .await
    {
        Ok(()) => Ok(Sent::Truncated),
        Err(error) if refused_for_good(&error) => Err(DeadLetterError::Undeliverable(error)),
        Err(error) => Err(DeadLetterError::Transient(error)),
    }
}

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
    /// returns, so in both cases the producer is replaced; the caller's
    /// retry then goes through the new one.
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
    /// acknowledgement; a copy too large is sent truncated (see the module
    /// documentation).
    pub async fn send(
        &self,
        message: &impl Message,
        reason: &str,
    ) -> Result<Sent, DeadLetterError> {
        let producer = self.current();
        let sent = send_dead_letter(
            producer.as_ref(),
            &self.topic,
            &original_of(message),
            reason,
            &self.group,
            &[],
        )
        .await;
        if let Err(DeadLetterError::Transient(error)) = &sent {
            self.replace_if_broken(&producer, error);
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_refusals_are_for_good_and_outages_are_not() {
        let produced = |code| KafkaError::MessageProduction(code);
        assert!(refused_for_good(&produced(
            RDKafkaErrorCode::MessageSizeTooLarge
        )));
        assert!(refused_for_good(&produced(RDKafkaErrorCode::InvalidRecord)));
        assert!(!refused_for_good(&produced(
            RDKafkaErrorCode::MessageTimedOut
        )));
        assert!(!refused_for_good(&produced(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
        assert!(!refused_for_good(&produced(
            RDKafkaErrorCode::NotEnoughReplicas
        )));
    }
}
