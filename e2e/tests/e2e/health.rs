//! Health tells the truth: `NOT_SERVING` while a service's database or its
//! broker has been gone for longer than the threshold, `SERVING` again when
//! it returns, and `NOT_SERVING` through the shutdown grace period while
//! calls are still answered. (A dead background task: see
//! `crash_consumer.rs`.)

use mall_e2e::mall::{SETTLE_DEADLINE, health, service_args};
use mall_e2e::scrape::get;
use mall_e2e::{postgres, spawn_mall_with, unique_name, wait_for};
use mall_proto::order::v1::OrderStatus;
use mall_testkit::{Kafka, KafkaSpec};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_reported_and_its_end_too() {
    let mall = spawn_mall_with(|args| {
        args.observability.health_unavailable_after = Duration::from_secs(2)
    })
    .await;
    let delivery = mall.delivery_node.addr;
    for service in ["", "mall.delivery.v1.DeliveryService"] {
        assert_eq!(health(delivery, service).await, ServingStatus::Serving);
    }
    // The same verdict on the plaintext metrics endpoint, for probes that
    // cannot speak gRPC over TLS.
    let plain = mall.delivery_node.metrics[0];
    assert_eq!(get(plain, "/health").await.0, 200);

    postgres::set_reachable(&mall.delivery_node.database_url, false).await;
    mall.eventually("delivery to report NOT_SERVING", || async {
        (health(delivery, "mall.delivery.v1.DeliveryService").await == ServingStatus::NotServing)
            .then_some(())
    })
    .await;
    assert_eq!(health(delivery, "").await, ServingStatus::NotServing);
    let (status, _, why) = get(plain, "/health").await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("database"), "{why}");
    assert_eq!(
        health(mall.order_node.addr, "").await,
        ServingStatus::Serving,
        "only the service whose database is gone"
    );

    postgres::set_reachable(&mall.delivery_node.database_url, true).await;
    mall.eventually("delivery to report SERVING again", || async {
        (health(delivery, "").await == ServingStatus::Serving).then_some(())
    })
    .await;
    assert_eq!(get(plain, "/health").await.0, 200);
    let tv = mall.product("TV", 5).await;
    let order = mall.place(&tv, 1, "Seoul").await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    mall.quiesce().await;
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_not_serving_while_calls_are_still_answered() {
    platform_service::telemetry::init();
    let prefix = unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let mut args = service_args(&database, &mall_e2e::mall::brokers(), &prefix);
    // As long as every other liveness bound of the suite, so the checks
    // below need no more time than they get anywhere else.
    args.shutdown_grace = SETTLE_DEADLINE;
    let shutdown = CancellationToken::new();
    let running = order_service::start(&args, shutdown.clone())
        .await
        .expect("order service starts");
    let addr = running.grpc_addr;
    assert_eq!(health(addr, "").await, ServingStatus::Serving);

    shutdown.cancel();
    // Each answer comes from the still-running server.
    wait_for(
        "NOT_SERVING during the grace period",
        SETTLE_DEADLINE,
        || async {
            (health(addr, "mall.order.v1.OrderService").await == ServingStatus::NotServing)
                .then_some(())
        },
    )
    .await;
    let placed = mall_e2e::mall::place_at(addr).await;
    assert_eq!(
        placed.status(),
        OrderStatus::Pending,
        "calls are still served"
    );
    tokio::time::timeout(SETTLE_DEADLINE * 2, running.wait())
        .await
        .expect("the service stops after the grace period")
        .expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_reported_and_its_end_too() {
    platform_service::telemetry::init();
    // A broker of this test's own, so stopping it disturbs no other test.
    let dir = std::env::temp_dir().join(unique_name("mall-broker-"));
    let mut broker = Kafka::start(KafkaSpec::new(&dir, 1))
        .await
        .expect("a Kafka node of this test's own");
    let prefix = unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let mut args = service_args(&database, &broker.bootstrap(), &prefix);
    args.observability.health_unavailable_after = Duration::from_secs(2);
    let shutdown = CancellationToken::new();
    let running = order_service::start(&args, shutdown.clone())
        .await
        .expect("the order service starts");
    let addr = running.grpc_addr;
    assert_eq!(health(addr, "").await, ServingStatus::Serving);

    broker.kill(0).await.expect("kill -9 of the broker");
    wait_for("NOT_SERVING without a broker", SETTLE_DEADLINE, || async {
        (health(addr, "").await == ServingStatus::NotServing).then_some(())
    })
    .await;
    broker
        .restart(0)
        .await
        .expect("the broker starts again on its ports");
    wait_for(
        "SERVING once the broker is back",
        SETTLE_DEADLINE,
        || async { (health(addr, "").await == ServingStatus::Serving).then_some(()) },
    )
    .await;
    shutdown.cancel();
    running.wait().await.expect("a clean stop");
    std::fs::remove_dir_all(&dir).ok();
}
