//! Redelivery of already-delivered records, byte for byte, changes nothing:
//! the inbox rejects every duplicate, compensations included.

use std::time::Duration;

use mall_e2e::kafka::{inject, producer, read_topic};
use mall_e2e::mall::PARTITIONS;
use mall_e2e::spawn_mall;
use mall_proto::order::v1::{CancelOrderRequest, OrderStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinjected_records_change_nothing() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 5).await;
    let approved = mall.place(&tv, 2, "Seoul").await;
    let too_many = mall.place(&tv, 50, "Seoul").await;
    let blank = mall.place(&tv, 1, "").await;
    let to_cancel = mall.place(&tv, 1, "Daegu").await;
    assert_eq!(
        mall.settled(approved.id).await.status(),
        OrderStatus::Approved
    );
    assert_eq!(
        mall.settled(too_many.id).await.status(),
        OrderStatus::Rejected
    );
    assert_eq!(mall.settled(blank.id).await.status(), OrderStatus::Rejected);
    assert_eq!(
        mall.settled(to_cancel.id).await.status(),
        OrderStatus::Approved
    );
    mall.order
        .clone()
        .cancel_order(CancelOrderRequest {
            id: to_cancel.id,
            request_id: String::new(),
        })
        .await
        .expect("cancel");
    mall.quiesce().await;
    assert_eq!(mall.stock(tv.id).await, 3);
    let before = mall.snapshot().await;
    let consumed_before = mall.consumed();

    // Every record of every topic, re-sent twice: once in order, once reversed,
    // so compensations also arrive again before the actions they undo.
    let producer = producer(&mall.brokers);
    let mut injected = [0u64; 3]; // order, delivery, inventory topics
    let topics = [
        mall.topics.order_events(),
        mall.topics.delivery_events(),
        mall.topics.inventory_events(),
    ];
    for (n, topic) in topics.iter().enumerate() {
        let records =
            read_topic(&mall.brokers, topic, PARTITIONS, 1, Duration::from_secs(20)).await;
        assert!(!records.is_empty(), "{topic} has records");
        for record in records.iter().chain(records.iter().rev()) {
            inject(&producer, topic, record).await;
            injected[n] += 1;
        }
    }
    let [o, d, i] = injected;
    // order reads delivery + inventory topics; delivery reads order; inventory reads delivery.
    let expected = [
        consumed_before[0] + d + i,
        consumed_before[1] + o,
        consumed_before[2] + d,
    ];
    mall.eventually("every re-injected record to be handled", || async {
        let now = mall.consumed();
        (now.iter().zip(expected).all(|(n, e)| *n >= e)).then_some(())
    })
    .await;
    mall.quiesce().await;

    assert_eq!(
        mall.snapshot().await,
        before,
        "state changed after redelivery"
    );
    assert_eq!(mall.stock(tv.id).await, 3);
    let duplicates: u64 = [&mall.order_node, &mall.delivery_node, &mall.inventory_node]
        .iter()
        .map(|n| n.total(|s| &s.duplicates))
        .sum();
    assert!(duplicates > 0, "the inbox rejected the duplicates");
    let dead: u64 = [&mall.order_node, &mall.delivery_node, &mall.inventory_node]
        .iter()
        .map(|n| n.total(|s| &s.dead_lettered))
        .sum();
    assert_eq!(dead, 0, "a duplicate is not poison");
    mall.stop().await;
}
