//! A broker fail-over under load, on a real three-node Apache Kafka cluster
//! (every topic with replication 3 and `min.insync.replicas=2`, producers
//! with `acks=all` and idempotence): the leader of the order events'
//! partitions is killed with SIGKILL while orders flow. The relays move to
//! the new leaders and go on, the consumers follow, the node comes back and
//! its replicas rejoin the ISR; every order settles, none is lost or taken
//! twice, nothing is dead-lettered.
//!
//! The test command runs this one; the fault run (`scripts/chaos.sh`) runs
//! the cluster's other faults (controller, isolation, two nodes down,
//! rolling restart, coordinator) with the same checks.

use std::time::Duration;

use mall_e2e::mall::spawn_mall_on;
use mall_e2e::{unique_name, wait_for};
use mall_proto::order::v1::{OrderStatus, PlaceOrderRequest};
use mall_testkit::kafka::view;
use mall_testkit::{Kafka, KafkaSpec};
use tokio_util::sync::CancellationToken;

/// Clients placing orders, each one every [`PACE`], from before the kill
/// until the node is back.
const CLIENTS: usize = 2;
/// The pause between one client's orders (at most 40 orders/s in all).
const PACE: Duration = Duration::from_millis(50);
/// Stock of the one product: more than the run can order.
const STOCK: i64 = 1_000_000;
/// How long the cluster may take to elect, catch up and regrow its ISR.
const CLUSTER_PATIENCE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_busy_leader_loses_and_doubles_nothing() {
    let dir = std::env::temp_dir().join(unique_name("mall-failover-"));
    let mut spec = KafkaSpec::new(&dir, 3);
    spec.heap_mb = 256;
    let mut kafka = Kafka::start(spec).await.expect("a three-node cluster");
    let brokers = kafka.bootstrap();
    let mall = spawn_mall_on(brokers.clone(), |args| {
        args.kafka.topic_replication = 3;
        args.kafka.topic_min_insync_replicas = Some(2);
    })
    .await;
    let product = mall.product("TV", STOCK).await;

    // Orders flow from a few clients until the node is back.
    let flowing = CancellationToken::new();
    let mut placers = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (mut order, flowing) = (mall.order.clone(), flowing.clone());
        let product_id = product.id;
        placers.spawn(async move {
            let mut ids = Vec::new();
            let mut pace = tokio::time::interval(PACE);
            while !flowing.is_cancelled() {
                pace.tick().await;
                let request = PlaceOrderRequest {
                    customer_id: 1,
                    product_id,
                    product_name: "TV".into(),
                    qty: 1,
                    address: "Seoul".into(),
                    request_id: format!("failover-{client}-{}", ids.len()),
                };
                let placed = order
                    .place_order(request)
                    .await
                    .unwrap_or_else(|e| panic!("placing an order: {e}"));
                ids.push(placed.into_inner().id);
            }
            ids
        });
    }

    // Under load: the leader of the order events' first partition dies.
    wait_for("the first orders to be published", CLUSTER_PATIENCE, || {
        let published = mall.order_node.published();
        async move { (published >= 50).then_some(()) }
    })
    .await;
    let order_events = vec![mall.topics.order_events()];
    let before = view::partitions(&brokers, &order_events)
        .await
        .expect("the cluster's metadata");
    let leader = before
        .iter()
        .find(|p| p.partition == 0)
        .map(|p| p.leader)
        .expect("partition 0 of the order events");
    let victim = u32::try_from(leader)
        .ok()
        .and_then(|id| kafka.index_of(id))
        .unwrap_or_else(|| panic!("partition 0 has a leader among the nodes: {before:?}"));
    kafka.kill(victim).await.expect("kill -9 of the leader");
    let published_at_kill = mall.order_node.published();

    // Another node leads, and the relay publishes through it.
    let alive: Vec<String> = (0..kafka.len())
        .filter(|&i| i != victim)
        .filter_map(|i| kafka.broker_port(i))
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let alive = alive.join(",");
    wait_for("a new leader of partition 0", CLUSTER_PATIENCE, || {
        let (alive, topics) = (alive.clone(), order_events.clone());
        async move {
            let now = view::partitions(&alive, &topics).await.ok()?;
            now.iter()
                .any(|p| p.partition == 0 && p.leader >= 0 && p.leader != leader)
                .then_some(())
        }
    })
    .await;
    wait_for(
        "the order relay to publish through the new leaders",
        CLUSTER_PATIENCE,
        || {
            let published = mall.order_node.published();
            async move { (published > published_at_kill).then_some(()) }
        },
    )
    .await;

    // The node comes back; the orders stop once it is listed again.
    kafka.restart(victim).await.expect("the node restarts");
    flowing.cancel();
    let mut ids = Vec::new();
    while let Some(placed) = placers.join_next().await {
        ids.extend(placed.expect("a placing client"));
    }
    for id in &ids {
        let order = mall.settled(*id).await;
        assert_eq!(
            order.status(),
            OrderStatus::Approved,
            "order {id} ({order:?}): stock was plenty"
        );
    }
    let stock = mall.stock(product.id).await;
    let ordered = i64::try_from(ids.len()).expect("a count");
    assert_eq!(stock, STOCK - ordered, "each order took one unit, once");
    mall.assert_invariants(&[(product.id, STOCK)]).await;
    assert_eq!(
        mall.dead_lettered(),
        0,
        "a broker fail-over dead-letters nothing"
    );
    // And its replicas caught up: every partition's ISR is whole again.
    let topics = mall.topics.events();
    wait_for("every replica back in sync", CLUSTER_PATIENCE, || {
        let (brokers, topics) = (brokers.clone(), topics.clone());
        async move {
            let now = view::partitions(&brokers, &topics).await.ok()?;
            (!now.is_empty() && now.iter().all(|p| !p.under_replicated())).then_some(())
        }
    })
    .await;

    mall.stop().await;
    kafka.kill_all().await.expect("the cluster ends");
    std::fs::remove_dir_all(&dir).ok();
}
