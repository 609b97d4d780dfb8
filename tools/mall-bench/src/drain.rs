//! P2 and P2b: draining a pre-filled outbox. The relay against a bare
//! producer sending the same records with the relay's producer settings,
//! and against a naive relay (select one, send, wait, mark one).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser as _;
use mall_testkit::postgres;
use mall_testkit::settings::{brokers, relay_flags};
use outbox_relay::{OnPublish, Relay, RelayConfig, producer_config};
use platform_service::cloudevents as ce;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::cpu::Cpu;

/// A valid W3C traceparent, so every record carries the relay's full header set.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// P2 and P2b in rows per second.
pub struct Drain {
    /// Rows in the outbox.
    pub rows: u64,
    /// The relay, marking rows (the default).
    pub relay: f64,
    /// The relay, deleting rows as they are acknowledged.
    pub relay_delete: f64,
    /// A bare producer, same records and settings.
    pub raw: f64,
    /// The naive relay.
    pub naive: f64,
    /// Rows the naive relay published in its window.
    pub naive_rows: u64,
    /// CPU seconds spent while the relay drained (marking).
    pub relay_cpu: Cpu,
    /// CPU seconds spent while the bare producer sent.
    pub raw_cpu: Cpu,
}

/// Fills an outbox with `rows` rows (300-byte payloads, 1,000 keys), drains
/// it with the relay, sends the same records with a bare producer, then
/// lets the naive relay work on the same table for `naive_window`. The
/// relay fetches and sends `batch_size` rows at a time.
pub async fn measure(rows: u64, naive_window: Duration, batch_size: i64) -> anyhow::Result<Drain> {
    let (database, topic) = mall_testkit::outbox::outbox_database("benchdrain").await;
    let url = database.url().to_owned();
    let client = postgres::connect(&url).await;
    client
        .execute(
            "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload, traceparent) \
             SELECT gen_random_uuid(), $1, (i % 1000)::text, 'mall.order.v1.OrderCreated', '/mall/order', \
                    (i % 1000)::text, decode(repeat(lpad(to_hex(i), 8, '0'), 75), 'hex'), $3 \
             FROM generate_series(1, $2::bigint) AS i",
            &[&topic, &i64::try_from(rows)?, &TRACEPARENT],
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE outbox").await?;
    let records = load_records(&client).await?;

    let before = Cpu::now();
    let relay_rate = relay_drain(&url, batch_size, rows, OnPublish::Mark).await?;
    let relay_cpu = Cpu::now().since(&before);

    let before = Cpu::now();
    let raw = raw_producer(&topic, &records).await?;
    let raw_cpu = Cpu::now().since(&before);

    reset(&client).await?;
    let naive_rows = naive_relay(&client, &topic, naive_window).await?;

    // The same rows once more, deleted as they are acknowledged.
    reset(&client).await?;
    let relay_delete = relay_drain(&url, batch_size, rows, OnPublish::Delete).await?;
    Ok(Drain {
        rows,
        relay: relay_rate,
        relay_delete,
        raw,
        naive: naive_rows as f64 / naive_window.as_secs_f64(),
        naive_rows,
        relay_cpu,
        raw_cpu,
    })
}

/// Makes every row unpublished again, each key's first row its head (as
/// the ordering trigger had made them).
async fn reset(client: &Client) -> anyhow::Result<()> {
    client
        .batch_execute(
            "UPDATE outbox SET published_at = NULL, head = false; \
             UPDATE outbox SET head = true WHERE id IN (SELECT min(id) FROM outbox GROUP BY msg_key)",
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE outbox").await?;
    Ok(())
}

/// Drains the outbox at `url` (`rows` waiting) with the relay; rows/s.
async fn relay_drain(
    url: &str,
    batch_size: i64,
    rows: u64,
    on_publish: OnPublish,
) -> anyhow::Result<f64> {
    let mut config = RelayConfig::try_parse_from(relay_flags(url, &brokers()))?;
    config.batch_size = batch_size;
    config.on_publish = on_publish;
    let relay = Relay::new(config)?;
    let stats = relay.stats();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(relay.run(shutdown.child_token()));
    while stats.published.get() < rows {
        if running.is_finished() {
            bail!("the relay stopped before draining the outbox");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = running.await;
    Ok(rate)
}

/// A record as the relay builds it: key, payload, CloudEvents headers.
struct Prepared {
    key: String,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

async fn load_records(client: &Client) -> anyhow::Result<Vec<Prepared>> {
    let rows = client
        .query(
            "SELECT msg_key, payload, event_id::text, source, event_type, subject, traceparent, \
             to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
             FROM outbox ORDER BY id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let text = |i: usize| row.try_get::<_, String>(i);
            // The relay's header set (`outbox_relay`'s publisher).
            let pairs = [
                (ce::SPECVERSION, ce::SPEC_VERSION.to_owned()),
                (ce::ID, text(2)?),
                (ce::SOURCE, text(3)?),
                (ce::TYPE, text(4)?),
                (ce::TIME, text(7)?),
                (ce::SUBJECT, text(5)?),
                (ce::CONTENT_TYPE, ce::PROTOBUF_CONTENT_TYPE.to_owned()),
                (ce::TRACEPARENT, text(6)?),
            ];
            let headers = pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            });
            Ok(Prepared {
                key: text(0)?,
                payload: row.try_get(1)?,
                headers,
            })
        })
        .collect()
}

/// Sends every record with the relay's producer settings; records/s.
async fn raw_producer(topic: &str, records: &[Prepared]) -> anyhow::Result<f64> {
    let producer: FutureProducer = producer_config(&brokers()).create()?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        loop {
            let sent = producer.send_result(
                FutureRecord::to(topic)
                    .key(record.key.as_bytes())
                    .payload(record.payload.as_slice())
                    .headers(record.headers.clone()),
            );
            match sent {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }
    for delivery in deliveries {
        delivery
            .await
            .context("delivery canceled")?
            .map_err(|(error, _)| error)?;
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

/// Select the oldest unpublished row, send it, wait for the ack, mark it;
/// rows published within `window`.
async fn naive_relay(client: &Client, topic: &str, window: Duration) -> anyhow::Result<u64> {
    let producer: FutureProducer = producer_config(&brokers()).create()?;
    let select = client
        .prepare(
            "SELECT id, msg_key, payload FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1",
        )
        .await?;
    let mark = client
        .prepare("UPDATE outbox SET published_at = now() WHERE id = $1")
        .await?;
    // The first send waits for the connection and the producer id; the
    // window starts after it.
    let mut started = None;
    let mut published = 0;
    while started.is_none_or(|at: Instant| at.elapsed() < window) {
        let Some(row) = client.query_opt(&select, &[]).await? else {
            break;
        };
        let (id, key, payload): (i64, String, Vec<u8>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        producer
            .send(
                FutureRecord::to(topic)
                    .key(key.as_bytes())
                    .payload(&payload),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(error, _)| error)?;
        client.execute(&mark, &[&id]).await?;
        if started.is_none() {
            started = Some(Instant::now());
        } else {
            published += 1;
        }
    }
    Ok(published)
}
