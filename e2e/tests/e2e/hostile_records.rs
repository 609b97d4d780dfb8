//! No single record can stop a partition: a value the database could not
//! store, a record too large to dead-letter whole, an event on a topic
//! whose owner does not publish it. Each is dead-lettered (truncated where
//! the whole copy would be too large) and every order placed afterwards
//! settles.

use std::time::Duration;

use mall_e2e::kafka::{EventRecord, Record, inject, read_topic};
use mall_e2e::mall::PARTITIONS;
use mall_e2e::spawn_mall;
use mall_proto::delivery::v1::{DeliveryCancelled, DeliveryFailed, DeliveryStarted};
use mall_proto::inventory::v1::StockDecreaseFailed;
use mall_proto::order::v1::{OrderCreated, OrderRejected, OrderStatus};
use mall_saga::Service;
use rdkafka::producer::FutureProducer;

/// A producer that may send records up to the broker's own limit (about
/// 1 MiB), past the 1,000,000 bytes the mall's producers allow themselves.
fn big_producer(brokers: &str) -> FutureProducer {
    platform_service::kafka::client_config(brokers)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "2000000")
        .create()
        .expect("test producer")
}

fn created(order_id: i64) -> OrderCreated {
    OrderCreated {
        order_id,
        customer_id: 1,
        product_id: 1,
        product_name: "TV".into(),
        qty: 1,
        address: "Seoul".into(),
    }
}

/// One hostile record: where it goes, and whose dead-letter topic must get it.
struct Hostile {
    what: &'static str,
    topic: String,
    record: Record,
    dead_letters_at: Service,
    truncated: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_are_dead_lettered_and_every_later_order_settles() {
    let mall = spawn_mall().await;
    let producer = big_producer(&mall.brokers);
    let (orders, deliveries, stock) = (
        mall.topics.order_events(),
        mall.topics.delivery_events(),
        mall.topics.inventory_events(),
    );
    let hostile = |what, topic: &String, record, dead_letters_at, truncated| Hostile {
        what,
        topic: topic.clone(),
        record,
        dead_letters_at,
        truncated,
    };
    let nul = "a\0b".to_owned();
    let with_padding = |mut record: Record| {
        // One header of 1,000,000 bytes: the record fits the broker (about
        // 1 MiB), its dead letter does not fit the consumer's producer.
        record
            .headers
            .push(("x-padding".into(), vec![b'p'; 1_000_000]));
        record
    };
    // Valid in every field, but a delivery event, sent on the inventory
    // topic with the inventory's source, as a careless or hostile inventory
    // producer could.
    let mut forged = Record::event(
        910_012,
        &DeliveryCancelled {
            order_id: 910_012,
            product_id: 1,
            qty: 1,
        },
    );
    for (name, value) in &mut forged.headers {
        if name == "ce_source" {
            *value = Service::Inventory.source().as_bytes().to_vec();
        }
    }
    let records = vec![
        hostile(
            "a NUL in OrderCreated.product_name",
            &orders,
            Record::event(
                910_001,
                &OrderCreated {
                    product_name: nul.clone(),
                    ..created(910_001)
                },
            ),
            Service::Delivery,
            false,
        ),
        hostile(
            "a NUL in OrderCreated.address",
            &orders,
            Record::event(
                910_002,
                &OrderCreated {
                    address: nul.clone(),
                    ..created(910_002)
                },
            ),
            Service::Delivery,
            false,
        ),
        hostile(
            "a NUL in OrderRejected.reason",
            &orders,
            Record::event(
                910_003,
                &OrderRejected {
                    order_id: 910_003,
                    reason: nul.clone(),
                },
            ),
            Service::Delivery,
            false,
        ),
        hostile(
            "a NUL in DeliveryStarted.address",
            &deliveries,
            Record::event(
                910_004,
                &DeliveryStarted {
                    order_id: 910_004,
                    product_id: 1,
                    qty: 1,
                    customer_id: 1,
                    address: nul.clone(),
                },
            ),
            Service::Inventory,
            false,
        ),
        hostile(
            "a NUL in DeliveryFailed.reason",
            &deliveries,
            Record::event(
                910_005,
                &DeliveryFailed {
                    order_id: 910_005,
                    reason: nul.clone(),
                },
            ),
            Service::Order,
            false,
        ),
        hostile(
            "a NUL in StockDecreaseFailed.reason",
            &stock,
            Record::event(
                910_006,
                &StockDecreaseFailed {
                    order_id: 910_006,
                    product_id: 1,
                    qty: 1,
                    reason: nul,
                },
            ),
            Service::Order,
            false,
        ),
        hostile(
            "a reason of 1 MB in StockDecreaseFailed",
            &stock,
            Record::event(
                910_007,
                &StockDecreaseFailed {
                    order_id: 910_007,
                    product_id: 1,
                    qty: 1,
                    reason: "x".repeat(1_000_000),
                },
            ),
            Service::Order,
            true,
        ),
        hostile(
            "a quantity past the contract (a numeric overflow in waiting)",
            &orders,
            Record::event(
                910_008,
                &OrderCreated {
                    qty: i64::MAX,
                    ..created(910_008)
                },
            ),
            Service::Delivery,
            false,
        ),
        hostile(
            "a key of 180 KB of control bytes",
            &orders,
            Record {
                key: Some(vec![1; 180_000]),
                ..Record::event(910_009, &created(910_009))
            },
            Service::Delivery,
            false,
        ),
        hostile(
            "a value of 1,000,000 bytes",
            &orders,
            Record {
                payload: Some(vec![0xff; 1_000_000]),
                ..Record::event(910_010, &created(910_010))
            },
            Service::Delivery,
            true,
        ),
        hostile(
            "a header of 1,000,000 bytes (and a quantity of 0)",
            &orders,
            with_padding(Record::event(
                910_011,
                &OrderCreated {
                    qty: 0,
                    ..created(910_011)
                },
            )),
            Service::Delivery,
            true,
        ),
        hostile(
            "a delivery event on the inventory topic, from the inventory source",
            &stock,
            forged,
            Service::Order,
            false,
        ),
    ];
    for hostile in &records {
        inject(&producer, &hostile.topic, &hostile.record).await;
    }

    // Orders placed after them, on every partition, all settle.
    let tv = mall.product("TV", 100).await;
    let mut placed = Vec::new();
    for _ in 0..9 {
        placed.push(mall.place(&tv, 1, "Seoul").await);
    }
    for order in &placed {
        assert_eq!(
            mall.settled(order.id).await.status(),
            OrderStatus::Approved,
            "order {} settles after the hostile records",
            order.id
        );
    }
    mall.quiesce().await;

    for service in Service::ALL {
        let expected: Vec<&Hostile> = records
            .iter()
            .filter(|h| h.dead_letters_at == service)
            .collect();
        let dlq = mall.topics.dead_letters_of(service);
        let dead = read_topic(
            &mall.brokers,
            &dlq,
            PARTITIONS,
            expected.len(),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            dead.len(),
            expected.len(),
            "{dlq} holds exactly: {:?}; it holds: {:?}",
            expected.iter().map(|h| h.what).collect::<Vec<_>>(),
            dead.iter()
                .map(|r| (
                    r.key_str().chars().take(40).collect::<String>(),
                    r.header("dlq_error")
                ))
                .collect::<Vec<_>>()
        );
        for hostile in expected {
            let from_its_topic =
                |r: &&Record| r.header("dlq_original_topic") == Some(hostile.topic.as_str());
            let key = hostile.record.key.as_deref().unwrap_or_default();
            let copy = dead
                .iter()
                .filter(from_its_topic)
                .find(|r| {
                    r.key.as_deref() == Some(key)
                        || r.key_str()
                            .starts_with(&format!("{} bytes, sha256 ", key.len()))
                })
                .unwrap_or_else(|| panic!("{}: no dead letter in {dlq}", hostile.what));
            let reason = copy.header("dlq_error").unwrap_or_default();
            assert!(
                !reason.is_empty() && reason.len() <= 1_100,
                "{}: a short reason, got {} bytes",
                hostile.what,
                reason.len()
            );
            assert!(
                !reason.contains('\0') && !reason.contains('\u{1}'),
                "{reason}"
            );
            assert_eq!(
                copy.header("dlq_truncated") == Some("true"),
                hostile.truncated,
                "{}: truncated as expected",
                hostile.what
            );
            if hostile.truncated {
                assert!(copy.payload.as_deref().unwrap_or_default().is_empty());
                assert!(
                    copy.header("dlq_original_payload_sha256")
                        .is_some_and(|h| h.len() == 64)
                );
            }
        }
    }

    // Nothing acted on any of them, and nothing was stepped over.
    for order_id in 910_001..=910_012 {
        assert!(mall.delivery(order_id).await.is_none(), "order {order_id}");
    }
    let nodes = [&mall.order_node, &mall.delivery_node, &mall.inventory_node];
    let stepped_over: u64 = nodes.iter().map(|n| n.total(|s| &s.undeliverable)).sum();
    assert_eq!(stepped_over, 0, "every dead letter was sent");
    let truncated: u64 = nodes.iter().map(|n| n.total(|s| &s.truncated)).sum();
    assert_eq!(truncated, 3);
    mall.stop().await;
}
