//! The end of a record: counted by what became of it, dead-lettered if it
//! is poison (waiting out a broker that is unwell, stepping over a copy
//! that can never be sent), and its offset stored only then.

use std::sync::Arc;

use platform_core::dead_letter::{DeadLetterError, DeadLetters, Sent};
use platform_core::retry::Patience;
use platform_envelope::cloudevents::Poison;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use super::context::Client;
use super::skips::Skips;
use super::stats::Stats;

/// What the end of a record needs: the counters, the dead-letter producer
/// and the records an operator marked to be stepped over.
pub(super) struct Settler {
    /// The consumer's counters.
    pub stats: Arc<Stats>,
    /// Where poison goes.
    pub dead_letters: DeadLetters,
    /// Records an operator marked to be stepped over.
    pub skips: Arc<Skips>,
}

impl Settler {
    /// Whether an operator marked `message` to be stepped over.
    pub fn skipped(&self, message: &OwnedMessage) -> bool {
        self.skips
            .contains(message.topic(), message.partition(), message.offset())
    }
}

/// What became of a record.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Applied for the first time.
    Applied,
    /// The inbox had it already.
    Duplicate,
    /// A known event this service does not act on.
    Ignored,
    /// To be dead-lettered, for this reason.
    Poison(Poison),
    /// Stepped over, as an operator asked (`mall-dlq skip`).
    Skipped,
}

/// What became of a poison record's dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadLettered {
    /// The broker acknowledged it.
    Sent(Sent),
    /// It can never be sent; the record is stepped over.
    Undeliverable,
    /// An operator marked the record to be stepped over meanwhile.
    Skipped,
    /// `stop` fired while waiting for the broker.
    Interrupted,
}

/// Counts what became of `message`, dead-letters poison and stores the
/// offset; `false` if `stop` (or a crash point) interrupted.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub(super) async fn settle(
    settler: &Settler,
    consumer: &Client,
    message: &OwnedMessage,
    verdict: Verdict,
    stop: &CancellationToken,
    halt: &CancellationToken,
) -> bool {
    let stats = &settler.stats;
    match verdict {
        Verdict::Applied => {
            stats.applied.inc();
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
            stats.duplicates.inc();
            tracing::info!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                "Duplicate event rejected by the inbox."
            );
        }
        Verdict::Ignored => stats.ignored.inc(),
        Verdict::Skipped => {
            stats.skipped.inc();
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                "Record stepped over, as an operator asked; its copy is in the dead-letter topic."
            );
        }
        Verdict::Poison(poison) => match dead_letter(settler, message, &poison, stop).await {
            DeadLettered::Sent(sent) => {
                stats.dead_lettered.inc();
                if sent == Sent::Truncated {
                    stats.truncated.inc();
                }
            }
            DeadLettered::Undeliverable => stats.undeliverable.inc(),
            DeadLettered::Skipped => stats.skipped.inc(),
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

/// Sends `message` to the dead-letter topic, waiting out a broker that is
/// unwell for as long as it takes; a copy that can never be sent is
/// stepped over (counted, and logged with the original's coordinates)
/// rather than stopping the partition.
async fn dead_letter(
    settler: &Settler,
    message: &OwnedMessage,
    poison: &Poison,
    stop: &CancellationToken,
) -> DeadLettered {
    if settler.skipped(message) {
        return DeadLettered::Skipped;
    }
    let dead_letters = &settler.dead_letters;
    tracing::warn!(
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        reason = %poison,
        dead_letter_topic = dead_letters.topic(),
        "Poison record sent to the dead-letter topic."
    );
    let mut patience = Patience::new();
    loop {
        match dead_letters.send(message, &poison.0).await {
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
        if settler.skipped(message) {
            return DeadLettered::Skipped;
        }
    }
}
