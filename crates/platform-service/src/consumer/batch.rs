//! Handling a run of records of one partition in one transaction, so they
//! share a commit (with `synchronous_commit` on, the commit's WAL flush is
//! most of what a record costs).
//!
//! The rules stay those of one record at a time: each record passes the
//! inbox gate and is applied under its order's lock (all the run's locks
//! are taken up front, in ascending order, so two runs never wait for each
//! other in a cycle), and offsets are stored only after the commit. Anything
//! unusual (a database error, an event the handler refuses) rolls the whole
//! run back and hands it to the one-record path, which owns the retrying,
//! waiting and dead-lettering rules.

use diesel::sql_types::{Array, BigInt};
use diesel_async::{AsyncConnection, RunQueryDsl};
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use super::context::Client;
use super::process::{Processor, Verdict, gate_and_apply};
use super::{ApplyError, EventHandler};
use crate::cloudevents::Envelope;
use crate::db;

/// Records a lane hands over at most in one run.
pub const MAX_RUN: usize = 64;

/// The distinct order keys of a run, ascending: the order its locks are taken in.
fn lock_order(keys: impl IntoIterator<Item = i64>) -> Vec<i64> {
    let mut keys: Vec<i64> = keys.into_iter().collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl<H: EventHandler> Processor<H> {
    /// Handles `messages` (consecutive records of one partition), in one
    /// transaction when there are several; `false` if `stop` interrupted.
    pub async fn process_run(
        &self,
        consumer: &Client,
        messages: &[OwnedMessage],
        stop: &CancellationToken,
        halt: &CancellationToken,
    ) -> bool {
        self.stats.run_records.observe(messages.len() as f64);
        if let [message] = messages {
            return self.process(consumer, message, stop, halt).await;
        }
        if messages.iter().any(|message| self.skipped(message)) {
            return self.one_by_one(consumer, messages, stop, halt).await;
        }
        let decoded: Vec<_> = messages
            .iter()
            .map(|message| {
                self.decode(message)
                    .map(|found| found.map(|(envelope, event)| (self.traced(envelope), event)))
            })
            .collect();
        let fresh: Vec<(&Envelope, &H::Event)> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok()?.as_ref())
            .map(|((envelope, _), event)| (envelope, event))
            .collect();
        let applied = self.apply_together(&fresh).await;
        for ((_, span), _) in decoded.iter().filter_map(|d| d.as_ref().ok()?.as_ref()) {
            opentelemetry::trace::TraceContextExt::span(span).end();
        }
        let verdicts = match applied {
            Ok(verdicts) => verdicts,
            Err(error) => {
                // One record at a time, with every rule of that path.
                tracing::debug!(records = messages.len(), %error, "A run of records goes one at a time.");
                self.stats.run_fallbacks.inc();
                return self.one_by_one(consumer, messages, stop, halt).await;
            }
        };
        let mut verdicts = verdicts.into_iter();
        for (message, decoded) in messages.iter().zip(decoded) {
            let verdict = match decoded {
                Err(poison) => Verdict::Poison(poison),
                Ok(None) => Verdict::Ignored,
                Ok(Some(_)) => verdicts
                    .next()
                    .expect("apply_together gives one verdict per fresh record"),
            };
            if !self.settle(consumer, message, verdict, stop, halt).await {
                return false;
            }
        }
        true
    }

    /// The run's records one at a time, with every rule of that path.
    async fn one_by_one(
        &self,
        consumer: &Client,
        messages: &[OwnedMessage],
        stop: &CancellationToken,
        halt: &CancellationToken,
    ) -> bool {
        for message in messages {
            if !self.process(consumer, message, stop, halt).await || stop.is_cancelled() {
                return false;
            }
        }
        true
    }

    /// One transaction for every fresh record of the run, in order.
    async fn apply_together(
        &self,
        fresh: &[(&Envelope, &H::Event)],
    ) -> Result<Vec<Verdict>, ApplyError> {
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.get().await.map_err(db::pool_error)?;
        let handler = &self.handler;
        let keys = lock_order(fresh.iter().map(|(envelope, _)| envelope.key));
        conn.transaction::<_, ApplyError, _>(async move |conn| {
            diesel::sql_query("SELECT pg_advisory_xact_lock(k) FROM unnest($1) AS k")
                .bind::<Array<BigInt>, _>(&keys)
                .execute(conn)
                .await?;
            let mut verdicts = Vec::with_capacity(fresh.len());
            for (envelope, event) in fresh {
                let verdict = gate_and_apply(handler, conn, envelope, event).await?;
                if matches!(verdict, Verdict::Poison(_)) {
                    // The one-record path decides about poison, alone.
                    return Err(ApplyError::Db(diesel::result::Error::RollbackTransaction));
                }
                verdicts.push(verdict);
            }
            Ok(verdicts)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_are_taken_once_per_order_in_ascending_order() {
        assert_eq!(lock_order([7, 3, 7, 1, 3]), vec![1, 3, 7]);
        assert!(lock_order([]).is_empty());
    }
}
