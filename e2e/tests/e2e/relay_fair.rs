//! The relay is fair to every key: it fetches the heads of keys, not the
//! oldest rows, so a key with thousands of rows waiting holds another key's
//! row back by one batch at most; a parked key's later rows are not heads
//! and stay out of the fetch's path; and a row whose writer could not see
//! the row ahead being settled (REPEATABLE READ) is made a head by the
//! sweep, not forgotten.

use std::time::Duration;

use mall_e2e::mall::{brokers, relay_config, spawn_relay_with};
use mall_e2e::outbox::{insert_row, outbox_database, payloads_per_key, unpublished};
use mall_e2e::{postgres, wait_for};
use tokio_util::sync::CancellationToken;

/// A liveness bound for each wait, not a speed check.
const LIMIT: Duration = Duration::from_secs(90);
/// Rows of the hot key, written in one statement.
const HOT: i64 = 2_000;

/// Rows of `key` for which `condition` holds.
async fn rows_of(url: &str, key: &str, condition: &str) -> i64 {
    postgres::count(
        url,
        &format!("SELECT count(*) FROM outbox WHERE msg_key = '{key}' AND {condition}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_key_is_not_held_back_by_a_hot_key_nor_by_a_parked_one() {
    let (database, topic) = outbox_database("relayfair").await;
    let writer = postgres::connect(&database).await;
    // A parked key first: a row no broker takes, ten rows behind it.
    insert_row(&writer, &topic, "parked", &"x".repeat(2_000_000)).await;
    for n in 0..10 {
        insert_row(&writer, &topic, "parked", &format!("behind {n}")).await;
    }
    // Then one key with many rows, in one statement, and one cold row.
    writer
        .execute(
            "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload) \
             SELECT gen_random_uuid(), $1, 'hot', 'test.Seq', '/test', 'hot', convert_to(n::text, 'UTF8') \
             FROM generate_series(1, $2::int8) n",
            &[&topic, &HOT],
        )
        .await
        .expect("hot rows");
    insert_row(&writer, &topic, "cold", "cold").await;
    // The trigger made one head per key, in a multi-row statement too.
    assert_eq!(rows_of(&database, "hot", "head").await, 1);
    assert_eq!(rows_of(&database, "parked", "head").await, 1);
    assert_eq!(rows_of(&database, "cold", "head").await, 1);

    let mut config = relay_config(&database, &brokers());
    config.park_after_failures = 2;
    let stop = CancellationToken::new();
    let (stats, _addr) = spawn_relay_with(config, stop.clone()).await;
    wait_for("the cold row to be published", LIMIT, || async {
        (rows_of(&database, "cold", "published_at IS NOT NULL").await == 1).then_some(())
    })
    .await;
    let hot_out = rows_of(&database, "hot", "published_at IS NOT NULL").await;
    assert!(
        hot_out <= 2,
        "the cold row went out with the hot key's first rows, not after them: {hot_out} hot rows \
         were out first"
    );
    wait_for("the big row to be parked", LIMIT, || async {
        (stats.parked.get() == 1).then_some(())
    })
    .await;
    // The rows behind the parked one are not heads: never fetched.
    assert_eq!(
        rows_of(&database, "parked", "head AND published_at IS NULL").await,
        1
    );
    wait_for("the hot key to drain", LIMIT, || async {
        (rows_of(&database, "hot", "published_at IS NULL").await == 0).then_some(())
    })
    .await;
    assert_eq!(
        unpublished(&database).await,
        11,
        "the parked key waits whole"
    );
    let per_key = payloads_per_key(&topic, usize::try_from(HOT).expect("rows") + 1).await;
    let hot: Vec<i64> = per_key["hot"]
        .iter()
        .map(|payload| payload.parse().expect("a number"))
        .collect();
    let mut first_appearances = Vec::new();
    for n in hot {
        if !first_appearances.contains(&n) && first_appearances.last().is_none_or(|last| *last < n)
        {
            first_appearances.push(n);
        }
    }
    assert_eq!(
        first_appearances,
        (1..=HOT).collect::<Vec<_>>(),
        "the hot key's rows went out in order"
    );
    assert!(!per_key.contains_key("parked"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_written_under_repeatable_read_behind_a_settled_row_is_swept_out() {
    let (database, topic) = outbox_database("relaysweep").await;
    let writer = postgres::connect(&database).await;
    insert_row(&writer, &topic, "k", "first").await;
    // A writer whose snapshot predates the first row's publication.
    let late = postgres::connect(&database).await;
    late.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM outbox")
        .await
        .expect("snapshot");

    let stop = CancellationToken::new();
    let (stats, _addr) = spawn_relay_with(relay_config(&database, &brokers()), stop.clone()).await;
    wait_for("the first row to be published", LIMIT, || async {
        (unpublished(&database).await == 0).then_some(())
    })
    .await;
    insert_row(&late, &topic, "k", "second").await;
    late.batch_execute("COMMIT").await.expect("commit");
    // Its snapshot still had the first row waiting, so its trigger did not
    // make it a head; the sweep does.
    wait_for("the sweep to publish the second row", LIMIT, || async {
        (unpublished(&database).await == 0).then_some(())
    })
    .await;
    assert_eq!(
        stats.swept.get(),
        1,
        "the sweep, not the trigger, made it a head"
    );
    let per_key = payloads_per_key(&topic, 2).await;
    assert_eq!(per_key["k"], ["first", "second"]);
    stop.cancel();
}
