//! What a cluster looks like from a client: partition leaders, replicas and
//! in-sync replicas from a metadata request, and which partition of
//! `__consumer_offsets` (so which broker) coordinates a consumer group.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::KafkaError;

/// One partition as metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The leader's `node.id`; -1 while it has none.
    pub leader: i32,
    /// Every replica's `node.id`.
    pub replicas: Vec<i32>,
    /// The in-sync replicas' `node.id`s.
    pub isr: Vec<i32>,
}

impl PartitionView {
    /// Whether some replica is out of sync.
    pub fn under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }
}

/// Every partition of `topics` (all topics when empty), from one metadata
/// request to `bootstrap`.
pub async fn partitions(
    bootstrap: &str,
    topics: &[String],
) -> Result<Vec<PartitionView>, KafkaError> {
    let bootstrap = bootstrap.to_owned();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("socket.timeout.ms", "2000")
            .set("log_level", "0")
            .create()
            .map_err(|e| KafkaError::Metadata(e.to_string()))?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(3))
            .map_err(|e| KafkaError::Metadata(e.to_string()))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| topics.is_empty() || topics.iter().any(|name| name == t.name()))
            .flat_map(|t| {
                t.partitions().iter().map(|p| PartitionView {
                    topic: t.name().to_owned(),
                    partition: p.id(),
                    leader: p.leader(),
                    replicas: p.replicas().to_vec(),
                    isr: p.isr().to_vec(),
                })
            })
            .collect())
    })
    .await
    .map_err(|e| KafkaError::Metadata(e.to_string()))?
}

/// Java's `String.hashCode` over UTF-16 code units, as Kafka hashes a group
/// id.
fn java_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The partition of `__consumer_offsets` whose leader coordinates `group`
/// (Kafka's `Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions`).
pub fn offsets_partition(group: &str, offsets_partitions: i32) -> i32 {
    (java_hash(group) & 0x7fff_ffff) % offsets_partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_hash_is_javas() {
        // Values of `String.hashCode()` printed by Java 17's jshell.
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash("chaos.delivery"), 1_238_869_666);
        assert_eq!(offsets_partition("chaos.delivery", 5), 1_238_869_666 % 5);
        // The one whose hash is i32::MIN: Kafka's abs masks the sign bit.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(offsets_partition("polygenelubricants", 5), 0);
    }

    #[test]
    fn under_replication_compares_isr_with_replicas() {
        let mut view = PartitionView {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        };
        assert!(!view.under_replicated());
        view.isr = vec![1, 3];
        assert!(view.under_replicated());
    }
}
