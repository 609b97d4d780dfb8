//! A generic outbox relay: publishes any PostgreSQL outbox table to Kafka.
//!
//! Run one per database as a sidecar, as many replicas as you like. The
//! replicas elect one active relay through a PostgreSQL advisory lock held on
//! the connection that reads and marks rows; the others are hot standbys that
//! retry the lock every second. One active relay per database is what keeps
//! events of one key in commit order.
//!
//! The active relay polls for new rows (back to back while it finds some,
//! then after a pause that doubles up to `RELAY_POLL_INTERVAL_MS`; see
//! [`pause`]), sends a whole batch with every message in flight on an
//! idempotent producer, and marks rows published only after the broker
//! acknowledged them; while the broker has one batch, the previous one is
//! settled and the next fetched ([`pipeline`]). A crash in between re-publishes what
//! was not settled; consumers' inboxes absorb the duplicates. The fetch takes
//! the heads of keys (each key's first waiting row), so one busy key never
//! holds another back; a batch holds at most one row per key, and no row of
//! a key in flight, so a later row of a key is never sent before an earlier
//! one is acknowledged.
//! A producer that failed fatally, or whose send timed out past every retry,
//! is replaced after stepping down, so a standby leads meanwhile.
//!
//! Nothing stalls it silently: its sessions carry a lock and a statement
//! timeout (a leader blocked on a row lock steps down), its health says how
//! long ago the last publishing cycle finished (503 past a bound), the
//! backlog is counted beside the publishing loop ([`maintenance`]), a row
//! the broker can never take is parked after a bounded number of tries so
//! the rest flows on, and the purge deletes until it has caught up.

mod commands;
mod config;
mod health;
mod known_topics;
pub mod maintenance;
pub mod mapping;
pub mod observer;
mod pause;
mod pipeline;
pub mod prepare;
mod publisher;
mod row;
mod spans;
mod start;
mod stats;
mod store;

use std::sync::Arc;

use platform_core::retry::Patience;
use rdkafka::error::KafkaError;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

pub use commands::{CommandError, parked_rows, prepare_table, retry_parked};
pub use config::{OnPublish, RelayConfig};
pub use health::{Bounds, RelayHealth, Role};
use publisher::Publisher;
pub use publisher::producer_config;
pub use start::{Running, StartError, StopError, start};
pub use stats::RelayStats;
use store::Store;
pub use store::{Limits, ParkedRow};

/// A relay for one database.
pub struct Relay {
    config: RelayConfig,
    mapping: mapping::Mapping,
    publisher: Publisher,
    stats: Arc<RelayStats>,
    health: Arc<RelayHealth>,
    observer: Option<observer::Observer>,
}

enum Stop {
    Shutdown,
    Lost(String),
    /// The table lacks what the mapping needs: no session can help.
    NotReady(String),
    /// The producer can send nothing more: step down, replace it.
    ProducerBroken(String),
    /// A failpoint simulated a crash: leave at once, as a killed process would.
    Crashed,
}

impl Relay {
    /// Creates the Kafka producer; the database is connected in `run`.
    pub fn new(config: RelayConfig) -> Result<Self, KafkaError> {
        let publisher = Publisher::new(&config.broker.brokers)?;
        let stats = Arc::new(RelayStats::new(&config.table.to_string()));
        let health = Arc::new(RelayHealth::new(config.health_bounds()));
        Ok(Self {
            mapping: config.mapping(),
            config,
            publisher,
            stats,
            health,
            observer: None,
        })
    }

    /// The relay, telling `observer` each row the broker acknowledged and
    /// each pause for want of rows (see [`observer`]).
    #[must_use]
    pub fn observed(mut self, observer: observer::Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Live counters and gauges (register them to export them).
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// What this replica is doing, for its health endpoint.
    pub fn health(&self) -> Arc<RelayHealth> {
        Arc::clone(&self.health)
    }

    /// Relays until `shutdown` fires, reconnecting on any database failure
    /// and replacing the producer after a fatal error; ends early only when
    /// the table is not ready for the mapping (see [`prepare`]).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), NotReady> {
        let maintenance = tokio::spawn(maintenance::run(
            self.config.clone(),
            Arc::clone(&self.stats),
            shutdown.clone(),
        ));
        let mut patience = Patience::new();
        loop {
            let elected_before = self.stats.elected.get();
            let stop = self.session(&shutdown).await;
            self.stats.leader.set(0);
            if self.stats.elected.get() != elected_before {
                // This session led for a while: start the next one promptly.
                patience = Patience::new();
            }
            match stop {
                Stop::Shutdown => break,
                Stop::Crashed => {
                    self.health.set(Role::Stopping);
                    tracing::error!("Relay crashed at a failpoint; leaving without flushing.");
                    return Ok(());
                }
                Stop::NotReady(why) => {
                    self.health.set(Role::Stopping);
                    maintenance.abort();
                    tracing::error!(table = %self.config.table, "{why}");
                    return Err(NotReady(why));
                }
                Stop::Lost(reason) => {
                    self.health
                        .trouble(format!("database session lost: {reason}"));
                    tracing::warn!(%reason, attempts = patience.attempts() + 1, "Relay lost its database session; reconnecting.");
                }
                Stop::ProducerBroken(reason) => {
                    self.health
                        .trouble(format!("replacing the producer: {reason}"));
                    // The session (and the leader lock) is gone already, so a
                    // standby can lead while this replica gets a new producer.
                    tracing::error!(%reason, "Kafka producer failed for good; stepped down to replace it.");
                    if !self.replace_producer(&shutdown).await {
                        break;
                    }
                    self.stats.producer_rebuilt.inc();
                }
            }
            if !patience.sleep(&shutdown).await {
                break;
            }
        }
        self.health.set(Role::Stopping);
        self.publisher.flush();
        maintenance.abort();
        tracing::info!("Outbox relay stopped.");
        Ok(())
    }

    /// Makes a new producer, waiting as long as it takes; `false` on shutdown.
    async fn replace_producer(&mut self, shutdown: &CancellationToken) -> bool {
        let mut patience = Patience::new();
        loop {
            match Publisher::new(&self.config.broker.brokers) {
                Ok(publisher) => {
                    self.publisher = publisher;
                    return true;
                }
                Err(error) => tracing::error!(%error, "Cannot create a Kafka producer; retrying."),
            }
            if !patience.sleep(shutdown).await {
                return false;
            }
        }
    }

    /// One database session: wait to lead, then publish until something breaks.
    async fn session(&self, shutdown: &CancellationToken) -> Stop {
        let config = &self.config;
        let store = match Store::connect(
            config.database.database_url.expose_secret(),
            &config.limits(),
            &config.table,
            &self.mapping,
        )
        .await
        {
            Ok(store) => store,
            Err(store::StoreError::NotReady(why)) => return Stop::NotReady(why),
            Err(store::StoreError::Query(error)) => {
                return Stop::Lost(platform_core::pg::chain(&error));
            }
            Err(error) => return Stop::Lost(error.to_string()),
        };
        let mut announced_standby = false;
        loop {
            match store.try_lead(config.lock_id).await {
                Ok(true) => break,
                Ok(false) if !announced_standby => {
                    self.health.set(Role::Standby);
                    tracing::info!(
                        lock_id = config.lock_id,
                        "Another relay is active; standing by."
                    );
                    announced_standby = true;
                }
                Ok(false) => {}
                Err(error) => return Stop::Lost(platform_core::pg::chain(&error)),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Stop::Shutdown,
                () = tokio::time::sleep(config.standby_retry) => {}
            }
        }
        self.stats.elected.inc();
        self.stats.leader.set(1);
        self.health.set(Role::Leader);
        tracing::info!(table = %config.table, "This relay is now the active one.");
        let policy = pipeline::Policy {
            batch_size: config.batch_size,
            poll_interval: config.poll_interval,
            on_publish: config.on_publish,
            park_after_failures: config.park_after_failures,
            table: config.table.to_string(),
        };
        let leader = pipeline::Leader {
            outbox: &store,
            broker: &self.publisher,
            policy: &policy,
            stats: &self.stats,
            health: &self.health,
            observer: self.observer.as_ref(),
        };
        match leader.lead(shutdown).await {
            Ok(()) => Stop::Shutdown,
            Err(pipeline::LeadError::Db(error)) => Stop::Lost(platform_core::pg::chain(&error)),
            Err(pipeline::LeadError::Producer(reason)) => Stop::ProducerBroken(reason),
            Err(pipeline::LeadError::Crashed) => Stop::Crashed,
        }
    }
}

/// The table lacks what the mapping needs; the sentence says what and how
/// to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

/// Records commit-to-acknowledgement time of every acknowledged row, and
/// tells the observer, if any.
pub(crate) fn observe_latency(
    stats: &RelayStats,
    observer: Option<&observer::Observer>,
    rows: &[store::OutboxRow],
    acknowledged: &[i64],
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let acknowledged: std::collections::HashSet<i64> = acknowledged.iter().copied().collect();
    for row in rows.iter().filter(|row| acknowledged.contains(&row.id)) {
        // A clock step between the database and this host never makes it negative.
        let latency_secs = (now - row.created).max(0.0);
        stats.publish_latency.observe(latency_secs);
        observer::tell(
            observer,
            observer::Event::Acked {
                id: row.id,
                latency_secs,
            },
        );
    }
}
