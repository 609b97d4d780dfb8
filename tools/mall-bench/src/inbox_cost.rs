//! P6: what the inbox costs. The delivery service's consumer applies the
//! same `OrderCreated` records three times, each time in a consumer group
//! of its own: with the inbox, with the inbox gate switched off (the
//! benchmark-only inbox switch, handed to that consumer only), and as a
//! 100 % duplicate replay into the database that has them all.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mall_proto::order::v1::OrderCreated;
use mall_saga::Topics;
use mall_testkit::postgres::{self, TestDatabase};
use mall_testkit::settings::{brokers, service_flags};
use mall_testkit::topics::{EventRecord, Record};
use platform_service::app::Running;
use platform_service::config::ServiceArgs;
use platform_service::metrics::IntCounter;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// P6's three rates, records per second.
pub struct InboxCost {
    /// Records each run handled.
    pub records: u64,
    /// First delivery, through the inbox.
    pub with_inbox: f64,
    /// The same records with the gate off.
    pub without_inbox: f64,
    /// The same records again into the first database: all duplicates.
    pub replay: f64,
    /// What the replay applied (must be 0).
    pub replay_applied: u64,
}

/// Runs the three passes over `records` records.
pub async fn measure(records: u64) -> anyhow::Result<InboxCost> {
    let prefix = mall_testkit::env::unique_name("bi");
    let first_db = postgres::create_database(&format!("{prefix}_a")).await;
    let second_db = postgres::create_database(&format!("{prefix}_b")).await;

    // The first consumer creates the topics; the records follow.
    let (first, stop) = start(&first_db, &prefix, false).await?;
    produce(&Topics::new(&prefix).order_events(), records).await?;
    let with_inbox = rate(&first.stats.applied, records).await?;
    stop.cancel();
    first.wait().await?;

    let (second, stop) = start(&second_db, &prefix, true).await?;
    let without_inbox = rate(&second.stats.applied, records).await?;
    stop.cancel();
    second.wait().await?;

    let (third, stop) = start(&first_db, &prefix, false).await?;
    let replay = rate(&third.stats.duplicates, records).await?;
    let replay_applied = third.stats.applied.get();
    stop.cancel();
    third.wait().await?;
    Ok(InboxCost {
        records,
        with_inbox,
        without_inbox,
        replay,
        replay_applied,
    })
}

/// A delivery service on `database` in a consumer group of its own, its
/// inbox gate off when `without_inbox` (the benchmark's switch, handed in).
async fn start(
    database: &TestDatabase,
    prefix: &str,
    without_inbox: bool,
) -> anyhow::Result<(Running, CancellationToken)> {
    let mut args = ServiceArgs::try_from_flags(service_flags(database.url(), &brokers(), prefix))?;
    args.db_pool_size = 10;
    args.db_consumer_pool_size = 10;
    args.inbox_gate_off = without_inbox;
    args.kafka.group_id = Some(mall_testkit::env::unique_name("bench"));
    let stop = CancellationToken::new();
    let running = delivery_service::start(&args, stop.child_token())
        .await
        .context("starting the delivery service")?;
    Ok((running, stop))
}

/// Writes `count` `OrderCreated` records (ids 1..=count) as the order
/// service's relay would.
async fn produce(topic: &str, count: u64) -> anyhow::Result<()> {
    let producer: FutureProducer = outbox_relay::producer_config(&brokers()).create()?;
    let mut deliveries = Vec::new();
    for id in 1..=i64::try_from(count)? {
        let record = Record::event(
            id,
            &OrderCreated {
                order_id: id,
                customer_id: 1,
                product_id: 1,
                product_name: "TV".into(),
                qty: 1,
                address: "Seoul".into(),
            },
        );
        let key = record.key.clone().unwrap_or_default();
        let payload = record.payload.clone().unwrap_or_default();
        let sent = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(record.owned_headers());
        deliveries.push(
            producer
                .send_result(sent)
                .map_err(|(error, _)| anyhow::anyhow!("cannot queue a record: {error}"))?,
        );
    }
    for delivery in deliveries {
        delivery
            .await
            .context("delivery canceled")?
            .map_err(|(error, _)| error)?;
    }
    Ok(())
}

/// Records per second from the first count to the `wanted`th, read off
/// `counter` every millisecond.
async fn rate(counter: &IntCounter, wanted: u64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let first = loop {
        if counter.get() >= 1 {
            break Instant::now();
        }
        if Instant::now() > deadline {
            bail!("no record handled within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    while counter.get() < wanted {
        if Instant::now() > deadline {
            bail!(
                "{} of {wanted} records handled within 10 minutes",
                counter.get()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((wanted.saturating_sub(1)) as f64 / first.elapsed().as_secs_f64().max(1e-9))
}
