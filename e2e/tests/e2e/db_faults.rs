//! The database being unwell never dead-letters a valid event: a failover's
//! read-only window, lock timeouts and deadlocks are waited out, however
//! long they last, and a long outage neither evicts the consumer from its
//! group nor causes a rebalance.

use std::time::{Duration, Instant};

use futures::future::join_all;
use mall_e2e::mall::SETTLE_DEADLINE;
use mall_e2e::{postgres, spawn_mall, spawn_mall_with, wait_for};
use mall_proto::order::v1::OrderStatus;

/// The attempt budget after which the consumer used to dead-letter an event
/// on a "permanent" database error such as 25006.
const OLD_BUDGET: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_failover_window_delays_events_but_dead_letters_none() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let delivery_db = mall.delivery_node.database_url.clone();

    postgres::set_read_only(&delivery_db, true).await;
    let order = mall.place(&tv, 1, "Seoul").await;
    wait_for(
        "the delivery consumer to keep retrying past the old budget",
        SETTLE_DEADLINE,
        || async { (mall.delivery_node.total(|s| &s.db_retries) > OLD_BUDGET + 1).then_some(()) },
    )
    .await;
    assert_eq!(
        mall.get_order(order.id).await.status(),
        OrderStatus::Pending,
        "nothing can happen while delivery's database is read-only"
    );
    assert_eq!(
        mall.dead_lettered(),
        0,
        "the waiting event was not dead-lettered"
    );

    postgres::set_read_only(&delivery_db, false).await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    mall.quiesce().await;
    assert_eq!(mall.dead_lettered(), 0, "no real event was dead-lettered");
    mall.assert_invariants(&[(tv.id, 10)]).await;
    mall.stop().await;
}

async fn deadlocks_of(url: &str) -> i64 {
    postgres::count(
        url,
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeouts_and_deadlocks_are_waited_out() {
    // Short statement timeouts so lock waits end in SQLSTATE 57014 quickly.
    let mall =
        spawn_mall_with(|args| args.db_statement_timeout = Duration::from_millis(3_000)).await;
    let tv = mall.product("TV", 10).await;
    let inventory_db = mall.inventory_node.database_url.clone();

    // An outside session holds the product's row, which the inventory
    // consumer must update to take stock. It never detects deadlocks itself,
    // so when one forms the consumer is the victim (SQLSTATE 40P01).
    let holder = postgres::connect(&inventory_db).await;
    holder
        .batch_execute(&format!(
            "BEGIN; SET LOCAL deadlock_timeout = '1h'; \
             SELECT id FROM inventories WHERE id = {} FOR UPDATE",
            tv.id
        ))
        .await
        .expect("lock the product row");
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let order = mall.place(&tv, 1, "Seoul").await;

    // A deadlock: the consumer holds the order's advisory lock and waits for
    // the row; the holder now asks for that advisory lock.
    let waiting_sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND pid <> {holder_pid}"
    );
    wait_for(
        "the consumer to wait for the locked row",
        SETTLE_DEADLINE,
        || async { (postgres::count(&inventory_db, &waiting_sql).await > 0).then_some(()) },
    )
    .await;
    let before = deadlocks_of(&inventory_db).await;
    holder
        .execute("SELECT pg_advisory_xact_lock($1)", &[&order.id])
        .await
        .expect("the holder gets the advisory lock once the consumer is the deadlock victim");
    wait_for("the deadlock to be counted", SETTLE_DEADLINE, || async {
        (deadlocks_of(&inventory_db).await > before).then_some(())
    })
    .await;

    // Lock timeouts: the holder now has both locks, so every attempt of the
    // consumer times out. It keeps trying past the old budget.
    let retries_before = mall.inventory_node.total(|s| &s.db_retries);
    wait_for(
        "the consumer to retry through lock timeouts",
        SETTLE_DEADLINE * 2,
        || async {
            (mall.inventory_node.total(|s| &s.db_retries) >= retries_before + 2).then_some(())
        },
    )
    .await;
    assert_eq!(
        mall.get_order(order.id).await.status(),
        OrderStatus::Pending
    );
    assert_eq!(
        mall.dead_lettered(),
        0,
        "nothing was dead-lettered while waiting"
    );

    holder.batch_execute("COMMIT").await.expect("release");
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    mall.quiesce().await;
    assert_eq!(mall.dead_lettered(), 0, "no real event was dead-lettered");
    mall.assert_invariants(&[(tv.id, 10)]).await;
    mall.stop().await;
}

/// The poll interval the consumers must honour in this test, in milliseconds
/// (librdkafka's smallest allowed next to a 10 s session timeout).
const MAX_POLL_INTERVAL_MS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_database_outage_neither_evicts_nor_rebalances() {
    let mall = spawn_mall_with(|args| {
        args.kafka.consumer_properties = vec![(
            "max.poll.interval.ms".to_owned(),
            MAX_POLL_INTERVAL_MS.to_string(),
        )];
    })
    .await;
    let tv = mall.product("TV", 100_000).await;
    // Settle one order so every group has formed and been assigned.
    let first = mall.place(&tv, 1, "Seoul").await;
    mall.settled(first.id).await;
    let assignments = mall.delivery_node.total(|s| &s.assignments);
    assert!(
        assignments >= 1,
        "the delivery consumer was assigned its partitions"
    );

    let delivery_db = mall.delivery_node.database_url.clone();
    postgres::set_read_only(&delivery_db, true).await;
    let outage = Instant::now();
    // Enough orders that every partition has records waiting behind its lane.
    let placed: Vec<i64> = join_all((0..300).map(|_| mall.place(&tv, 1, "Seoul")))
        .await
        .into_iter()
        .map(|order| order.id)
        .collect();
    // The outage lasts three poll intervals while the consumer waits; with
    // every lane stuck, no record reaches the poll loop meanwhile.
    let window = Duration::from_millis(MAX_POLL_INTERVAL_MS * 3);
    wait_for(
        "a long outage with the consumer waiting",
        window * 4,
        || async {
            let waiting = mall.delivery_node.total(|s| &s.db_retries) > 0;
            (waiting && outage.elapsed() >= window).then_some(())
        },
    )
    .await;
    postgres::set_read_only(&delivery_db, false).await;

    for id in &placed {
        assert_eq!(mall.settled(*id).await.status(), OrderStatus::Approved);
    }
    mall.quiesce().await;
    assert_eq!(
        mall.delivery_node.total(|s| &s.assignments),
        assignments,
        "no rebalance: the consumer kept polling through the outage"
    );
    assert_eq!(
        mall.delivery_node.all_stats[0].recreated.get(),
        0,
        "the client was never replaced"
    );
    assert_eq!(mall.dead_lettered(), 0, "no real event was dead-lettered");
    mall.assert_invariants(&[(tv.id, 100_000)]).await;
    mall.stop().await;
}
