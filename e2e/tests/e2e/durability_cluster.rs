//! Durability checks against a real three-broker Apache Kafka cluster: at
//! start-up a service warns by name about a consumed topic with fewer
//! replicas than it is configured for, and refuses one whose
//! `min.insync.replicas` exceeds its replicas or that allows unclean leader
//! election, each with the topic and the setting in the message.

use std::time::Duration;

use mall_e2e::mall::{PARTITIONS, service_args};
use mall_e2e::{postgres, unique_name};
use mall_saga::Topics;
use mall_testkit::{Kafka, KafkaSpec};
use platform_service::durability;
use platform_service::topic_facts;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use tokio_util::sync::CancellationToken;

/// Creates `topic` with `replicas` replicas and the given settings.
async fn create(brokers: &str, topic: &str, replicas: i32, settings: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("an admin client");
    let mut new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(replicas))
        .set("retention.ms", "86400000");
    for (key, value) in settings {
        new = new.set(key, value);
    }
    let created = admin
        .create_topics(&[new], &AdminOptions::new())
        .await
        .expect("CreateTopics answered");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

/// Starts a delivery service configured for 3 replicas on `prefix`, whose
/// order topic was made by hand; what it said if it refused.
async fn start_delivery(brokers: &str, prefix: &str) -> Result<(), String> {
    let database = postgres::create_database(&format!("{prefix}_delivery")).await;
    let mut args = service_args(&database, brokers, prefix);
    args.kafka.topic_replication = 3;
    args.kafka.topic_min_insync_replicas = Some(2);
    let shutdown = CancellationToken::new();
    match delivery_service::start(&args, shutdown.clone()).await {
        Ok(running) => {
            shutdown.cancel();
            running.wait().await.expect("a clean stop");
            Ok(())
        }
        Err(error) => Err(error.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cluster_s_durability_settings_are_checked_by_name() {
    platform_service::telemetry::init();
    let dir = std::env::temp_dir().join(unique_name("mall-cluster-"));
    let mut spec = KafkaSpec::new(&dir, 3);
    spec.heap_mb = 256;
    let mut kafka = Kafka::start(spec).await.expect("a three-node cluster");
    let brokers = kafka.bootstrap();
    let inbox = Duration::from_secs(30 * 86_400);

    // One replica where three are configured: warned, by name; it starts.
    // (Its min.insync.replicas must be 1: the cluster's default of 2 would
    // make it unwritable, which is refused.)
    let thin = unique_name("t");
    let thin_topic = Topics::new(&thin).order_events();
    create(&brokers, &thin_topic, 1, &[("min.insync.replicas", "1")]).await;
    let facts = topic_facts::describe(&brokers, std::slice::from_ref(&thin_topic))
        .await
        .expect("the cluster describes the topic");
    assert_eq!(facts[0].replicas, Some(1), "{facts:?}");
    assert_eq!(facts[0].min_insync_replicas, Some(1), "{facts:?}");
    assert_eq!(facts[0].unclean_leader_election, Some(false), "{facts:?}");
    let found = durability::judge(&facts[0], inbox, 3);
    assert!(found.refusals.is_empty(), "{found:?}");
    assert!(
        found
            .warnings
            .iter()
            .any(|w| w.contains(&thin_topic) && w.contains("KAFKA_TOPIC_REPLICATION=3")),
        "{found:?}"
    );
    start_delivery(&brokers, &thin)
        .await
        .expect("a thin topic is only warned about");

    // min.insync.replicas above the replicas: refused, by name.
    let strict = unique_name("t");
    let strict_topic = Topics::new(&strict).order_events();
    create(&brokers, &strict_topic, 2, &[("min.insync.replicas", "3")]).await;
    let refused = start_delivery(&brokers, &strict)
        .await
        .expect_err("refused: min.insync.replicas > replicas");
    assert!(
        refused.contains(&strict_topic) && refused.contains("min.insync.replicas=3"),
        "{refused}"
    );

    // Unclean leader election: refused, by name.
    let unclean = unique_name("t");
    let unclean_topic = Topics::new(&unclean).order_events();
    create(
        &brokers,
        &unclean_topic,
        3,
        &[("unclean.leader.election.enable", "true")],
    )
    .await;
    let refused = start_delivery(&brokers, &unclean)
        .await
        .expect_err("refused: unclean leader election");
    assert!(
        refused.contains(&unclean_topic) && refused.contains("unclean.leader.election.enable=true"),
        "{refused}"
    );

    kafka.kill_all().await.expect("the cluster ends");
    std::fs::remove_dir_all(&dir).ok();
}
