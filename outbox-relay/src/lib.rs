//! A generic outbox relay: publishes any PostgreSQL outbox table to Kafka.
//!
//! Run one per database as a sidecar, as many replicas as you like. The
//! replicas elect one active relay through a PostgreSQL advisory lock held on
//! the connection that reads and marks rows; the others are hot standbys that
//! retry the lock every second. One active relay per database is what keeps
//! events of one key in commit order.
//!
//! The active relay wakes on LISTEN/NOTIFY (with a polling fallback), sends a
//! whole batch with every message in flight on an idempotent producer, and
//! marks rows published only after the broker acknowledged them. A crash in
//! between re-publishes the batch; consumers' inboxes absorb the duplicates.
//! A batch holds at most one row per key, so a later row of a key is never
//! sent before an earlier one is acknowledged (see `store::Store::fetch`).
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
pub mod prepare;
mod publisher;
mod row;
mod spans;
mod start;
mod stats;
mod store;

use std::sync::Arc;
#[cfg(feature = "test-hooks")]
use std::sync::atomic::Ordering;

use platform_core::kafka_refusal::{self, Refusals};
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

/// Why leading ended early.
enum LeadError {
    Db(tokio_postgres::Error),
    /// The idempotent producer raised a fatal error (e.g. a gap it cannot
    /// close), or a send timed out past every retry: replace it.
    Producer(String),
    /// Only a failpoint produces this; see the `failpoints` feature.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    Crashed,
}

impl From<tokio_postgres::Error> for LeadError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error)
    }
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
        })
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
            &config.channel,
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
        match self.lead(&store, shutdown).await {
            Ok(()) => Stop::Shutdown,
            Err(LeadError::Db(error)) => Stop::Lost(platform_core::pg::chain(&error)),
            Err(LeadError::Producer(reason)) => Stop::ProducerBroken(reason),
            Err(LeadError::Crashed) => Stop::Crashed,
        }
    }

    async fn lead(&self, store: &Store, shutdown: &CancellationToken) -> Result<(), LeadError> {
        let wake = store.wake();
        let mut patience = Patience::new();
        let mut unsendable = Unsendable::new(self.config.park_after_failures);
        let refused = Refusals::default();
        while !shutdown.is_cancelled() {
            let mut rows = store.fetch(self.config.batch_size).await?;
            if rows.is_empty() {
                self.health.cycled();
                #[cfg(feature = "test-hooks")]
                self.stats.idle.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = wake.notified() => {}
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                }
                continue;
            }
            let spans = spans::start(&mut rows, &self.config.table.to_string());
            let outcome = self.publisher.publish(&rows).await;
            spans::end(&rows, spans, &outcome.publishable);
            // Crash-point test: the broker has acknowledged the batch, the rows
            // are not marked yet. Compiled out without the `failpoints` feature.
            fail::fail_point!("relay::after-ack-before-mark", |_| Err(LeadError::Crashed));
            let marked = store
                .acknowledge(&outcome.publishable, self.config.on_publish)
                .await?;
            self.stats.published.inc_by(marked);
            self.stats.batches.inc();
            self.stats.send_failures.inc_by(outcome.failed as u64);
            observe_latency(&self.stats, &rows, &outcome.publishable);
            for (id, reason) in unsendable.count(&rows, &outcome.unsendable) {
                if store.park(id, &reason).await? > 0 {
                    self.stats.parked.inc();
                    tracing::error!(
                        id,
                        %reason,
                        table = %self.config.table,
                        "Outbox row parked: the broker can never take it. It and the later rows \
                         of its key wait until an operator retries it (outbox-relay parked retry)."
                    );
                }
            }
            self.health.cycled();
            tracing::debug!(rows = rows.len(), marked, "Outbox batch published.");
            if let Some(error) = outcome.first_error {
                if let Some(fatal) = self.publisher.fatal_error() {
                    return Err(LeadError::Producer(fatal));
                }
                // A send that timed out past every retry leaves the idempotent
                // producer to bump its epoch when the broker returns, which
                // some brokers mishandle (Tansu 0.6 panicked). A fresh producer
                // gets a fresh id instead, and the next batch starts again at
                // the oldest unmarked row.
                if publisher::timed_out(&error) {
                    return Err(LeadError::Producer(format!(
                        "a send timed out past every retry: {error}"
                    )));
                }
                if let Some(refusal) = refusal(&error, outcome.first_failed_topic.as_deref()) {
                    if refused.note(refusal.clone()) {
                        tracing::error!(%refusal, "Kafka refused the relay; the rows stay unmarked and are retried until an ACL allows them.");
                    }
                    self.health.set(Role::Refused { reason: refusal });
                } else {
                    tracing::warn!(failed = outcome.failed, %error, attempts = patience.attempts() + 1, "Some outbox rows were not acknowledged; retrying them.");
                }
                if !patience.sleep(shutdown).await {
                    break;
                }
            } else if !outcome.unsendable.is_empty() && outcome.publishable.is_empty() {
                // Only rows that cannot go (no topic): pace the tries that
                // count towards parking them instead of spinning.
                if !patience.sleep(shutdown).await {
                    break;
                }
            } else {
                if refused.clear() {
                    tracing::info!("Kafka accepts the relay's sends again.");
                    self.health.set(Role::Leader);
                }
                patience = Patience::new();
            }
        }
        Ok(())
    }
}

/// Counts, per row, the sends that could never succeed, and says which
/// rows reached the limit and are to be parked. Only rows of the batch in
/// hand are remembered, so it holds at most a batch.
struct Unsendable {
    limit: u32,
    failures: std::collections::HashMap<i64, u32>,
}

impl Unsendable {
    fn new(limit: u32) -> Self {
        Self {
            limit: limit.max(1),
            failures: std::collections::HashMap::new(),
        }
    }

    /// Notes the batch `rows` and its `unsendable` rows; returns the rows to
    /// park now, with the reason.
    fn count(
        &mut self,
        rows: &[store::OutboxRow],
        unsendable: &[(i64, String)],
    ) -> Vec<(i64, String)> {
        let failed: std::collections::HashMap<i64, &String> =
            unsendable.iter().map(|(id, why)| (*id, why)).collect();
        self.failures.retain(|id, _| failed.contains_key(id));
        let mut park = Vec::new();
        for row in rows {
            let Some(why) = failed.get(&row.id) else {
                continue;
            };
            let tries = self.failures.entry(row.id).or_default();
            *tries += 1;
            if *tries >= self.limit {
                self.failures.remove(&row.id);
                park.push((
                    row.id,
                    format!("{} tries failed for good: {why}", self.limit),
                ));
            }
        }
        park
    }
}

/// The table lacks what the mapping needs; the sentence says what and how
/// to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

/// The sentence for an authorisation error of a send to `topic`, naming
/// the relay's principal (from `KAFKA_PROPERTY_*`), if `error` is one.
fn refusal(error: &KafkaError, topic: Option<&str>) -> Option<String> {
    let code = error.rdkafka_error_code()?;
    let resource = kafka_refusal::refused(code)?;
    let operation = match resource {
        kafka_refusal::Resource::Cluster => "IdempotentWrite",
        _ => "Write",
    };
    Some(kafka_refusal::sentence(
        &kafka_refusal::principal(&platform_core::kafka::env_properties()),
        operation,
        resource,
        topic.unwrap_or("?"),
        code,
    ))
}

/// Records commit-to-acknowledgement time of every acknowledged row.
fn observe_latency(stats: &RelayStats, rows: &[store::OutboxRow], acknowledged: &[i64]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let acknowledged: std::collections::HashSet<i64> = acknowledged.iter().copied().collect();
    #[cfg(feature = "test-hooks")]
    let mut log = stats
        .latency_log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for row in rows.iter().filter(|row| acknowledged.contains(&row.id)) {
        // A clock step between the database and this host never makes it negative.
        let latency = (now - row.created).max(0.0);
        stats.publish_latency.observe(latency);
        #[cfg(feature = "test-hooks")]
        if let Some(log) = log.as_mut() {
            log.push(latency);
        }
    }
}
