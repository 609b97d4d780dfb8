//! Crash point: a consumer dies after its transaction committed but before
//! it stored the offset. The record is redelivered to the next group member,
//! and the inbox rejects it. The service whose consumer died reports
//! `NOT_SERVING` and stops with a failure naming the task, as a process
//! would exit for its orchestrator to restart it. Its own test binary,
//! since failpoints are process-wide.

use mall_e2e::mall::health;
use mall_e2e::spawn_mall;
use mall_proto::delivery::v1::DeliveryStatus;
use mall_proto::order::v1::OrderStatus;
use mall_saga::Service;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_crash_between_commit_and_offset_redelivers_into_the_inbox() {
    fail::cfg("consumer::after-commit-before-offset", "1*return").expect("failpoint");
    let mut mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    // The delivery consumer applies OrderCreated, commits, and dies.
    let order = mall.place(&tv, 4, "Seoul").await;
    // What it committed still flows on: the saga settles without it.
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    assert_eq!(
        mall.delivery_node.total(|s| &s.applied),
        1,
        "the crashed consumer applied OrderCreated once"
    );

    let crashed = mall.delivery_node.addr;
    mall.eventually("the crashed replica to report NOT_SERVING", || async {
        (health(crashed, "").await == ServingStatus::NotServing).then_some(())
    })
    .await;
    assert_eq!(
        health(mall.order_node.addr, "").await,
        ServingStatus::Serving,
        "the other services are unaffected"
    );

    // A new group member gets the partition back from the last committed
    // offset, so the record is delivered again; the inbox rejects it.
    mall.add_replica(Service::Delivery).await;
    mall.eventually("the redelivered record to be rejected", || async {
        (mall.delivery_node.total(|s| &s.duplicates) >= 1).then_some(())
    })
    .await;
    mall.quiesce().await;
    assert_eq!(
        mall.delivery_node.total(|s| &s.applied),
        1,
        "nothing applied twice"
    );
    let delivery = mall.delivery(order.id).await.expect("delivery");
    assert_eq!(delivery.status(), DeliveryStatus::Started);
    assert_eq!(mall.stock(tv.id).await, 6, "stock taken once");
    mall.assert_invariants(&[(tv.id, 10)]).await;
    let failures = mall.finish().await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("consumer"), "{failures:?}");
}
