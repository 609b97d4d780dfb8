//! PostgreSQL over TLS: a service and its relay connect with
//! `sslmode=verify-full` (the server's certificate checked against the CA
//! the test command made) or `sslmode=require`, the saga's first step goes
//! through, and the server sees encrypted sessions; a certificate from an
//! unknown CA is refused.

use std::time::Duration;

use mall_e2e::mall::{
    SETTLE_DEADLINE, brokers, place_at, relay_config, service_args, spawn_relay_with,
};
use mall_e2e::{outbox, postgres, required_env, unique_name, wait_for};
use mall_proto::order::v1::OrderStatus;
use tokio_util::sync::CancellationToken;

async fn encrypted_sessions(database: &str) -> i64 {
    let admin = postgres::connect(&format!("{}/postgres", postgres::server_url())).await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND s.ssl",
            &[&database],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_and_require_connect_encrypted() {
    platform_service::telemetry::init();
    let ca = required_env("MALL_TEST_PG_CA");
    let prefix = unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let name = postgres::database_name(&database).to_owned();
    let verified = format!("{}?sslmode=verify-full&sslrootcert={ca}", database.url());
    let args = service_args(&verified, &brokers(), &prefix);
    let shutdown = CancellationToken::new();
    let running = order_service::start(&args, shutdown.clone())
        .await
        .expect("the order service connects with verify-full");
    let mut relay = relay_config(&format!("{}?sslmode=require", database.url()), &brokers());
    relay.batch_size = 100;
    spawn_relay_with(relay, shutdown.child_token()).await;

    let order = place_at(running.grpc_addr).await;
    assert_eq!(order.status(), OrderStatus::Pending);
    wait_for("the relay to publish over TLS", SETTLE_DEADLINE, || async {
        (outbox::unpublished(database.url()).await == 0).then_some(())
    })
    .await;
    let sessions = encrypted_sessions(&name).await;
    assert!(
        sessions >= 2,
        "{sessions} encrypted sessions: the pool's and the relay's"
    );

    shutdown.cancel();
    running.wait().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let dir = std::env::temp_dir().join(unique_name("mall-pg-ca-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let stranger = params.self_signed(&key).expect("CA");
    let ca = dir.join("stranger.pem");
    std::fs::write(&ca, stranger.pem()).expect("write");

    let prefix = unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        database.url(),
        ca.display()
    );
    let mut args = service_args(&url, &brokers(), &prefix);
    args.startup_timeout = Duration::from_secs(1);
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        order_service::start(&args, CancellationToken::new()),
    )
    .await
    .expect("start-up gives up");
    let refused = match refused {
        Ok(_) => panic!("connected to a server whose certificate no trusted CA signed"),
        Err(error) => error.to_string(),
    };
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    std::fs::remove_dir_all(&dir).ok();
}
