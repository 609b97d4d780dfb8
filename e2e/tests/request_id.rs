//! Idempotent calls at the edge: a `PlaceOrder` or `CancelOrder` retried
//! with the same `request_id` returns the original order and changes
//! nothing; the same id with a different request is refused.

use futures::future::join_all;
use mall_e2e::{postgres, spawn_mall};
use mall_proto::order::v1::{CancelOrderRequest, OrderStatus, PlaceOrderRequest};
use tonic::Code;

fn request(product_id: i64, qty: i64, request_id: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        customer_id: 7,
        product_id,
        product_name: "TV".into(),
        qty,
        address: "Seoul".into(),
        request_id: request_id.into(),
    }
}

async fn created_events(url: &str, order_id: i64) -> i64 {
    postgres::count(
        url,
        &format!(
            "SELECT count(*) FROM outbox WHERE msg_key = '{order_id}' \
             AND event_type = 'mall.order.v1.OrderCreated'"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_place_order_creates_one_order() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let id = uuid::Uuid::new_v4().to_string();
    let order_db = mall.order_node.database_url.clone();

    let first = mall
        .order
        .clone()
        .place_order(request(tv.id, 2, &id))
        .await
        .expect("first call")
        .into_inner();
    // Eight retries at once, as after a timeout: all get the same order.
    let retries = join_all((0..8).map(|_| {
        let mut client = mall.order.clone();
        let req = request(tv.id, 2, &id);
        async move { client.place_order(req).await }
    }))
    .await;
    for retry in retries {
        assert_eq!(retry.expect("retry").into_inner().id, first.id);
    }
    assert_eq!(
        created_events(&order_db, first.id).await,
        1,
        "one OrderCreated"
    );
    assert_eq!(mall.all_orders().await.len(), 1, "one order");

    // A retry after the saga ran gets the same order, as it is now.
    assert_eq!(mall.settled(first.id).await.status(), OrderStatus::Approved);
    let late = mall
        .order
        .clone()
        .place_order(request(tv.id, 2, &id))
        .await
        .expect("late retry")
        .into_inner();
    assert_eq!((late.id, late.status()), (first.id, OrderStatus::Approved));

    // The same id with another request is refused, and nothing is created.
    let other = mall
        .order
        .clone()
        .place_order(request(tv.id, 3, &id))
        .await
        .expect_err("a different request with the same id");
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    assert!(other.message().contains("different"), "{}", other.message());

    // A request without an id is not idempotent: two calls, two orders.
    for _ in 0..2 {
        mall.order
            .clone()
            .place_order(request(tv.id, 1, ""))
            .await
            .expect("plain call");
    }
    assert_eq!(mall.all_orders().await.len(), 3);

    let bad = mall
        .order
        .clone()
        .place_order(request(tv.id, 1, "has spaces"))
        .await
        .expect_err("a malformed id");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    mall.quiesce().await;
    mall.assert_invariants(&[(tv.id, 10)]).await;
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_cancel_order_cancels_once() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 10).await;
    let order = mall.place(&tv, 1, "Seoul").await;
    let second = mall.place(&tv, 1, "Seoul").await;
    let id = uuid::Uuid::new_v4().to_string();
    let cancel = |order_id: i64, request_id: &str| {
        let mut client = mall.order.clone();
        let req = CancelOrderRequest {
            id: order_id,
            request_id: request_id.into(),
        };
        async move { client.cancel_order(req).await }
    };
    let first = cancel(order.id, &id).await.expect("cancel").into_inner();
    assert_eq!(first.status(), OrderStatus::Cancelled);
    let again = cancel(order.id, &id).await.expect("retry").into_inner();
    assert_eq!(
        (again.id, again.status()),
        (order.id, OrderStatus::Cancelled)
    );
    let cancelled_events = postgres::count(
        &mall.order_node.database_url,
        &format!(
            "SELECT count(*) FROM outbox WHERE msg_key = '{}' \
             AND event_type = 'mall.order.v1.OrderCancelled'",
            order.id
        ),
    )
    .await;
    assert_eq!(cancelled_events, 1, "one OrderCancelled");

    // The id belongs to the first cancellation: using it for another order,
    // or for a PlaceOrder, is refused.
    let reused = cancel(second.id, &id)
        .await
        .expect_err("id reused for another order");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let as_place = mall
        .order
        .clone()
        .place_order(request(tv.id, 1, &id))
        .await
        .expect_err("id reused by PlaceOrder");
    assert_eq!(as_place.code(), Code::AlreadyExists, "{as_place:?}");
    assert_ne!(
        mall.get_order(second.id).await.status(),
        OrderStatus::Cancelled,
        "the second order was not cancelled"
    );
    mall.quiesce().await;
    mall.assert_invariants(&[(tv.id, 10)]).await;
    mall.stop().await;
}
