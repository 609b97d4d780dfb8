//! Relay settings, from flags or environment variables.

use std::time::Duration;

use clap::Parser;
use platform_core::settings::{OutOfRange, SecretUrl, in_range, secret_url};

/// Command line of the relay. Every flag also reads an environment variable,
/// so the relay runs as a sidecar with nothing but its environment.
#[derive(Debug, Clone, Parser)]
#[command(version, about = "Publishes a PostgreSQL outbox table to Kafka")]
pub struct RelayConfig {
    /// PostgreSQL URL of the database whose outbox is published.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret_url)]
    pub database_url: SecretUrl,

    /// Comma-separated bootstrap brokers.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// The outbox table.
    #[arg(long, env = "OUTBOX_TABLE", default_value = "outbox", value_parser = identifier)]
    pub table: String,

    /// The LISTEN/NOTIFY channel the table's trigger notifies.
    #[arg(long, env = "OUTBOX_CHANNEL", default_value = "outbox", value_parser = identifier)]
    pub channel: String,

    /// Rows fetched and published per batch, all in flight at once.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: i64,

    /// Fallback poll interval when no notification arrives, in milliseconds.
    #[arg(long, env = "RELAY_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,

    /// How often a standby replica tries to become the active one, in milliseconds.
    #[arg(long, env = "RELAY_STANDBY_RETRY_MS", default_value_t = 1000)]
    pub standby_retry_ms: u64,

    /// Published rows are deleted after this many seconds (0 deletes them at
    /// the next clean-up).
    #[arg(long, env = "RELAY_RETENTION_SECS", default_value_t = 3600)]
    pub retention_secs: u64,

    /// How often the active relay deletes rows past their retention, in seconds.
    #[arg(long, env = "RELAY_PURGE_INTERVAL_SECS", default_value_t = 30)]
    pub purge_interval_secs: u64,

    /// Address of the Prometheus endpoint (`GET /metrics`); unset, no
    /// metrics are served.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Seconds a replica may spend reconnecting (to its database, or
    /// replacing its producer) before `GET /health` says it is broken.
    #[arg(long, env = "HEALTH_UNAVAILABLE_AFTER_SECS", default_value_t = 10)]
    pub health_unavailable_after_secs: u64,

    /// Advisory lock id that elects the active relay; replicas of one
    /// database must share it.
    #[arg(long, env = "RELAY_LOCK_ID", default_value_t = 0)]
    pub lock_id: i32,

    /// `lock_timeout` of the relay's database sessions, in milliseconds: a
    /// leader blocked on a row lock (an open transaction on an outbox row)
    /// gets an error and steps down instead of leading without progress.
    #[arg(long, env = "RELAY_LOCK_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub lock_timeout_ms: u64,

    /// `statement_timeout` of the relay's database sessions, in milliseconds.
    #[arg(long, env = "RELAY_STATEMENT_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub statement_timeout_ms: u64,

    /// Seconds a leader may go without finishing a publishing cycle before
    /// `GET /health` says it is stalled (503); above the producer's
    /// `message.timeout.ms` (60 s), which bounds a cycle while the broker is
    /// away.
    #[arg(long, env = "RELAY_STALL_AFTER_SECS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stall_after_secs: u64,

    /// Sends of one row that could never succeed (too large for the
    /// broker, a topic that does not exist) before the row is parked and
    /// the rest of the outbox flows on.
    #[arg(long, env = "RELAY_PARK_AFTER_FAILURES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub park_after_failures: u32,
}

impl RelayConfig {
    /// Refuses settings out of their range, naming the variable: a batch
    /// size of 0 would publish nothing, a poll interval of 0 would spin.
    pub fn validate(&self) -> Result<(), OutOfRange> {
        in_range(
            "RELAY_BATCH_SIZE",
            u64::try_from(self.batch_size).unwrap_or(0),
            1,
            10_000,
        )?;
        in_range("RELAY_POLL_INTERVAL_MS", self.poll_interval_ms, 10, 600_000)?;
        in_range("RELAY_STANDBY_RETRY_MS", self.standby_retry_ms, 10, 600_000)?;
        in_range(
            "RELAY_PURGE_INTERVAL_SECS",
            self.purge_interval_secs,
            1,
            86_400,
        )?;
        in_range(
            "HEALTH_UNAVAILABLE_AFTER_SECS",
            self.health_unavailable_after_secs,
            1,
            3_600,
        )?;
        Ok(())
    }

    /// The fallback poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// How often old published rows are deleted.
    pub fn purge_interval(&self) -> Duration {
        Duration::from_secs(self.purge_interval_secs.max(1))
    }

    /// How often a standby retries the lock.
    pub fn standby_retry(&self) -> Duration {
        Duration::from_millis(self.standby_retry_ms)
    }

    /// The database sessions' lock and statement timeouts.
    pub fn limits(&self) -> crate::store::Limits {
        crate::store::Limits {
            lock_timeout: Duration::from_millis(self.lock_timeout_ms),
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
        }
    }

    /// What the health endpoint judges against.
    pub fn health_bounds(&self) -> crate::health::Bounds {
        crate::health::Bounds {
            reconnecting: Duration::from_secs(self.health_unavailable_after_secs),
            stalled: Duration::from_secs(self.stall_after_secs),
        }
    }
}

/// Accepts plain SQL identifiers only, since table and channel names are
/// spliced into SQL.
fn identifier(value: &str) -> Result<String, String> {
    let mut chars = value.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && value.len() <= 63;
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a plain lowercase SQL identifier"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(identifier("outbox").is_ok());
        assert!(identifier("outbox_2").is_ok());
        assert!(identifier("Outbox").is_err());
        assert!(identifier("outbox; drop table x").is_err());
        assert!(identifier("").is_err());
    }

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["outbox-relay", "--database-url", "postgres://r:s3cret@db/x"];
            args.extend_from_slice(extra);
            RelayConfig::try_parse_from(args).expect("parses")
        };
        assert!(parse(&[]).validate().is_ok());
        assert!(
            !format!("{:?}", parse(&[])).contains("s3cret"),
            "no password in Debug"
        );
        let refused = parse(&["--batch-size", "0"])
            .validate()
            .expect_err("refused");
        assert_eq!(
            refused.to_string(),
            "RELAY_BATCH_SIZE must be between 1 and 10000, got 0"
        );
        let refused = parse(&["--poll-interval-ms", "0"])
            .validate()
            .expect_err("refused");
        assert_eq!(refused.variable, "RELAY_POLL_INTERVAL_MS");
    }
}
