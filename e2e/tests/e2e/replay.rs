//! Redelivery of already-delivered records, byte for byte, changes nothing:
//! the inbox rejects every duplicate, compensations included.

use std::time::Duration;

use mall_e2e::kafka::{inject, producer, read_topic};
use mall_e2e::mall::PARTITIONS;
use mall_e2e::spawn_mall;
use platform_service::metrics::IntCounter;

use mall_proto::order::v1::{CancelOrderRequest, OrderStatus};
use mall_saga::Service;
use platform_service::cloudevents as ce;
use platform_service::consumer::Stats;

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
    let nodes = [&mall.order_node, &mall.delivery_node, &mall.inventory_node];
    let counts = |counter: fn(&Stats) -> &IntCounter| nodes.map(|n| n.total(counter));
    let applied_before = counts(|s| &s.applied);
    let duplicates_before = counts(|s| &s.duplicates);
    let ignored_before = counts(|s| &s.ignored);

    // Every record of every topic, re-sent twice: once in order, once reversed,
    // so compensations also arrive again before the actions they undo. Each
    // consumer must reject every copy of a type it acts on as a duplicate, and
    // skip every other.
    let producer = producer(&mall.brokers);
    let mut expected_duplicates = [0u64; 3];
    let mut expected_ignored = [0u64; 3];
    for producer_service in Service::ALL {
        let topic = mall.topics.events_of(producer_service);
        let records = read_topic(
            &mall.brokers,
            &topic,
            PARTITIONS,
            1,
            Duration::from_secs(20),
        )
        .await;
        for record in records.iter().chain(records.iter().rev()) {
            inject(&producer, &topic, record).await;
            let event_type = record.header(ce::TYPE).expect("ce_type");
            for (n, consumer) in Service::ALL.into_iter().enumerate() {
                if !consumer.reads().contains(&producer_service) {
                    continue;
                }
                if consumer.handles().iter().any(|t| t == event_type) {
                    expected_duplicates[n] += 1;
                } else {
                    expected_ignored[n] += 1;
                }
            }
        }
    }
    mall.quiesce().await;

    assert_eq!(
        mall.snapshot().await,
        before,
        "state changed after redelivery"
    );
    assert_eq!(mall.stock(tv.id).await, 3);
    assert_eq!(
        counts(|s| &s.applied),
        applied_before,
        "nothing applied again"
    );
    for n in 0..3 {
        let duplicates = counts(|s| &s.duplicates)[n] - duplicates_before[n];
        let ignored = counts(|s| &s.ignored)[n] - ignored_before[n];
        let service = Service::ALL[n].name();
        assert!(
            duplicates >= expected_duplicates[n],
            "{service}: {duplicates} duplicates rejected, {} copies re-sent",
            expected_duplicates[n]
        );
        assert!(
            ignored >= expected_ignored[n],
            "{service}: {ignored} skipped, {} copies of other types re-sent",
            expected_ignored[n]
        );
    }
    assert!(
        expected_duplicates.iter().all(|n| *n > 0),
        "every consumer got copies"
    );
    assert_eq!(mall.dead_lettered(), 0, "a duplicate is not poison");
    mall.stop().await;
}
