//! One transaction for a run of fresh records of one partition: every
//! record's per-order lock first (ascending, so two runs never wait for
//! each other in a cycle), then the rows the handler says the run shares
//! with others (in its own global order), then the inbox gate of the whole
//! run (one statement), then for each record in order, if it is new, the
//! handler. Records share the commit (with
//! `synchronous_commit` on, the commit's WAL flush is most of what a record
//! costs); a single record is a run of one.
//!
//! What can go wrong is a value: a record the handler refuses or whose
//! inbox key holds another event ([`RunError::Refused`], with its place in
//! the run), or the database ([`RunError::Db`]). Either rolls the whole run
//! back; the caller decides what to do next.

use diesel::sql_types::{Array, BigInt};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::handler::{ApplyError, EventHandler, Tx};
use crate::store::db::{self, PgPool};
use crate::store::inbox::{self, Gate};
use platform_envelope::cloudevents::{Envelope, Poison, Trace};

/// Whether records pass the inbox: always, but for a benchmark that
/// measures what the inbox costs (handed in at construction, and only with
/// the `bench-hooks` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxGate {
    /// Every record is recorded and checked in the inbox.
    Recorded,
    /// Records are applied without the inbox (a replay applies them again).
    #[cfg(feature = "bench-hooks")]
    Off,
}

/// What a fresh record came to in its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    /// Applied for the first time.
    Fresh,
    /// The inbox had it already.
    Duplicate,
}

/// Why a run's transaction did not commit.
#[derive(Debug)]
pub(super) enum RunError {
    /// The record at this place of the run must be dead-lettered; the
    /// others may go without it.
    Refused {
        /// Its place in the run.
        at: usize,
        /// Why.
        poison: Poison,
    },
    /// The database failed.
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for RunError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Db(error)
    }
}

/// One record of a run: the record, its event and the trace its effects
/// continue.
pub(super) struct Record<'a, E> {
    /// The record.
    pub envelope: &'a Envelope,
    /// Its event.
    pub event: &'a E,
    /// The consumer span's context.
    pub trace: Trace<'a>,
}

/// The distinct order keys of a run, ascending: the order its locks are taken in.
pub(super) fn lock_order(keys: impl IntoIterator<Item = i64>) -> Vec<i64> {
    let mut keys: Vec<i64> = keys.into_iter().collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

crate::fixed_statement! {
    /// Takes the per-order locks of `keys`, in their order.
    struct LockOrders<'a>;
    "SELECT pg_advisory_xact_lock(k) FROM unnest("
    { keys: &'a [i64] as Array<BigInt> } "::int8[]) AS k"
}

/// Applies `run` in one transaction: one outcome per record, in order.
pub(super) async fn apply_run<H: EventHandler>(
    pool: &PgPool,
    handler: &H,
    gate: InboxGate,
    run: &[Record<'_, H::Event>],
) -> Result<Vec<Applied>, RunError> {
    let mut conn = pool.get().await.map_err(db::pool_error)?;
    let keys = lock_order(run.iter().map(|record| record.envelope.key));
    conn.transaction::<_, RunError, _>(async move |conn| {
        LockOrders { keys: &keys }.execute(conn).await?;
        let events: Vec<_> = run.iter().map(|r| (r.envelope, r.event)).collect();
        handler.lock_shared_rows(conn, &events).await?;
        let gates = match gate {
            InboxGate::Recorded => {
                let envelopes: Vec<&Envelope> = run.iter().map(|r| r.envelope).collect();
                inbox::record_run(conn, &envelopes).await?
            }
            #[cfg(feature = "bench-hooks")]
            InboxGate::Off => vec![Gate::Fresh; run.len()],
        };
        let mut outcomes = Vec::with_capacity(run.len());
        for (at, (record, gate)) in run.iter().zip(gates).enumerate() {
            let outcome = apply_gated(handler, gate, conn, record).await;
            outcomes.push(outcome.map_err(|refused| match refused {
                Refusal::Poison(poison) => RunError::Refused { at, poison },
                Refusal::Db(error) => RunError::Db(error),
            })?);
        }
        Ok(outcomes)
    })
    .await
}

enum Refusal {
    Poison(Poison),
    Db(diesel::result::Error),
}

/// The handler, if the inbox found the record fresh, inside the run's
/// transaction (which holds the record's per-order lock and its inbox row).
async fn apply_gated<H: EventHandler>(
    handler: &H,
    recorded: Gate,
    conn: &mut AsyncPgConnection,
    record: &Record<'_, H::Event>,
) -> Result<Applied, Refusal> {
    let Record {
        envelope,
        event,
        trace,
    } = *record;
    match recorded {
        Gate::Fresh => {}
        Gate::Duplicate => return Ok(Applied::Duplicate),
        Gate::Reused { recorded } => {
            tracing::error!(
                key = envelope.key,
                event_type = %envelope.event_type,
                recorded_event_id = %recorded,
                arriving_event_id = %envelope.event_id,
                "Inbox key already taken by a different event; dead-lettering the newcomer."
            );
            return Err(Refusal::Poison(Poison::new(format!(
                "inbox key ({}, {}) already holds event {recorded}; \
                 this record is event {}: an id was reused",
                envelope.key, envelope.event_type, envelope.event_id
            ))));
        }
    }
    match handler
        .apply(
            Tx {
                conn,
                envelope,
                trace,
            },
            event,
        )
        .await
    {
        Ok(()) => Ok(Applied::Fresh),
        Err(ApplyError::Invalid(poison)) => Err(Refusal::Poison(poison)),
        Err(ApplyError::Db(error)) => Err(Refusal::Db(error)),
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
