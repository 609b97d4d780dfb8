//! Publishing a batch of outbox rows with many sends in flight.

use std::collections::HashSet;
use std::time::Duration;

use platform_core::cloudevents as ce;
use platform_core::kafka::LogContext;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::known_topics::KnownTopics;
use crate::store::OutboxRow;

/// Whether no retry of a send can succeed: the producer or the broker
/// refused the record for what it is (its size, its format), or the topic
/// does not exist (an operator may create it, then retry the parked row).
pub fn can_never_send(error: &KafkaError) -> bool {
    platform_core::dead_letter::refused_for_good(error)
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopic)
}

/// Whether a send failed because `message.timeout.ms` ran out.
pub fn timed_out(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut)
}

/// The relay's producer settings (with any `KAFKA_PROPERTY_*` overrides),
/// public so a benchmark can measure a bare producer configured the same.
pub fn producer_config(brokers: &str) -> ClientConfig {
    platform_core::kafka::configured(
        brokers,
        // No linger: a batch is enqueued in one go, and what queues while a
        // request is in flight still travels together. Measured on Apache
        // Kafka 4.1 (docs/kafka.md): commit-to-ack at 200 rows/s p50 1.6 ms,
        // p99 8.2 ms with 0; 10.7 and 19.9 ms with 5; the drain rate was
        // 20k rows/s with 0 and 16k with 5.
        &[("linger.ms", "0"), ("message.timeout.ms", "60000")],
        &[],
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("enable.gapless.guarantee", "true"),
            // The relay never creates a topic: its metadata questions and
            // sends would otherwise create one on a broker with
            // auto-creation on (Apache Kafka's default), with broker
            // defaults, instead of parking the row.
            ("allow.auto.create.topics", "false"),
        ],
    )
}

/// An idempotent Kafka producer for outbox rows.
pub struct Publisher {
    producer: FutureProducer<LogContext>,
    known: KnownTopics,
}

impl crate::pipeline::Broker for Publisher {
    async fn publish(&self, rows: &[OutboxRow]) -> BatchOutcome {
        Publisher::publish(self, rows).await
    }

    fn fatal_error(&self) -> Option<String> {
        Publisher::fatal_error(self)
    }
}

/// What happened to a batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Rows that may be marked published: acknowledged, and no earlier row
    /// with the same key failed.
    pub publishable: Vec<i64>,
    /// Rows that failed or were held back behind a failed row of their key.
    pub failed: usize,
    /// The first error seen.
    pub first_error: Option<KafkaError>,
    /// The topic of the row that failed first.
    pub first_failed_topic: Option<String>,
    /// Rows whose send can never succeed (see [`can_never_send`]), with why.
    pub unsendable: Vec<(i64, String)>,
}

/// The record's headers: the mapping's, then the trace context (a
/// `tracestate` only beside a `traceparent`).
fn headers(row: &OutboxRow) -> OwnedHeaders {
    let mut pairs: Vec<(&str, &str)> = row
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    if let Some(trace) = row.traceparent.as_deref() {
        pairs.push((ce::TRACEPARENT, trace));
        if let Some(state) = row.tracestate.as_deref() {
            pairs.push((ce::TRACESTATE, state));
        }
    }
    pairs
        .into_iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        })
}

/// How one send went.
enum Sent {
    /// Handed to the producer.
    Queued(DeliveryFuture),
    /// Refused by the producer.
    Failed(KafkaError),
    /// Never sent: the row has no valid topic, or the broker says its
    /// topic does not exist.
    NoTopic(String),
}

impl Publisher {
    /// An idempotent producer (`enable.idempotence=true`, `acks=all`), so
    /// retries never duplicate or reorder within a partition; with
    /// `enable.gapless.guarantee` a gap it cannot close is a fatal error
    /// rather than a silent reordering.
    pub fn new(brokers: &str) -> Result<Self, KafkaError> {
        let producer = producer_config(brokers).create_with_context(LogContext)?;
        Ok(Self {
            producer,
            known: KnownTopics::default(),
        })
    }

    /// The producer's fatal error, if it had one: it can send nothing more.
    pub fn fatal_error(&self) -> Option<String> {
        // Fault test: a fatal error as librdkafka raises it after a gap.
        // Compiled out without the `failpoints` feature.
        fail::fail_point!("relay::producer-fatal", |_| Some(
            "injected fatal producer error".to_owned()
        ));
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    /// Sends every row at once (in id order, so per-key order holds) and waits
    /// for all acknowledgements.
    pub async fn publish(&self, rows: &[OutboxRow]) -> BatchOutcome {
        let missing = self
            .known
            .missing(
                &self.producer,
                rows.iter().filter_map(|row| row.topic.as_deref().ok()),
            )
            .await;
        let mut pending: Vec<(&OutboxRow, Sent)> = Vec::with_capacity(rows.len());
        for row in rows {
            let sent = match &row.topic {
                Ok(topic) if missing.contains(topic) => Sent::NoTopic(format!(
                    "topic {topic} does not exist (create it, then `outbox-relay parked retry`)"
                )),
                Ok(topic) => match self.enqueue(row, topic).await {
                    Ok(delivery) => Sent::Queued(delivery),
                    Err(error) => Sent::Failed(error),
                },
                Err(why) => Sent::NoTopic(why.clone()),
            };
            pending.push((row, sent));
        }
        let mut outcome = BatchOutcome::default();
        let mut failed_keys: HashSet<&str> = HashSet::new();
        for (row, sent) in pending {
            let (id, key, topic) = (row.id, row.key.as_deref(), row.topic_name());
            let result = match sent {
                Sent::Queued(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(error),
                    Err(_) => Err(KafkaError::Canceled),
                },
                Sent::Failed(error) => Err(error),
                Sent::NoTopic(why) => {
                    if let Some(key) = key {
                        failed_keys.insert(key);
                    }
                    outcome.failed += 1;
                    outcome.unsendable.push((id, why));
                    continue;
                }
            };
            let held_back = key.is_some_and(|key| failed_keys.contains(key));
            match result {
                Ok(()) if !held_back => outcome.publishable.push(id),
                Ok(()) => outcome.failed += 1,
                Err(error) => {
                    if let Some(key) = key {
                        failed_keys.insert(key);
                    }
                    outcome.failed += 1;
                    if can_never_send(&error) {
                        outcome.unsendable.push((id, error.to_string()));
                    }
                    if outcome.first_error.is_none() {
                        outcome.first_error = Some(error);
                        outcome.first_failed_topic = Some(topic.to_owned());
                    }
                }
            }
        }
        outcome
    }

    async fn enqueue(&self, row: &OutboxRow, topic: &str) -> Result<DeliveryFuture, KafkaError> {
        // Fault test: this row's send fails past every retry and is never
        // written. Compiled out without the `failpoints` feature.
        fail::fail_point!("relay::send-fails", |_| Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut
        )));
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers(row));
            if let Some(key) = &row.key {
                record = record.key(key.as_bytes());
            }
            if let Some(payload) = &row.payload {
                record = record.payload(payload.as_slice());
            }
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Waits for queued messages before shutdown.
    pub fn flush(&self) {
        if let Err(error) = self.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(%error, "Producer flush at shutdown failed.");
        }
    }
}
