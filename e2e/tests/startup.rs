//! Start-up waits for the database instead of failing on the first refusal,
//! and gives up with a clear error after STARTUP_TIMEOUT_SECS.

use std::time::Duration;

use mall_e2e::mall::{brokers, service_args};
use mall_e2e::{postgres, unique_name};
use mall_proto::inventory::v1::CreateInventoryRequest;
use mall_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_waits_for_its_database() {
    mall_platform::telemetry::init();
    let name = unique_name("late");
    let url = format!("{}/{name}", postgres::server_url());
    let args = service_args(&url, &brokers(), &name);
    let shutdown = CancellationToken::new();
    let starting = tokio::spawn({
        let token = shutdown.child_token();
        async move { inventory_service::start(&args, token).await }
    });
    // The database appears only after the service began trying to reach it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    postgres::create_database(&name).await;
    let running = starting
        .await
        .expect("start-up task")
        .expect("the service started once its database existed");

    let mut client = InventoryServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect");
    let created = client
        .create_inventory(CreateInventoryRequest {
            product_name: "TV".into(),
            stock: 1,
        })
        .await
        .expect("serving")
        .into_inner();
    assert_eq!(created.stock, 1);
    shutdown.cancel();
    running.wait().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_gives_up_on_a_database_that_never_comes() {
    mall_platform::telemetry::init();
    let name = unique_name("never");
    let url = format!("{}/{name}", postgres::server_url());
    let mut args = service_args(&url, &brokers(), &name);
    args.startup_timeout_secs = 1;
    let result = inventory_service::start(&args, CancellationToken::new()).await;
    let error = result.err().expect("start-up must fail").to_string();
    assert!(
        error.contains(&name),
        "the error names the database: {error}"
    );
}
