//! A partition revoked and given back to the same member while its old lane
//! is still finishing a record (the eager protocol revokes every partition
//! when a member joins or leaves) keeps flowing. Once, the old lane's queue
//! handle, dropped after the new lane took over, turned off the new lane's
//! wake-up, and the partition stood still until the self-healing check
//! replaced the client; the check is off here, so a stall would stay.

use mall_e2e::mall::{brokers, service_args};
use mall_e2e::{postgres, spawn_mall_with, wait_for};
use mall_proto::order::v1::OrderStatus;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A liveness bound, not a speed check.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_given_back_while_its_old_lane_finishes_keeps_flowing() {
    let mall = spawn_mall_with(|args| args.kafka.self_heal = Duration::from_secs(0)).await;
    let tv = mall.product("TV", 100).await;
    let first = mall.place(&tv, 1, "Seoul").await;
    assert_eq!(mall.settled(first.id).await.status(), OrderStatus::Approved);

    // Every delivery lane that gets a record now waits on this lock.
    let database = mall.delivery_node.database_url.clone();
    let mut holder = postgres::connect(&database).await;
    let lock = holder.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(mall.place(&tv, 1, "Seoul").await);
    }
    wait_for("delivery lanes to wait on the lock", LIMIT, || async {
        let waiting = postgres::count(
            &database,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock'",
        )
        .await;
        (waiting > 0).then_some(())
    })
    .await;

    // A second delivery replica joins and leaves: every partition is
    // revoked from the first replica and given back to it, while its old
    // lanes are still in their records.
    let stats = &mall.delivery_node.all_stats[0];
    let assignments = stats.assignments.get();
    let args = service_args(&database, &brokers(), mall.topics.prefix());
    let leave = CancellationToken::new();
    let extra = delivery_service::start(&args, leave.clone())
        .await
        .expect("a second delivery replica");
    wait_for("the second replica to get partitions", LIMIT, || async {
        (extra.stats.assignments.get() > 0).then_some(())
    })
    .await;
    leave.cancel();
    extra.wait().await.expect("the second replica stops");
    wait_for("the partitions to come back", LIMIT, || async {
        (stats.assignments.get() >= assignments + 2).then_some(())
    })
    .await;

    // The old lanes finish now, after the new ones took over.
    lock.rollback().await.expect("release");
    for order in &held {
        assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    }
    for _ in 0..6 {
        let order = mall.place(&tv, 1, "Busan").await;
        assert_eq!(
            mall.settled(order.id).await.status(),
            OrderStatus::Approved,
            "every partition still flows, with no self-healing to rescue it"
        );
    }
    mall.quiesce().await;
    mall.stop().await;
}
