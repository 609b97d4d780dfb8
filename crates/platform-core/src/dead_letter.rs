//! Dead-lettering: where records that can never be processed go.
//!
//! A poison record is copied, bytes and headers unchanged, to the consuming
//! service's dead-letter topic with the reason and its original coordinates
//! added as headers. Only after the broker acknowledged the copy does the
//! consumer move past the original, so nothing is ever dropped.
//!
//! Three rules keep one record from stopping a partition or steering a
//! re-drive:
//! - the original's own `dlq_*` headers are dropped, so the only
//!   dead-letter headers a copy carries are the ones the consumer wrote;
//! - a copy the producer or the broker refuses for its size is sent again
//!   truncated: the payload replaced by its length and SHA-256, an
//!   oversized key or header likewise, and `dlq_truncated` saying so;
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
use sha2::{Digest, Sha256};

use crate::kafka::{LogContext, idempotent_producer};

/// What every dead-letter header's name starts with; re-driving a record
/// strips them, and dead-lettering drops any the original carried.
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
/// Header present (`true`) on a dead letter an operator wrote with
/// `mall-dlq skip`: the consumer of its group steps over the original.
pub const SKIP_HEADER: &str = "dlq_skip";
/// Header present (`true`) on a copy sent truncated.
pub const TRUNCATED_HEADER: &str = "dlq_truncated";
/// Header of a truncated copy: the original payload's length in bytes.
pub const PAYLOAD_BYTES_HEADER: &str = "dlq_original_payload_bytes";
/// Header of a truncated copy: the original payload's SHA-256, in hex.
pub const PAYLOAD_SHA256_HEADER: &str = "dlq_original_payload_sha256";

/// The largest key or header value a truncated copy keeps as it was.
const KEPT_BYTES: usize = 1024;
/// The most bytes of original headers a truncated copy keeps.
const KEPT_HEADER_BYTES: usize = 16 * 1024;

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

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// A value a truncated copy keeps: as it was when short, else its length
/// and hash.
fn kept(value: &[u8]) -> Vec<u8> {
    if value.len() <= KEPT_BYTES {
        value.to_vec()
    } else {
        format!("{} bytes, sha256 {}", value.len(), sha256_hex(value)).into_bytes()
    }
}

/// The record being dead-lettered, borrowed from a consumed message or a
/// record a tool read.
#[derive(Debug, Clone)]
pub struct Original<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its payload.
    pub payload: Option<&'a [u8]>,
    /// Its headers, in order.
    pub headers: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Original<'a> {
    /// Borrows a consumed message.
    pub fn of(message: &'a impl Message) -> Self {
        Self {
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

    /// Borrows a record a tool read.
    pub fn of_record(record: &'a crate::record::CapturedRecord) -> Self {
        Self {
            topic: &record.topic,
            partition: record.partition,
            offset: record.offset,
            key: record.key.as_deref(),
            payload: record.payload.as_deref(),
            headers: record
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice()))
                .collect(),
        }
    }

    /// Its headers, except any `dlq_*` one: a record must not bring its own
    /// dead-letter coordinates or reason.
    fn own_headers(&self) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
        self.headers
            .iter()
            .filter(|(name, _)| !name.starts_with(HEADER_PREFIX))
            .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
    }

    fn dead_letter_headers(&self, reason: &str, group: &str) -> Vec<(String, Vec<u8>)> {
        [
            (ERROR_HEADER, reason.to_owned()),
            (TOPIC_HEADER, self.topic.to_owned()),
            (PARTITION_HEADER, self.partition.to_string()),
            (OFFSET_HEADER, self.offset.to_string()),
            (GROUP_HEADER, group.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.into_bytes()))
        .collect()
    }
}

/// What a dead letter carries, before it is handed to the producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub payload: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Copy {
    /// The whole record: its key, payload and headers (without any
    /// `dlq_*` header it came with), then the dead-letter headers.
    pub fn whole(original: &Original<'_>, reason: &str, group: &str) -> Self {
        let mut headers: Vec<_> = original.own_headers().collect();
        headers.extend(original.dead_letter_headers(reason, group));
        Self {
            key: original.key.map(<[u8]>::to_vec),
            payload: original.payload.map(<[u8]>::to_vec),
            headers,
        }
    }

    /// A copy of bounded size: no payload (its length and SHA-256 instead),
    /// an oversized key or header value replaced by its length and hash, at
    /// most [`KEPT_HEADER_BYTES`] of original headers, and `dlq_truncated`.
    pub fn truncated(original: &Original<'_>, reason: &str, group: &str) -> Self {
        let mut headers = Vec::new();
        let mut budget = KEPT_HEADER_BYTES;
        for (name, value) in original.own_headers() {
            let value = kept(&value);
            let cost = name.len() + value.len();
            if cost > budget || name.len() > KEPT_BYTES {
                continue;
            }
            budget -= cost;
            headers.push((name, value));
        }
        headers.extend(original.dead_letter_headers(reason, group));
        let payload = original.payload.unwrap_or_default();
        for (name, value) in [
            (TRUNCATED_HEADER, "true".to_owned()),
            (PAYLOAD_BYTES_HEADER, payload.len().to_string()),
            (PAYLOAD_SHA256_HEADER, sha256_hex(payload)),
        ] {
            headers.push((name.to_owned(), value.into_bytes()));
        }
        Self {
            key: original.key.map(kept),
            payload: None,
            headers,
        }
    }

    /// Adds a header after the others (for example an operator's mark).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }

    /// Sends it to `topic` and waits for the broker's acknowledgement (30 s
    /// at most).
    pub async fn send<C: rdkafka::ClientContext + 'static>(
        &self,
        producer: &FutureProducer<C>,
        topic: &str,
    ) -> Result<(), KafkaError> {
        let headers = self
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_slice()),
                })
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = self.key.as_deref() {
            record = record.key(key);
        }
        if let Some(payload) = self.payload.as_deref() {
            record = record.payload(payload);
        }
        producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    }
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
    match marked(Copy::whole(original, reason, group))
        .send(producer, topic)
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
    match marked(Copy::truncated(original, reason, group))
        .send(producer, topic)
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
            &Original::of(message),
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
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    fn message(key: &[u8], payload: &[u8], headers: &[(&str, &[u8])]) -> OwnedMessage {
        let headers = headers.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(*value),
            })
        });
        OwnedMessage::new(
            Some(payload.to_vec()),
            Some(key.to_vec()),
            "mall.order.events".into(),
            Timestamp::NotAvailable,
            2,
            41,
            Some(headers),
        )
    }

    fn header<'a>(copy: &'a Copy, name: &str) -> Vec<&'a [u8]> {
        copy.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    #[test]
    fn a_record_cannot_bring_its_own_dead_letter_headers() {
        let planted = message(
            b"7",
            b"x",
            &[
                ("ce_type", b"mall.delivery.v1.DeliveryCancelled"),
                (TOPIC_HEADER, b"mall.delivery.events"),
                (ERROR_HEADER, b"database unavailable"),
            ],
        );
        let copy = Copy::whole(
            &Original::of(&planted),
            "ce_source is wrong",
            "mall.delivery",
        );
        assert_eq!(
            header(&copy, TOPIC_HEADER),
            [b"mall.order.events".as_slice()]
        );
        assert_eq!(
            header(&copy, ERROR_HEADER),
            [b"ce_source is wrong".as_slice()]
        );
        assert_eq!(header(&copy, "ce_type").len(), 1);
        assert_eq!(copy.payload.as_deref(), Some(b"x".as_slice()));
    }

    #[test]
    fn a_truncated_copy_is_small_and_says_what_it_dropped() {
        let key = vec![1_u8; 180_000];
        let payload = vec![7_u8; 2_000_000];
        let big_header = vec![b'h'; 900_000];
        let huge = message(&key, &payload, &[("ce_type", b"x"), ("big", &big_header)]);
        let copy = Copy::truncated(&Original::of(&huge), "poison", "mall.delivery");
        let size = copy.key.as_ref().map_or(0, Vec::len)
            + copy
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        assert!(copy.payload.is_none());
        assert!(size < 32 * 1024, "{size}");
        assert_eq!(header(&copy, TRUNCATED_HEADER), [b"true".as_slice()]);
        assert_eq!(header(&copy, PAYLOAD_BYTES_HEADER), [b"2000000".as_slice()]);
        assert_eq!(
            header(&copy, PAYLOAD_SHA256_HEADER),
            [sha256_hex(&payload).as_bytes()]
        );
        let kept_key = String::from_utf8(copy.key.clone().expect("a key")).expect("text");
        assert!(kept_key.starts_with("180000 bytes, sha256 "), "{kept_key}");
        assert_eq!(header(&copy, "ce_type"), [b"x".as_slice()]);
        assert!(header(&copy, "big")[0].starts_with(b"900000 bytes"));
    }

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
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
