//! The settings every test mall runs with, as the flags its binaries take:
//! the e2e harness and the benchmark parse them with the service's and the
//! relay's own clap definitions (so each binary's defaults stay the rest),
//! and nothing here depends on a service.

use crate::env::required_env;

/// Partitions of every test topic.
pub const PARTITIONS: i32 = 3;

/// The broker list of the test infrastructure (`MALL_TEST_KAFKA_BROKERS`).
pub fn brokers() -> String {
    required_env("MALL_TEST_KAFKA_BROKERS")
}

/// The consumer group protocol the tests' services use: `classic` unless
/// `MALL_TEST_GROUP_PROTOCOL=consumer` (KIP-848) says otherwise, so the whole
/// suite can run on either.
pub fn group_protocol() -> String {
    std::env::var("MALL_TEST_GROUP_PROTOCOL").unwrap_or_else(|_| "classic".to_owned())
}

/// A service's flags in a test: its database and broker, gRPC and metrics
/// on port 0 of loopback, small pools, the test topics under `prefix`
/// (replication 1, a week's retention, dead letters kept), the Tansu stall
/// watcher off and self-healing after a minute.
pub fn service_flags(database_url: &str, brokers: &str, prefix: &str) -> Vec<String> {
    let partitions = PARTITIONS.to_string();
    let week = (7 * 86_400).to_string();
    let protocol = group_protocol();
    [
        "service",
        "--database-url",
        database_url,
        "--grpc-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--db-pool-size",
        "4",
        "--db-consumer-pool-size",
        "4",
        "--kafka-brokers",
        brokers,
        "--topic-prefix",
        prefix,
        "--topic-partitions",
        &partitions,
        "--topic-replication",
        "1",
        "--topic-retention-secs",
        &week,
        "--dlq-retention-secs",
        "0",
        "--kafka-stall-rejoin-secs",
        "0",
        "--kafka-self-heal-secs",
        "60",
        "--kafka-group-protocol",
        &protocol,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The relay's flags in a test: its database and broker, and a quicker poll
/// and stand-by retry than its defaults, so fail-overs settle sooner.
pub fn relay_flags(database_url: &str, brokers: &str) -> Vec<String> {
    [
        "outbox-relay",
        "--database-url",
        database_url,
        "--kafka-brokers",
        brokers,
        "--standby-retry-ms",
        "200",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_has_its_value() {
        let flags = service_flags("postgres://x/db", "127.0.0.1:9092", "t1");
        assert_eq!(flags[0], "service");
        assert!(
            flags[1..]
                .chunks(2)
                .all(|pair| pair[0].starts_with("--") && !pair[1].starts_with("--"))
        );
        let relay = relay_flags("postgres://x/db", "127.0.0.1:9092");
        assert!(relay[1..].chunks(2).all(|pair| pair[0].starts_with("--")));
    }
}
