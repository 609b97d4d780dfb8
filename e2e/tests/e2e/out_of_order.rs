//! Compensation before action: when a compensation reaches a consumer before
//! the action it undoes, the tombstone it leaves in the service's own state
//! (a cancelled delivery, a never-taken reservation) stops the late action.

use std::time::Duration;

use mall_e2e::kafka::{EventRecord, Record, inject, producer, read_topic};
use mall_e2e::mall::PARTITIONS;
use mall_e2e::{Mall, spawn_mall};
use mall_proto::delivery::v1::{DeliveryCancelled, DeliveryStarted, DeliveryStatus};
use mall_proto::inventory::v1::Inventory;
use mall_proto::order::v1::{OrderCancelled, OrderCreated};

/// Places a real order and checks that `topic` carries its events and no
/// others: the real order proves the topic was read past the injected ones.
async fn only_a_real_order_is_on(mall: &Mall, product: &Inventory, topic: &str) -> i64 {
    let real = mall.place(product, 1, "Seoul").await;
    mall.settled(real.id).await;
    mall.quiesce().await;
    let emitted = read_topic(&mall.brokers, topic, PARTITIONS, 1, Duration::from_secs(20)).await;
    let keys: Vec<&str> = emitted.iter().map(|r| r.key_str()).collect();
    assert_eq!(
        keys,
        [real.id.to_string()],
        "nothing but the real order on {topic}"
    );
    real.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_is_not_taken_after_its_cancellation_arrived() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let producer = producer(&mall.brokers);
    let topic = mall.topics.delivery_events();
    let order_id = 500;
    let applied = || mall.inventory_node.total(|s| &s.applied);

    let cancelled = DeliveryCancelled {
        order_id,
        product_id: tv.id,
        qty: 3,
    };
    inject(&producer, &topic, &Record::event(order_id, &cancelled)).await;
    mall.eventually("the cancellation to be recorded", || async {
        (applied() >= 1).then_some(())
    })
    .await;
    let started = DeliveryStarted {
        order_id,
        product_id: tv.id,
        qty: 3,
        customer_id: 1,
        address: "Seoul".into(),
    };
    inject(&producer, &topic, &Record::event(order_id, &started)).await;
    mall.eventually("the late action to be handled", || async {
        (applied() >= 2).then_some(())
    })
    .await;

    assert_eq!(
        mall.stock(tv.id).await,
        10,
        "the late DeliveryStarted took no stock"
    );

    let real = only_a_real_order_is_on(&mall, &tv, &mall.topics.inventory_events()).await;
    assert_eq!(
        mall.stock(tv.id).await,
        9,
        "the real order {real} took its stock"
    );
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_does_not_start_after_the_order_was_cancelled() {
    let mall = spawn_mall().await;
    let producer = producer(&mall.brokers);
    let topic = mall.topics.order_events();
    let order_id = 600;
    let applied = || mall.delivery_node.total(|s| &s.applied);

    inject(
        &producer,
        &topic,
        &Record::event(order_id, &OrderCancelled { order_id }),
    )
    .await;
    mall.eventually("the cancellation to be recorded", || async {
        (applied() >= 1).then_some(())
    })
    .await;
    let created = OrderCreated {
        order_id,
        customer_id: 1,
        product_id: 1,
        product_name: "TV".into(),
        qty: 1,
        address: "Seoul".into(),
    };
    let tombstone = mall.delivery(order_id).await.expect("a tombstone");
    assert_eq!(tombstone.status(), DeliveryStatus::Cancelled);
    assert_eq!(tombstone.qty, 0, "the order's details are not known yet");
    inject(&producer, &topic, &Record::event(order_id, &created)).await;
    mall.eventually("the late OrderCreated to be handled", || async {
        (applied() >= 2).then_some(())
    })
    .await;
    let delivery = mall.delivery(order_id).await.expect("delivery");
    assert_eq!(
        delivery.status(),
        DeliveryStatus::Cancelled,
        "it never started"
    );
    assert_eq!(
        (delivery.product_id, delivery.qty, delivery.address.as_str()),
        (1, 1, "Seoul"),
        "the late OrderCreated filled in the order's details"
    );

    let tv = mall.product("TV", 5).await;
    only_a_real_order_is_on(&mall, &tv, &mall.topics.delivery_events()).await;
    mall.stop().await;
}
