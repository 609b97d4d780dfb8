//! Every saga path of docs/saga.md, end to end, with its final states.

use mall_e2e::kafka::read_topic;
use mall_e2e::mall::PARTITIONS;
use mall_e2e::spawn_mall;
use mall_proto::delivery::v1::DeliveryStatus;
use mall_proto::order::v1::{CancelOrderRequest, OrderStatus};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_approves_starts_delivery_and_takes_stock() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let order = mall.place(&tv, 3, "Seoul").await;
    assert_eq!(order.status(), OrderStatus::Pending);

    let settled = mall.settled(order.id).await;
    assert_eq!(settled.status(), OrderStatus::Approved);
    assert_eq!(mall.stock(tv.id).await, 7);
    let delivery = mall.delivery(order.id).await.expect("delivery exists");
    assert_eq!(delivery.status(), DeliveryStatus::Started);
    assert_eq!((delivery.qty, delivery.product_id), (3, tv.id));
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_stock_is_enough() {
    // stock == qty must succeed (docs/saga.md, mistake 6).
    let mall = spawn_mall().await;
    let radio = mall.product("RADIO", 2).await;
    let order = mall.place(&radio, 2, "Busan").await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    assert_eq!(mall.stock(radio.id).await, 0);
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_stock_runs_the_compensation_chain_visible_on_the_topics() {
    let mall = spawn_mall().await;
    let radio = mall.product("RADIO", 1).await;
    let order = mall.place(&radio, 5, "Busan").await;

    let settled = mall.settled(order.id).await;
    assert_eq!(settled.status(), OrderStatus::Rejected);
    assert!(
        settled.reason.contains("insufficient stock"),
        "reason: {}",
        settled.reason
    );
    let delivery = mall
        .eventually("delivery to be cancelled", || async {
            mall.delivery(order.id)
                .await
                .filter(|d| d.status() == DeliveryStatus::Cancelled)
        })
        .await;
    assert_eq!(
        (
            delivery.product_id,
            delivery.qty,
            delivery.customer_id,
            delivery.address.as_str()
        ),
        (radio.id, 5, order.customer_id, "Busan"),
        "the delivery carries the order's details"
    );
    mall.quiesce().await;
    assert_eq!(mall.stock(radio.id).await, 1, "stock unchanged");

    // Read the three topics back and merge the chain of this order by ce_time.
    let wait = Duration::from_secs(30);
    let mut chain = Vec::new();
    for (topic, expected) in [
        (mall.topics.order_events(), 2),
        (mall.topics.delivery_events(), 2),
        (mall.topics.inventory_events(), 1),
    ] {
        let records = read_topic(&mall.brokers, &topic, PARTITIONS, expected, wait).await;
        assert_eq!(records.len(), expected, "records on {topic}");
        chain.extend(records);
    }
    let key = order.id.to_string();
    // The wire contract, by its literal names (not the constants that make it).
    for record in &chain {
        assert_eq!(record.key_str(), key);
        assert_eq!(record.header("ce_specversion"), Some("1.0"));
        assert_eq!(record.header("ce_subject"), Some(key.as_str()));
        assert_eq!(record.header("content-type"), Some("application/protobuf"));
        let id = record.header("ce_id").expect("ce_id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "ce_id {id} is a UUID");
        assert!(
            record
                .header("ce_source")
                .is_some_and(|s| s.starts_with("/mall/"))
        );
        assert!(record.header("ce_time").is_some_and(|t| t.ends_with('Z')));
    }
    chain.sort_by(|a, b| a.header("ce_time").cmp(&b.header("ce_time")));
    let types: Vec<&str> = chain.iter().filter_map(|r| r.header("ce_type")).collect();
    assert_eq!(
        types,
        [
            "mall.order.v1.OrderCreated",
            "mall.delivery.v1.DeliveryStarted",
            "mall.inventory.v1.StockDecreaseFailed",
            "mall.order.v1.OrderRejected",
            "mall.delivery.v1.DeliveryCancelled",
        ]
    );
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_product_is_rejected_not_left_pending() {
    let mall = spawn_mall().await;
    let ghost = mall_proto::inventory::v1::Inventory {
        id: 987_654,
        product_name: "GHOST".into(),
        stock: 0,
    };
    let order = mall.place(&ghost, 1, "Incheon").await;
    let settled = mall.settled(order.id).await;
    assert_eq!(settled.status(), OrderStatus::Rejected);
    assert!(
        settled.reason.contains("unknown product"),
        "reason: {}",
        settled.reason
    );
    mall.eventually("delivery to be cancelled", || async {
        mall.delivery(order.id)
            .await
            .filter(|d| d.status() == DeliveryStatus::Cancelled)
    })
    .await;
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_address_fails_the_delivery_and_rejects_the_order() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let order = mall.place(&tv, 1, "   ").await;
    let settled = mall.settled(order.id).await;
    assert_eq!(settled.status(), OrderStatus::Rejected);
    assert!(
        settled.reason.contains("address"),
        "reason: {}",
        settled.reason
    );
    let delivery = mall.delivery(order.id).await.expect("delivery recorded");
    assert_eq!(delivery.status(), DeliveryStatus::Failed);
    mall.quiesce().await;
    assert_eq!(mall.stock(tv.id).await, 10);
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_approved_order_gives_the_stock_back_once() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let order = mall.place(&tv, 4, "Seoul").await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    assert_eq!(mall.stock(tv.id).await, 6);

    let mut client = mall.order.clone();
    let cancelled = client
        .cancel_order(CancelOrderRequest {
            id: order.id,
            request_id: String::new(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    // Cancelling again is a no-op, not a second compensation.
    let again = client
        .cancel_order(CancelOrderRequest {
            id: order.id,
            request_id: String::new(),
        })
        .await
        .expect("cancel twice")
        .into_inner();
    assert_eq!(again.status(), OrderStatus::Cancelled);

    mall.eventually("stock to come back", || async {
        (mall.stock(tv.id).await == 10).then_some(())
    })
    .await;
    mall.quiesce().await;
    assert_eq!(mall.stock(tv.id).await, 10);
    let delivery = mall.delivery(order.id).await.expect("delivery");
    assert_eq!(delivery.status(), DeliveryStatus::Cancelled);
    let increases = read_topic(
        &mall.brokers,
        &mall.topics.inventory_events(),
        PARTITIONS,
        2,
        Duration::from_secs(20),
    )
    .await
    .into_iter()
    .filter(|r| r.header("ce_type") == Some("mall.inventory.v1.StockIncreased"))
    .count();
    assert_eq!(increases, 1, "exactly one StockIncreased");
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_pending_order_leaves_stock_untouched_in_the_end() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let order = mall.place(&tv, 2, "Seoul").await;
    let cancelled = mall
        .order
        .clone()
        .cancel_order(CancelOrderRequest {
            id: order.id,
            request_id: String::new(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    mall.eventually("delivery to be cancelled", || async {
        mall.delivery(order.id)
            .await
            .filter(|d| d.status() == DeliveryStatus::Cancelled)
    })
    .await;
    mall.quiesce().await;
    assert_eq!(mall.stock(tv.id).await, 10);
    assert_eq!(
        mall.get_order(order.id).await.status(),
        OrderStatus::Cancelled
    );
    mall.stop().await;
}
