//! An inbox key taken by a different event is reported, not swallowed: a
//! record whose `(order_id, event_type)` was already applied under another
//! `ce_id` is neither applied nor dropped, but dead-lettered with both ids.

use std::time::Duration;

use mall_e2e::kafka::{EventRecord, Record, first_of_type, inject, producer, read_topic};
use mall_e2e::mall::PARTITIONS;
use mall_e2e::spawn_mall;
use mall_proto::order::v1::{OrderCreated, OrderStatus};
use platform_service::cloudevents as ce;
use platform_service::dead_letter::ERROR_HEADER;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_inbox_key_is_dead_lettered_with_both_event_ids() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 5).await;
    let order = mall.place(&tv, 2, "Seoul").await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    mall.quiesce().await;
    let before = mall.snapshot().await;
    let applied_before = mall.delivery_node.total(|s| &s.applied);

    // The original OrderCreated, as the delivery inbox recorded it.
    let topic = mall.topics.order_events();
    let original = first_of_type(&mall.brokers, &topic, "mall.order.v1.OrderCreated").await;
    let original_id = original.header(ce::ID).expect("ce_id").to_owned();

    // Another event under the same key, as after an order database was
    // restored from an old backup and handed out the id again.
    let impostor = Record::event(
        order.id,
        &OrderCreated {
            order_id: order.id,
            customer_id: 99,
            product_id: tv.id,
            product_name: tv.product_name.clone(),
            qty: 1,
            address: "Busan".into(),
        },
    );
    let impostor_id = impostor.header(ce::ID).expect("ce_id").to_owned();
    assert_ne!(impostor_id, original_id);
    inject(&producer(&mall.brokers), &topic, &impostor).await;

    let dlq = mall.topics.dead_letters_of(mall_saga::Service::Delivery);
    let dead = read_topic(&mall.brokers, &dlq, PARTITIONS, 1, Duration::from_secs(30)).await;
    assert_eq!(
        dead.len(),
        1,
        "the impostor is dead-lettered once: {dead:?}"
    );
    let reason = dead[0].header(ERROR_HEADER).expect("reason");
    assert!(
        reason.contains(&original_id) && reason.contains(&impostor_id),
        "the reason names both events: {reason}"
    );
    assert_eq!(dead[0].header(ce::ID), Some(impostor_id.as_str()));
    mall.quiesce().await;
    assert_eq!(
        mall.delivery_node.total(|s| &s.applied),
        applied_before,
        "the impostor was not applied"
    );
    assert_eq!(mall.snapshot().await, before, "nothing changed");
    mall.stop().await;
}
