//! A consumer whose client silently stops fetching one of its partitions (as
//! after a lost session whose rejoin never completed) notices, replaces its
//! client, and applies every record exactly once. Its own test binary, since
//! failpoints are process-wide.

use futures::future::join_all;
use mall_e2e::spawn_mall_with;
use mall_proto::order::v1::OrderStatus;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_fetching_is_replaced() {
    // The first record any consumer dispatches leaves its partition paused
    // behind the consumer's back: no lane is full, so nothing resumes it.
    fail::cfg("consumer::stop-fetching", "1*return").expect("failpoint");
    let mall = spawn_mall_with(|args| args.kafka.self_heal = Duration::from_secs(5)).await;
    let tv = mall.product("TV", 1_000).await;
    // Orders one after another, so the stopped partition has records behind
    // the first one.
    let mut orders = Vec::new();
    for _ in 0..12 {
        orders.push(mall.place(&tv, 1, "Seoul").await);
    }
    let settled = join_all(orders.iter().map(|o| mall.settled(o.id))).await;
    for order in &settled {
        assert_eq!(order.status(), OrderStatus::Approved, "{order:?}");
    }
    mall.quiesce().await;
    let recreated: u64 = [&mall.order_node, &mall.delivery_node, &mall.inventory_node]
        .iter()
        .flat_map(|node| node.all_stats.iter())
        .map(|s| s.recreated.get())
        .sum();
    assert_eq!(recreated, 1, "exactly one client was replaced");
    assert_eq!(
        mall.delivery_node.total(|s| &s.applied),
        orders.len() as u64,
        "each OrderCreated applied once"
    );
    assert_eq!(mall.stock(tv.id).await, 1_000 - orders.len() as i64);
    assert_eq!(mall.dead_lettered(), 0);
    mall.assert_invariants(&[(tv.id, 1_000)]).await;
    mall.stop().await;
}
