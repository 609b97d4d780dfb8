//! Relay settings, from flags or environment variables.

use std::time::Duration;

use clap::Parser;
use platform_core::settings::{BrokerArgs, DatabaseArgs, ObservabilityArgs, millis, secs};

use crate::mapping::args::MappingArgs;
use crate::mapping::{Mapping, TableName};

/// What happens to a row once the broker acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnPublish {
    /// `published_at` is set; the purge deletes it after the retention, so
    /// an operator can see what went out and when.
    Mark,
    /// It is deleted at once: one statement per batch instead of an update
    /// and a later delete, and no dead rows waiting for the purge.
    Delete,
}

/// Command line of the relay. Every flag also reads an environment variable,
/// so the relay runs as a sidecar with nothing but its environment.
#[derive(Debug, Clone, Parser)]
#[command(version, about = "Publishes a PostgreSQL outbox table to Kafka")]
pub struct RelayConfig {
    /// The database whose outbox is published.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Where the cluster is.
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// The outbox table: `table` (found through the connection's
    /// `search_path`) or `schema.table`.
    #[arg(long, env = "OUTBOX_TABLE", default_value = "outbox", value_parser = TableName::parse)]
    pub table: TableName,

    /// Which columns make a record: a preset and any overrides.
    #[command(flatten)]
    pub mapping: MappingArgs,

    /// What happens to an acknowledged row: `mark` (kept for the retention,
    /// then purged) or `delete` (deleted at once).
    #[arg(
        long = "on-publish",
        env = "RELAY_ON_PUBLISH",
        value_enum,
        default_value = "mark"
    )]
    pub on_publish: OnPublish,

    /// Rows fetched and published per batch, all in flight at once.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub batch_size: i64,

    /// The longest pause between two fetches while the outbox is empty, in
    /// milliseconds: the relay polls back to back while it finds rows, then
    /// waits 1 ms, doubling after each empty fetch up to this.
    #[arg(long = "poll-interval-ms", env = "RELAY_POLL_INTERVAL_MS", default_value = "20",
          value_parser = millis(1..=600_000))]
    pub poll_interval: Duration,

    /// How often a standby replica tries to become the active one, in milliseconds.
    #[arg(long = "standby-retry-ms", env = "RELAY_STANDBY_RETRY_MS", default_value = "1000",
          value_parser = millis(10..=600_000))]
    pub standby_retry: Duration,

    /// Published rows are deleted after this many seconds (0 deletes them at
    /// the next clean-up).
    #[arg(long = "retention-secs", env = "RELAY_RETENTION_SECS", default_value = "3600",
          value_parser = secs(0..=u64::MAX / 1_000))]
    pub retention: Duration,

    /// How often the active relay deletes rows past their retention, in seconds.
    #[arg(long = "purge-interval-secs", env = "RELAY_PURGE_INTERVAL_SECS", default_value = "30",
          value_parser = secs(1..=86_400))]
    pub purge_interval: Duration,

    /// The metrics and health endpoint (`GET /metrics`, `GET /health`), and
    /// how long a replica may spend reconnecting (to its database, or
    /// replacing its producer) before its health says it is broken.
    #[command(flatten)]
    pub observability: ObservabilityArgs,

    /// Advisory lock id that elects the active relay; replicas of one
    /// database must share it.
    #[arg(long, env = "RELAY_LOCK_ID", default_value_t = 0)]
    pub lock_id: i32,

    /// `lock_timeout` of the relay's database sessions, in milliseconds: a
    /// leader blocked on a row lock (an open transaction on an outbox row)
    /// gets an error and steps down instead of leading without progress.
    #[arg(long = "lock-timeout-ms", env = "RELAY_LOCK_TIMEOUT_MS", default_value = "5000",
          value_parser = millis(10..=3_600_000))]
    pub lock_timeout: Duration,

    /// `statement_timeout` of the relay's database sessions, in milliseconds.
    #[arg(long = "statement-timeout-ms", env = "RELAY_STATEMENT_TIMEOUT_MS",
          default_value = "30000", value_parser = millis(100..=3_600_000))]
    pub statement_timeout: Duration,

    /// Seconds a leader may go without finishing a publishing cycle before
    /// `GET /health` says it is stalled (503); above the producer's
    /// `message.timeout.ms` (60 s), which bounds a cycle while the broker is
    /// away.
    #[arg(long = "stall-after-secs", env = "RELAY_STALL_AFTER_SECS", default_value = "90",
          value_parser = secs(1..=86_400))]
    pub stall_after: Duration,

    /// Sends of one row that could never succeed (too large for the
    /// broker, a topic that does not exist) before the row is parked and
    /// the rest of the outbox flows on.
    #[arg(long, env = "RELAY_PARK_AFTER_FAILURES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub park_after_failures: u32,
}

impl RelayConfig {
    /// The declared mapping, overrides applied.
    pub fn mapping(&self) -> Mapping {
        self.mapping.mapping()
    }

    /// The database sessions' lock and statement timeouts.
    pub fn limits(&self) -> crate::store::Limits {
        crate::store::Limits {
            lock_timeout: self.lock_timeout,
            statement_timeout: self.statement_timeout,
        }
    }

    /// What the health endpoint judges against.
    pub fn health_bounds(&self) -> crate::health::Bounds {
        crate::health::Bounds {
            reconnecting: self.observability.health_unavailable_after,
            stalled: self.stall_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["outbox-relay", "--database-url", "postgres://r:s3cret@db/x"];
            args.extend_from_slice(extra);
            RelayConfig::try_parse_from(args)
        };
        let defaults = parse(&[]).expect("parses");
        assert!(
            !format!("{defaults:?}").contains("s3cret"),
            "no password in Debug"
        );
        assert_eq!(defaults.poll_interval, Duration::from_millis(20));
        assert_eq!(defaults.retention, Duration::from_secs(3_600));
        assert_eq!(defaults.on_publish, OnPublish::Mark);
        assert_eq!(defaults.mapping().preset, crate::mapping::Preset::Mall);
        for (flag, named) in [
            ("--batch-size=0", "--batch-size"),
            ("--poll-interval-ms=0", "--poll-interval-ms"),
            ("--purge-interval-secs=0", "--purge-interval-secs"),
            ("--on-publish=forget", "--on-publish"),
            ("--preset=sequin", "--preset"),
            (
                "--health-unavailable-after-secs=0",
                "--health-unavailable-after-secs",
            ),
        ] {
            let refused = parse(&[flag]).expect_err("refused");
            assert!(refused.to_string().contains(named), "{refused}");
        }
    }
}
