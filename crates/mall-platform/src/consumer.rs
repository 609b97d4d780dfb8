//! The inbox consumer loop every service runs.
//!
//! For each record, in partition order:
//! 1. validate key and CloudEvents headers, decode the payload;
//! 2. in one transaction: take a per-order advisory lock, insert the inbox
//!    row (`ON CONFLICT DO NOTHING`), and only if it was new apply the effect
//!    and write outgoing events to the outbox;
//! 3. after the commit, store the offset (auto-commit sends stored offsets
//!    only, as in vector's kafka source).
//!
//! Poison goes to the dead-letter topic; database errors are retried with
//! backoff and the offset stays where it is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cloudevents::{Coordinates, Envelope, Poison};
use crate::db::{self, PgPool};
use crate::dead_letter::DeadLetters;
use crate::inbox;
use crate::kafka::{KafkaSettings, LogContext, client_config};
use crate::stall::{Partition, StallWatch};

/// Why applying an event failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A database error; retried.
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
    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a Envelope,
        event: &'a Self::Event,
    ) -> BoxFuture<'a, Result<(), ApplyError>>;
}

/// Counters a consumer keeps, for logs, tests and fault-injection figures.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events applied for the first time.
    pub applied: AtomicU64,
    /// Events the inbox recognised as already applied.
    pub duplicates: AtomicU64,
    /// Known events this service does not act on.
    pub ignored: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Records handled whose offset this process had not reached before in
    /// their partition; redeliveries after a rebalance do not count. Tests and
    /// load tools compare it with what was published to know when a consumer
    /// has caught up.
    pub fresh: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Errors that stop the consumer.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The Kafka client could not be created or subscribed.
    #[error("kafka consumer set-up failed: {0}")]
    Kafka(#[from] KafkaError),
}

enum Verdict {
    Applied,
    Duplicate,
    Ignored,
    Poison(Poison),
}

/// Records queued per partition lane before the receive loop waits.
const LANE_CAPACITY: usize = 64;

/// The records of one partition, handled in order by one task.
struct Lane {
    records: mpsc::Sender<OwnedMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl Lane {
    fn spawn<H: EventHandler>(
        consumer: Arc<InboxConsumer<H>>,
        shutdown: CancellationToken,
    ) -> Self {
        let (records, mut queue) = mpsc::channel::<OwnedMessage>(LANE_CAPACITY);
        let task = tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                // Records still queued at shutdown are left for redelivery.
                if shutdown.is_cancelled() || !consumer.process(&message, &shutdown).await {
                    break;
                }
            }
        });
        Self { records, task }
    }
}

/// Attempts before a non-transient database error dead-letters the record.
const MAX_PERMANENT_FAILURES: u32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the consumer looks for partitions nobody consumes.
const STALL_CHECK_PERIOD: Duration = Duration::from_secs(10);
/// Timeout of each broker call of that check.
const STALL_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Every `STALL_CHECK_PERIOD`, looks for partitions nobody in the group
/// consumes and, if any stood still for `limit`, rejoins the group so the
/// broker assigns them again. The broker calls block, so each look runs on
/// the blocking pool.
async fn watch_for_stalls<H: EventHandler>(
    consumer: Arc<InboxConsumer<H>>,
    limit: Duration,
    shutdown: CancellationToken,
) {
    let mut watch = StallWatch::new(limit);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(STALL_CHECK_PERIOD) => {}
        }
        let consumer = Arc::clone(&consumer);
        // The watch moves to the blocking thread and back.
        let looked = tokio::task::spawn_blocking(move || {
            let result = consumer.stalled_partitions(&mut watch).map(|stalled| {
                if !stalled.is_empty() {
                    tracing::warn!(
                        stalled = ?stalled,
                        limit_secs = limit.as_secs(),
                        "Partitions with waiting records have no consumer; rejoining the group to get them assigned."
                    );
                    consumer.rejoin();
                    watch.reset();
                }
            });
            (watch, result)
        })
        .await;
        match looked {
            Ok((returned, result)) => {
                watch = returned;
                if let Err(error) = result {
                    tracing::debug!(%error, "Stall check could not ask the broker; trying again later.");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "Stall check failed.");
                watch = StallWatch::new(limit);
            }
        }
    }
}

/// A running inbox consumer.
pub struct InboxConsumer<H: EventHandler> {
    consumer: StreamConsumer<LogContext>,
    dead_letters: DeadLetters,
    pool: PgPool,
    handler: H,
    stats: Arc<Stats>,
    /// Next offset not yet handled, per (topic, partition), for `Stats::fresh`.
    reached: Mutex<HashMap<(String, i32), i64>>,
    /// Topics subscribed to, for rejoining.
    topics: Vec<String>,
    /// See `KafkaSettings::stall_rejoin`: how long a partition with waiting
    /// records may go unconsumed before this member forces a rebalance.
    stall_rejoin: Option<Duration>,
}

impl<H: EventHandler> InboxConsumer<H> {
    /// Subscribes to `topics` in the service's consumer group.
    pub fn new(
        settings: &KafkaSettings,
        topics: &[String],
        pool: PgPool,
        handler: H,
    ) -> Result<Self, ConsumerError> {
        let consumer: StreamConsumer<LogContext> = client_config(&settings.brokers)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "100")
            .create_with_context(LogContext)?;
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;
        let dead_letters = DeadLetters::new(
            &settings.brokers,
            &settings.dead_letter_topic,
            &settings.group_id,
        )?;
        Ok(Self {
            consumer,
            dead_letters,
            pool,
            handler,
            stats: Arc::default(),
            reached: Mutex::default(),
            topics: topics.to_vec(),
            stall_rejoin: settings.stall_rejoin,
        })
    }

    /// Live counters of this consumer.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Consumes until `shutdown` fires, then commits the stored offsets.
    ///
    /// Records are handed to one lane per partition: a lane handles its
    /// records strictly in order, while lanes of different partitions run in
    /// parallel. Per-order ordering needs nothing more, since all events of an
    /// order share a key and so a partition.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(
            dead_letter_topic = self.dead_letters.topic(),
            "Inbox consumer started."
        );
        // This consumer's own token: cancelled by shutdown, and by the
        // consumer itself when it stops for another reason (or a crash point
        // fires), without touching the rest of the service.
        let shutdown = shutdown.child_token();
        let this = Arc::new(self);
        let mut lanes: HashMap<(String, i32), Lane> = HashMap::new();
        let watcher = this.stall_rejoin.map(|limit| {
            tokio::spawn(watch_for_stalls(Arc::clone(&this), limit, shutdown.clone()))
        });
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = this.consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message.detach(),
                Err(error) => {
                    tracing::warn!(%error, "Kafka receive failed; retrying.");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
            };
            let lane = lanes
                .entry((message.topic().to_owned(), message.partition()))
                .or_insert_with(|| Lane::spawn(Arc::clone(&this), shutdown.clone()));
            tokio::select! {
                () = shutdown.cancelled() => break,
                sent = lane.records.send(message) => if sent.is_err() { break },
            }
        }
        // However the loop ended, everything of this consumer stops now.
        shutdown.cancel();
        for (_, lane) in lanes.drain() {
            drop(lane.records);
            if let Err(error) = lane.task.await {
                tracing::error!(%error, "A consumer lane failed.");
            }
        }
        // The watcher holds the consumer too; once it is gone, this is the
        // last reference, so the consumer closes here and not elsewhere.
        if let Some(watcher) = watcher
            && let Err(error) = watcher.await
        {
            tracing::error!(%error, "The stall watcher failed.");
        }
        // Dropping the consumer closes it, which commits the stored offsets
        // (auto-commit) and leaves the group.
        tracing::info!("Inbox consumer stopped.");
    }

    /// One look at every partition of the subscribed topics: returns the
    /// ones that are stalled (see [`crate::stall`]).
    fn stalled_partitions(&self, watch: &mut StallWatch) -> Result<Vec<Partition>, KafkaError> {
        let ours = self.consumer.assignment()?;
        let assignment = ours
            .elements()
            .iter()
            .map(|e| Partition {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            })
            .collect();
        if watch.note_assignment(assignment) {
            return Ok(Vec::new());
        }
        let mut wanted = TopicPartitionList::new();
        // Ask for every partition: the ones we own are skipped below.
        for topic in &self.topics {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), STALL_CALL_TIMEOUT)?;
            for found in metadata.topics() {
                for partition in found.partitions() {
                    wanted.add_partition(topic, partition.id());
                }
            }
        }
        let committed = self
            .consumer
            .committed_offsets(wanted, STALL_CALL_TIMEOUT)?;
        let now = Instant::now();
        let mut stalled = Vec::new();
        for element in committed.elements() {
            let (topic, number) = (element.topic(), element.partition());
            // Our own partitions are progressing or not by our own doing.
            if ours.find_partition(topic, number).is_some() {
                continue;
            }
            let (_, end) = self
                .consumer
                .fetch_watermarks(topic, number, STALL_CALL_TIMEOUT)?;
            let at = match element.offset() {
                Offset::Offset(n) => n,
                _ => 0,
            };
            let partition = Partition {
                topic: topic.to_owned(),
                partition: number,
            };
            if watch.observe(partition.clone(), at, end, now) {
                stalled.push(partition);
            }
        }
        Ok(stalled)
    }

    /// Leaves and rejoins the group, forcing a rebalance.
    fn rejoin(&self) {
        self.consumer.unsubscribe();
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if let Err(error) = self.consumer.subscribe(&topics) {
            tracing::error!(%error, "Resubscribing failed; retrying at the next check.");
        }
    }

    /// Handles one record; returns `false` if shutdown interrupted it (the
    /// offset is then not stored and the record will be redelivered).
    async fn process(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> bool {
        let verdict = match self.decode(message) {
            Err(poison) => Verdict::Poison(poison),
            Ok(None) => Verdict::Ignored,
            Ok(Some((envelope, event))) => {
                match self.apply_with_retry(&envelope, &event, shutdown).await {
                    Some(verdict) => verdict,
                    None => return false,
                }
            }
        };
        match verdict {
            Verdict::Applied => {
                Stats::bump(&self.stats.applied);
                // Crash-point test: the transaction committed, the offset is
                // not stored. Compiled out without the `failpoints` feature.
                fail::fail_point!("consumer::after-commit-before-offset", |_| {
                    tracing::error!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        "Consumer crashed at a failpoint before storing the offset."
                    );
                    shutdown.cancel();
                    false
                });
            }
            Verdict::Duplicate => {
                Stats::bump(&self.stats.duplicates);
                tracing::info!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    "Duplicate event rejected by the inbox."
                );
            }
            Verdict::Ignored => Stats::bump(&self.stats.ignored),
            Verdict::Poison(poison) => {
                if !self.dead_letter(message, &poison, shutdown).await {
                    return false;
                }
                Stats::bump(&self.stats.dead_lettered);
            }
        }
        self.count_if_fresh(message);
        let stored =
            self.consumer
                .store_offset(message.topic(), message.partition(), message.offset());
        if let Err(error) = stored {
            // The partition was revoked meanwhile; its new owner redelivers and the inbox absorbs it.
            tracing::warn!(%error, "Cannot store offset; the record will be redelivered.");
        }
        true
    }

    fn count_if_fresh(&self, message: &OwnedMessage) {
        let mut reached = self
            .reached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = reached
            .entry((message.topic().to_owned(), message.partition()))
            .or_insert(0);
        if message.offset() >= *next {
            *next = message.offset() + 1;
            Stats::bump(&self.stats.fresh);
        }
    }

    fn decode(&self, message: &OwnedMessage) -> Result<Option<(Envelope, H::Event)>, Poison> {
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
        Ok(self
            .handler
            .decode(&envelope)?
            .map(|event| (envelope, event)))
    }

    async fn apply_with_retry(
        &self,
        envelope: &Envelope,
        event: &H::Event,
        shutdown: &CancellationToken,
    ) -> Option<Verdict> {
        let mut backoff = Duration::from_millis(100);
        let mut permanent_failures = 0;
        loop {
            let error = match self.apply_once(envelope, event).await {
                Ok(verdict) => return Some(verdict),
                Err(ApplyError::Invalid(poison)) => return Some(Verdict::Poison(poison)),
                Err(ApplyError::Db(error)) => error,
            };
            if !db::is_transient(&error) {
                permanent_failures += 1;
                if permanent_failures >= MAX_PERMANENT_FAILURES {
                    return Some(Verdict::Poison(Poison::new(format!(
                        "database refused the event: {error}"
                    ))));
                }
            }
            tracing::warn!(
                order_id = envelope.order_id,
                event_type = %envelope.event_type,
                %error,
                backoff_ms = backoff.as_millis() as u64,
                "Applying event failed; retrying."
            );
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
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
                .bind::<BigInt, _>(envelope.order_id)
                .execute(conn)
                .await?;
            if !inbox::record(conn, envelope).await? {
                return Ok(Verdict::Duplicate);
            }
            handler.apply(conn, envelope, event).await?;
            Ok(Verdict::Applied)
        })
        .await
    }

    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        poison: &Poison,
        shutdown: &CancellationToken,
    ) -> bool {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason = %poison,
            dead_letter_topic = self.dead_letters.topic(),
            "Poison record sent to the dead-letter topic."
        );
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.dead_letters.send(message, &poison.0).await {
                Ok(()) => return true,
                Err(error) => tracing::warn!(%error, "Dead-lettering failed; retrying."),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
