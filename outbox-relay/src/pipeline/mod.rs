//! The leader's publishing loop, as a pipeline of two batches: while the
//! broker has batch N, the database settles batch N-1 (marks or deletes
//! the rows the broker acknowledged, parks the ones it never will take)
//! and fetches batch N+1. A batch then costs about the larger of its
//! database and broker work, not their sum.
//!
//! The rule that keeps per-key commit order and at-least-once through the
//! overlap (docs/relay.md, "The pipeline"):
//! - **In flight** is the batch the broker has ([`InFlight`]). The fetch that
//!   runs meanwhile takes heads of keys and rows next in line ([`heads`]),
//!   never its rows nor the rows behind them; within a batch, one row per
//!   key. So a row goes out only once every earlier row of its key was
//!   acknowledged.
//! - **Settled** are only rows the broker acknowledged, and only after it
//!   did (a failed row stays unmarked, ahead of its key, and is fetched
//!   again); the settle of batch N runs before the fetch of batch N+2.
//! - **A crash or a leader change** (the settling session ends, and with it
//!   the leader lock) re-sends what was acknowledged and not yet settled:
//!   at most two batches, each row again ahead of the later rows of its key,
//!   so first appearances stay in order.
//!
//! The stages reach PostgreSQL and Kafka through two seams ([`Outbox`],
//! [`Broker`]), so the loop runs in unit tests against fakes.

pub mod heads;
pub mod in_flight;
pub mod unsendable;
pub mod verdict;

use platform_core::kafka_refusal::Refusals;
use platform_core::retry::Patience;
use tokio_util::sync::CancellationToken;

use heads::{Candidates, Handover};
pub use in_flight::InFlight;
use unsendable::Unsendable;
use verdict::Verdict;

use crate::config::OnPublish;
use crate::health::{RelayHealth, Role};
use crate::observer::{self, Event, Observer};
use crate::pause::Pause;
use crate::publisher::BatchOutcome;
use crate::stats::RelayStats;
use crate::store::{OutboxRow, Settled};
use crate::{observe_latency, spans};

/// The outbox table, as the leader's session reaches it.
pub(crate) trait Outbox {
    /// The oldest heads of their keys, none in flight, at most `limit`; and
    /// of the rows `next`, those still waiting and first of their key.
    async fn fetch(
        &self,
        limit: i64,
        in_flight: &InFlight,
        next: &[i64],
    ) -> Result<Candidates, tokio_postgres::Error>;
    /// Marks or deletes acknowledged rows and finds the next waiting row of
    /// each of `keys`; returns how many rows it settled, those next rows,
    /// and the keys it could not hand on yet.
    async fn settle(
        &self,
        ids: &[i64],
        keys: &[String],
        on_publish: OnPublish,
    ) -> Result<Settled, tokio_postgres::Error>;
    /// Parks a row with the reason; returns how many (0 or 1).
    async fn park(&self, id: i64, reason: &str) -> Result<u64, tokio_postgres::Error>;
}

/// The broker, as the leader's producer reaches it.
pub(crate) trait Broker {
    /// Sends every row at once and waits for each answer.
    async fn publish(&self, rows: &[OutboxRow]) -> BatchOutcome;
    /// The producer's fatal error, if it raised one.
    fn fatal_error(&self) -> Option<String>;
}

/// Why leading ended early.
pub(crate) enum LeadError {
    /// The database session failed: reconnect.
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

/// The settings the loop reads.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Rows per batch.
    pub batch_size: i64,
    /// The longest pause while the outbox is empty.
    pub poll_interval: std::time::Duration,
    /// Mark or delete.
    pub on_publish: OnPublish,
    /// Tries before a row that can never go is parked.
    pub park_after_failures: u32,
    /// The table, for logs and spans.
    pub table: String,
}

/// A batch the broker answered for, waiting to be settled.
struct Sent {
    rows: Vec<OutboxRow>,
    outcome: BatchOutcome,
}

/// What the loop uses, each passed in.
pub(crate) struct Leader<'a, O, B> {
    /// The table.
    pub outbox: &'a O,
    /// The producer.
    pub broker: &'a B,
    /// Its settings.
    pub policy: &'a Policy,
    /// Its counters.
    pub stats: &'a RelayStats,
    /// Its health.
    pub health: &'a RelayHealth,
    /// Who is told what the loop does, if anyone asked.
    pub observer: Option<&'a Observer>,
}

impl<O: Outbox, B: Broker> Leader<'_, O, B> {
    /// Publishes until `shutdown`, or until the session or the producer
    /// fails.
    pub async fn lead(&self, shutdown: &CancellationToken) -> Result<(), LeadError> {
        let policy = self.policy;
        let mut pause = Pause::new(policy.poll_interval);
        let mut patience = Patience::new();
        let mut unsendable = Unsendable::new(policy.park_after_failures);
        let mut handover = Handover::default();
        let refused = Refusals::default();
        let mut in_flight = InFlight::default();
        let mut pending: Option<Sent> = None;
        let mut next = self.fetch(&in_flight, &mut handover).await?;
        while !shutdown.is_cancelled() {
            if next.is_empty() {
                // Nothing to fetch may mean a key is still owed its hand-over
                // (a writer held its lock at the last settle): an empty
                // settle tries it again.
                let sent = pending.take().or_else(|| {
                    (handover.owed() > 0).then(|| Sent {
                        rows: Vec::new(),
                        outcome: BatchOutcome::default(),
                    })
                });
                if let Some(sent) = sent {
                    self.settle(sent, &mut unsendable, &mut handover).await?;
                }
                self.health.cycled();
                // A key handed on has its next row in line now: fetch it at
                // once (a hot key alone drains at one row per round trip,
                // not per pause).
                if !handover.has_next() {
                    observer::tell(self.observer, Event::Idle);
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(pause.empty()) => {}
                    }
                }
                next = self.fetch(&in_flight, &mut handover).await?;
                continue;
            }
            pause.found_rows();
            let mut rows = std::mem::take(&mut next);
            in_flight.admit(&rows);
            let spans = spans::start(&mut rows, &policy.table);
            let database = async {
                if let Some(sent) = pending.take() {
                    self.settle(sent, &mut unsendable, &mut handover).await?;
                }
                self.fetch(&in_flight, &mut handover).await
            };
            let (outcome, fetched) = tokio::join!(self.broker.publish(&rows), database);
            in_flight.release();
            spans::end(&rows, spans, &outcome.publishable);
            observe_latency(self.stats, self.observer, &rows, &outcome.publishable);
            // Crash-point test: the broker has acknowledged the batch, the rows
            // are not marked yet. Compiled out without the `failpoints` feature.
            fail::fail_point!("relay::after-ack-before-mark", |_| Err(LeadError::Crashed));
            next = fetched?;
            let verdict = verdict::after(&outcome, self.broker.fatal_error());
            let sent = Sent { rows, outcome };
            match verdict {
                Verdict::Go => {
                    if refused.clear() {
                        tracing::info!("Kafka accepts the relay's sends again.");
                        self.health.set(Role::Leader);
                    }
                    patience = Patience::new();
                    pending = Some(sent);
                    continue;
                }
                Verdict::ReplaceProducer(why) => {
                    self.settle(sent, &mut unsendable, &mut handover).await?;
                    return Err(LeadError::Producer(why));
                }
                Verdict::Retry { refusal, error } => {
                    if let Some(refusal) = refusal {
                        if refused.note(refusal.clone()) {
                            tracing::error!(%refusal, "Kafka refused the relay; the rows stay unmarked and are retried until an ACL allows them.");
                        }
                        self.health.set(Role::Refused { reason: refusal });
                    } else {
                        tracing::warn!(failed = sent.outcome.failed, %error, attempts = patience.attempts() + 1, "Some outbox rows were not acknowledged; retrying them.");
                    }
                }
                Verdict::Pace => {}
            }
            self.settle(sent, &mut unsendable, &mut handover).await?;
            if !patience.sleep(shutdown).await {
                break;
            }
        }
        if let Some(sent) = pending.take() {
            self.settle(sent, &mut unsendable, &mut handover).await?;
        }
        Ok(())
    }

    /// The next batch: heads and rows next in line, oldest first.
    async fn fetch(
        &self,
        in_flight: &InFlight,
        handover: &mut Handover,
    ) -> Result<Vec<OutboxRow>, tokio_postgres::Error> {
        let limit = self.policy.batch_size;
        let found = self.outbox.fetch(limit, in_flight, handover.next()).await?;
        Ok(handover.take(found, limit, in_flight))
    }

    /// Marks or deletes what the broker acknowledged, hands each of their
    /// keys on to its next row, parks what the broker never will take, and
    /// counts.
    async fn settle(
        &self,
        sent: Sent,
        unsendable: &mut Unsendable,
        handover: &mut Handover,
    ) -> Result<(), tokio_postgres::Error> {
        let Sent { rows, outcome } = sent;
        let keys = handover.keys(&rows, &outcome.publishable);
        let settled = self
            .outbox
            .settle(&outcome.publishable, &keys, self.policy.on_publish)
            .await?;
        handover.settled(settled.next, settled.owed);
        let marked = settled.rows;
        if rows.is_empty() {
            // Only a hand-over owed from earlier: no batch to count.
            return Ok(());
        }
        self.stats.published.inc_by(marked);
        self.stats.batches.inc();
        self.stats.send_failures.inc_by(outcome.failed as u64);
        for (id, reason) in unsendable.count(&rows, &outcome.unsendable) {
            if self.outbox.park(id, &reason).await? > 0 {
                self.stats.parked.inc();
                tracing::error!(
                    id,
                    %reason,
                    table = %self.policy.table,
                    "Outbox row parked: the broker can never take it. It and the later rows \
                     of its key wait until an operator retries it (outbox-relay parked retry)."
                );
            }
        }
        // A cycle ends when its batch is settled: a leader that sends but
        // cannot mark (a row lock held on its rows) is stalled, whatever it
        // sends.
        self.health.cycled();
        tracing::debug!(
            rows = rows.len(),
            marked,
            owed = handover.owed(),
            "Outbox batch settled."
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
