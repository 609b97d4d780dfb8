//! What the broker says about existing topics: their retention, cleanup
//! policy, replication, `min.insync.replicas` and unclean leader election, read at start-up (DescribeConfigs and metadata)
//! so durability settings are checked, not assumed.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::{LogContext, TopicError, admin_client, client_config};

/// How long each broker call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One topic as the broker describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicFacts {
    /// The topic.
    pub topic: String,
    /// `retention.ms`, when the broker reports it (-1: forever).
    pub retention_ms: Option<i64>,
    /// `cleanup.policy`, when the broker reports it (`delete`, `compact`, …).
    pub cleanup_policy: Option<String>,
    /// The fewest replicas any of its partitions has.
    pub replicas: Option<usize>,
    /// `min.insync.replicas`, when the broker reports it.
    pub min_insync_replicas: Option<i64>,
    /// `unclean.leader.election.enable`, when the broker reports it.
    pub unclean_leader_election: Option<bool>,
}

/// Describes `topics`: configuration from DescribeConfigs, replication from
/// the metadata.
pub async fn describe(brokers: &str, topics: &[String]) -> Result<Vec<TopicFacts>, TopicError> {
    let admin = admin_client(brokers)?;
    let resources: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(CALL_TIMEOUT));
    let described = admin
        .describe_configs(&resources, &options)
        .await
        .map_err(TopicError::admin(brokers))?;
    let mut facts = Vec::new();
    for (topic, result) in topics.iter().zip(described) {
        let mut fact = TopicFacts {
            topic: topic.clone(),
            ..TopicFacts::default()
        };
        let resource = match result {
            Ok(resource) => Some(resource),
            // Created a moment ago and not in this broker's metadata yet:
            // the caller asks again rather than take it as unreported.
            Err(code @ RDKafkaErrorCode::UnknownTopicOrPartition) => {
                return Err(TopicError::NotYetKnown {
                    topic: topic.clone(),
                    code,
                });
            }
            // Anything else (no DescribeConfigs right, a broker without
            // the API) leaves the settings unreported, which is warned about.
            Err(_) => None,
        };
        if let Some(resource) = resource {
            for entry in resource.entries {
                match (entry.name.as_str(), entry.value) {
                    ("retention.ms", Some(value)) => fact.retention_ms = value.parse().ok(),
                    ("cleanup.policy", Some(value)) => fact.cleanup_policy = Some(value),
                    ("min.insync.replicas", Some(value)) => {
                        fact.min_insync_replicas = value.parse().ok();
                    }
                    ("unclean.leader.election.enable", Some(value)) => {
                        fact.unclean_leader_election = value.parse().ok();
                    }
                    _ => {}
                }
            }
        }
        facts.push(fact);
    }
    // Replication from one metadata request for all of them.
    let owned = brokers.to_owned();
    let metadata = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<LogContext> = client_config(&owned)
            .create_with_context(LogContext)
            .map_err(TopicError::admin(&owned))?;
        consumer
            .fetch_metadata(None, CALL_TIMEOUT)
            .map_err(TopicError::admin(&owned))
    })
    .await
    .map_err(|_| TopicError::admin(brokers)(KafkaError::Canceled))??;
    let replicas: Vec<Option<usize>> = topics
        .iter()
        .map(|name| {
            metadata
                .topics()
                .iter()
                .filter(|t| t.name() == name)
                .flat_map(|t| t.partitions())
                .map(|p| p.replicas().len())
                .min()
        })
        .collect();
    for (fact, replicas) in facts.iter_mut().zip(replicas) {
        fact.replicas = replicas;
    }
    Ok(facts)
}
