//! Re-driving dead letters is safe both ways: a record whose event was
//! applied already changes nothing (the inbox rejects it), and a valid event
//! that was dead-lettered during an outage completes its saga.

use std::time::Duration;

use mall_dlq::{Selection, read_all, redrive};
use mall_e2e::kafka::{EventRecord, Record, first_of_type, inject, producer};
use mall_e2e::{postgres, spawn_mall, wait_for};
use mall_proto::order::v1::{OrderCreated, OrderStatus};
use platform_service::dead_letter::{
    ERROR_HEADER, GROUP_HEADER, OFFSET_HEADER, PARTITION_HEADER, TOPIC_HEADER,
};

/// `record` as the consumer of `group` would have dead-lettered it from `topic`.
fn dead_letter(record: &Record, topic: &str, group: &str, reason: &str) -> Record {
    let mut dead = record.clone();
    for (name, value) in [
        (ERROR_HEADER, reason.to_owned()),
        (TOPIC_HEADER, topic.to_owned()),
        (PARTITION_HEADER, record.partition.to_string()),
        (OFFSET_HEADER, record.offset.to_string()),
        (GROUP_HEADER, group.to_owned()),
    ] {
        dead.headers.push((name.to_owned(), value.into_bytes()));
    }
    dead
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redriving_is_safe_for_applied_events_and_completes_lost_ones() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let dlq = mall.topics.dead_letters_of(mall_saga::Service::Delivery);
    let order_topic = mall.topics.order_events();
    let group = format!("{}.delivery", order_topic.trim_end_matches(".order.events"));
    let kafka = producer(&mall.brokers);

    // 1. An event that was applied: its copy in the DLQ changes nothing.
    let applied = mall.place(&tv, 1, "Seoul").await;
    assert_eq!(
        mall.settled(applied.id).await.status(),
        OrderStatus::Approved
    );
    mall.quiesce().await;
    let original = first_of_type(&mall.brokers, &order_topic, "mall.order.v1.OrderCreated").await;
    inject(
        &kafka,
        &dlq,
        &dead_letter(&original, &order_topic, &group, "copied by hand"),
    )
    .await;

    // 2. A valid event dead-lettered during an outage (as an older version
    // did): its order exists and waits, its OrderCreated never got through.
    let order_db = postgres::connect(&mall.order_node.database_url).await;
    let lost_id: i64 = order_db
        .query_one(
            "INSERT INTO orders (customer_id, product_id, product_name, qty, address, status) \
             VALUES (7, $1, $2, 2, 'Busan', 'PENDING') RETURNING id",
            &[&tv.id, &tv.product_name],
        )
        .await
        .expect("a waiting order")
        .get(0);
    let lost = Record::event(
        lost_id,
        &OrderCreated {
            order_id: lost_id,
            customer_id: 7,
            product_id: tv.id,
            product_name: tv.product_name.clone(),
            qty: 2,
            address: "Busan".into(),
        },
    );
    inject(
        &kafka,
        &dlq,
        &dead_letter(
            &lost,
            &order_topic,
            &group,
            "database refused the event: read-only",
        ),
    )
    .await;

    let dead = read_all(&mall.brokers, &dlq).expect("read the DLQ");
    assert_eq!(dead.len(), 2, "{dead:?}");
    let before = mall.snapshot().await;
    let duplicates_before = mall.delivery_node.total(|s| &s.duplicates);

    // Re-drive the applied one, selected by order.
    let dlq_producer = mall_dlq::producer(&mall.brokers).expect("producer");
    let by_order = Selection {
        order: Some(applied.id.to_string()),
        ..Selection::default()
    };
    let chosen: Vec<_> = dead.iter().filter(|r| by_order.matches(r)).collect();
    assert_eq!(chosen.len(), 1);
    let to = redrive(&dlq_producer, chosen[0]).await.expect("redrive");
    assert_eq!(to.topic, order_topic);
    wait_for(
        "the inbox to reject the re-driven copy",
        Duration::from_secs(60),
        || async {
            (mall.delivery_node.total(|s| &s.duplicates) > duplicates_before).then_some(())
        },
    )
    .await;
    assert_eq!(
        mall.snapshot().await,
        before,
        "re-driving an applied event changed nothing"
    );

    // Re-drive the lost one, selected by reason: its saga completes.
    let by_reason = Selection {
        reason: Some("database refused".into()),
        ..Selection::default()
    };
    let chosen: Vec<_> = dead.iter().filter(|r| by_reason.matches(r)).collect();
    assert_eq!(chosen.len(), 1);
    redrive(&dlq_producer, chosen[0]).await.expect("redrive");
    assert_eq!(mall.settled(lost_id).await.status(), OrderStatus::Approved);
    assert_eq!(mall.stock(tv.id).await, 10 - 1 - 2);
    mall.quiesce().await;
    mall.assert_invariants(&[(tv.id, 10)]).await;
    mall.stop().await;
}
