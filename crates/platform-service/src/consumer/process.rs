//! Handling a run of records of one partition, in order, one way: decode
//! each ([`decode`](super::decode)), apply the fresh ones in one
//! transaction ([`apply`](super::apply)), settle each
//! ([`settle`](super::settle)). A single record is a run of one.
//!
//! Database trouble never dead-letters a valid event: a transient failure
//! (see [`crate::store::db::classify`]) is retried, the whole run, with capped,
//! jittered backoff for as long as it lasts, and each wait is logged with
//! how long it has lasted. A record the handler refuses is dead-lettered
//! and the rest of its run applied without it; a failure no retry changes
//! (SQLSTATE classes 22 and 23) splits the run into runs of one, so the
//! record at fault is found and, after a few attempts (in case it came from
//! a race), dead-lettered with the database's reason.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use super::apply::{Applied, InboxGate, Record, RunError, apply_run};
use super::context::Client;
use super::decode::{decode, traced};
use super::handler::EventHandler;
use super::settle::{Settler, Verdict, settle};
use super::skips::Skips;
use super::stats::Stats;
use crate::store::db::{self, Failure, PgPool};
use platform_core::dead_letter::DeadLetters;
use platform_core::retry::Patience;
use platform_envelope::cloudevents::{Envelope, Poison, Trace};

/// Attempts before a permanent (class 22 or 23) database refusal
/// dead-letters the record; a few, in case it came from a race with
/// another writer.
const MAX_PERMANENT_FAILURES: u32 = 3;

/// A fresh record of a batch, on its way to the handler.
struct Fresh<E> {
    /// Its place in the batch.
    place: usize,
    /// The record.
    envelope: Envelope,
    /// Its event.
    event: E,
    /// The consumer span handling it.
    span: opentelemetry::Context,
    /// The span's own `traceparent`, which the handler's effects continue.
    traceparent: Option<String>,
}

impl<E> Fresh<E> {
    /// The record as a run applies it.
    fn record(&self) -> Record<'_, E> {
        Record {
            envelope: &self.envelope,
            event: &self.event,
            // The outbox keeps a `tracestate` only beside a `traceparent`.
            trace: Trace {
                traceparent: self.traceparent.as_deref(),
                tracestate: self.envelope.tracestate.as_deref(),
            },
        }
    }
}

/// Everything a lane needs to handle records; shared by all lanes and kept
/// across client re-creations.
pub struct Processor<H: EventHandler> {
    /// Whose tracer makes the handling spans.
    pub(super) component: &'static str,
    /// The only `ce_source` accepted on each consumed topic: its owner's.
    pub(super) origins: HashMap<String, String>,
    pub(super) pool: PgPool,
    pub(super) handler: H,
    /// The end of each record: counters, dead letters, skips.
    pub(super) settler: Settler,
    pub(super) gate: InboxGate,
}

impl<H: EventHandler> Processor<H> {
    /// Bundles what records are handled with.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        component: &'static str,
        origins: HashMap<String, String>,
        pool: PgPool,
        handler: H,
        dead_letters: DeadLetters,
        stats: Arc<Stats>,
        skips: Arc<Skips>,
        gate: InboxGate,
    ) -> Self {
        Self {
            component,
            origins,
            pool,
            handler,
            settler: Settler {
                stats,
                dead_letters,
                skips,
            },
            gate,
        }
    }

    /// Handles `messages` (consecutive records of one partition, one or
    /// more); `false` if `stop` interrupted (the offsets not stored are
    /// redelivered). `halt` is the whole consumer's token, which a crash
    /// point cancels.
    pub async fn process_run(
        &self,
        consumer: &Client,
        messages: &[OwnedMessage],
        stop: &CancellationToken,
        halt: &CancellationToken,
    ) -> bool {
        self.settler
            .stats
            .run_records
            .observe(messages.len() as f64);
        let mut verdicts = Vec::with_capacity(messages.len());
        let mut fresh: Vec<Fresh<H::Event>> = Vec::new();
        for (place, message) in messages.iter().enumerate() {
            verdicts.push(match decode(&self.handler, &self.origins, message) {
                _ if self.settler.skipped(message) => Some(Verdict::Skipped),
                Err(poison) => Some(Verdict::Poison(poison)),
                Ok(None) => Some(Verdict::Ignored),
                Ok(Some((envelope, event))) => {
                    let (span, traceparent) = traced(self.component, &envelope);
                    fresh.push(Fresh {
                        place,
                        envelope,
                        event,
                        span,
                        traceparent,
                    });
                    None
                }
            });
        }
        let applied = self
            .apply_until_done(messages, &fresh, &mut verdicts, stop)
            .await;
        for record in &fresh {
            opentelemetry::trace::TraceContextExt::span(&record.span).end();
        }
        if !applied {
            return false;
        }
        for (message, verdict) in messages.iter().zip(verdicts) {
            let verdict = verdict.unwrap_or(Verdict::Skipped);
            if !settle(&self.settler, consumer, message, verdict, stop, halt).await {
                return false;
            }
        }
        true
    }

    /// Applies the fresh records until the database says yes, or says a
    /// record's data is wrong, filling in their verdicts; `false` if `stop`
    /// fired first.
    async fn apply_until_done(
        &self,
        messages: &[OwnedMessage],
        fresh: &[Fresh<H::Event>],
        verdicts: &mut [Option<Verdict>],
        stop: &CancellationToken,
    ) -> bool {
        // Places in `fresh` applied together; a run that fails for good is
        // split into runs of one.
        let mut groups: VecDeque<Vec<usize>> = VecDeque::from([(0..fresh.len()).collect()]);
        while let Some(mut group) = groups.pop_front() {
            let mut patience = Patience::new();
            let mut permanent_failures = 0;
            loop {
                group.retain(|&f| {
                    let place = fresh[f].place;
                    let keep = !self.settler.skipped(&messages[place]);
                    if !keep {
                        verdicts[place] = Some(Verdict::Skipped);
                    }
                    keep
                });
                if group.is_empty() {
                    break;
                }
                let run: Vec<Record<'_, H::Event>> =
                    group.iter().map(|&f| fresh[f].record()).collect();
                let error = match apply_run(&self.pool, &self.handler, self.gate, &run).await {
                    Ok(outcomes) => {
                        for (&f, outcome) in group.iter().zip(outcomes) {
                            verdicts[fresh[f].place] = Some(match outcome {
                                Applied::Fresh => Verdict::Applied,
                                Applied::Duplicate => Verdict::Duplicate,
                            });
                        }
                        if patience.attempts() > 0 {
                            tracing::info!(
                                key = run[0].envelope.key,
                                records = run.len(),
                                attempts = patience.attempts() + 1,
                                waited_ms = patience.waited().as_millis() as u64,
                                "Events applied after waiting for the database."
                            );
                        }
                        break;
                    }
                    Err(RunError::Refused { at, poison }) => {
                        // The rest of the run goes again at once, without it.
                        verdicts[fresh[group[at]].place] = Some(Verdict::Poison(poison));
                        group.remove(at);
                        continue;
                    }
                    Err(RunError::Db(error)) => error,
                };
                let failure = db::classify(&error);
                if failure == Failure::Permanent {
                    if group.len() > 1 {
                        self.settler.stats.run_fallbacks.inc();
                        groups.extend(group.iter().map(|&f| vec![f]));
                        break;
                    }
                    permanent_failures += 1;
                    if permanent_failures >= MAX_PERMANENT_FAILURES {
                        verdicts[fresh[group[0]].place] = Some(Verdict::Poison(Poison::new(
                            format!("database refused the event's data: {error}"),
                        )));
                        break;
                    }
                }
                self.settler.stats.db_retries.inc();
                tracing::warn!(
                    key = run[0].envelope.key,
                    event_type = %run[0].envelope.event_type,
                    records = run.len(),
                    %error,
                    sqlstate = db::sqlstate(&error).unwrap_or_default(),
                    ?failure,
                    attempts = patience.attempts() + 1,
                    waited_ms = patience.waited().as_millis() as u64,
                    "Applying events failed; waiting for the database."
                );
                if !patience.sleep(stop).await {
                    return false;
                }
            }
        }
        true
    }
}
