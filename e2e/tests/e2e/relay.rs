//! Two relay replicas on one database: nothing lost, nothing reordered per
//! key, even when the active one dies mid-stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mall_e2e::kafka::read_topic;
use mall_e2e::mall::{PARTITIONS, brokers, relay_config};
use mall_e2e::outbox::outbox_database;
use mall_e2e::{postgres, wait_for};
use outbox_relay::Relay;
use outbox_relay::observer::Event;
use tokio_util::sync::CancellationToken;

const KEYS: i64 = 20;
const PER_KEY: i64 = 100;
/// Liveness bound of every wait in these tests.
const LIMIT: Duration = Duration::from_secs(120);

/// Writes rows `0..n` for `key`, each in its own transaction, as a service would.
async fn insert_sequence(url: &str, topic: &str, key: i64, n: i64) {
    let client = postgres::connect(url).await;
    for seq in 0..n {
        client
            .execute(
                "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload) \
                 VALUES (gen_random_uuid(), $1, $2, 'test.Seq', '/test', $2, $3)",
                &[&topic, &key.to_string(), &seq.to_string().into_bytes()],
            )
            .await
            .expect("insert outbox row");
    }
}

async fn write_rows(url: &str, topic: &str) {
    let writers: Vec<_> = (1..=KEYS)
        .map(|key| {
            let (url, topic) = (url.to_owned(), topic.to_owned());
            tokio::spawn(async move { insert_sequence(&url, &topic, key, PER_KEY).await })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_lose_and_reorder_nothing_across_a_crash() {
    let brokers = brokers();
    let (url, topic) = outbox_database("relay").await;

    let mut config = relay_config(&url, &brokers);
    config.batch_size = 50;
    let first = Relay::new(config.clone()).expect("relay a");
    let second = Relay::new(config.clone()).expect("relay b");
    let (first_stats, second_stats) = (first.stats(), second.stats());
    let shutdown = CancellationToken::new();
    let first_task = tokio::spawn(first.run(shutdown.child_token()));
    let second_task = tokio::spawn(second.run(shutdown.child_token()));

    let writer = tokio::spawn({
        let (url, topic) = (url.url().to_owned(), topic.clone());
        async move { write_rows(&url, &topic).await }
    });

    // Let some rows flow, then crash whichever replica is active.
    let total = (KEYS * PER_KEY) as u64;
    let published = || first_stats.published.get() + second_stats.published.get();
    wait_for("a quarter of the rows to be published", LIMIT, || async {
        (published() >= total / 4).then_some(())
    })
    .await;
    let first_active = first_stats.elected.get() > 0;
    let survivor_stats = if first_active {
        first_task.abort();
        second_stats.clone()
    } else {
        second_task.abort();
        first_stats.clone()
    };
    writer.await.expect("writer finished");

    // The standby takes over and drains the table.
    wait_for("the standby to publish every row", LIMIT, || async {
        let sql = "SELECT count(*) FROM outbox WHERE published_at IS NULL";
        (postgres::count(&url, sql).await == 0).then_some(())
    })
    .await;
    assert_eq!(survivor_stats.elected.get(), 1, "the standby took over");
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

/// A database with the outbox schema, a topic, and a running relay built
/// from `tune`; the count of the pauses its leader took for want of rows.
async fn lone_relay(
    tune: impl FnOnce(&mut outbox_relay::RelayConfig),
) -> (
    mall_e2e::postgres::TestDatabase,
    String,
    std::sync::Arc<outbox_relay::RelayStats>,
    std::sync::Arc<AtomicU64>,
    CancellationToken,
) {
    let (url, topic) = outbox_database("lone").await;
    let mut config = relay_config(&url, &brokers());
    tune(&mut config);
    let (observer, mut events) = tokio::sync::mpsc::unbounded_channel();
    let relay = Relay::new(config).expect("relay").observed(observer);
    let stats = relay.stats();
    let idle = std::sync::Arc::new(AtomicU64::new(0));
    let pauses = idle.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if event == Event::Idle {
                pauses.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let shutdown = CancellationToken::new();
    tokio::spawn(relay.run(shutdown.child_token()));
    wait_for("the relay to become active", LIMIT, || async {
        (stats.elected.get() > 0).then_some(())
    })
    .await;
    (url, topic, stats, idle, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_keeps_polling_and_finds_rows_written_in_prepared_transactions() {
    // Nothing on the writers' side wakes the relay: the mall's outbox has no
    // NOTIFY trigger any more, so a transaction that wrote it can be
    // prepared (two-phase commit), and the relay finds its rows by polling.
    let (url, topic, stats, idle, shutdown) = lone_relay(|config| {
        config.purge_interval = Duration::from_secs(3_600);
    })
    .await;
    let triggers = "SELECT count(*) FROM pg_trigger \
                    WHERE tgrelid = 'outbox'::regclass AND NOT tgisinternal";
    assert_eq!(
        postgres::count(&url, triggers).await,
        1,
        "only the ordering trigger"
    );
    // The rows arrive only once the relay found the table empty several
    // times over, so its pause has grown to the longest.
    wait_for("the relay to wait idle", LIMIT, || async {
        (idle.load(Ordering::Relaxed) > 10).then_some(())
    })
    .await;
    let writer = postgres::connect(&url).await;
    writer.batch_execute("BEGIN").await.expect("begin");
    writer
        .execute(
            "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload) \
             VALUES (gen_random_uuid(), $1, 'two-phase', 't', '/test', 's', '\\x00'::bytea)",
            &[&topic],
        )
        .await
        .expect("insert");
    // Prepared transactions' names are the server's, not the database's.
    let xid = format!("{}_2pc", postgres::database_name(&url));
    writer
        .batch_execute(&format!("PREPARE TRANSACTION '{xid}'"))
        .await
        .expect(
            "a transaction that wrote the outbox can be prepared (max_prepared_transactions > 0)",
        );
    writer
        .batch_execute(&format!("COMMIT PREPARED '{xid}'"))
        .await
        .expect("commit the prepared transaction");
    insert_sequence(&url, &topic, 1, 10).await;
    wait_for("polling to find every row", LIMIT, || async {
        (stats.published.get() >= 11).then_some(())
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rows_are_purged_after_retention() {
    let (url, topic, stats, _idle, shutdown) = lone_relay(|config| {
        config.retention = Duration::from_secs(0);
        config.purge_interval = Duration::from_secs(1);
    })
    .await;
    insert_sequence(&url, &topic, 1, 10).await;
    wait_for("published rows to be purged", LIMIT, || async {
        (postgres::count(&url, "SELECT count(*) FROM outbox").await == 0).then_some(())
    })
    .await;
    assert_eq!(stats.published.get(), 10);
    let records = read_topic(&brokers(), &topic, PARTITIONS, 10, Duration::from_secs(30)).await;
    let sequence: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let expected: Vec<String> = (0..10).map(|n: i64| n.to_string()).collect();
    assert_eq!(
        sequence, expected,
        "all ten published, in order, before being purged"
    );
    shutdown.cancel();
}
