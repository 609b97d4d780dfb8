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
//! Poison goes to the dead-letter topic; database trouble is waited out
//! (see [`process`]). The poll loop never blocks on a slow partition: full
//! lanes are paused at the client ([`lanes`]), revoked lanes are torn down in
//! the rebalance callback ([`context`]), and a client that stops fetching is
//! replaced ([`heal`]).

mod context;
mod heal;
mod lanes;
mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cloudevents::{Envelope, Poison};
use crate::db::PgPool;
use crate::dead_letter::DeadLetters;
use crate::kafka::{self, KafkaSettings};
use crate::retry::Patience;
use context::RebalanceContext;
use heal::{Action, Healer};
use lanes::{Lanes, Queued};
use process::Processor;

/// Why applying an event failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A database error; retried (see [`crate::db::classify`]).
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
        conn: &'a mut diesel_async::AsyncPgConnection,
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
    /// Failed database attempts that were waited out and retried.
    pub db_retries: AtomicU64,
    /// Assignments received from the group (one per rebalance this member
    /// took part in).
    pub assignments: AtomicU64,
    /// Times a full lane paused its partition.
    pub pauses: AtomicU64,
    /// Times the Kafka client was thrown away and made anew.
    pub recreated: AtomicU64,
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

/// How one client's life ended.
enum Ended {
    Shutdown,
    Recreate(String),
}

/// A running inbox consumer.
pub struct InboxConsumer<H: EventHandler> {
    settings: KafkaSettings,
    topics: Vec<String>,
    processor: Arc<Processor<H>>,
    stats: Arc<Stats>,
    /// The first client, made in `new` so configuration errors show at start-up.
    first: Option<(Arc<StreamConsumer<RebalanceContext>>, Arc<Lanes>)>,
    /// This consumer's own stop: cancelled by shutdown, and by a crash point
    /// without touching the rest of the service. Every lane stops with it.
    halt: CancellationToken,
}

impl<H: EventHandler> InboxConsumer<H> {
    /// Subscribes to `topics` in the service's consumer group.
    pub fn new(
        settings: &KafkaSettings,
        topics: &[String],
        pool: PgPool,
        handler: H,
    ) -> Result<Self, ConsumerError> {
        let stats: Arc<Stats> = Arc::default();
        let dead_letters = DeadLetters::new(
            &settings.brokers,
            &settings.dead_letter_topic,
            &settings.group_id,
        )?;
        let halt = CancellationToken::new();
        let lanes = Arc::new(Lanes::new(halt.clone()));
        let client = Arc::new(subscribe(settings, topics, &lanes, &stats)?);
        Ok(Self {
            settings: settings.clone(),
            topics: topics.to_vec(),
            processor: Arc::new(Processor::new(
                pool,
                handler,
                dead_letters,
                Arc::clone(&stats),
            )),
            stats,
            first: Some((client, lanes)),
            halt,
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
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            dead_letter_topic = self.processor.dead_letters.topic(),
            "Inbox consumer started."
        );
        let halt = self.halt.clone();
        let link = {
            let halt = halt.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                halt.cancel();
            })
        };
        let mut healer = Healer::new(self.settings.self_heal, self.settings.stall_rejoin);
        let mut next = self.first.take();
        let mut patience = Patience::new();
        loop {
            let (client, lanes) = match next.take() {
                Some(pair) => pair,
                None => {
                    let lanes = Arc::new(Lanes::new(halt.clone()));
                    match subscribe(&self.settings, &self.topics, &lanes, &self.stats) {
                        Ok(client) => (Arc::new(client), lanes),
                        Err(error) => {
                            tracing::error!(%error, "Cannot create the Kafka consumer; retrying.");
                            if !patience.sleep(&halt).await {
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            match self.session(client, lanes, &mut healer, &halt).await {
                Ended::Shutdown => break,
                Ended::Recreate(reason) => {
                    Stats::bump(&self.stats.recreated);
                    healer.reset();
                    tracing::warn!(%reason, "Recreating the Kafka consumer client.");
                }
            }
        }
        link.abort();
        tracing::info!("Inbox consumer stopped.");
    }

    /// One client's life: poll, feed lanes, pause and resume, heal.
    async fn session(
        &self,
        client: Arc<StreamConsumer<RebalanceContext>>,
        lanes: Arc<Lanes>,
        healer: &mut Healer,
        halt: &CancellationToken,
    ) -> Ended {
        let (verdicts, mut actions) = mpsc::channel::<Action>(1);
        let checks = CancellationToken::new();
        let checker = healer.is_on().then(|| {
            let healer = std::mem::replace(healer, Healer::new(None, None));
            tokio::spawn(check_periodically(
                healer,
                Arc::clone(&client),
                Arc::clone(&lanes),
                self.topics.clone(),
                verdicts,
                checks.clone(),
            ))
        });
        // Without a checker (or once it ended) nothing comes on `actions`.
        let mut checking = checker.is_some();
        let ended = loop {
            let message = tokio::select! {
                () = halt.cancelled() => break Ended::Shutdown,
                () = lanes.drained() => {
                    self.resume(&client, &lanes);
                    continue;
                }
                action = actions.recv(), if checking => match action {
                    Some(Action::Recreate(reason)) => break Ended::Recreate(reason),
                    Some(Action::Rejoin(stalled)) => {
                        tracing::warn!(stalled = ?stalled, "Partitions with waiting records have no consumer; rejoining the group to get them assigned.");
                        self.rejoin(&client);
                        continue;
                    }
                    Some(Action::Nothing) => continue,
                    None => {
                        checking = false;
                        continue;
                    }
                },
                message = client.recv() => message,
            };
            match message {
                Ok(message) => self.dispatch(&client, &lanes, message.detach(), halt),
                Err(error) => {
                    tracing::warn!(%error, "Kafka receive failed; retrying.");
                    tokio::select! {
                        () = halt.cancelled() => break Ended::Shutdown,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        };
        checks.cancel();
        if let Some(checker) = checker {
            *healer = match checker.await {
                Ok(Some(returned)) => returned,
                Ok(None) | Err(_) => {
                    tracing::error!("The consumer's health check failed; starting it afresh.");
                    Healer::new(self.settings.self_heal, self.settings.stall_rejoin)
                }
            };
        }
        // Lanes finish their record in flight; then the client is the last
        // reference and closes when dropped here, committing the stored
        // offsets (auto-commit) and leaving the group.
        lanes.stop_all().await;
        drop(client);
        ended
    }

    fn dispatch(
        &self,
        client: &Arc<StreamConsumer<RebalanceContext>>,
        lanes: &Arc<Lanes>,
        message: OwnedMessage,
        halt: &CancellationToken,
    ) {
        let topic = rdkafka::Message::topic(&message).to_owned();
        let partition = rdkafka::Message::partition(&message);
        let queued = lanes.push(message, |records, depth, stop| {
            tokio::spawn(run_lane(
                Arc::clone(&self.processor),
                Arc::clone(client),
                Arc::clone(lanes),
                records,
                depth,
                stop,
                halt.clone(),
            ))
        });
        let mut list = TopicPartitionList::new();
        list.add_partition(&topic, partition);
        // Fault test: the client silently stops fetching this partition, as
        // after a lost session whose rejoin never completed; only the
        // self-healing check can notice. Compiled out without `failpoints`.
        fail::fail_point!("consumer::stop-fetching", |_| {
            tracing::error!(%topic, partition, "Failpoint: the client stops fetching a partition.");
            if let Err(error) = client.pause(&list) {
                tracing::error!(%error, "Failpoint could not pause.");
            }
        });
        if queued == Queued::Pause {
            match client.pause(&list) {
                Ok(()) => {
                    Stats::bump(&self.stats.pauses);
                    tracing::info!(%topic, partition, "Lane full; partition paused while it drains.");
                }
                Err(error) => {
                    tracing::warn!(%topic, partition, %error, "Cannot pause a full partition.")
                }
            }
        }
    }

    fn resume(&self, client: &StreamConsumer<RebalanceContext>, lanes: &Lanes) {
        for (topic, partition) in lanes.take_resumable() {
            let mut list = TopicPartitionList::new();
            list.add_partition(&topic, partition);
            match client.resume(&list) {
                Ok(()) => tracing::info!(%topic, partition, "Lane drained; partition resumed."),
                // Revoked meanwhile: nothing to resume.
                Err(error) => {
                    tracing::debug!(%topic, partition, %error, "Cannot resume a partition.")
                }
            }
        }
    }

    /// Leaves and rejoins the group, forcing a rebalance.
    fn rejoin(&self, client: &StreamConsumer<RebalanceContext>) {
        client.unsubscribe();
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if let Err(error) = client.subscribe(&topics) {
            tracing::error!(%error, "Resubscribing failed; retrying at the next check.");
        }
    }
}

/// Creates a client in the service's group and subscribes it.
fn subscribe(
    settings: &KafkaSettings,
    topics: &[String],
    lanes: &Arc<Lanes>,
    stats: &Arc<Stats>,
) -> Result<StreamConsumer<RebalanceContext>, KafkaError> {
    let client: StreamConsumer<RebalanceContext> = kafka::configured(
        &settings.brokers,
        &[
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            ("fetch.wait.max.ms", "100"),
        ],
        &settings.consumer_properties,
        &[
            ("group.id", &settings.group_id),
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "false"),
        ],
    )
    .create_with_context(RebalanceContext::new(Arc::clone(lanes), Arc::clone(stats)))?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    client.subscribe(&topic_refs)?;
    Ok(client)
}

/// The task of one lane: its records, strictly in order.
async fn run_lane<H: EventHandler>(
    processor: Arc<Processor<H>>,
    client: Arc<StreamConsumer<RebalanceContext>>,
    lanes: Arc<Lanes>,
    mut records: mpsc::UnboundedReceiver<OwnedMessage>,
    depth: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
    halt: CancellationToken,
) {
    // `stop` fires on a revoke, or with the whole consumer (its parent).
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = records.recv() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let handled = processor.process(&client, &message, &stop, &halt).await;
        depth.fetch_sub(1, Ordering::AcqRel);
        lanes.note_progress(&depth);
        if !handled || stop.is_cancelled() {
            break;
        }
    }
    // Records still queued are fetched again by whoever owns the partition next.
}

/// Runs the health checks every `CHECK_PERIOD` until `stop`; hands back the
/// healer so its clocks survive a client re-creation (`None` if a check
/// panicked and took it along).
async fn check_periodically(
    mut healer: Healer,
    client: Arc<StreamConsumer<RebalanceContext>>,
    lanes: Arc<Lanes>,
    topics: Vec<String>,
    verdicts: mpsc::Sender<Action>,
    stop: CancellationToken,
) -> Option<Healer> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Some(healer),
            () = tokio::time::sleep(heal::CHECK_PERIOD) => {}
        }
        let (client_ref, lanes_ref, topics_ref) =
            (Arc::clone(&client), Arc::clone(&lanes), topics.clone());
        let looked = tokio::task::spawn_blocking(move || {
            let action = healer.check(&client_ref, &lanes_ref, &topics_ref);
            (healer, action)
        })
        .await;
        let action = match looked {
            Ok((returned, action)) => {
                healer = returned;
                action
            }
            Err(error) => {
                tracing::warn!(%error, "Consumer health check failed.");
                return None;
            }
        };
        match action {
            Ok(Action::Nothing) => {}
            Ok(action) => {
                let recreate = matches!(action, Action::Recreate(_));
                if verdicts.send(action).await.is_err() || recreate {
                    return Some(healer);
                }
            }
            Err(error) => {
                tracing::debug!(%error, "Health check could not ask the broker; trying again later.");
            }
        }
    }
}
