//! The command line of `mall-chaos`; every flag also reads a variable.

use std::path::PathBuf;

use clap::Parser;

/// How big the run is, what it starts and where it keeps its files.
#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "Run the whole mall with two replicas of everything, inject faults, check the invariants"
)]
pub struct Args {
    /// Orders to place.
    #[arg(long, env = "CHAOS_ORDERS", default_value_t = 2_000)]
    pub orders: usize,

    /// Seed of every random choice (order mix, fault plan, fault targets);
    /// random when absent and printed either way.
    #[arg(long, env = "CHAOS_SEED")]
    pub seed: Option<u64>,

    /// Orders placed per second, across all clients.
    #[arg(long, env = "CHAOS_RATE", default_value_t = 25)]
    pub rate: u32,

    /// Concurrent clients placing orders.
    #[arg(long, env = "CHAOS_CLIENTS", default_value_t = 8)]
    pub clients: usize,

    /// Products in the catalogue.
    #[arg(long, env = "CHAOS_PRODUCTS", default_value_t = 5)]
    pub products: usize,

    /// SIGKILLs of each service replica and each relay replica.
    #[arg(long, env = "CHAOS_KILLS_PER_REPLICA", default_value_t = 3)]
    pub kills_per_replica: usize,

    /// PostgreSQL restarts, broker kill -9s, replays, duplicate/out-of-order
    /// injections and poison rounds, each.
    #[arg(long, env = "CHAOS_ROUNDS", default_value_t = 2)]
    pub rounds: usize,

    /// Partitions of every topic.
    #[arg(long, env = "CHAOS_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,

    /// Leave out the broker outages longer than the producers'
    /// `message.timeout.ms` (which the run otherwise sets to 10 s so sends
    /// fail past every retry).
    #[arg(long = "no-long-broker-outages", env = "CHAOS_NO_LONG_BROKER_OUTAGES")]
    pub no_long_broker_outages: bool,

    /// Give up waiting for the mall to become quiet after this many seconds.
    #[arg(long, env = "CHAOS_QUIET_TIMEOUT_SECS", default_value_t = 300)]
    pub quiet_timeout_secs: u64,

    /// Working directory: logs, the broker's sqlite file, the database.
    /// Each run starts afresh, deleting what an earlier run left there.
    #[arg(long, env = "CHAOS_WORK_DIR", default_value = ".mall/chaos")]
    pub work_dir: PathBuf,

    /// PostgreSQL data directory; it must be writable by `--pg-user`.
    /// Defaults to `<work-dir>/pg`.
    #[arg(long, env = "CHAOS_PG_DIR")]
    pub pg_dir: Option<PathBuf>,

    /// Run PostgreSQL's commands as this user (PostgreSQL refuses root).
    #[arg(long, env = "CHAOS_PG_USER")]
    pub pg_user: Option<String>,

    /// Directory of PostgreSQL's server binaries.
    #[arg(long, env = "PG_BIN", default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin: PathBuf,

    /// Apache Kafka nodes of the run's own KRaft cluster, each broker and
    /// controller (jars from `$MALL_KAFKA_LIBS`); with three, every topic has
    /// replication 3 and `min.insync.replicas=2`, and the producers send
    /// with `acks=all`.
    #[arg(long, env = "CHAOS_KAFKA_NODES", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=5))]
    pub kafka_nodes: u16,

    /// Directory with the order-service, delivery-service,
    /// inventory-service and outbox-relay binaries; defaults to this
    /// binary's own directory.
    #[arg(long, env = "CHAOS_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}

impl Args {
    /// The data directory of the run's PostgreSQL cluster.
    pub fn pg_dir(&self) -> PathBuf {
        self.pg_dir
            .clone()
            .unwrap_or_else(|| self.work_dir.join("pg"))
    }
}
