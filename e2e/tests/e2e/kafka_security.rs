//! Kafka security against a real Apache Kafka node: a SASL_SSL listener
//! (SCRAM-SHA-512, users made when the storage is formatted, and PLAIN) and
//! an SSL listener that demands client certificates, both under a CA this
//! test makes, with Kafka's `StandardAuthorizer` and docs/security.md's
//! least-privilege ACLs applied by Kafka's own `kafka-acls`
//! (`AclCommand`) as the set-up super user.
//!
//! Every process is configured through `KAFKA_PROPERTY_*` only, which come
//! from the process environment, so each runs in a child process of this
//! test binary (`in_a_child`) whose environment the parent sets: one
//! principal per process, as in production.
//!
//! Shown: the order service and its relay each with only their own ACLs,
//! through each listener and mechanism (an order goes out and is on the
//! topic); the delivery and inventory services SERVING and their relays
//! publishing with only theirs; a wrong password refused at start-up; a relay running as
//! another service's principal refused the write, saying so (principal,
//! operation, topic) and reporting unhealthy, its rows kept and published
//! later by the right relay; a service joining another service's group
//! refused, saying so, and `NOT_SERVING`; and a forged `OrderCreated`
//! (the order service's `ce_source`) from another principal refused by the
//! broker, so only the order relay can write the order topic.

use std::process::Command;
use std::time::Duration;

use mall_e2e::kafka::{EventRecord, read_topic};
use mall_e2e::mall::{PARTITIONS, SETTLE_DEADLINE, health, place_at, relay_config, service_args};
use mall_e2e::{outbox, postgres, unique_name, wait_for};
use mall_saga::Topics;
use mall_testkit::{Kafka, KafkaSpec, Security};
use outbox_relay::Relay;
use platform_service::record::CapturedRecord;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

/// Principals and their passwords (SCRAM-SHA-512 and PLAIN alike).
const USERS: [(&str, &str); 6] = [
    ("order-service", "os-secret"),
    ("order-relay", "or-secret"),
    ("delivery-service", "ds-secret"),
    ("delivery-relay", "dr-secret"),
    ("inventory-service", "is-secret"),
    ("inventory-relay", "ir-secret"),
];

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap_or("no such user")
}

/// How a child reaches the broker.
#[derive(Clone, Copy, Debug)]
enum Via {
    Scram,
    Plain,
    Certificate,
}

/// The `KAFKA_PROPERTY_*` variables of `user` connecting `via`.
fn credentials(kafka: &Kafka, via: Via, user: &str, password: &str) -> Vec<(String, String)> {
    let tls = kafka.tls().expect("a secured cluster");
    let mut vars = vec![(
        "KAFKA_PROPERTY_SSL_CA_LOCATION",
        tls.ca.display().to_string(),
    )];
    match via {
        Via::Scram | Via::Plain => {
            vars.extend([
                ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL".to_owned()),
                (
                    "KAFKA_PROPERTY_SASL_MECHANISM",
                    if matches!(via, Via::Scram) {
                        "SCRAM-SHA-512"
                    } else {
                        "PLAIN"
                    }
                    .to_owned(),
                ),
                ("KAFKA_PROPERTY_SASL_USERNAME", user.to_owned()),
                ("KAFKA_PROPERTY_SASL_PASSWORD", password.to_owned()),
            ]);
        }
        Via::Certificate => {
            let (cert, key) = tls.client(user);
            vars.extend([
                ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SSL".to_owned()),
                (
                    "KAFKA_PROPERTY_SSL_CERTIFICATE_LOCATION",
                    cert.display().to_string(),
                ),
                ("KAFKA_PROPERTY_SSL_KEY_LOCATION", key.display().to_string()),
            ]);
        }
    }
    vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Runs [`in_a_child`] as `role`, with `expect`, in the environment of
/// `user` connecting `via`; what it printed. The child's own assertions
/// decide; a failing child fails this test with its output.
fn child(
    kafka: &Kafka,
    via: Via,
    user: &str,
    password: &str,
    role: &str,
    expect: &str,
    env: &[(&str, &str)],
) -> String {
    let brokers = match via {
        Via::Scram | Via::Plain => kafka.sasl_ssl_bootstrap(),
        Via::Certificate => kafka.ssl_bootstrap(),
    }
    .expect("a secured listener");
    let output = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "kafka_security::in_a_child",
            "--include-ignored",
            "--nocapture",
        ])
        .env("MALL_SEC_BROKERS", brokers)
        .env("MALL_SEC_ROLE", role)
        .env("MALL_SEC_EXPECT", expect)
        .env("MALL_SEC_USER", user)
        .envs(credentials(kafka, via, user, password))
        .envs(env.iter().copied())
        .output()
        .expect("run the child");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.contains("1 passed"),
        "child {role}/{expect} as {user} via {via:?} failed:\n{said}"
    );
    said
}

/// docs/security.md's least-privilege ACLs for `service` (topics under
/// `prefix`), applied with `kafka-acls` as the set-up super user.
async fn grant(kafka: &Kafka, service: &str, reads: &[&str], prefix: &str) {
    let relay = format!("User:{service}-relay");
    let principal = format!("User:{service}-service");
    let events = format!("{prefix}.{service}.events");
    let dlq = format!("{prefix}.{service}.dlq");
    let group = format!("{prefix}.{service}");
    let topic_prefix = format!("{prefix}.");
    let read_topics: Vec<String> = reads
        .iter()
        .map(|r| format!("{prefix}.{r}.events"))
        .collect();
    let mut read_args = vec![
        "--add",
        "--allow-principal",
        &principal,
        "--operation",
        "Read",
        "--operation",
        "Describe",
        "--operation",
        "DescribeConfigs",
    ];
    for topic in &read_topics {
        read_args.extend(["--topic", topic.as_str()]);
    }
    let commands: Vec<Vec<&str>> = vec![
        vec![
            "--add",
            "--allow-principal",
            &relay,
            "--operation",
            "Write",
            "--operation",
            "Describe",
            "--topic",
            &events,
        ],
        vec![
            "--add",
            "--allow-principal",
            &relay,
            "--operation",
            "IdempotentWrite",
            "--cluster",
        ],
        read_args,
        vec![
            "--add",
            "--allow-principal",
            &principal,
            "--operation",
            "Read",
            "--group",
            &group,
        ],
        vec![
            "--add",
            "--allow-principal",
            &principal,
            "--operation",
            "Write",
            "--operation",
            "Read",
            "--operation",
            "Describe",
            "--topic",
            &dlq,
        ],
        vec![
            "--add",
            "--allow-principal",
            &principal,
            "--operation",
            "Create",
            "--operation",
            "Describe",
            "--resource-pattern-type",
            "prefixed",
            "--topic",
            &topic_prefix,
        ],
    ];
    for args in commands {
        kafka
            .kafka_acls(&args)
            .await
            .unwrap_or_else(|e| panic!("kafka-acls {args:?}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_over_sasl_ssl_and_client_certificates() {
    let dir = std::env::temp_dir().join(unique_name("mall-kafka-security-"));
    let mut spec = KafkaSpec::new(&dir, 1);
    spec.security = Some(Security {
        users: USERS
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect(),
        client_certs: vec!["order-service".into(), "order-relay".into()],
        authorizer: true,
    });
    let mut kafka = Kafka::start(spec).await.expect("a secured Kafka node");
    let prefix = unique_name("t");
    grant(&kafka, "order", &["inventory", "delivery"], &prefix).await;
    grant(&kafka, "delivery", &["order"], &prefix).await;
    grant(&kafka, "inventory", &["delivery"], &prefix).await;
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let delivery_database = postgres::create_database(&format!("{prefix}_delivery")).await;
    let inventory_database = postgres::create_database(&format!("{prefix}_inventory")).await;

    // Delivery and inventory, each service and relay with only its own
    // ACLs: the service SERVING (its group joined, its topics described
    // and created), the relay publishing a row of its outbox.
    for (service, url) in [
        ("delivery", delivery_database.url()),
        ("inventory", inventory_database.url()),
    ] {
        let own = [
            ("MALL_SEC_DATABASE", url),
            ("MALL_SEC_PREFIX", prefix.as_str()),
            ("MALL_SEC_SERVICE", service),
        ];
        let user = format!("{service}-service");
        child(
            &kafka,
            Via::Scram,
            &user,
            password(&user),
            "own",
            "serving",
            &own,
        );
        let writer = postgres::connect(url).await;
        let topic = format!("{prefix}.{service}.events");
        outbox::insert_row(&writer, &topic, "900001", "own ACLs").await;
        let relay = format!("{service}-relay");
        child(
            &kafka,
            Via::Plain,
            &relay,
            password(&relay),
            "relay",
            "served",
            &own,
        );
        let records = read_topic(&kafka.bootstrap(), &topic, PARTITIONS, 1, SETTLE_DEADLINE).await;
        assert!(
            records.iter().any(|r| r.key_str() == "900001"),
            "the {service} relay published to {topic} with its own ACLs"
        );
    }
    let env = [
        ("MALL_SEC_DATABASE", database.url()),
        ("MALL_SEC_PREFIX", prefix.as_str()),
    ];
    let mut orders = Vec::new();
    let mut place = |via: Via| {
        let said = child(
            &kafka,
            via,
            "order-service",
            password("order-service"),
            "service",
            "served",
            &env,
        );
        orders.push(
            said.lines()
                .find_map(|l| l.strip_prefix("ORDER "))
                .expect("the child placed an order")
                .trim()
                .to_owned(),
        );
    };

    // Each listener and mechanism, each process with only its own ACLs.
    for via in [Via::Scram, Via::Plain, Via::Certificate] {
        place(via);
        child(
            &kafka,
            via,
            "order-relay",
            password("order-relay"),
            "relay",
            "served",
            &env,
        );
    }
    // A wrong password: refused at start-up.
    child(
        &kafka,
        Via::Scram,
        "order-service",
        "wrong",
        "service",
        "refused",
        &env,
    );

    // Another service's relay may not write the order topic: it says so,
    // reports unhealthy and keeps the row, which the right relay publishes.
    place(Via::Scram);
    let said = child(
        &kafka,
        Via::Scram,
        "delivery-relay",
        password("delivery-relay"),
        "relay",
        "refused",
        &env,
    );
    assert!(
        said.contains("Kafka refused User:delivery-relay the Write operation on topic"),
        "the relay logs who was refused what:\n{said}"
    );
    assert_eq!(
        outbox::unpublished(database.url()).await,
        1,
        "the refused row is kept"
    );
    child(
        &kafka,
        Via::Scram,
        "order-relay",
        password("order-relay"),
        "relay",
        "served",
        &env,
    );

    // The order service's principal may not join the delivery group.
    let delivery_env = [
        ("MALL_SEC_DATABASE", delivery_database.url()),
        ("MALL_SEC_PREFIX", prefix.as_str()),
    ];
    let said = child(
        &kafka,
        Via::Scram,
        "order-service",
        password("order-service"),
        "delivery",
        "refused",
        &delivery_env,
    );
    let group = format!("{prefix}.delivery");
    assert!(
        said.contains("Kafka refused User:order-service the Read operation on group")
            && said.contains(&group)
            && said.contains("NOT_SERVING"),
        "the service says who was refused what:\n{said}"
    );

    // A forged OrderCreated from another principal never reaches the topic.
    child(
        &kafka,
        Via::Scram,
        "delivery-relay",
        password("delivery-relay"),
        "forge",
        "refused",
        &env,
    );

    // On the topic, read as the super user: every order, once, and nothing else.
    let topics = Topics::new(&prefix);
    let records = read_topic(
        &kafka.bootstrap(),
        &topics.order_events(),
        PARTITIONS,
        orders.len(),
        SETTLE_DEADLINE,
    )
    .await;
    let mut keys: Vec<String> = records.iter().map(|r| r.key_str().to_owned()).collect();
    keys.sort();
    orders.sort();
    assert_eq!(keys, orders, "every order published once, nothing forged");
    kafka.stop().await.expect("a clean stop");
    std::fs::remove_dir_all(&dir).ok();
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name}: run by the parent test only"))
}

/// One process of the scenario, in the environment its parent set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by least_privilege_over_sasl_ssl_and_client_certificates in child processes"]
async fn in_a_child() {
    platform_service::telemetry::init();
    let (brokers, role, expect) = (
        var("MALL_SEC_BROKERS"),
        var("MALL_SEC_ROLE"),
        var("MALL_SEC_EXPECT"),
    );
    let (database, prefix, user) = (
        var("MALL_SEC_DATABASE"),
        var("MALL_SEC_PREFIX"),
        var("MALL_SEC_USER"),
    );
    let topics = Topics::new(&prefix);
    match (role.as_str(), expect.as_str()) {
        ("service", "served") => {
            let shutdown = CancellationToken::new();
            let running = order_service::start(
                &service_args(&database, &brokers, &prefix),
                shutdown.clone(),
            )
            .await
            .expect("the order service starts with its own ACLs");
            wait_for("SERVING with its own ACLs", SETTLE_DEADLINE, || async {
                (health(running.grpc_addr, "").await == ServingStatus::Serving).then_some(())
            })
            .await;
            let order = place_at(running.grpc_addr).await;
            // What the parent reads back: the id of the order placed.
            #[allow(clippy::print_stdout)]
            {
                println!("ORDER {}", order.id);
            }
            shutdown.cancel();
            running.wait().await.expect("a clean stop");
        }
        ("service", "refused") => {
            let mut args = service_args(&database, &brokers, &prefix);
            args.startup_timeout = Duration::from_secs(3);
            let refused = match order_service::start(&args, CancellationToken::new()).await {
                Ok(_) => panic!("started with a wrong password"),
                Err(error) => error.to_string(),
            };
            assert!(refused.contains(&brokers), "{refused}");
        }
        ("own", "serving") => {
            let shutdown = CancellationToken::new();
            let args = service_args(&database, &brokers, &prefix);
            let running = match var("MALL_SEC_SERVICE").as_str() {
                "delivery" => delivery_service::start(&args, shutdown.clone()).await,
                "inventory" => inventory_service::start(&args, shutdown.clone()).await,
                other => panic!("no service {other}"),
            }
            .expect("the service starts with its own ACLs");
            wait_for("SERVING with its own ACLs", SETTLE_DEADLINE, || async {
                (health(running.grpc_addr, "").await == ServingStatus::Serving).then_some(())
            })
            .await;
            shutdown.cancel();
            running.wait().await.expect("a clean stop");
        }
        ("delivery", "refused") => {
            let shutdown = CancellationToken::new();
            let mut args = service_args(&database, &brokers, &prefix);
            args.observability.health_unavailable_after = Duration::from_secs(2);
            let running = delivery_service::start(&args, shutdown.clone())
                .await
                .expect("it starts; joining the group is what is refused");
            wait_for(
                "NOT_SERVING when the group is refused",
                SETTLE_DEADLINE,
                || async {
                    (health(running.grpc_addr, "").await == ServingStatus::NotServing).then_some(())
                },
            )
            .await;
            shutdown.cancel();
            running.wait().await.expect("a clean stop");
        }
        ("relay", served_or_refused) => {
            let relay = Relay::new(relay_config(&database, &brokers)).expect("relay");
            let relay_health = relay.health();
            let shutdown = CancellationToken::new();
            let run = tokio::spawn(relay.run(shutdown.clone()));
            if served_or_refused == "served" {
                wait_for(
                    "the relay to publish every row",
                    SETTLE_DEADLINE,
                    || async { (outbox::unpublished(&database).await == 0).then_some(()) },
                )
                .await;
            } else {
                let said = wait_for(
                    "the relay to say it is refused",
                    SETTLE_DEADLINE,
                    || async {
                        let (healthy, said) = relay_health.check();
                        (!healthy && said.starts_with("refused")).then_some(said)
                    },
                )
                .await;
                let principal = format!("User:{user}");
                assert!(
                    said.contains(&principal)
                        && said.contains("Write")
                        && said.contains(&topics.order_events()),
                    "{said}"
                );
                assert_eq!(
                    outbox::unpublished(&database).await,
                    1,
                    "nothing was marked"
                );
            }
            shutdown.cancel();
            run.await
                .expect("the relay task")
                .expect("the table is ready");
        }
        ("forge", "refused") => {
            let producer = mall_e2e::kafka::producer(&brokers);
            let forged = CapturedRecord::event(
                990_001,
                &mall_proto::order::v1::OrderCreated {
                    order_id: 990_001,
                    product_id: 1,
                    product_name: "TV".into(),
                    qty: 1,
                    address: "Seoul".into(),
                    ..Default::default()
                },
            );
            let sent =
                platform_service::record::send_copy(&producer, &topics.order_events(), &forged)
                    .await;
            let error = sent.expect_err("the broker refuses a write to the order topic");
            assert_eq!(
                error.rdkafka_error_code(),
                Some(rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed),
                "{error}"
            );
        }
        other => panic!("no such child: {other:?}"),
    }
}
