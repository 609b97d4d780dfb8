//! Poison records go to the dead-letter topic and the consumer carries on;
//! so does a valid event whose `ce_source` is not the topic's owner.

use std::time::Duration;

use mall_e2e::kafka::{Record, inject, producer, read_topic};
use mall_e2e::mall::PARTITIONS;
use mall_e2e::spawn_mall;
use mall_proto::order::v1::OrderStatus;
use mall_saga::Service;
use platform_service::cloudevents as ce;

/// The `ce_source` of the order topic's owner.
const OWNER: &str = Service::Order.source();

fn record(key: &str, payload: &[u8], headers: &[(&str, &str)]) -> Record {
    Record {
        topic: String::new(),
        partition: 0,
        offset: 0,
        key: Some(key.as_bytes().to_vec()),
        payload: Some(payload.to_vec()),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect(),
    }
}

fn ce_headers<'a>(event_type: &'a str, key: &'a str, source: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (ce::SPECVERSION, ce::SPEC_VERSION),
        (ce::ID, "6f1a9a5e-2b1c-4a57-9c7c-1f2d3e4a5b6c"),
        (ce::SOURCE, source),
        (ce::TYPE, event_type),
        (ce::SUBJECT, key),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_and_later_records_are_processed() {
    let mall = spawn_mall().await;
    let producer = producer(&mall.brokers);
    let order_topic = mall.topics.order_events();
    let poisons = [
        // Garbage bytes, no headers at all.
        record("900001", b"\xff\x00garbage", &[]),
        // A well-formed envelope of an unknown event type.
        record(
            "900002",
            b"",
            &ce_headers("mall.order.v1.OrderExploded", "900002", OWNER),
        ),
        // A known type whose payload is not that message.
        record(
            "900003",
            b"\xff\xff\xff\xff",
            &ce_headers("mall.order.v1.OrderCreated", "900003", OWNER),
        ),
        // A valid payload whose order id contradicts the key.
        record(
            "900004",
            &prost::Message::encode_to_vec(&mall_proto::order::v1::OrderCreated {
                order_id: 900_005,
                ..Default::default()
            }),
            &ce_headers("mall.order.v1.OrderCreated", "900004", OWNER),
        ),
        // A valid event, but not from the service that owns the topic.
        record(
            "900005",
            &prost::Message::encode_to_vec(&mall_proto::order::v1::OrderCreated {
                order_id: 900_005,
                product_id: 1,
                product_name: "TV".into(),
                qty: 1,
                address: "Seoul".into(),
                ..Default::default()
            }),
            &ce_headers("mall.order.v1.OrderCreated", "900005", "/impostor"),
        ),
    ];
    for poison in &poisons {
        inject(&producer, &order_topic, poison).await;
    }

    // The consumer carries on: a real order still goes through the saga, and
    // the delivery group commits past every poison record in every partition
    // (quiesce compares its committed offsets with the high watermarks).
    let tv = mall.product("TV", 3).await;
    let order = mall.place(&tv, 1, "Seoul").await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    mall.quiesce().await;

    let dlq = mall.topics.dead_letters_of(Service::Delivery);
    let dead = read_topic(
        &mall.brokers,
        &dlq,
        PARTITIONS,
        poisons.len(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        dead.len(),
        poisons.len(),
        "every poison record is dead-lettered once"
    );
    // The dead-letter headers are part of the contract: checked by their
    // literal names, not by the constants that write them.
    for record in &dead {
        assert_eq!(
            record.header("dlq_original_topic"),
            Some(order_topic.as_str())
        );
        assert!(
            record
                .header("dlq_original_offset")
                .is_some_and(|o| o.parse::<i64>().is_ok())
        );
        assert!(record.header("dlq_original_partition").is_some());
        assert!(
            record
                .header("dlq_consumer_group")
                .is_some_and(|g| g.ends_with(".delivery"))
        );
        assert!(record.header("dlq_error").is_some_and(|e| !e.is_empty()));
    }
    let mut keys: Vec<&str> = dead.iter().map(|r| r.key_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["900001", "900002", "900003", "900004", "900005"]);
    let impostor = dead
        .iter()
        .find(|r| r.key_str() == "900005")
        .expect("impostor record");
    assert!(
        impostor
            .header("dlq_error")
            .is_some_and(|e| e.contains("ce_source") && e.contains("/impostor")),
        "{:?}",
        impostor.header("dlq_error")
    );
    assert!(
        mall.delivery(900_005).await.is_none(),
        "nothing acted on the impostor"
    );
    let garbage = dead
        .iter()
        .find(|r| r.key_str() == "900001")
        .expect("garbage record");
    assert_eq!(
        garbage.payload.as_deref(),
        Some(&b"\xff\x00garbage"[..]),
        "bytes kept as they were"
    );
    mall.stop().await;
}
