//! Re-sending records as an outside producer: replays of topic ranges,
//! duplicate and out-of-order copies of an order's events, and poison.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use backon::Retryable;
use platform_core::cloudevents as ce;
use platform_core::kafka::{LogContext, client_config};
use platform_core::retry;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::Mutex;

use crate::tap::{Record, Tap};

/// Header that marks the injector's poison, so the checker can follow it.
pub const POISON_HEADER: &str = "chaos_poison";
/// Records a replay re-sends at most.
const REPLAY_LEN: usize = 300;
/// Orders whose events one reorder injection re-sends.
const REORDER_ORDERS: usize = 15;

/// One poison message sent.
#[derive(Debug, Clone)]
pub struct PoisonSent {
    /// Its marker.
    pub id: String,
    /// Topic it went to.
    pub topic: String,
    /// `ce_type` it claimed, if any.
    pub ce_type: Option<String>,
}

/// Sends records on behalf of faults.
pub struct Injector {
    producer: FutureProducer<LogContext>,
    tap: Tap,
    /// Event topics: order, delivery, inventory.
    topics: Vec<String>,
    /// Every poison message sent.
    pub poison_sent: Mutex<Vec<PoisonSent>>,
}

impl Injector {
    /// An idempotent producer that waits out a broker restart.
    pub fn new(brokers: &str, tap: Tap, topics: Vec<String>) -> anyhow::Result<Self> {
        let producer = client_config(brokers)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "180000")
            .create_with_context(LogContext)?;
        Ok(Self {
            producer,
            tap,
            topics,
            poison_sent: Mutex::default(),
        })
    }

    async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(String, Vec<u8>)],
    ) -> anyhow::Result<()> {
        let headers = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            })
        });
        // The broker may be down or just restarting (another fault): retry
        // until it takes the record, as a real producer would.
        let send = || async {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(topic).headers(headers.clone());
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(payload) = payload {
                record = record.payload(payload);
            }
            self.producer
                .send(record, Timeout::After(Duration::from_secs(180)))
                .await
                .map_err(|(error, _)| error)
        };
        send.retry(retry::for_at_most(Duration::from_secs(120)))
            .notify(|error, _| {
                tracing::debug!(%topic, %error, "Injection send failed; retrying.");
            })
            .await
            .map(drop)
            .with_context(|| format!("sending to {topic}"))
    }

    async fn resend(&self, record: &Record) -> anyhow::Result<()> {
        self.send(
            &record.topic,
            Some(record.partition),
            record.key.as_deref(),
            record.payload.as_deref(),
            &record.headers,
        )
        .await
    }

    /// The saga events of `topic` seen so far, without injected poison.
    fn events(&self, topic: usize) -> Vec<Record> {
        self.tap
            .records(&self.topics[topic])
            .into_iter()
            .filter(|r| r.header(POISON_HEADER).is_none() && r.header(ce::TYPE).is_some())
            .collect()
    }

    /// Re-sends a contiguous range of one partition, byte for byte and into
    /// the same partition, so consumers get a large batch a second time.
    pub async fn replay(&self, topic: usize, pick: u64) -> anyhow::Result<u64> {
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for record in self.events(topic) {
            by_partition
                .entry(record.partition)
                .or_default()
                .push(record);
        }
        let Some((_, records)) = by_partition
            .iter()
            .nth((pick % by_partition.len().max(1) as u64) as usize)
        else {
            return Ok(0);
        };
        let start = ((pick >> 16) % records.len() as u64) as usize;
        let start = start.min(records.len().saturating_sub(REPLAY_LEN));
        let mut sent = 0;
        for record in records.iter().skip(start).take(REPLAY_LEN) {
            self.resend(record).await?;
            sent += 1;
        }
        tracing::info!(topic = %self.topics[topic], sent, "Fault: topic range replayed.");
        Ok(sent)
    }

    /// For some orders with two or more events on `topic` (preferring those
    /// with a compensation), re-sends the events newest first, then oldest
    /// first: compensations arrive again both before and after their actions.
    pub async fn reorder(&self, topic: usize, pick: u64) -> anyhow::Result<u64> {
        let mut by_order: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for record in self.events(topic) {
            by_order
                .entry(record.key_str().to_owned())
                .or_default()
                .push(record);
        }
        let is_compensation = |r: &Record| {
            r.header(ce::TYPE).is_some_and(|t| {
                t.ends_with("Cancelled") || t.ends_with("Rejected") || t.ends_with("Increased")
            })
        };
        let mut candidates: Vec<&Vec<Record>> = by_order
            .values()
            .filter(|events| events.len() >= 2)
            .collect();
        let compensated: Vec<&Vec<Record>> = candidates
            .iter()
            .copied()
            .filter(|events| events.iter().any(is_compensation))
            .collect();
        if compensated.len() >= REORDER_ORDERS {
            candidates = compensated;
        }
        if candidates.is_empty() {
            return Ok(0);
        }
        let start = (pick % candidates.len() as u64) as usize;
        let mut sent = 0;
        for events in candidates
            .iter()
            .cycle()
            .skip(start)
            .take(REORDER_ORDERS.min(candidates.len()))
        {
            for record in events.iter().rev().chain(events.iter()) {
                self.resend(record).await?;
                sent += 1;
            }
        }
        tracing::info!(topic = %self.topics[topic], sent, "Fault: events re-sent out of order.");
        Ok(sent)
    }

    /// On every topic: garbage bytes without headers, an unknown event type,
    /// and a known type whose payload does not decode.
    pub async fn poison(&self, round: usize) -> anyhow::Result<u64> {
        let known = [
            "mall.order.v1.OrderCreated",
            "mall.delivery.v1.DeliveryStarted",
            "mall.inventory.v1.StockDecreased",
        ];
        let mut sent = 0;
        for (n, topic) in self.topics.iter().enumerate() {
            for (kind, ce_type) in [None, Some("mall.chaos.v1.Unknown"), Some(known[n])]
                .into_iter()
                .enumerate()
            {
                let id = uuid::Uuid::new_v4().to_string();
                let mut headers = vec![(POISON_HEADER.to_owned(), id.clone().into_bytes())];
                let key = match ce_type {
                    None => format!("poison-{round}-{kind}"),
                    Some(ce_type) => {
                        let subject = (8_000_000_000_i64 + (round * 10 + kind) as i64).to_string();
                        for (name, value) in [
                            (ce::SPECVERSION, ce::SPEC_VERSION.to_owned()),
                            (ce::ID, uuid::Uuid::new_v4().to_string()),
                            (ce::SOURCE, "/mall-chaos".to_owned()),
                            (ce::TYPE, ce_type.to_owned()),
                            (ce::SUBJECT, subject.clone()),
                            (ce::CONTENT_TYPE, ce::PROTOBUF_CONTENT_TYPE.to_owned()),
                        ] {
                            headers.push((name.to_owned(), value.into_bytes()));
                        }
                        subject
                    }
                };
                let payload = [0xff_u8, 0xff, 0xff, 0x01, 0x80];
                self.send(topic, None, Some(key.as_bytes()), Some(&payload), &headers)
                    .await?;
                self.poison_sent.lock().await.push(PoisonSent {
                    id,
                    topic: topic.clone(),
                    ce_type: ce_type.map(str::to_owned),
                });
                sent += 1;
            }
        }
        tracing::info!(sent, "Fault: poison messages sent.");
        Ok(sent)
    }
}
