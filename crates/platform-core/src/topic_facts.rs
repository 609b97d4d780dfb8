//! What the broker says about existing topics: their retention, cleanup
//! policy and replication, read at start-up (DescribeConfigs and metadata)
//! so durability settings are checked, not assumed.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::kafka::{LogContext, TopicError, client_config};

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
}

/// Describes `topics`: configuration from DescribeConfigs, replication from
/// the metadata.
pub async fn describe(brokers: &str, topics: &[String]) -> Result<Vec<TopicFacts>, TopicError> {
    let admin_error = |source| TopicError::Admin {
        brokers: brokers.to_owned(),
        source,
    };
    let admin: AdminClient<LogContext> = client_config(brokers)
        .create_with_context(LogContext)
        .map_err(admin_error)?;
    let resources: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(CALL_TIMEOUT));
    let described = admin
        .describe_configs(&resources, &options)
        .await
        .map_err(admin_error)?;
    let mut facts = Vec::new();
    for (topic, result) in topics.iter().zip(described) {
        let mut fact = TopicFacts {
            topic: topic.clone(),
            ..TopicFacts::default()
        };
        if let Ok(resource) = result {
            for entry in resource.entries {
                match (entry.name.as_str(), entry.value) {
                    ("retention.ms", Some(value)) => fact.retention_ms = value.parse().ok(),
                    ("cleanup.policy", Some(value)) => fact.cleanup_policy = Some(value),
                    _ => {}
                }
            }
        }
        facts.push(fact);
    }
    let brokers = brokers.to_owned();
    let names = topics.to_vec();
    let replicas =
        tokio::task::spawn_blocking(move || -> Result<Vec<Option<usize>>, TopicError> {
            let consumer: BaseConsumer<LogContext> = client_config(&brokers)
                .create_with_context(LogContext)
                .map_err(|source| TopicError::Admin {
                    brokers: brokers.clone(),
                    source,
                })?;
            let mut found = Vec::new();
            for name in &names {
                let metadata =
                    consumer
                        .fetch_metadata(Some(name), CALL_TIMEOUT)
                        .map_err(|source| TopicError::Admin {
                            brokers: brokers.clone(),
                            source,
                        })?;
                found.push(
                    metadata
                        .topics()
                        .iter()
                        .flat_map(|t| t.partitions())
                        .map(|p| p.replicas().len())
                        .min(),
                );
            }
            Ok(found)
        })
        .await
        .unwrap_or_else(|_| Ok(vec![None; topics.len()]))?;
    for (fact, replicas) in facts.iter_mut().zip(replicas) {
        fact.replicas = replicas;
    }
    Ok(facts)
}
