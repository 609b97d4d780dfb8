//! Start-up waits for the database instead of failing on the first refusal,
//! and gives up with a clear error after STARTUP_TIMEOUT_SECS.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mall_e2e::mall::{brokers, service_args};
use mall_e2e::{postgres, unique_name};
use mall_proto::inventory::v1::CreateInventoryRequest;
use mall_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP port in front of PostgreSQL that hangs up on the first `refusals`
/// connections and forwards every later one; returns its port and the count
/// of connections it hung up on, which shows the service tried again.
async fn gate(refusals: usize) -> (u16, Arc<AtomicUsize>) {
    let upstream = postgres::server_url()
        .rsplit_once(':')
        .map(|(_, port)| format!("127.0.0.1:{port}"))
        .expect("server URL with a port");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
    let port = listener.local_addr().expect("gate address").port();
    let refused = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&refused);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if count.load(Ordering::SeqCst) < refusals {
                count.fetch_add(1, Ordering::SeqCst);
                drop(inbound);
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_waits_for_its_database() {
    platform_service::telemetry::init();
    let name = unique_name("late");
    let _database = postgres::create_database(&name).await;
    // The first connections are hung up on, as by a database still starting.
    let (port, refused) = gate(2).await;
    let url = format!("postgres://mall@127.0.0.1:{port}/{name}");
    let args = service_args(&url, &brokers(), &name);
    let shutdown = CancellationToken::new();
    let starting = tokio::spawn({
        let token = shutdown.child_token();
        async move { inventory_service::start(&args, token).await }
    });
    let running = starting
        .await
        .expect("start-up task")
        .expect("the service started once its database answered");
    assert_eq!(
        refused.load(Ordering::SeqCst),
        2,
        "the service tried again after each refused connection"
    );

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
    platform_service::telemetry::init();
    let name = unique_name("never");
    let url = format!("{}/{name}", postgres::server_url());
    let mut args = service_args(&url, &brokers(), &name);
    args.startup_timeout = Duration::from_secs(1);
    let result = inventory_service::start(&args, CancellationToken::new()).await;
    let error = result.err().expect("start-up must fail").to_string();
    assert!(
        error.contains(&name),
        "the error names the database: {error}"
    );
}
