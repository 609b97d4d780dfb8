//! Compensation before action: when a compensation reaches a consumer before
//! the action it undoes, the inbox row it leaves stops the late action.

use std::sync::atomic::Ordering;
use std::time::Duration;

use mall_e2e::kafka::{Record, inject, producer, read_topic};
use mall_e2e::mall::PARTITIONS;
use mall_e2e::spawn_mall;
use mall_proto::delivery::v1::{DeliveryCancelled, DeliveryStarted, DeliveryStatus};
use mall_proto::order::v1::{OrderCancelled, OrderCreated};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_is_not_taken_after_its_cancellation_arrived() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let producer = producer(&mall.brokers);
    let topic = mall.topics.delivery_events();
    let order_id = 500;
    let applied = || mall.inventory_node.stats.applied.load(Ordering::Relaxed);

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

    // A real order afterwards proves the topic is being read past that point.
    let real = mall.place(&tv, 1, "Seoul").await;
    mall.settled(real.id).await;
    mall.quiesce().await;
    assert_eq!(mall.stock(tv.id).await, 9);
    let emitted = read_topic(
        &mall.brokers,
        &mall.topics.inventory_events(),
        PARTITIONS,
        1,
        Duration::from_secs(20),
    )
    .await;
    let keys: Vec<&str> = emitted.iter().map(|r| r.key_str()).collect();
    assert_eq!(
        keys,
        [real.id.to_string()],
        "inventory emitted nothing for the cancelled order"
    );
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_does_not_start_after_the_order_was_cancelled() {
    let mall = spawn_mall().await;
    let producer = producer(&mall.brokers);
    let topic = mall.topics.order_events();
    let order_id = 600;
    let applied = || mall.delivery_node.stats.applied.load(Ordering::Relaxed);

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
    inject(&producer, &topic, &Record::event(order_id, &created)).await;
    let delivery = mall
        .eventually("the late OrderCreated to be handled", || async {
            mall.delivery(order_id).await
        })
        .await;
    assert_eq!(delivery.status(), DeliveryStatus::Cancelled);

    // A real order afterwards proves the topic is being read past that point.
    let tv = mall.product("TV", 5).await;
    let real = mall.place(&tv, 1, "Seoul").await;
    mall.settled(real.id).await;
    mall.quiesce().await;
    let emitted = read_topic(
        &mall.brokers,
        &mall.topics.delivery_events(),
        PARTITIONS,
        1,
        Duration::from_secs(20),
    )
    .await;
    let keys: Vec<&str> = emitted.iter().map(|r| r.key_str()).collect();
    assert_eq!(
        keys,
        [real.id.to_string()],
        "no DeliveryStarted for the cancelled order"
    );
    mall.stop().await;
}
