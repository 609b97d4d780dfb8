//! One bad client cannot take a service down: calls beyond the concurrency
//! limit are shed at once with `RESOURCE_EXHAUSTED`, health stays
//! `SERVING`, and the next calls are served normally. Settings out of range
//! are refused while parsed, naming the flag and its range.

use mall_e2e::mall::{SETTLE_DEADLINE, health};
use mall_e2e::scrape::{scrape, value};
use mall_e2e::{postgres, spawn_mall_with};
use mall_proto::order::v1::{GetOrderRequest, OrderStatus};
use platform_service::config::ServiceArgs;
use std::time::Duration;
use tokio::task::JoinSet;
use tonic_health::pb::health_check_response::ServingStatus;

const LIMIT: usize = 4;
const FLOOD: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_and_the_service_carries_on() {
    let mall = spawn_mall_with(|args| {
        args.grpc_concurrency_limit = LIMIT;
        args.db_pool_size = LIMIT + 4;
        args.db_statement_timeout = Duration::from_millis(120_000);
    })
    .await;
    let tv = mall.product("TV", 10).await;
    let order = mall.place(&tv, 1, "Seoul").await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    mall.quiesce().await;

    // Every GetOrder now waits on this lock, so the first LIMIT calls hold
    // every permit until it is released.
    let blocker = postgres::connect(&mall.order_node.database_url).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock the orders");
    let mut calls = JoinSet::new();
    for _ in 0..FLOOD {
        let mut client = mall.order.clone();
        calls.spawn(async move {
            client
                .get_order(GetOrderRequest { id: order.id })
                .await
                .map(|r| r.into_inner())
        });
    }
    let mut shed = Vec::new();
    tokio::time::timeout(SETTLE_DEADLINE, async {
        while shed.len() < FLOOD - LIMIT {
            let outcome = calls.join_next().await.expect("a call").expect("no panic");
            shed.push(outcome.expect_err("only shed calls end while the lock is held"));
        }
    })
    .await
    .expect("the excess is shed at once");
    for status in &shed {
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("limit of 4"), "{status:?}");
    }
    assert_eq!(
        health(mall.order_node.addr, "").await,
        ServingStatus::Serving,
        "health is never shed"
    );

    blocker.batch_execute("COMMIT").await.expect("release");
    while let Some(outcome) = calls.join_next().await {
        let served = outcome
            .expect("no panic")
            .expect("admitted calls are served");
        assert_eq!(served.id, order.id);
    }
    let again = mall.get_order(order.id).await;
    assert_eq!(again.status(), OrderStatus::Approved);
    let text = scrape(mall.order_node.metrics[0]).await;
    assert_eq!(
        value(
            &text,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "GetOrder"),
                ("grpc_code", "ResourceExhausted")
            ]
        ),
        (FLOOD - LIMIT) as f64
    );
    mall.stop().await;
}

#[test]
fn settings_out_of_range_are_refused_naming_the_flag_and_range() {
    let mut flags = mall_testkit::settings::service_flags("postgres://db/x", "127.0.0.1:9092", "t");
    flags.push("--grpc-concurrency-limit=0".to_owned());
    let refused = match ServiceArgs::try_from_flags(flags) {
        Ok(_) => panic!("a concurrency limit of 0 was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(
        refused.contains("--grpc-concurrency-limit") && refused.contains("1..=100000"),
        "{refused}"
    );
}
