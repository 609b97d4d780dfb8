//! Settings every binary shares, declared once: the flag groups the
//! services, the relay and the tools flatten into their command lines
//! (database, brokers, topic prefix, metrics and health), and the value
//! parsers that check a range while parsing and give durations as
//! `Duration`s, so a value out of its range is refused by clap with a
//! message that names the flag and the variable, instead of misbehaving
//! silently (a batch size of 0 that publishes nothing, a poll interval of
//! 0 that spins).

use std::net::SocketAddr;
use std::ops::RangeBounds;
use std::time::Duration;

use clap::builder::TypedValueParser;

/// A connection string kept out of logs, errors and `Debug` output (it may
/// hold a password); read it with `ExposeSecret::expose_secret` only where
/// a connection is made.
pub type SecretUrl = secrecy::SecretString;

/// Parses a flag or variable into a [`SecretUrl`], for clap's `value_parser`.
pub fn secret_url(value: &str) -> Result<SecretUrl, std::convert::Infallible> {
    Ok(SecretUrl::from(value))
}

/// A whole number of milliseconds in `range`, parsed as a `Duration`: for
/// settings named `*_MS`.
pub fn millis(range: impl RangeBounds<u64>) -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64)
        .range(range)
        .map(Duration::from_millis)
}

/// A whole number of seconds in `range`, parsed as a `Duration`: for
/// settings named `*_SECS`.
pub fn secs(range: impl RangeBounds<u64>) -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64)
        .range(range)
        .map(Duration::from_secs)
}

/// A count in `range`, as a `usize`: pool sizes, limits.
pub fn count(range: impl RangeBounds<u64>) -> impl TypedValueParser<Value = usize> {
    clap::value_parser!(u64)
        .range(range)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// The database a binary works on.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL of the binary's database (its value, which may hold a
    /// password, is never printed by `--help`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret_url)]
    pub database_url: SecretUrl,
}

/// Where the Kafka cluster is.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Comma-separated bootstrap brokers.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub brokers: String,
}

/// The namespace of an application's topics and groups.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicPrefixArgs {
    /// Prefix of every topic name: `<prefix>.<service>.events` and so on.
    #[arg(
        long = "topic-prefix",
        env = "KAFKA_TOPIC_PREFIX",
        default_value = "mall",
        global = true
    )]
    pub topic_prefix: String,
}

/// How a long-running binary is watched: its metrics endpoint and how soon
/// its health gives up on what it needs.
#[derive(Debug, Clone, clap::Args)]
pub struct ObservabilityArgs {
    /// Address of the Prometheus endpoint (`GET /metrics`); unset, no
    /// metrics are served.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Seconds the database or the broker may be out of reach (every probe
    /// failing, or a relay reconnecting) before health says so; it recovers
    /// as soon as both answer.
    #[arg(
        long = "health-unavailable-after-secs",
        env = "HEALTH_UNAVAILABLE_AFTER_SECS",
        default_value = "10",
        value_parser = secs(1..=3_600)
    )]
    pub health_unavailable_after: Duration,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long, default_value = "500", value_parser = millis(10..=600_000))]
        poll_ms: Duration,
        #[arg(long, default_value = "4", value_parser = count(1..=1_000))]
        pool: usize,
        #[command(flatten)]
        observed: ObservabilityArgs,
    }

    #[test]
    fn durations_and_counts_parse_within_their_range() {
        let cli = Cli::try_parse_from(["x", "--poll-ms", "250", "--pool", "9"]).expect("parses");
        assert_eq!(cli.poll_ms, Duration::from_millis(250));
        assert_eq!(cli.pool, 9);
        assert_eq!(
            cli.observed.health_unavailable_after,
            Duration::from_secs(10)
        );
        let defaults = Cli::try_parse_from(["x"]).expect("parses");
        assert_eq!(defaults.poll_ms, Duration::from_millis(500));
    }

    #[test]
    fn out_of_range_is_refused_naming_the_flag() {
        let refused = Cli::try_parse_from(["x", "--poll-ms", "0"]).expect_err("refused");
        let text = refused.to_string();
        assert!(
            text.contains("--poll-ms") && text.contains("10..=600000"),
            "{text}"
        );
        assert!(Cli::try_parse_from(["x", "--pool", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--health-unavailable-after-secs", "0"]).is_err());
    }
}
