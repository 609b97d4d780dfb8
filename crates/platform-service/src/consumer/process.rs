//! Handling one record: decode, pass the inbox gate and apply in one
//! transaction, dead-letter poison, store the offset after the commit.
//!
//! Database trouble never dead-letters a valid event: a transient failure
//! (see [`crate::db::classify`]) is retried with capped, jittered backoff for
//! as long as it lasts, and each wait is logged with how long it has lasted.

use std::collections::HashMap;

use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, RunQueryDsl};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, OwnedMessage};
use tokio_util::sync::CancellationToken;

use super::context::Client;
use super::skips::Skips;
use super::{ApplyError, EventHandler, Stats, Tx};
use crate::cloudevents::{Coordinates, Envelope, Poison};
use crate::db::{self, Failure, PgPool};
use crate::dead_letter::{DeadLetterError, DeadLetters, Sent};
use crate::inbox::{self, Gate};
use crate::retry::Patience;
use crate::validate::clip;

/// Attempts before a permanent (class 23) database refusal dead-letters the
/// record; a few, in case it came from a race with another writer.
const MAX_PERMANENT_FAILURES: u32 = 3;

/// Refuses a record whose `ce_source` is not the owner of its topic: only
/// the owner writes there, so anything else is an impostor or a mistake.
/// Topics without a known owner are not checked.
fn check_origin(
    origins: &HashMap<String, String>,
    topic: &str,
    source: &str,
) -> Result<(), Poison> {
    match origins.get(topic) {
        Some(owner) if owner != source => Err(Poison::new(format!(
            "ce_source {:?} is not {owner:?}, the only writer of {topic}",
            clip(source, 100)
        ))),
        _ => Ok(()),
    }
}

/// What became of a record.
#[derive(Debug)]
pub enum Verdict {
    /// Applied for the first time.
    Applied,
    /// The inbox had it already.
    Duplicate,
    /// A known event this service does not act on.
    Ignored,
    /// Dead-lettered, for this reason.
    Poison(Poison),
    /// Stepped over, as an operator asked (`mall-dlq skip`).
    Skipped,
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
    pub(super) dead_letters: DeadLetters,
    pub(super) stats: std::sync::Arc<Stats>,
    /// Records an operator marked to be stepped over.
    pub(super) skips: std::sync::Arc<Skips>,
}

impl<H: EventHandler> Processor<H> {
    /// Bundles what records are handled with.
    pub fn new(
        component: &'static str,
        origins: HashMap<String, String>,
        pool: PgPool,
        handler: H,
        dead_letters: DeadLetters,
        stats: std::sync::Arc<Stats>,
        skips: std::sync::Arc<Skips>,
    ) -> Self {
        Self {
            component,
            origins,
            pool,
            handler,
            dead_letters,
            stats,
            skips,
        }
    }

    /// Whether an operator marked `message` to be stepped over.
    pub(super) fn skipped(&self, message: &OwnedMessage) -> bool {
        self.skips
            .contains(message.topic(), message.partition(), message.offset())
    }

    /// Handles one record; returns `false` if `stop` interrupted it (the
    /// offset is then not stored and the record will be redelivered).
    /// `halt` is the whole consumer's token, which a crash point cancels.
    pub async fn process(
        &self,
        consumer: &Client,
        message: &OwnedMessage,
        stop: &CancellationToken,
        halt: &CancellationToken,
    ) -> bool {
        let verdict = match self.decode(message) {
            _ if self.skipped(message) => Verdict::Skipped,
            Err(poison) => Verdict::Poison(poison),
            Ok(None) => Verdict::Ignored,
            Ok(Some((envelope, event))) => {
                let (envelope, span) = self.traced(envelope);
                let verdict = self
                    .apply_until_done(message, &envelope, &event, stop)
                    .await;
                opentelemetry::trace::TraceContextExt::span(&span).end();
                match verdict {
                    Some(verdict) => verdict,
                    None => return false,
                }
            }
        };
        self.settle(consumer, message, verdict, stop, halt).await
    }

    /// Counts what became of a handled record, dead-letters poison and
    /// stores the offset; `false` if `stop` (or a crash point) interrupted.
    #[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
    pub(super) async fn settle(
        &self,
        consumer: &Client,
        message: &OwnedMessage,
        verdict: Verdict,
        stop: &CancellationToken,
        halt: &CancellationToken,
    ) -> bool {
        match verdict {
            Verdict::Applied => {
                self.stats.applied.inc();
                // Crash-point test: the transaction committed, the offset is
                // not stored. Compiled out without the `failpoints` feature.
                fail::fail_point!("consumer::after-commit-before-offset", |_| {
                    tracing::error!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        "Consumer crashed at a failpoint before storing the offset."
                    );
                    halt.cancel();
                    false
                });
            }
            Verdict::Duplicate => {
                self.stats.duplicates.inc();
                tracing::info!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    "Duplicate event rejected by the inbox."
                );
            }
            Verdict::Ignored => self.stats.ignored.inc(),
            Verdict::Skipped => {
                self.stats.skipped.inc();
                tracing::warn!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    "Record stepped over, as an operator asked; its copy is in the dead-letter topic."
                );
            }
            Verdict::Poison(_) if self.skipped(message) => self.stats.skipped.inc(),
            Verdict::Poison(poison) => match self.dead_letter(message, &poison, stop).await {
                DeadLettered::Sent(sent) => {
                    self.stats.dead_lettered.inc();
                    if sent == Sent::Truncated {
                        self.stats.truncated.inc();
                    }
                }
                DeadLettered::Undeliverable => self.stats.undeliverable.inc(),
                DeadLettered::Skipped => self.stats.skipped.inc(),
                DeadLettered::Interrupted => return false,
            },
        }
        let stored = consumer.store_offset(message.topic(), message.partition(), message.offset());
        if let Err(error) = stored {
            // The partition was revoked meanwhile; its new owner redelivers and the inbox absorbs it.
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                %error,
                "Cannot store offset; the record will be redelivered."
            );
        }
        true
    }

    /// A consumer span for handling `envelope`, a child of the producer's
    /// trace; what the handler writes to the outbox continues it, so the
    /// envelope carries the span's own `traceparent` (unchanged when tracing
    /// is off).
    pub(super) fn traced(&self, mut envelope: Envelope) -> (Envelope, opentelemetry::Context) {
        use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};

        let parent = crate::traces::extract(
            envelope.traceparent.as_deref(),
            envelope.tracestate.as_deref(),
        );
        let tracer = crate::traces::tracer(self.component);
        let span = tracer
            .span_builder(format!("consume {}", envelope.event_type))
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                opentelemetry::KeyValue::new("messaging.system", "kafka"),
                opentelemetry::KeyValue::new(
                    "messaging.destination.name",
                    envelope.coordinates.topic.clone(),
                ),
                opentelemetry::KeyValue::new("messaging.kafka.message.key", envelope.key),
            ])
            .start_with_context(&tracer, &parent);
        let context = parent.with_span(span);
        if let Some(own) = crate::traces::traceparent_of(&context) {
            envelope.traceparent = Some(own);
        }
        (envelope, context)
    }

    pub(super) fn decode(
        &self,
        message: &OwnedMessage,
    ) -> Result<Option<(Envelope, H::Event)>, Poison> {
        let headers = message.headers();
        let lookup = |name: &str| {
            headers.and_then(|h| {
                h.iter()
                    .find(|header| header.key == name)
                    .and_then(|header| header.value)
            })
        };
        let coordinates = Coordinates {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let envelope = Envelope::parse(message.key(), lookup, message.payload(), coordinates)?;
        check_origin(&self.origins, message.topic(), &envelope.source)?;
        Ok(self
            .handler
            .decode(&envelope)?
            .map(|event| (envelope, event)))
    }

    /// Applies until the database says yes or says the data is wrong;
    /// `None` if `stop` fired first.
    async fn apply_until_done(
        &self,
        message: &OwnedMessage,
        envelope: &Envelope,
        event: &H::Event,
        stop: &CancellationToken,
    ) -> Option<Verdict> {
        let mut patience = Patience::new();
        let mut permanent_failures = 0;
        loop {
            let error = match self.apply_once(envelope, event).await {
                Ok(verdict) => {
                    if patience.attempts() > 0 {
                        tracing::info!(
                            key = envelope.key,
                            event_type = %envelope.event_type,
                            attempts = patience.attempts() + 1,
                            waited_ms = patience.waited().as_millis() as u64,
                            "Event applied after waiting for the database."
                        );
                    }
                    return Some(verdict);
                }
                Err(ApplyError::Invalid(poison)) => return Some(Verdict::Poison(poison)),
                Err(ApplyError::Db(error)) => error,
            };
            let failure = db::classify(&error);
            if failure == Failure::Permanent {
                permanent_failures += 1;
                if permanent_failures >= MAX_PERMANENT_FAILURES {
                    return Some(Verdict::Poison(Poison::new(format!(
                        "database refused the event's data: {error}"
                    ))));
                }
            }
            self.stats.db_retries.inc();
            tracing::warn!(
                key = envelope.key,
                event_type = %envelope.event_type,
                %error,
                ?failure,
                attempts = patience.attempts() + 1,
                waited_ms = patience.waited().as_millis() as u64,
                "Applying event failed; waiting for the database."
            );
            if !patience.sleep(stop).await {
                return None;
            }
            if self.skipped(message) {
                return Some(Verdict::Skipped);
            }
        }
    }

    async fn apply_once(
        &self,
        envelope: &Envelope,
        event: &H::Event,
    ) -> Result<Verdict, ApplyError> {
        let mut conn = self.pool.get().await.map_err(db::pool_error)?;
        let handler = &self.handler;
        conn.transaction::<_, ApplyError, _>(async move |conn| {
            diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                .bind::<BigInt, _>(envelope.key)
                .execute(conn)
                .await?;
            gate_and_apply(handler, conn, envelope, event).await
        })
        .await
    }

    /// Sends `message` to the dead-letter topic, waiting out a broker that
    /// is unwell for as long as it takes; a copy that can never be sent is
    /// stepped over (counted, and logged with the original's coordinates)
    /// rather than stopping the partition.
    pub(super) async fn dead_letter(
        &self,
        message: &OwnedMessage,
        poison: &Poison,
        stop: &CancellationToken,
    ) -> DeadLettered {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason = %poison,
            dead_letter_topic = self.dead_letters.topic(),
            "Poison record sent to the dead-letter topic."
        );
        let mut patience = Patience::new();
        loop {
            match self.dead_letters.send(message, &poison.0).await {
                Ok(sent) => return DeadLettered::Sent(sent),
                Err(DeadLetterError::Undeliverable(error)) => {
                    tracing::error!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        %error,
                        reason = %poison,
                        "Poison record stepped over: its dead letter can never be sent, not even \
                         truncated; the original stays on its topic at these coordinates."
                    );
                    return DeadLettered::Undeliverable;
                }
                Err(DeadLetterError::Transient(error)) => tracing::warn!(
                    %error,
                    attempts = patience.attempts() + 1,
                    waited_ms = patience.waited().as_millis() as u64,
                    "Dead-lettering failed; retrying."
                ),
            }
            if !patience.sleep(stop).await {
                return DeadLettered::Interrupted;
            }
            if self.skipped(message) {
                return DeadLettered::Skipped;
            }
        }
    }
}

/// What became of a poison record's dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeadLettered {
    /// The broker acknowledged it.
    Sent(Sent),
    /// It can never be sent; the record is stepped over.
    Undeliverable,
    /// An operator marked the record to be stepped over meanwhile.
    Skipped,
    /// `stop` fired while waiting for the broker.
    Interrupted,
}

/// The inbox gate, then the handler if the record is fresh, inside the
/// caller's transaction (which holds the record's per-order lock).
pub(super) async fn gate_and_apply<H: EventHandler>(
    handler: &H,
    conn: &mut diesel_async::AsyncPgConnection,
    envelope: &Envelope,
    event: &H::Event,
) -> Result<Verdict, ApplyError> {
    #[cfg(feature = "bench-hooks")]
    let gate = if crate::bench_hooks::inbox_gate_off() {
        Gate::Fresh
    } else {
        inbox::record(conn, envelope).await?
    };
    #[cfg(not(feature = "bench-hooks"))]
    let gate = inbox::record(conn, envelope).await?;
    match gate {
        Gate::Fresh => {}
        Gate::Duplicate => return Ok(Verdict::Duplicate),
        Gate::Reused { recorded } => {
            tracing::error!(
                key = envelope.key,
                event_type = %envelope.event_type,
                recorded_event_id = %recorded,
                arriving_event_id = %envelope.event_id,
                "Inbox key already taken by a different event; dead-lettering the newcomer."
            );
            return Ok(Verdict::Poison(Poison::new(format!(
                "inbox key ({}, {}) already holds event {recorded}; \
                 this record is event {}: an id was reused",
                envelope.key, envelope.event_type, envelope.event_id
            ))));
        }
    }
    handler.apply(Tx { conn, envelope }, event).await?;
    Ok(Verdict::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_topic_owner_may_write_to_it() {
        let origins = HashMap::from([("app.a.events".to_owned(), "/app/a".to_owned())]);
        assert!(check_origin(&origins, "app.a.events", "/app/a").is_ok());
        let refused = check_origin(&origins, "app.a.events", "/app/b").expect_err("refused");
        assert!(
            refused.0.contains("/app/b") && refused.0.contains("/app/a"),
            "{refused}"
        );
        assert!(check_origin(&origins, "other", "/anyone").is_ok());
        let long = "x".repeat(10_000);
        let refused = check_origin(&origins, "app.a.events", &long).expect_err("refused");
        assert!(refused.0.len() < 300, "{}", refused.0.len());
    }
}
