//! What a service implements to consume: how a record becomes its event,
//! and what the event does inside the transaction that records it in the
//! inbox. The rest of `consumer` builds on this, and nothing here on it.

use platform_envelope::cloudevents::{Envelope, Poison, Trace};

/// Why applying an event failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A database error; retried (see [`crate::store::db::classify`]).
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    /// The event is well-formed but makes no sense (e.g. qty ≤ 0); dead-lettered.
    #[error(transparent)]
    Invalid(#[from] Poison),
}

/// A service's business rules for incoming events.
pub trait EventHandler: Send + Sync + 'static {
    /// The decoded event.
    type Event: Send + Sync + 'static;

    /// Decodes a record. `Ok(None)` means a known saga event this service does
    /// not act on; an unknown type or a bad payload is poison.
    fn decode(&self, envelope: &Envelope) -> Result<Option<Self::Event>, Poison>;

    /// Applies a fresh event inside the caller's transaction, after the inbox
    /// row was inserted. May be called again if the transaction is retried.
    fn apply(
        &self,
        tx: Tx<'_>,
        event: &Self::Event,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// Locks, once per run and before any of its records is applied, the
    /// rows its events share with other runs (a product's stock), in one
    /// global order: runs of different partitions, each holding rows the
    /// other then wants, would otherwise deadlock, and a deadlock costs the
    /// whole run a second and a retry. The run's per-order locks are held
    /// already. Called again when the run is retried; by default nothing.
    fn lock_shared_rows(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        run: &[(&Envelope, &Self::Event)],
    ) -> impl Future<Output = diesel::QueryResult<()>> + Send {
        let _ = (conn, run);
        async { Ok(()) }
    }
}

/// What an event is applied in: the transaction the inbox row was inserted
/// in, the record being applied (for its key and type), and the trace its
/// effects continue.
pub struct Tx<'a> {
    /// The open transaction; everything written through it commits with the
    /// inbox row, or not at all.
    pub conn: &'a mut diesel_async::AsyncPgConnection,
    /// The record, as it arrived.
    pub envelope: &'a Envelope,
    /// The consumer span's own context (the record's when tracing is off):
    /// what the handler writes to the outbox carries it, so the trace goes
    /// on through this service.
    pub trace: Trace<'a>,
}
