//! Per-key order on the wire is the order in which the writing transactions
//! committed, even for a writer that takes no locks and interleaves long and
//! short transactions on one key. The commit order comes from PostgreSQL
//! itself (`track_commit_timestamp`, which scripts/test.sh turns on).

use std::collections::HashMap;
use std::time::Duration;

use mall_e2e::mall::{brokers, relay_config};
use mall_e2e::outbox::{insert_row, outbox_database, payloads_per_key};
use mall_e2e::{postgres, wait_for};
use outbox_relay::Relay;
use tokio_util::sync::CancellationToken;

const KEYS: usize = 5;
const LIMIT: Duration = Duration::from_secs(60);

/// Whether the session `pid` waits for a lock.
async fn waits_for_a_lock(url: &str, pid: i32) -> bool {
    postgres::count(
        url,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND wait_event_type = 'Lock'"
        ),
    )
    .await
        > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_free_writer_is_published_in_commit_order() {
    let (url, topic) = outbox_database("order").await;
    for round in 0..KEYS {
        let key = format!("k{round}");
        // The long transaction writes first and commits last.
        let long = postgres::connect(&url).await;
        long.batch_execute("BEGIN").await.expect("begin");
        insert_row(&long, &topic, &key, &format!("long-{round}")).await;
        // The short one starts later and commits as soon as it can.
        let short = postgres::connect(&url).await;
        let pid: i32 = short
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        let short_task = tokio::spawn({
            let (topic, key) = (topic.clone(), key.clone());
            async move {
                short.batch_execute("BEGIN").await.expect("begin");
                insert_row(&short, &topic, &key, &format!("short-{round}")).await;
                short.batch_execute("COMMIT").await.expect("commit");
            }
        });
        wait_for(
            "the short transaction to commit or to wait",
            LIMIT,
            || async {
                (short_task.is_finished() || waits_for_a_lock(&url, pid).await).then_some(())
            },
        )
        .await;
        long.batch_execute("COMMIT").await.expect("commit long");
        short_task.await.expect("short transaction");
        // And a plain one after both.
        let after = postgres::connect(&url).await;
        insert_row(&after, &topic, &key, &format!("after-{round}")).await;
    }

    // PostgreSQL's own record of the commit order, read before the relay
    // marks (and so rewrites) the rows.
    let client = postgres::connect(&url).await;
    let rows = client
        .query(
            "SELECT msg_key, convert_from(payload, 'UTF8') FROM outbox \
             ORDER BY msg_key, pg_xact_commit_timestamp(xmin), id",
            &[],
        )
        .await
        .expect("commit timestamps (is track_commit_timestamp on?)");
    let mut committed: HashMap<String, Vec<String>> = HashMap::new();
    for row in &rows {
        committed.entry(row.get(0)).or_default().push(row.get(1));
    }

    let relay = Relay::new(relay_config(&url, &brokers())).expect("relay");
    let stats = relay.stats();
    let shutdown = CancellationToken::new();
    tokio::spawn(relay.run(shutdown.child_token()));
    let total = KEYS * 3;
    wait_for("every row to be published", LIMIT, || async {
        (stats.published.get() >= total as u64).then_some(())
    })
    .await;
    shutdown.cancel();

    let on_the_wire = payloads_per_key(&topic, total).await;
    assert_eq!(on_the_wire.len(), KEYS);
    for (key, payloads) in &on_the_wire {
        assert_eq!(
            Some(payloads),
            committed.get(key),
            "key {key}: the topic's order is the commit order"
        );
    }
}
