//! Idempotent calls at the edge: a `PlaceOrder` or `CancelOrder` retried
//! with the same `request_id` returns the original order and changes
//! nothing; the same id with a different request is refused.

use futures::future::join_all;
use mall_e2e::{postgres, spawn_mall};
use mall_proto::order::v1::{CancelOrderRequest, OrderStatus, PlaceOrderRequest};
use std::time::Duration;
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

/// A request carrying `token` as its bearer credentials.
fn as_caller<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_belong_to_their_caller_keep_no_fields_and_expire() {
    use mall_e2e::mall::{brokers, service_args};
    use mall_proto::order::v1::order_service_client::OrderServiceClient;

    const SECRET: &str = "a test secret that is long enough for HS256";
    platform_service::telemetry::init();
    let prefix = mall_e2e::unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let mut args = service_args(&database, &brokers(), &prefix);
    args.auth_jwt_secret = Some(SECRET.into());
    args.auth_jwt_audience = Some("mall".into());
    args.auth_jwt_issuer = Some("https://issuer.mall.test".into());
    args.inbox_purge_interval = Duration::from_secs(1);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = order_service::start(&args, shutdown.clone())
        .await
        .expect("the order service starts");
    let token = |subject: &str| {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 600;
        let claims = serde_json::json!({"sub": subject, "aud": "mall", "iss": "https://issuer.mall.test",
                                        "scope": "orders:place orders:read orders:cancel", "exp": exp});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token")
    };
    let (ann, bob) = (token("ann"), token("bob"));
    let mut orders = OrderServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect");
    let id = uuid::Uuid::new_v4().to_string();

    // The same request id, two callers: two orders, neither sees the other's.
    let anns = orders
        .place_order(as_caller(request(1, 2, &id), &ann))
        .await
        .expect("ann places")
        .into_inner();
    let bobs = orders
        .place_order(as_caller(request(1, 3, &id), &bob))
        .await
        .expect("bob's id is his own")
        .into_inner();
    assert_ne!(anns.id, bobs.id);
    let again = orders
        .place_order(as_caller(request(1, 2, &id), &ann))
        .await
        .expect("ann retries")
        .into_inner();
    assert_eq!(
        again.id, anns.id,
        "a retry gets the caller's own order back"
    );

    // What is kept of a request: a SHA-256, never its fields.
    let kept = postgres::connect(&database)
        .await
        .query(
            "SELECT caller, fingerprint FROM request_ids ORDER BY caller",
            &[],
        )
        .await
        .expect("request ids");
    let kept: Vec<(String, String)> = kept.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(kept.len(), 2);
    assert_eq!((kept[0].0.as_str(), kept[1].0.as_str()), ("ann", "bob"));
    for (_, fingerprint) in &kept {
        assert!(
            fingerprint.len() == 64 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
            "{fingerprint}"
        );
    }

    // A cancellation that changes nothing stores nothing.
    let cancel = |request_id: &str| CancelOrderRequest {
        id: anns.id,
        request_id: request_id.into(),
    };
    orders
        .cancel_order(as_caller(cancel("c-1"), &ann))
        .await
        .expect("cancel");
    orders
        .cancel_order(as_caller(cancel("c-2"), &ann))
        .await
        .expect("cancel again: nothing to do");
    let stored = |request_id: &'static str| {
        let database = database.url().to_owned();
        async move {
            postgres::count(
                &database,
                &format!("SELECT count(*) FROM request_ids WHERE request_id = '{request_id}'"),
            )
            .await
        }
    };
    assert_eq!(stored("c-1").await, 1);
    assert_eq!(stored("c-2").await, 0, "the no-op cancel stored no id");

    // Ids expire: aged past REQUEST_ID_RETENTION_SECS, the janitor takes them.
    postgres::connect(&database)
        .await
        .execute(
            "UPDATE request_ids SET created_at = now() - interval '8 days'",
            &[],
        )
        .await
        .expect("age the ids");
    mall_e2e::wait_for(
        "expired request ids to go",
        std::time::Duration::from_secs(60),
        || async {
            (postgres::count(&database, "SELECT count(*) FROM request_ids").await == 0)
                .then_some(())
        },
    )
    .await;
    shutdown.cancel();
    running.wait().await.expect("a clean stop");
}
