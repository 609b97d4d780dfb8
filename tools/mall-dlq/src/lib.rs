//! Dead letters: read a dead-letter topic, select records by reason, type,
//! order or offset range, re-drive them to the topic they came from, and
//! step a consumer over one record.
//!
//! Re-driving is safe because every consumer keeps an inbox: a record whose
//! event was applied meanwhile is rejected as a duplicate, and one that never
//! was is applied now. A re-driven record goes to its original topic, so
//! every group reading that topic sees it again; each group's inbox decides.
//! What may go back is decided by [`plan`]; what went back is written to a
//! ledger topic beside the DLQ (`<dlq>.redriven`, one small record per
//! re-drive), so it does not go back twice.

mod ledger;
mod select;

use mall_saga::{Service, Topics};
use platform_core::dead_letter::{self, DeadLetterError, SKIP_HEADER};
use platform_core::kafka::LogContext;
use platform_core::record::CapturedRecord;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

pub use ledger::{ensure_ledger, ledger_topic, load_ledger, record_redrive};
pub use platform_core::scan::{ScanError, read_one, scan};
pub use select::{Origin, Plan, REDRIVEN_FROM_HEADER, Selection, for_redrive, origin, plan};

/// Errors of the dead-letter commands.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The broker could not be asked.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A topic could not be read (it does not exist, or has no record
    /// where one was asked for).
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The ledger topic could not be created.
    #[error("cannot create the re-drive ledger: {0}")]
    Ledger(#[from] platform_core::kafka::TopicError),
    /// The dead letter could not be written.
    #[error("writing the dead letter: {0}")]
    DeadLetter(#[from] DeadLetterError),
}

/// A producer for re-driving, idempotent like every producer of the mall.
pub fn producer(brokers: &str) -> Result<FutureProducer<LogContext>, KafkaError> {
    platform_core::kafka::idempotent_producer(brokers)
}

/// Sends `dead` back to `to.topic` (see [`for_redrive`]) and waits for the
/// broker's acknowledgement; the caller records it in the ledger.
pub async fn redrive(
    producer: &FutureProducer<LogContext>,
    dead: &CapturedRecord,
    to: &Origin,
) -> Result<(), DlqError> {
    let record = for_redrive(dead);
    platform_core::record::send_copy(producer, &to.topic, &record).await?;
    Ok(())
}

/// What a re-drive run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records sent back (or that would be, in a dry run).
    pub sent: usize,
    /// Selected records left where they are.
    pub kept: usize,
}

/// What a re-drive run decided about one selected dead letter.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Sent back to this topic (or would be, in a dry run).
    Sent(&'a CapturedRecord, &'a Origin),
    /// Left where it is, for this reason.
    Kept(&'a CapturedRecord, &'a str),
}

/// Re-drives the dead letters of `service`'s DLQ that `selection` selects,
/// as [`plan`] decides, reading the DLQ as it stood at the start; records
/// each re-drive in the ledger; reports every decision to `report`.
pub async fn redrive_selected(
    brokers: &str,
    topics: &Topics,
    service: Service,
    selection: &Selection,
    dry_run: bool,
    again: bool,
    mut report: impl FnMut(Decision<'_>),
) -> Result<Tally, DlqError> {
    let topic = topics.dead_letters_of(service);
    let done = load_ledger(brokers, &topic).await?;
    if !dry_run {
        ensure_ledger(brokers, &topic).await?;
    }
    let producer = producer(brokers)?;
    let mut tally = Tally::default();
    scan::<DlqError>(brokers, &topic, async |record| {
        if !selection.matches(&record) {
            return Ok(());
        }
        match plan(&record, service, topics, &done, again) {
            Plan::Keep(why) => {
                tally.kept += 1;
                report(Decision::Kept(&record, &why));
            }
            Plan::Redrive(to) => {
                if !dry_run {
                    redrive(&producer, &record, &to).await?;
                    record_redrive(&producer, &topic, record.partition, record.offset, &to).await?;
                }
                tally.sent += 1;
                report(Decision::Sent(&record, &to));
            }
        }
        Ok(())
    })
    .await?;
    Ok(tally)
}

/// Marks the record at `topic`/`partition`/`offset` to be stepped over by
/// `service`'s consumer: a copy of it goes to the group's DLQ with the
/// operator's reason and `dlq_skip: true` (truncated if it is too large),
/// which the consumer watches. Returns the copy's coordinates' origin.
pub async fn skip(
    brokers: &str,
    topics: &Topics,
    service: Service,
    original: &CapturedRecord,
    reason: &str,
) -> Result<(), DlqError> {
    let producer = producer(brokers)?;
    let reason = format!(
        "skipped by an operator: {}",
        platform_core::echo::echo(reason, 500)
    );
    dead_letter::send_dead_letter(
        &producer,
        &topics.dead_letters_of(service),
        &original.original(),
        &reason,
        &topics.group_of(service),
        &[(SKIP_HEADER, "true")],
    )
    .await?;
    Ok(())
}
