//! Which consumer group protocol the consumer speaks, and what librdkafka
//! properties follow from it.
//!
//! `classic` is Kafka's JoinGroup/SyncGroup protocol: every rebalance
//! revokes every partition of every member before it assigns again, and
//! the client sets its own session and heartbeat timing. `consumer` is
//! KIP-848 (Apache Kafka 4, librdkafka 2.12): the broker computes the
//! assignment and hands partitions over one by one, and the session and
//! heartbeat timing are the group's, set on the broker
//! (`group.consumer.session.timeout.ms`, `group.consumer.heartbeat.interval.ms`).

/// The consumer group protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup, spoken by every Kafka-protocol broker.
    #[default]
    Classic,
    /// KIP-848's broker-driven incremental protocol (Apache Kafka 4).
    Consumer,
}

impl GroupProtocol {
    /// Defaults the consumer starts from (an operator's `KAFKA_PROPERTY_*`
    /// may change them): the client's own group timing, classic only.
    pub fn defaults(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Classic => &[
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "1000"),
            ],
            // librdkafka refuses both with group.protocol=consumer.
            Self::Consumer => &[],
        }
    }

    /// The `group.protocol` property.
    pub fn property(self) -> (&'static str, &'static str) {
        match self {
            Self::Classic => ("group.protocol", "classic"),
            Self::Consumer => ("group.protocol", "consumer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_classic_protocol_sets_client_side_group_timing() {
        assert!(
            GroupProtocol::Classic
                .defaults()
                .iter()
                .any(|(k, _)| *k == "session.timeout.ms")
        );
        assert!(GroupProtocol::Consumer.defaults().is_empty());
        assert_eq!(GroupProtocol::Consumer.property().1, "consumer");
        assert_eq!(GroupProtocol::default(), GroupProtocol::Classic);
    }
}
