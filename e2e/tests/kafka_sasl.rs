//! Kafka with SASL: an Apache Kafka node of its own with a SASL_PLAINTEXT
//! listener (SCRAM-SHA-512, its user made when the storage is formatted, and
//! PLAIN), and a service and relay configured through `KAFKA_PROPERTY_*`
//! only. The order goes out through the relay and is read back over SASL,
//! with each mechanism; a wrong password is refused at start-up. The
//! properties come from the process environment, so the scenario runs in a
//! child process of this test binary whose environment the parent sets.

use std::process::Command;
use std::time::Duration;

use mall_e2e::kafka::read_topic;
use mall_e2e::mall::{
    PARTITIONS, SETTLE_DEADLINE, place_at, relay_config, service_args, spawn_relay_with,
};
use mall_e2e::{outbox, postgres, unique_name, wait_for};
use mall_saga::Topics;
use mall_testkit::{Kafka, KafkaSpec, Sasl};
use tokio_util::sync::CancellationToken;

/// Runs [`in_the_sasl_environment`] in a child process of this test binary,
/// with the broker and the `KAFKA_PROPERTY_*` variables in its environment.
fn run_child(brokers: &str, mechanism: &str, password: &str, expect: &str) -> String {
    let output = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "in_the_sasl_environment",
            "--include-ignored",
            "--nocapture",
        ])
        .env("MALL_SASL_BROKERS", brokers)
        .env("MALL_SASL_EXPECT", expect)
        .env("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        .env("KAFKA_PROPERTY_SASL_MECHANISM", mechanism)
        .env("KAFKA_PROPERTY_SASL_USERNAME", "mall")
        .env("KAFKA_PROPERTY_SASL_PASSWORD", password)
        .output()
        .expect("run the child");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child ({expect}) failed:\n{said}");
    assert!(
        said.contains("1 passed"),
        "the child ran its scenario:\n{said}"
    );
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_authenticated_clients_publish_and_consume() {
    let dir = std::env::temp_dir().join(unique_name("mall-sasl-"));
    let mut spec = KafkaSpec::new(&dir, 1);
    spec.sasl = Some(Sasl {
        users: vec![("mall".into(), "s3cret".into())],
    });
    let mut broker = Kafka::start(spec).await.expect("a Kafka node with SASL");
    let brokers = broker.sasl_bootstrap().expect("a SASL listener");
    run_child(&brokers, "SCRAM-SHA-512", "wrong", "refused");
    run_child(&brokers, "SCRAM-SHA-512", "s3cret", "served");
    run_child(&brokers, "PLAIN", "wrong", "refused");
    run_child(&brokers, "PLAIN", "s3cret", "served");
    broker.stop().await.expect("a clean stop");
    std::fs::remove_dir_all(&dir).ok();
}

/// The scenario, in an environment that only its parent test sets up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by sasl_authenticated_clients_publish_and_consume in a child process"]
async fn in_the_sasl_environment() {
    platform_service::telemetry::init();
    let brokers = std::env::var("MALL_SASL_BROKERS")
        .expect("run by sasl_authenticated_clients_publish_and_consume only");
    let expect = std::env::var("MALL_SASL_EXPECT").expect("set by the parent");
    let prefix = unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let mut args = service_args(&database, &brokers, &prefix);
    if expect == "refused" {
        args.startup_timeout_secs = 3;
        let refused = match order_service::start(&args, CancellationToken::new()).await {
            Ok(_) => panic!("started with a wrong SASL password"),
            Err(error) => error.to_string(),
        };
        // librdkafka reports the failed authentication in the log; the
        // service gives up on its broker and does not start.
        assert!(refused.contains(&brokers), "{refused}");
        return;
    }
    let shutdown = CancellationToken::new();
    let running = order_service::start(&args, shutdown.clone())
        .await
        .expect("the order service starts over SCRAM");
    spawn_relay_with(relay_config(&database, &brokers), shutdown.child_token()).await;
    let order = place_at(running.grpc_addr).await;
    wait_for(
        "the relay to publish over SCRAM",
        SETTLE_DEADLINE,
        || async { (outbox::unpublished(&database).await == 0).then_some(()) },
    )
    .await;
    let records = read_topic(
        &brokers,
        &Topics::new(&prefix).order_events(),
        PARTITIONS,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        records.iter().any(|r| r.key_str() == order.id.to_string()),
        "the OrderCreated of order {} is on the topic",
        order.id
    );
    shutdown.cancel();
    running.wait().await.expect("a clean stop");
}
