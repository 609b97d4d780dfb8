//! The relay cannot stall silently: a row lock on an outbox row makes the
//! leader lose its lead (lock timeout) and its health say it is stalled
//! while the backlog gauge keeps counting; a row the broker can never take
//! is parked and the rest flows on, until an operator retries it; the
//! purge catches up in one round, however many rows wait.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use mall_e2e::mall::{relay_config, spawn_relay_with};
use mall_e2e::outbox::{insert_row, outbox_database, payloads_per_key, unpublished};
use mall_e2e::scrape::get;
use mall_e2e::{postgres, wait_for};
use tokio_util::sync::CancellationToken;

/// A liveness bound for each wait, not a speed check.
const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_blocked_by_a_row_lock_says_it_is_stalled_and_recovers() {
    let (database, topic) = outbox_database("relaystall").await;
    let writer = postgres::connect(&database).await;
    insert_row(&writer, &topic, "k", "first").await;
    // An outside session holds the first row, as an open transaction on it
    // (or a manual SELECT ... FOR UPDATE) would.
    let mut holder = postgres::connect(&database).await;
    let hold = holder.transaction().await.expect("begin");
    hold.execute("SELECT id FROM outbox ORDER BY id LIMIT 1 FOR UPDATE", &[])
        .await
        .expect("lock the row");

    let mut config = relay_config(&database, &mall_e2e::mall::brokers());
    config.lock_timeout = Duration::from_millis(300);
    config.stall_after = Duration::from_secs(3);
    let stop = CancellationToken::new();
    let (stats, addr) = spawn_relay_with(config, stop.clone()).await;
    wait_for("health to say the relay is stalled", LIMIT, || async {
        let (status, _, body) = get(addr, "/health").await;
        (status == 503 && body.starts_with("stalled")).then_some(())
    })
    .await;
    let (_, _, body) = get(addr, "/health").await;
    println!("while the row is locked: {body}");
    wait_for("health to name the lock timeout", LIMIT, || async {
        let (_, _, body) = get(addr, "/health").await;
        body.contains("lock timeout").then_some(())
    })
    .await;
    // It keeps losing the lead (each lock timeout ends its session) ...
    let elections = stats.elected.get();
    wait_for("the relay to lose and retake the lead", LIMIT, || async {
        (stats.elected.get() > elections).then_some(())
    })
    .await;
    // ... and the backlog is still counted, beside the blocked loop.
    for n in 0..5 {
        insert_row(&writer, &topic, &format!("other{n}"), "later").await;
    }
    wait_for("the backlog gauge to count the new rows", LIMIT, || async {
        (stats.backlog_rows.get() >= 6).then_some(())
    })
    .await;

    hold.rollback().await.expect("release the row");
    wait_for("the outbox to drain", LIMIT, || async {
        (unpublished(&database).await == 0).then_some(())
    })
    .await;
    wait_for("health to recover", LIMIT, || async {
        let (status, _, body) = get(addr, "/health").await;
        (status == 200 && body.starts_with("leader")).then_some(())
    })
    .await;
    let per_key = payloads_per_key(&topic, 6).await;
    assert_eq!(per_key.len(), 6, "every key published");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_broker_can_never_take_is_parked_and_the_rest_flows() {
    let (database, topic) = outbox_database("relaypark").await;
    let writer = postgres::connect(&database).await;
    // Two megabytes: more than any producer or broker here takes.
    let huge = "x".repeat(2_000_000);
    insert_row(&writer, &topic, "big", &huge).await;
    insert_row(&writer, &topic, "big", "after the big one").await;
    for n in 0..10 {
        insert_row(&writer, &topic, &format!("small{n}"), "fine").await;
    }
    let mut config = relay_config(&database, &mall_e2e::mall::brokers());
    config.park_after_failures = 3;
    let stop = CancellationToken::new();
    let (stats, addr) = spawn_relay_with(config.clone(), stop.clone()).await;
    wait_for("the big row to be parked", LIMIT, || async {
        (stats.parked.get() == 1 && stats.parked_rows.get() == 1).then_some(())
    })
    .await;
    wait_for("every other key to be published", LIMIT, || async {
        // The parked row and the later row of its key wait; nothing else.
        (unpublished(&database).await == 2).then_some(())
    })
    .await;
    let (status, _, body) = get(addr, "/health").await;
    assert!(status == 200 && body.starts_with("leader"), "{body}");

    let parked = outbox_relay::parked_rows(&config).await.expect("list");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].key, "big");
    assert_eq!(parked[0].payload_bytes, 2_000_000);
    assert!(
        parked[0].reason.contains("3 tries failed"),
        "{}",
        parked[0].reason
    );

    // The operator fixes the row, then retries it: it goes out, and the
    // row behind it after it.
    writer
        .execute(
            "UPDATE outbox SET payload = 'fixed' WHERE id = $1",
            &[&parked[0].id],
        )
        .await
        .expect("fix");
    assert_eq!(
        outbox_relay::retry_parked(&config, Some(&[parked[0].id]))
            .await
            .expect("retry"),
        1
    );
    wait_for("the outbox to drain", LIMIT, || async {
        (unpublished(&database).await == 0).then_some(())
    })
    .await;
    let per_key = payloads_per_key(&topic, 12).await;
    assert_eq!(
        per_key["big"],
        ["fixed", "after the big one"],
        "per-key order held across the parking"
    );
    wait_for("the parked gauge to count none", LIMIT, || async {
        (stats.parked_rows.get() == 0).then_some(())
    })
    .await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_purge_round_catches_up_under_sustained_writes() {
    let (database, topic) = outbox_database("relaypurge").await;
    let writer = postgres::connect(&database).await;
    // 60,000 rows published an hour ago: six times what one statement
    // deletes, as a busy hour leaves behind.
    writer
        .execute(
            "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload, published_at) \
             SELECT gen_random_uuid(), $1, 'old', 'test.Old', '/test', 'old', '', now() - interval '1 hour' \
             FROM generate_series(1, 60000) AS n",
            &[&topic],
        )
        .await
        .expect("old rows");
    // Writes go on throughout.
    let stop = CancellationToken::new();
    let load = {
        let (database, topic, stop) = (database.url().to_owned(), topic.clone(), stop.clone());
        tokio::spawn(async move {
            let writer = postgres::connect(&database).await;
            let mut n = 0;
            while !stop.is_cancelled() {
                insert_row(&writer, &topic, &format!("live{}", n % 50), "live").await;
                n += 1;
            }
            n
        })
    };
    let mut config = relay_config(&database, &mall_e2e::mall::brokers());
    config.retention = Duration::from_secs(60);
    // One round only in this test's time: the first, as the relay leads.
    config.purge_interval = Duration::from_secs(3_600);
    let (stats, _) = spawn_relay_with(config, stop.clone()).await;
    wait_for("the old rows to be purged", LIMIT, || async {
        let left = postgres::count(
            &database,
            "SELECT count(*) FROM outbox WHERE msg_key = 'old'",
        )
        .await;
        (left == 0).then_some(())
    })
    .await;
    stop.cancel();
    let written = load.await.expect("writer");
    println!("{written} rows written while the purge ran");
    assert!(written > 0 && stats.published.get() > 0);
}
