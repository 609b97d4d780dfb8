//! Settings every service shares, read from flags or environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use platform_core::kafka::TopicNames;

use crate::consumer::GroupProtocol;
pub use platform_core::settings::{
    BrokerArgs, DatabaseArgs, ObservabilityArgs, SecretUrl, TopicPrefixArgs, secret_url,
};
use platform_core::settings::{count, millis, secs};

/// Flags and variables common to the three services (12-factor: every one has
/// an environment variable, documented in docs/configuration.md).
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// This service's own database.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address the gRPC server listens on.
    #[arg(long, env = "GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,

    /// PEM certificate chain of the gRPC server; with `GRPC_TLS_KEY` the
    /// server speaks TLS only.
    #[arg(long, env = "GRPC_TLS_CERT", requires = "grpc_tls_key")]
    pub grpc_tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of the gRPC server.
    #[arg(long, env = "GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<std::path::PathBuf>,

    /// PEM CA whose client certificates are verified (mTLS); a caller with
    /// one is authenticated and gets the rights `AUTH_CLIENT_CERT_RIGHTS`
    /// gives its identity.
    #[arg(long, env = "GRPC_TLS_CLIENT_CA", requires = "grpc_tls_cert")]
    pub grpc_tls_client_ca: Option<std::path::PathBuf>,

    /// Rights of verified client certificates by identity (a SAN or the
    /// subject's CN): `identity=right right;identity=right`. An identity not
    /// listed gets no right.
    #[arg(long, env = "AUTH_CLIENT_CERT_RIGHTS", default_value = "")]
    pub auth_client_cert_rights: String,

    /// Shared secret of HS256 bearer tokens, at least 32 bytes (its value is
    /// never printed).
    #[arg(long = "auth-jwt-hs256-secret", alias = "auth-jwt-secret", env = "AUTH_JWT_HS256_SECRET",
          hide_env_values = true, value_parser = secret_url)]
    pub auth_jwt_secret: Option<SecretUrl>,

    /// PEM public key (RSA for RS256, EC for ES256) of bearer tokens.
    #[arg(long, env = "AUTH_JWT_PUBLIC_KEY")]
    pub auth_jwt_public_key: Option<std::path::PathBuf>,

    /// A JWKS file of bearer-token keys, each picked by the token's `kid`;
    /// read again whenever it changes, so keys rotate without a restart.
    #[arg(long, env = "AUTH_JWT_KEYS_FILE")]
    pub auth_jwt_keys_file: Option<std::path::PathBuf>,

    /// The `aud` every bearer token must carry; required with a token key.
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,

    /// The `iss` every bearer token must carry; required with a token key.
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,

    /// The longest a bearer token may live, in seconds: its `exp` may be
    /// no further ahead, nor further after its `iat`.
    #[arg(long = "auth-jwt-max-lifetime-secs", env = "AUTH_JWT_MAX_LIFETIME_SECS",
          default_value = "86400", value_parser = secs(60..=31_536_000))]
    pub auth_jwt_max_lifetime: Duration,

    /// A claim that binds a token to one customer (e.g. `customer_id`): the
    /// order methods then act only on that customer's orders. Tokens
    /// without it act for any customer.
    #[arg(long, env = "AUTH_JWT_CUSTOMER_CLAIM")]
    pub auth_jwt_customer_claim: Option<String>,

    /// Whether the right `*` (in a token's scope or a certificate's rights)
    /// grants every right.
    #[arg(long, env = "AUTH_ALLOW_WILDCARD_SCOPE", default_value_t = false, action = clap::ArgAction::Set)]
    pub auth_allow_wildcard_scope: bool,

    /// Serve without authentication on an address that is not loopback.
    /// Without a credential configured, a service listening anywhere else
    /// refuses to start unless this is set.
    #[arg(long, env = "GRPC_ALLOW_UNAUTHENTICATED", default_value_t = false, action = clap::ArgAction::Set)]
    pub grpc_allow_unauthenticated: bool,

    /// Whether server reflection is served: open where the server is open
    /// (no authentication), to authenticated callers otherwise.
    #[arg(long, env = "GRPC_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub grpc_reflection: bool,

    /// The metrics endpoint and how soon health gives up on the database
    /// and the broker (`NOT_SERVING` once every probe failed that long).
    #[command(flatten)]
    pub observability: ObservabilityArgs,

    /// Milliseconds between the shutdown signal and the gRPC server's stop,
    /// during which health says `NOT_SERVING` while calls are still served,
    /// so load balancers drain the replica first.
    #[arg(long = "shutdown-grace-ms", env = "SHUTDOWN_GRACE_MS", default_value = "0",
          value_parser = millis(0..=600_000))]
    pub shutdown_grace: Duration,

    /// Calls handled at once over all connections; more are shed at once
    /// with `RESOURCE_EXHAUSTED` (health checks never are).
    #[arg(long, env = "GRPC_CONCURRENCY_LIMIT", default_value = "256",
          value_parser = count(1..=100_000))]
    pub grpc_concurrency_limit: usize,

    /// HTTP/2 streams one client connection may have open at once.
    #[arg(long, env = "GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub grpc_max_concurrent_streams: u32,

    /// Longest a response stream (health `Watch`, reflection) may last, in
    /// seconds; it then ends with `DEADLINE_EXCEEDED`.
    #[arg(long = "grpc-stream-max-secs", env = "GRPC_STREAM_MAX_SECS", default_value = "600",
          value_parser = secs(1..=86_400))]
    pub grpc_stream_max: Duration,

    /// Connections open at once; more wait in the kernel's backlog.
    #[arg(long, env = "GRPC_MAX_CONNECTIONS", default_value = "1024",
          value_parser = count(1..=1_000_000))]
    pub grpc_max_connections: usize,

    /// Seconds after which a connection is asked to go (HTTP/2 `GOAWAY`);
    /// clients reconnect, spreading over replicas.
    #[arg(long = "grpc-max-connection-age-secs", env = "GRPC_MAX_CONNECTION_AGE_SECS",
          default_value = "1800", value_parser = secs(10..=604_800))]
    pub grpc_max_connection_age: Duration,

    /// Longest a call may take, in milliseconds; a shorter `grpc-timeout`
    /// sent by the client wins. A call past it ends with `CANCELLED`.
    #[arg(long = "grpc-request-timeout-ms", env = "GRPC_REQUEST_TIMEOUT_MS",
          default_value = "30000", value_parser = millis(100..=3_600_000))]
    pub grpc_request_timeout: Duration,

    /// How long a call waits for a pooled database connection before it
    /// answers `UNAVAILABLE`, in milliseconds.
    #[arg(long = "db-pool-timeout-ms", env = "DB_POOL_TIMEOUT_MS", default_value = "5000",
          value_parser = millis(10..=600_000))]
    pub db_pool_timeout: Duration,

    /// Maximum number of pooled database connections for gRPC calls.
    #[arg(long, env = "DB_POOL_SIZE", default_value = "10", value_parser = count(1..=1_000))]
    pub db_pool_size: usize,

    /// Database connections of the consumer's lanes (and the janitors), a
    /// pool of their own, so API calls cannot take them.
    #[arg(long, env = "DB_CONSUMER_POOL_SIZE", default_value = "8",
          value_parser = count(1..=1_000))]
    pub db_consumer_pool_size: usize,

    /// Statement timeout for every pooled connection, in milliseconds.
    #[arg(long = "db-statement-timeout-ms", env = "DB_STATEMENT_TIMEOUT_MS",
          default_value = "10000", value_parser = millis(100..=3_600_000))]
    pub db_statement_timeout: Duration,

    /// How long start-up waits for the database and the broker, in seconds.
    #[arg(long = "startup-timeout-secs", env = "STARTUP_TIMEOUT_SECS", default_value = "60",
          value_parser = secs(1..=86_400))]
    pub startup_timeout: Duration,

    /// How long inbox rows are kept, in seconds (default 30 days). Must be
    /// longer than the topic retention: see `retention::check_rule`.
    #[arg(long = "inbox-retention-secs", env = "INBOX_RETENTION_SECS", default_value = "2592000",
          value_parser = secs(60..=u64::MAX / 1_000))]
    pub inbox_retention: Duration,

    /// How long request ids (AIP-155 `request_id`, for services that take
    /// them) are kept, in seconds (default 7 days): a retry within it gets
    /// the first call's answer; after it the id may be used again.
    #[arg(long = "request-id-retention-secs", env = "REQUEST_ID_RETENTION_SECS",
          default_value = "604800", value_parser = secs(60..=31_536_000))]
    pub request_id_retention: Duration,

    /// How often the inbox janitor (and every other) deletes expired rows, in seconds.
    #[arg(long = "inbox-purge-interval-secs", env = "INBOX_PURGE_INTERVAL_SECS",
          default_value = "3600", value_parser = secs(1..=86_400))]
    pub inbox_purge_interval: Duration,

    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// The benchmark's switch, handed in by code (no flag, no variable) and
    /// built only with the `bench-hooks` feature: the consumer applies
    /// records without the inbox, to measure what the inbox costs.
    #[cfg(feature = "bench-hooks")]
    #[arg(skip)]
    pub inbox_gate_off: bool,
}

/// Kafka flags shared by services and tools.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Where the cluster is.
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// The application's topic namespace.
    #[command(flatten)]
    pub prefix: TopicPrefixArgs,

    /// Partitions of topics this service creates.
    #[arg(
        long = "topic-partitions",
        env = "KAFKA_TOPIC_PARTITIONS",
        default_value_t = 3,
        value_parser = clap::value_parser!(i32).range(1..=10_000)
    )]
    pub topic_partitions: i32,

    /// Replication factor of topics this service creates.
    #[arg(
        long = "topic-replication",
        env = "KAFKA_TOPIC_REPLICATION",
        default_value_t = 1,
        value_parser = clap::value_parser!(i32).range(1..=100)
    )]
    pub topic_replication: i32,

    /// `min.insync.replicas` of topics this service creates; unset, the
    /// broker's default.
    #[arg(
        long = "topic-min-insync-replicas",
        env = "KAFKA_TOPIC_MIN_INSYNC_REPLICAS"
    )]
    pub topic_min_insync_replicas: Option<i32>,

    /// `retention.ms` of topics this service creates, in seconds (default 7
    /// days): the window in which a record can still be redelivered.
    #[arg(
        long = "topic-retention-secs",
        env = "KAFKA_TOPIC_RETENTION_SECS",
        default_value = "604800",
        value_parser = secs(60..=u64::MAX / 1_000)
    )]
    pub topic_retention: Duration,

    /// `retention.ms` of the dead-letter topics this service creates, in
    /// seconds; 0 (the default) keeps dead letters until someone deletes them.
    #[arg(
        long = "dlq-retention-secs",
        env = "KAFKA_DLQ_RETENTION_SECS",
        default_value = "0",
        value_parser = secs(0..=u64::MAX / 1_000)
    )]
    pub dead_letter_retention: Duration,

    /// Opt-in work-around for brokers whose group coordinator leaves
    /// partitions unassigned after a member dies (Tansu 0.6 does; see
    /// `stall`): seconds a partition this member does not own may hold
    /// waiting records without progress before the member rejoins the group,
    /// and recreates its client if that did not help. 0 (the default) turns
    /// it off: against Apache Kafka it would only add rebalances.
    #[arg(
        long = "kafka-stall-rejoin-secs",
        env = "KAFKA_STALL_REJOIN_SECS",
        default_value = "0",
        value_parser = secs(0..=86_400)
    )]
    pub stall_rejoin: Duration,

    /// Seconds one of this member's own partitions may hold records the
    /// client does not fetch, while its lane is idle and not paused, before
    /// the consumer recreates its Kafka client (self-healing after a lost
    /// session or a failed rejoin); 0 turns it off.
    #[arg(
        long = "kafka-self-heal-secs",
        env = "KAFKA_SELF_HEAL_SECS",
        default_value = "60",
        value_parser = secs(0..=86_400)
    )]
    pub self_heal: Duration,

    /// Consumer group protocol: `classic` (JoinGroup/SyncGroup, every
    /// broker) or `consumer` (KIP-848, Apache Kafka 4: the broker assigns
    /// partitions incrementally). docs/kafka.md gives the pauses of each.
    #[arg(
        long = "kafka-group-protocol",
        env = "KAFKA_GROUP_PROTOCOL",
        value_enum,
        default_value_t = GroupProtocol::Classic
    )]
    pub group_protocol: GroupProtocol,

    /// Consumer group id; defaults to `<prefix>.<service>`.
    #[arg(long = "kafka-group-id", env = "KAFKA_GROUP_ID")]
    pub group_id: Option<String>,

    /// librdkafka properties for this service's consumer, applied like
    /// `KAFKA_PROPERTY_*` variables; for embedding (tests), not a flag.
    #[arg(skip)]
    pub consumer_properties: Vec<(String, String)>,
}

impl ServiceArgs {
    /// Parses `flags` (the first names the program) as a service binary
    /// would, its defaults and environment included: for code that runs a
    /// service in process (the e2e harness, the benchmark).
    pub fn try_from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            args: ServiceArgs,
        }
        <Flags as clap::Parser>::try_parse_from(flags).map(|flags| flags.args)
    }

    /// The gRPC server's limits.
    pub fn limits(&self) -> crate::grpc::limits::Limits {
        crate::grpc::limits::Limits {
            concurrency: self.grpc_concurrency_limit,
            streams_per_connection: self.grpc_max_concurrent_streams,
            timeout: self.grpc_request_timeout,
            stream_deadline: self.grpc_stream_max,
            max_connections: self.grpc_max_connections,
            connection_age: self.grpc_max_connection_age,
        }
    }
}

impl KafkaArgs {
    /// Resolves the settings for one named service.
    pub fn settings(&self, service: &str) -> KafkaSettings {
        let names = TopicNames::new(&self.prefix.topic_prefix);
        KafkaSettings {
            brokers: self.broker.brokers.clone(),
            group_id: self
                .group_id
                .clone()
                .unwrap_or_else(|| names.group(service)),
            dead_letter_topic: names.dead_letters(service),
            names,
            partitions: self.topic_partitions,
            replication: self.topic_replication,
            min_insync_replicas: self.topic_min_insync_replicas,
            retention: self.topic_retention,
            dead_letter_retention: non_zero(self.dead_letter_retention),
            stall_rejoin: non_zero(self.stall_rejoin),
            self_heal: non_zero(self.self_heal),
            consumer_properties: self.consumer_properties.clone(),
            group_protocol: self.group_protocol,
        }
    }
}

/// `None` for zero, the settings' way of saying "off" or "forever".
fn non_zero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

/// Resolved Kafka settings of one service.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Topic names.
    pub names: TopicNames,
    /// Where this service's consumer sends poison messages.
    pub dead_letter_topic: String,
    /// Partitions for topics it creates.
    pub partitions: i32,
    /// Replication factor for topics it creates.
    pub replication: i32,
    /// `min.insync.replicas` for topics it creates; `None`: the broker's default.
    pub min_insync_replicas: Option<i32>,
    /// `retention.ms` of topics it creates: how long a record can be redelivered.
    pub retention: Duration,
    /// `retention.ms` of the dead-letter topics it creates; `None`: kept until deleted.
    pub dead_letter_retention: Option<Duration>,
    /// Rejoin the group after a partition stood unconsumed this long; `None`: never.
    pub stall_rejoin: Option<Duration>,
    /// Recreate the client after an own partition went unfetched this long; `None`: never.
    pub self_heal: Option<Duration>,
    /// Extra librdkafka properties of the consumer, applied after the
    /// environment's `KAFKA_PROPERTY_*`.
    pub consumer_properties: Vec<(String, String)>,
    /// The consumer group protocol.
    pub group_protocol: GroupProtocol,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServiceArgs,
    }

    fn parse(extra: &[&str]) -> ServiceArgs {
        let mut argv = vec!["service", "--database-url", "postgres://app:s3cret@db/app"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("parses").args
    }

    #[test]
    fn the_database_password_never_shows_in_debug_output() {
        let args = parse(&[]);
        assert!(!format!("{args:?}").contains("s3cret"));
        use secrecy::ExposeSecret;
        assert_eq!(
            args.database.database_url.expose_secret(),
            "postgres://app:s3cret@db/app"
        );
    }

    #[test]
    fn defaults_are_in_range_and_out_of_range_values_are_refused_by_name() {
        let args = parse(&[]);
        assert_eq!(args.db_statement_timeout, Duration::from_secs(10));
        assert_eq!(args.inbox_retention, Duration::from_secs(30 * 86_400));
        assert_eq!(args.kafka.settings("order").dead_letter_retention, None);
        for (flag, variable) in [
            ("--grpc-concurrency-limit=0", "--grpc-concurrency-limit"),
            ("--topic-partitions=-3", "--topic-partitions"),
            ("--db-statement-timeout-ms=5", "--db-statement-timeout-ms"),
            (
                "--health-unavailable-after-secs=0",
                "--health-unavailable-after-secs",
            ),
        ] {
            let argv = ["service", "--database-url", "postgres://db/app", flag];
            let refused = Cli::try_parse_from(argv).expect_err("refused");
            assert!(refused.to_string().contains(variable), "{refused}");
        }
    }

    #[test]
    fn the_flag_names_stay_as_documented() {
        use clap::CommandFactory;
        let command = Cli::command();
        let longs: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        for documented in [
            "database-url",
            "metrics-addr",
            "health-unavailable-after-secs",
            "shutdown-grace-ms",
            "grpc-request-timeout-ms",
            "db-pool-timeout-ms",
            "db-statement-timeout-ms",
            "startup-timeout-secs",
            "inbox-retention-secs",
            "request-id-retention-secs",
            "inbox-purge-interval-secs",
            "grpc-stream-max-secs",
            "grpc-max-connection-age-secs",
            "auth-jwt-max-lifetime-secs",
            "kafka-brokers",
            "topic-prefix",
            "topic-retention-secs",
            "dlq-retention-secs",
            "kafka-self-heal-secs",
            "kafka-stall-rejoin-secs",
        ] {
            assert!(
                longs.iter().any(|l| l == documented),
                "--{documented} is gone"
            );
        }
    }
}
