//! Every bad-input case of docs/contract.md gets its gRPC code and an actionable
//! message, and changes nothing.

use mall_e2e::spawn_mall;
use mall_proto::delivery::v1::{GetDeliveryRequest, ListDeliveriesRequest};
use mall_proto::inventory::v1::{
    CreateInventoryRequest, GetInventoryRequest, ListInventoriesRequest,
};
use mall_proto::order::v1::{
    CancelOrderRequest, GetOrderRequest, ListOrdersRequest, OrderStatus, PlaceOrderRequest,
};
use tonic::Code;

fn order_request(qty: i64, product_name: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        customer_id: 1,
        product_id: 1,
        product_name: product_name.into(),
        qty,
        address: "Seoul".into(),
        request_id: String::new(),
    }
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, mentions: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    assert!(
        status.message().contains(mentions),
        "message {:?} should mention {mentions:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_refused() {
    let mall = spawn_mall().await;
    let mut order = mall.order.clone();
    let mut inventory = mall.inventory.clone();

    assert_code(
        order.place_order(order_request(0, "TV")).await,
        Code::InvalidArgument,
        "qty",
    );
    assert_code(
        order.place_order(order_request(-5, "TV")).await,
        Code::InvalidArgument,
        "qty",
    );
    assert_code(
        order.place_order(order_request(i64::MAX, "TV")).await,
        Code::InvalidArgument,
        "qty",
    );
    assert_code(
        order.place_order(order_request(1, "   ")).await,
        Code::InvalidArgument,
        "product_name",
    );
    assert_code(
        order.place_order(order_request(1, "T\0V")).await,
        Code::InvalidArgument,
        "NUL",
    );
    let long = "x".repeat(10_000);
    assert_code(
        order.place_order(order_request(1, &long)).await,
        Code::InvalidArgument,
        "product_name",
    );

    let create = |name: &str, stock| CreateInventoryRequest {
        product_name: name.into(),
        stock,
    };
    assert_code(
        inventory.create_inventory(create("TV", -1)).await,
        Code::InvalidArgument,
        "stock",
    );
    assert_code(
        inventory.create_inventory(create("", 5)).await,
        Code::InvalidArgument,
        "product_name",
    );
    assert_code(
        inventory.create_inventory(create("TV", i64::MAX)).await,
        Code::InvalidArgument,
        "stock",
    );

    let list = ListOrdersRequest {
        page_size: -1,
        page_token: String::new(),
    };
    assert_code(
        order.list_orders(list).await,
        Code::InvalidArgument,
        "page_size",
    );
    let list = ListInventoriesRequest {
        page_size: 0,
        page_token: "garbage".into(),
    };
    assert_code(
        inventory.list_inventories(list).await,
        Code::InvalidArgument,
        "page_token",
    );

    // Nothing was stored by any refused request.
    let orders = order
        .list_orders(ListOrdersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(orders.orders.is_empty());
    let products = inventory
        .list_inventories(ListInventoriesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(products.inventories.is_empty());
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_not_found() {
    let mall = spawn_mall().await;
    assert_code(
        mall.order
            .clone()
            .get_order(GetOrderRequest { id: 424_242 })
            .await,
        Code::NotFound,
        "424242",
    );
    assert_code(
        mall.order
            .clone()
            .cancel_order(CancelOrderRequest {
                id: 424_242,
                request_id: String::new(),
            })
            .await,
        Code::NotFound,
        "424242",
    );
    assert_code(
        mall.inventory
            .clone()
            .get_inventory(GetInventoryRequest { id: 5 })
            .await,
        Code::NotFound,
        "5",
    );
    assert_code(
        mall.delivery
            .clone()
            .get_delivery(GetDeliveryRequest { order_id: 77 })
            .await,
        Code::NotFound,
        "77",
    );
    let deliveries = mall
        .delivery
        .clone()
        .list_deliveries(ListDeliveriesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(deliveries.deliveries.is_empty());
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_rejected_order_is_a_failed_precondition() {
    let mall = spawn_mall().await;
    let radio = mall.product("RADIO", 1).await;
    let order = mall.place(&radio, 5, "Busan").await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Rejected);
    assert_code(
        mall.order
            .clone()
            .cancel_order(CancelOrderRequest {
                id: order.id,
                request_id: String::new(),
            })
            .await,
        Code::FailedPrecondition,
        "rejected",
    );
    assert_eq!(
        mall.get_order(order.id).await.status(),
        OrderStatus::Rejected
    );
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_calls_page() {
    let mall = spawn_mall().await;
    for n in 0..5 {
        mall.product(&format!("P{n}"), n).await;
    }
    let mut inventory = mall.inventory.clone();
    let first = inventory
        .list_inventories(ListInventoriesRequest {
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(first.inventories.len(), 3);
    assert!(!first.next_page_token.is_empty());
    let second = inventory
        .list_inventories(ListInventoriesRequest {
            page_size: 3,
            page_token: first.next_page_token,
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.inventories.len(), 2);
    assert!(second.next_page_token.is_empty());
    let all = inventory
        .list_inventories(ListInventoriesRequest::default())
        .await
        .expect("all")
        .into_inner();
    assert_eq!(all.inventories.len(), 5);
    mall.stop().await;
}

/// `CreateInventoryRequest` as a sloppy client might encode it: the name as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawCreateInventory {
    #[prost(bytes = "vec", tag = "1")]
    product_name: Vec<u8>,
    #[prost(int64, tag = "2")]
    stock: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_are_invalid_arguments_not_internal_errors() {
    use tonic::codegen::http::uri::PathAndQuery;

    let mall = spawn_mall().await;
    let channel = mall_testkit::clients::connect(mall.inventory_node.addr).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let request = RawCreateInventory {
        product_name: vec![0xff, 0xfe, b'T', b'V'],
        stock: 3,
    };
    let result: Result<tonic::Response<mall_proto::inventory::v1::Inventory>, tonic::Status> = grpc
        .unary(
            tonic::Request::new(request),
            PathAndQuery::from_static("/mall.inventory.v1.InventoryService/CreateInventory"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_code(result, Code::InvalidArgument, "not valid protobuf");
    let products = mall
        .inventory
        .clone()
        .list_inventories(ListInventoriesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(products.inventories.is_empty(), "nothing was stored");
    mall.stop().await;
}
