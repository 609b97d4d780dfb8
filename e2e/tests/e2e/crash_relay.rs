//! Crash point: the relay dies after the broker acknowledged a batch but
//! before it marked the rows published. The next relay re-publishes the
//! batch, and the consumers' inboxes reject every copy: nothing is applied
//! twice. Its own test binary, since failpoints are process-wide.

use std::collections::HashMap;
use std::time::Duration;

use mall_e2e::kafka::read_topic;
use mall_e2e::mall::{PARTITIONS, SETTLE_DEADLINE};
use mall_e2e::{postgres, spawn_mall, wait_for};
use mall_proto::order::v1::{OrderCreated, OrderStatus};
use mall_saga::Service;
use platform_service::cloudevents as ce;
use prost::Name;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_crash_between_ack_and_mark_republishes_and_applies_once() {
    fail::cfg("relay::after-ack-before-mark", "1*return").expect("failpoint");
    let mut mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let mut orders = Vec::new();
    for qty in [1, 2, 3] {
        orders.push(mall.place(&tv, qty, "Seoul").await);
    }
    let order_db = mall.order_node.database_url.clone();
    let topic = mall.topics.order_events();

    // The order relay's first batch reaches the broker, then the relay dies.
    let acked = wait_for(
        "the first batch to reach the broker",
        SETTLE_DEADLINE,
        || async {
            let records = read_topic(
                &mall.brokers,
                &topic,
                PARTITIONS,
                1,
                Duration::from_secs(10),
            )
            .await;
            (!records.is_empty()).then_some(records)
        },
    )
    .await;
    // Every row the broker acknowledged is still unmarked in the database.
    let acked_ids: Vec<String> = acked
        .iter()
        .map(|r| format!("'{}'", r.header(ce::ID).expect("ce_id")))
        .collect();
    let still_unmarked = postgres::count(
        &order_db,
        &format!(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL AND event_id IN ({})",
            acked_ids.join(",")
        ),
    )
    .await;
    assert_eq!(
        still_unmarked,
        acked.len() as i64,
        "the crashed relay marked none of the rows the broker acknowledged"
    );

    // A new relay takes over and publishes the unmarked rows again.
    mall.add_relay(Service::Order).await;
    mall.quiesce().await;
    let records = read_topic(
        &mall.brokers,
        &topic,
        PARTITIONS,
        acked.len() + orders.len(),
        Duration::from_secs(20),
    )
    .await;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for record in records
        .iter()
        .filter(|r| r.header(ce::TYPE) == Some(OrderCreated::full_name().as_str()))
    {
        *copies
            .entry(record.header(ce::ID).expect("ce_id").to_owned())
            .or_default() += 1;
    }
    for record in &acked {
        let id = record.header(ce::ID).expect("ce_id");
        assert_eq!(copies[id], 2, "event {id} was re-published once");
    }
    assert_eq!(
        copies.len(),
        orders.len(),
        "one distinct OrderCreated per order"
    );
    let duplicates = mall.delivery_node.total(|s| &s.duplicates);
    assert!(
        duplicates >= acked.len() as u64,
        "the delivery inbox rejected each re-published copy ({duplicates} duplicates)"
    );
    assert_eq!(
        mall.delivery_node.total(|s| &s.applied),
        orders.len() as u64,
        "each OrderCreated applied once"
    );
    for order in &orders {
        assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    }
    assert_eq!(
        mall.stock(tv.id).await,
        10 - 6,
        "stock taken once per order"
    );
    mall.assert_invariants(&[(tv.id, 10)]).await;
    mall.stop().await;
}
