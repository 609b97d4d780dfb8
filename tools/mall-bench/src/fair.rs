//! P10: fair to every key. One key has `hot_rows` rows waiting before the
//! relay starts (their creation time a day back, so their lag never mixes
//! with the cold keys'); then, while the relay drains it, cold rows of a
//! key each are written at a steady rate. The figure is the cold rows' lag
//! (commit → broker acknowledgement) and, beside it, the hot key's own rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser as _;
use mall_testkit::postgres;
use mall_testkit::settings::{brokers, relay_flags};
use outbox_relay::{Relay, RelayConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::acks::Acks;
use crate::hist::Latencies;

/// A lag above this is a hot row's (created a day back), not a cold one's.
const COLD_BOUND_SECS: f64 = 3_600.0;

/// P10's figures.
pub struct Fair {
    /// Rows of the hot key waiting at the start.
    pub hot_rows: i64,
    /// Cold rows written per second.
    pub rate: f64,
    /// Each cold row's commit → acknowledgement.
    pub cold: Latencies,
    /// Hot rows published per second while the cold ones were written.
    pub hot_rows_per_s: f64,
}

/// Rows of the hot key published so far.
async fn hot_published(url: &str) -> i64 {
    postgres::count(
        url,
        "SELECT count(*) FROM outbox WHERE msg_key = 'hot' AND published_at IS NOT NULL",
    )
    .await
}

/// Fills the hot key, starts the relay, writes cold rows at `rate` for
/// `duration`, and waits until each cold row was acknowledged.
pub async fn measure(hot_rows: i64, rate: f64, duration: Duration) -> anyhow::Result<Fair> {
    let (database, topic) = mall_testkit::outbox::outbox_database("benchfair").await;
    let url = database.url().to_owned();
    let client = postgres::connect(&url).await;
    client
        .execute(
            "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload, created_at) \
             SELECT gen_random_uuid(), $1, 'hot', 'mall.bench.Hot', '/bench', 'hot', \
                    convert_to(n::text, 'UTF8'), now() - interval '1 day' \
             FROM generate_series(1, $2::int8) n",
            &[&topic, &hot_rows],
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE outbox").await?;

    let relay = Relay::new(RelayConfig::try_parse_from(relay_flags(&url, &brokers()))?)?;
    let (relay, acks) = Acks::attach(relay);
    let stats = relay.stats();
    acks.start();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.child_token()));
    while stats.published.get() == 0 {
        if running.is_finished() {
            bail!("the relay stopped before it published");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut writers = Vec::new();
    for _ in 0..4 {
        writers.push(Arc::new(postgres::connect(&url).await));
    }
    let hot_before = hot_published(&url).await;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    let mut inserts = JoinSet::new();
    let mut written: usize = 0;
    while started.elapsed() < duration {
        ticker.tick().await;
        let writer = writers[written % writers.len()].clone();
        let (topic, key) = (topic.clone(), format!("cold-{written}"));
        inserts.spawn(async move {
            writer
                .execute(
                    "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload) \
                     VALUES (gen_random_uuid(), $1, $2, 'mall.bench.Cold', '/bench', $2, '\\x00')",
                    &[&topic, &key],
                )
                .await
        });
        written += 1;
    }
    while let Some(inserted) = inserts.join_next().await {
        inserted??;
    }
    let hot_rows_per_s =
        (hot_published(&url).await - hot_before) as f64 / started.elapsed().as_secs_f64();

    let cold_logged = || acks.count(|secs| secs < COLD_BOUND_SECS);
    let waiting = Instant::now();
    while cold_logged() < written {
        if running.is_finished() {
            bail!(
                "the relay stopped with {} of {written} cold rows out",
                cold_logged()
            );
        }
        if waiting.elapsed() > Duration::from_secs(120) {
            bail!("{} of {written} cold rows out after 120 s", cold_logged());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let _ = running.await;
    let mut cold = Latencies::new();
    for secs in acks
        .take()
        .into_iter()
        .filter(|secs| *secs < COLD_BOUND_SECS)
    {
        cold.record_secs(secs);
    }
    Ok(Fair {
        hot_rows,
        rate,
        cold,
        hot_rows_per_s,
    })
}
