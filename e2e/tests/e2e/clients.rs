//! The mall as outside users drive it: grpcurl 1.8.6 through reflection (no
//! .proto at hand), a Python client generated from `proto/`, and reflection v1.

use std::path::Path;

use mall_e2e::{required_env, run, spawn_mall};
use mall_proto::order::v1::OrderStatus;
use tonic_reflection_probe::list_services_v1;

mod tonic_reflection_probe {
    //! A minimal reflection v1 client, since grpcurl 1.8.6 only speaks v1alpha.
    pub async fn list_services_v1(addr: std::net::SocketAddr) -> Vec<String> {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

        let channel = mall_testkit::clients::connect(addr).await;
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection v1")
            .into_inner();
        let response = responses
            .message()
            .await
            .expect("stream")
            .expect("one response");
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection response {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpcurl_through_reflection_and_health() {
    let grpcurl = required_env("MALL_GRPCURL");
    let mall = spawn_mall().await;
    let (order, inventory, delivery) = (
        mall.order_node.addr.to_string(),
        mall.inventory_node.addr.to_string(),
        mall.delivery_node.addr.to_string(),
    );
    let (ok, version) = run(&grpcurl, &["-version"]);
    assert!(
        ok && version.contains("1.8.6"),
        "grpcurl 1.8.6 expected, got {version}"
    );

    for (addr, service) in [
        (&order, "mall.order.v1.OrderService"),
        (&delivery, "mall.delivery.v1.DeliveryService"),
        (&inventory, "mall.inventory.v1.InventoryService"),
    ] {
        let (ok, listed) = run(&grpcurl, &["-plaintext", addr, "list"]);
        assert!(ok, "grpcurl list failed: {listed}");
        assert!(
            listed.contains(service) && listed.contains("grpc.health.v1.Health"),
            "{listed}"
        );
        let listed_mall = listed.lines().filter(|l| l.starts_with("mall.")).count();
        assert_eq!(
            listed_mall, 1,
            "only the served service is listed: {listed}"
        );
        let (ok, described) = run(&grpcurl, &["-plaintext", addr, "describe", service]);
        assert!(ok, "describe failed: {described}");
        let (ok, health) = run(
            &grpcurl,
            &[
                "-plaintext",
                "-d",
                &format!(r#"{{"service":"{service}"}}"#),
                addr,
                "grpc.health.v1.Health/Check",
            ],
        );
        assert!(ok && health.contains("SERVING"), "health: {health}");
        let v1 = list_services_v1(addr.parse().expect("addr")).await;
        assert!(
            v1.iter().any(|s| s == service),
            "reflection v1 lists {v1:?}"
        );
    }
    let (_, described) = run(
        &grpcurl,
        &[
            "-plaintext",
            &order,
            "describe",
            "mall.order.v1.PlaceOrderRequest",
        ],
    );
    assert!(
        described.contains("product_name") && described.contains("qty"),
        "{described}"
    );

    let (ok, created) = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            r#"{"product_name":"TV","stock":5}"#,
            &inventory,
            "mall.inventory.v1.InventoryService/CreateInventory",
        ],
    );
    assert!(
        ok && created.contains(r#""stock": "5""#),
        "create: {created}"
    );
    let (ok, placed) = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            r#"{"customer_id":1,"product_id":1,"product_name":"TV","qty":2,"address":"Seoul"}"#,
            &order,
            "mall.order.v1.OrderService/PlaceOrder",
        ],
    );
    assert!(
        ok && placed.contains("ORDER_STATUS_PENDING"),
        "place: {placed}"
    );
    assert_eq!(mall.settled(1).await.status(), OrderStatus::Approved);
    let (ok, got) = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            r#"{"id":1}"#,
            &order,
            "mall.order.v1.OrderService/GetOrder",
        ],
    );
    assert!(ok && got.contains("ORDER_STATUS_APPROVED"), "get: {got}");
    // The remaining methods, each called the way a user would.
    for (addr, method, data, expected) in [
        (
            &order,
            "mall.order.v1.OrderService/ListOrders",
            "{}",
            "ORDER_STATUS_APPROVED",
        ),
        (
            &inventory,
            "mall.inventory.v1.InventoryService/GetInventory",
            r#"{"id":1}"#,
            r#""stock": "3""#,
        ),
        (
            &inventory,
            "mall.inventory.v1.InventoryService/ListInventories",
            r#"{"page_size":10}"#,
            r#""productName": "TV""#,
        ),
        (
            &delivery,
            "mall.delivery.v1.DeliveryService/GetDelivery",
            r#"{"order_id":1}"#,
            "DELIVERY_STATUS_STARTED",
        ),
    ] {
        let (ok, out) = run(&grpcurl, &["-plaintext", "-d", data, addr, method]);
        assert!(ok && out.contains(expected), "{method}: {out}");
    }
    let (ok, listed) = run(
        &grpcurl,
        &[
            "-plaintext",
            &delivery,
            "mall.delivery.v1.DeliveryService/ListDeliveries",
        ],
    );
    assert!(
        ok && listed.contains("DELIVERY_STATUS_STARTED"),
        "deliveries: {listed}"
    );
    let (ok, refused) = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            r#"{"product_name":"TV","stock":-1}"#,
            &inventory,
            "mall.inventory.v1.InventoryService/CreateInventory",
        ],
    );
    assert!(
        !ok && refused.contains("InvalidArgument") && refused.contains("stock"),
        "refused: {refused}"
    );
    let (ok, cancelled) = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            r#"{"id":1}"#,
            &order,
            "mall.order.v1.OrderService/CancelOrder",
        ],
    );
    assert!(
        ok && cancelled.contains("ORDER_STATUS_CANCELLED"),
        "cancel: {cancelled}"
    );
    mall.eventually("stock to come back", || async {
        (mall.stock(1).await == 5).then_some(())
    })
    .await;
    // An idempotent retry: the same request_id twice is one order; the same
    // id with another request is refused.
    let retried = r#"{"customer_id":1,"product_id":1,"product_name":"TV","qty":1,"address":"Seoul","request_id":"grpcurl-retry-1"}"#;
    let place = |data: &str| {
        run(
            &grpcurl,
            &[
                "-plaintext",
                "-d",
                data,
                &order,
                "mall.order.v1.OrderService/PlaceOrder",
            ],
        )
    };
    let (ok, first) = place(retried);
    assert!(ok && first.contains(r#""id": "2""#), "first: {first}");
    let (ok, again) = place(retried);
    assert!(ok && again.contains(r#""id": "2""#), "retry: {again}");
    let (ok, changed) = place(&retried.replace(r#""qty":1"#, r#""qty":2"#));
    assert!(
        !ok && changed.contains("AlreadyExists") && changed.contains("grpcurl-retry-1"),
        "changed: {changed}"
    );
    assert_eq!(
        mall.all_orders().await.len(),
        2,
        "the retry created nothing"
    );
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_generated_from_the_protos() {
    let python = required_env("MALL_PYTHON");
    let mall = spawn_mall().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("e2e/python/mall_client.py");
    let protos = root.join("proto");
    let addrs = [
        mall.order_node.addr,
        mall.delivery_node.addr,
        mall.inventory_node.addr,
    ]
    .map(|a| a.to_string());
    let args = [
        script.to_str().expect("path"),
        protos.to_str().expect("path"),
        &addrs[0],
        &addrs[1],
        &addrs[2],
    ];
    let output = tokio::task::spawn_blocking({
        let python = python.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || {
            run(
                &python,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        }
    })
    .await
    .expect("python task");
    assert!(output.0, "python client failed:\n{}", output.1);
    assert!(output.1.contains("all checks passed"), "{}", output.1);
    mall.stop().await;
}
