//! Inbox retention: the janitor deletes rows older than the retention and
//! keeps the rest, so recent events stay guarded; and a service refuses to
//! start with an inbox retention that a redelivery could outlive.

use std::time::Duration;

use mall_e2e::kafka::{inject, producer, read_topic};
use mall_e2e::mall::{PARTITIONS, SETTLE_DEADLINE, service_args};
use mall_e2e::{postgres, spawn_mall, unique_name, wait_for};
use platform_service::boot::error::AppError;
use platform_service::retention::spawn_inbox_janitor;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janitor_deletes_only_expired_inbox_rows() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let old = mall.place(&tv, 1, "Seoul").await;
    let recent = mall.place(&tv, 2, "Busan").await;
    mall.settled(old.id).await;
    mall.settled(recent.id).await;
    mall.quiesce().await;

    // Age the first order's inbox rows past a one-day retention.
    let db = mall.inventory_node.database_url.clone();
    let client = postgres::connect(&db).await;
    let aged = client
        .execute(
            "UPDATE inbox SET received_at = now() - interval '2 days' WHERE order_id = $1",
            &[&old.id],
        )
        .await
        .expect("age rows");
    assert!(aged > 0, "the old order left inbox rows");
    let count_for = |id: i64| format!("SELECT count(*) FROM inbox WHERE order_id = {id}");
    let recent_rows = postgres::count(&db, &count_for(recent.id)).await;
    assert!(recent_rows > 0);

    let pool =
        platform_service::db::connect(&db, 2, Duration::from_secs(10), Duration::from_secs(5))
            .await
            .expect("pool");
    let stop = CancellationToken::new();
    let janitor = spawn_inbox_janitor(
        pool,
        Duration::from_secs(86_400),
        Duration::from_millis(100),
        stop.clone(),
    );
    wait_for("expired inbox rows to go", SETTLE_DEADLINE, || async {
        (postgres::count(&db, &count_for(old.id)).await == 0).then_some(())
    })
    .await;
    stop.cancel();
    janitor.await.expect("janitor stopped");
    assert_eq!(
        postgres::count(&db, &count_for(recent.id)).await,
        recent_rows,
        "rows inside the retention are kept"
    );

    // The kept rows still guard: replaying the recent order's delivery
    // events changes nothing.
    let delivery_topic = mall.topics.delivery_events();
    let records = read_topic(
        &mall.brokers,
        &delivery_topic,
        PARTITIONS,
        2,
        Duration::from_secs(20),
    )
    .await;
    let producer = producer(&mall.brokers);
    let before = mall.inventory_node.total(|s| &s.duplicates);
    let mut replayed = 0;
    for record in records
        .iter()
        .filter(|r| r.key_str() == recent.id.to_string())
    {
        inject(&producer, &delivery_topic, record).await;
        replayed += 1;
    }
    assert!(replayed > 0);
    mall.eventually("the replay to be rejected", || async {
        (mall.inventory_node.total(|s| &s.duplicates) >= before + replayed).then_some(())
    })
    .await;
    assert_eq!(mall.stock(tv.id).await, 10 - 3);
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_refuses_an_inbox_retention_shorter_than_the_topics() {
    platform_service::telemetry::init();
    let name = unique_name("ret");
    let db = postgres::create_database(&name).await;
    let mut args = service_args(&db, &mall_e2e::mall::brokers(), &name);
    args.inbox_retention = Duration::from_secs(3_600);
    args.kafka.topic_retention = Duration::from_secs(86_400);
    let error = inventory_service::start(&args, CancellationToken::new())
        .await
        .err()
        .expect("start-up must fail");
    assert!(matches!(error, AppError::Retention(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("INBOX_RETENTION_SECS (3600)")
            && message.contains("KAFKA_TOPIC_RETENTION_SECS (86400)"),
        "the error names both settings: {message}"
    );
}
