//! Re-driving dead letters is safe both ways: a record whose event was
//! applied already changes nothing (the inbox rejects it), and a valid event
//! that was dead-lettered during an outage completes its saga.

use std::time::Duration;

use mall_dlq::{Selection, Tally, redrive_selected};
use mall_e2e::kafka::{EventRecord, Record, first_of_type, inject, producer, read_topic};
use mall_e2e::mall::PARTITIONS;
use mall_e2e::{postgres, spawn_mall, wait_for};
use mall_proto::delivery::v1::DeliveryCancelled;
use mall_proto::order::v1::{OrderCreated, OrderStatus};
use mall_saga::Service;
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

    let dead = read_topic(&mall.brokers, &dlq, PARTITIONS, 2, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let before = mall.snapshot().await;
    let duplicates_before = mall.delivery_node.total(|s| &s.duplicates);

    // Re-drive the applied one, selected by order.
    let by_order = Selection {
        order: Some(applied.id.to_string()),
        ..Selection::default()
    };
    let sent = redrive(&mall, &by_order, false).await;
    assert_eq!(sent, Tally { sent: 1, kept: 0 });
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
    // Once only: the ledger remembers it.
    assert_eq!(
        redrive(&mall, &by_order, false).await,
        Tally { sent: 0, kept: 1 }
    );

    // Re-drive the lost one, selected by reason: its saga completes.
    let by_reason = Selection {
        reason: Some("database refused".into()),
        ..Selection::default()
    };
    assert_eq!(
        redrive(&mall, &by_reason, false).await,
        Tally { sent: 1, kept: 0 }
    );
    assert_eq!(mall.settled(lost_id).await.status(), OrderStatus::Approved);
    assert_eq!(mall.stock(tv.id).await, 10 - 1 - 2);
    mall.quiesce().await;
    mall.assert_invariants(&[(tv.id, 10)]).await;
    mall.stop().await;
}

/// Runs `mall-dlq redrive --service delivery` with `selection`.
async fn redrive(mall: &mall_e2e::Mall, selection: &Selection, again: bool) -> Tally {
    redrive_selected(
        &mall.brokers,
        &mall.topics,
        Service::Delivery,
        selection,
        false,
        again,
        |_| {},
    )
    .await
    .expect("redrive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_cannot_steer_its_re_drive_and_repeated_runs_leave_the_dlq_as_it_was() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let order = mall.place(&tv, 2, "Seoul").await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    mall.quiesce().await;
    let stock = mall.stock(tv.id).await;
    let kafka = producer(&mall.brokers);
    let order_topic = mall.topics.order_events();
    let dlq = mall.topics.dead_letters_of(Service::Delivery);

    // The review's attack: with write access to the order topic only, a
    // DeliveryCancelled for the shipped order, claiming the delivery
    // source and planting dead-letter headers that name the delivery
    // topic and a reason an operator re-drives by.
    let mut forged = Record::event(
        order.id,
        &DeliveryCancelled {
            order_id: order.id,
            product_id: tv.id,
            qty: 2,
        },
    );
    for (name, value) in [
        (TOPIC_HEADER, mall.topics.delivery_events()),
        (PARTITION_HEADER, "0".to_owned()),
        (OFFSET_HEADER, "0".to_owned()),
        (ERROR_HEADER, "database unavailable (57P01)".to_owned()),
    ] {
        forged.headers.push((name.to_owned(), value.into_bytes()));
    }
    inject(&kafka, &order_topic, &forged).await;
    // And a plain poison record: the review's loop doubled those.
    inject(
        &kafka,
        &order_topic,
        &Record {
            payload: Some(b"\xff\xff".to_vec()),
            ..Record::event(order.id + 1000, &OrderCreated::default())
        },
    )
    .await;
    mall.quiesce().await;
    let dead = read_topic(&mall.brokers, &dlq, PARTITIONS, 2, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2);
    let planted = dead
        .iter()
        .find(|r| r.key_str() == order.id.to_string())
        .expect("the forged record is dead-lettered");
    // Its dead-letter headers are the consumer's own, once each.
    let topics: Vec<_> = planted
        .headers
        .iter()
        .filter(|(n, _)| n == TOPIC_HEADER)
        .collect();
    assert_eq!(topics.len(), 1);
    assert_eq!(planted.header(TOPIC_HEADER), Some(order_topic.as_str()));
    assert!(
        planted
            .header(ERROR_HEADER)
            .is_some_and(|e| e.contains("ce_source"))
    );

    let by_reason = Selection {
        reason: Some("database".into()),
        ..Selection::default()
    };
    assert_eq!(
        redrive(&mall, &by_reason, false).await,
        Tally { sent: 0, kept: 0 }
    );
    for run in 1..=4 {
        let tally = redrive(&mall, &Selection::default(), run == 4).await;
        assert_eq!(
            tally,
            Tally { sent: 0, kept: 2 },
            "run {run}: nothing would pass"
        );
        mall.quiesce().await;
        let now = read_topic(&mall.brokers, &dlq, PARTITIONS, 2, Duration::from_secs(30)).await;
        assert_eq!(now.len(), 2, "run {run} left the DLQ as it was");
    }
    assert_eq!(mall.stock(tv.id).await, stock, "no stock given back");
    assert_eq!(
        mall.get_order(order.id).await.status(),
        OrderStatus::Approved
    );
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_steps_a_consumer_over_a_record_it_cannot_get_past() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 100).await;
    // A record the delivery database refuses for as long as it lasts, as a
    // transient error (55P03): the lane waits on it, as it must for a
    // valid event, and every later record of its partition waits behind.
    let first = mall.place(&tv, 1, "Seoul").await;
    let delivery_db = postgres::connect(&mall.delivery_node.database_url).await;
    delivery_db
        .batch_execute(&format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.order_id = {} THEN RAISE EXCEPTION 'held' USING ERRCODE = '55P03'; END IF; \
               RETURN NEW; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON deliveries FOR EACH ROW EXECUTE FUNCTION refuse();",
            first.id + 1
        ))
        .await
        .expect("trigger");
    let stuck = mall.place(&tv, 1, "Busan").await;
    assert_eq!(stuck.id, first.id + 1, "ids are handed out in order");
    wait_for(
        "the lane to wait on the record",
        Duration::from_secs(60),
        || async { (mall.delivery_node.total(|s| &s.db_retries) >= 2).then_some(()) },
    )
    .await;
    let record = read_topic(
        &mall.brokers,
        &mall.topics.order_events(),
        PARTITIONS,
        2,
        Duration::from_secs(30),
    )
    .await
    .into_iter()
    .find(|r| r.key_str() == stuck.id.to_string())
    .expect("the stuck record");
    mall_dlq::skip(
        &mall.brokers,
        &mall.topics,
        Service::Delivery,
        &record,
        "refused by a trigger",
    )
    .await
    .expect("skip");
    wait_for(
        "the lane to step over it",
        Duration::from_secs(60),
        || async { (mall.delivery_node.total(|s| &s.skipped) == 1).then_some(()) },
    )
    .await;
    // Everything after it flows: orders on every partition settle.
    for _ in 0..6 {
        let order = mall.place(&tv, 1, "Daegu").await;
        assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    }
    assert_eq!(
        mall.get_order(stuck.id).await.status(),
        OrderStatus::Pending
    );
    let dead = read_topic(
        &mall.brokers,
        &mall.topics.dead_letters_of(Service::Delivery),
        PARTITIONS,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("dlq_skip"), Some("true"));
    assert!(
        dead[0]
            .header(ERROR_HEADER)
            .is_some_and(|e| e.contains("refused by a trigger"))
    );
    assert_eq!(dead[0].key_str(), stuck.id.to_string());
    mall.stop().await;
}
