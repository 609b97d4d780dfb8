//! Two relay replicas on one database: nothing lost, nothing reordered per
//! key, even when the active one dies mid-stream.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mall_e2e::kafka::read_topic;
use mall_e2e::mall::{PARTITIONS, brokers, relay_config};
use mall_e2e::{postgres, unique_name};
use outbox_relay::Relay;
use tokio_util::sync::CancellationToken;

const KEYS: i64 = 20;
const PER_KEY: i64 = 100;

async fn write_rows(url: &str, topic: &str) {
    let mut writers = Vec::new();
    for key in 1..=KEYS {
        let url = url.to_owned();
        let topic = topic.to_owned();
        writers.push(tokio::spawn(async move {
            let client = postgres::connect(&url).await;
            for seq in 0..PER_KEY {
                client
                    .execute(
                        "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload) \
                         VALUES (gen_random_uuid(), $1, $2, 'test.Seq', '/test', $2, $3)",
                        &[&topic, &key.to_string(), &seq.to_string().into_bytes()],
                    )
                    .await
                    .expect("insert outbox row");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_lose_and_reorder_nothing_across_a_crash() {
    mall_platform::telemetry::init();
    let brokers = brokers();
    let name = unique_name("relay");
    let url = postgres::create_database(&name).await;
    mall_platform::db::migrate(&url, order_service::SPEC.migrations)
        .await
        .expect("migrate");
    let topic = format!("{name}.events");
    mall_platform::kafka::ensure_topics(&brokers, std::slice::from_ref(&topic), PARTITIONS, 1)
        .await
        .expect("topic");

    let mut config = relay_config(&url, &brokers);
    config.batch_size = 50;
    let first = Relay::new(config.clone()).expect("relay a");
    let second = Relay::new(config.clone()).expect("relay b");
    let (first_stats, second_stats) = (first.stats(), second.stats());
    let shutdown = CancellationToken::new();
    let first_task = tokio::spawn(first.run(shutdown.child_token()));
    let second_task = tokio::spawn(second.run(shutdown.child_token()));

    let writer = tokio::spawn({
        let (url, topic) = (url.clone(), topic.clone());
        async move { write_rows(&url, &topic).await }
    });

    // Let some rows flow, then crash whichever replica is active.
    let total = (KEYS * PER_KEY) as u64;
    let published = || {
        first_stats.published.load(Ordering::Relaxed)
            + second_stats.published.load(Ordering::Relaxed)
    };
    while published() < total / 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_active = first_stats.elected.load(Ordering::Relaxed) > 0;
    let survivor_stats = if first_active {
        first_task.abort();
        second_stats.clone()
    } else {
        second_task.abort();
        first_stats.clone()
    };
    writer.await.expect("writer finished");

    // The standby takes over and drains the table.
    let started = std::time::Instant::now();
    loop {
        let left = postgres::count(
            &url,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        )
        .await;
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{left} rows never published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        survivor_stats.elected.load(Ordering::Relaxed),
        1,
        "the standby took over"
    );
    shutdown.cancel();

    let records = read_topic(
        &brokers,
        &topic,
        PARTITIONS,
        total as usize,
        Duration::from_secs(60),
    )
    .await;
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for record in &records {
        let seq: i64 = std::str::from_utf8(record.payload.as_deref().expect("payload"))
            .expect("utf8")
            .parse()
            .expect("number");
        let list = seen.entry(record.key_str().to_owned()).or_default();
        // At-least-once: a re-published duplicate may follow; first occurrences must be in order.
        if !list.contains(&seq) {
            list.push(seq);
        }
    }
    assert_eq!(seen.len() as i64, KEYS, "every key arrived");
    for (key, sequence) in &seen {
        let expected: Vec<i64> = (0..PER_KEY).collect();
        assert_eq!(sequence, &expected, "key {key} lost or reordered events");
    }
}
