//! The consumer's client and its life: subscribing in the service's group
//! (a lane per assigned partition, started and stopped in the rebalance
//! callback), serving the main queue, and replacing a client that stopped
//! fetching; plus the watcher of operators' skip marks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::apply::InboxGate;
use super::context::{Client, LaneStarter, RebalanceContext};
use super::handler::EventHandler;
use super::heal::{self, Action, Healer};
use super::lane::run_lane;
use super::lanes::Lanes;
use super::process::Processor;
use super::receive_errors::{self, ErrorPace};
use super::skips;
use super::stats::Stats;
use crate::boot::config::KafkaSettings;
use crate::store::db::PgPool;
use platform_core::dead_letter::DeadLetters;
use platform_core::kafka;
use platform_core::kafka_refusal::{self, Refusals};
use platform_core::retry::Patience;

/// Errors that stop the consumer.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The Kafka client could not be created or subscribed.
    #[error("kafka consumer set-up failed: {0}")]
    Kafka(#[from] KafkaError),
}

/// How often the poll loop polls the client even when no record arrives.
const POLL_KEEPALIVE: Duration = Duration::from_secs(1);

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
    first: Option<(Arc<Client>, Arc<Lanes>)>,
    /// This consumer's own stop: cancelled by shutdown, and by a crash point
    /// without touching the rest of the service. Every lane stops with it.
    halt: CancellationToken,
    /// Authorisation refusals met, read by the health monitor.
    refusals: Arc<Refusals>,
}

impl<H: EventHandler> InboxConsumer<H> {
    /// Subscribes to the topics of `origins` in the service's consumer
    /// group; each maps to the only `ce_source` accepted on it (its
    /// owner's), anything else is dead-lettered.
    pub fn new(
        component: &'static str,
        settings: &KafkaSettings,
        origins: HashMap<String, String>,
        pool: PgPool,
        handler: H,
        gate: InboxGate,
    ) -> Result<Self, ConsumerError> {
        let mut topics: Vec<String> = origins.keys().cloned().collect();
        topics.sort();
        let stats: Arc<Stats> = Arc::default();
        let dead_letters = DeadLetters::new(
            &settings.brokers,
            &settings.dead_letter_topic,
            &settings.group_id,
        )?;
        let halt = CancellationToken::new();
        let processor = Arc::new(Processor::new(
            component,
            origins,
            pool,
            handler,
            dead_letters,
            Arc::clone(&stats),
            Arc::default(),
            gate,
        ));
        let lanes = Arc::new(Lanes::new(halt.clone()));
        let client = subscribe(settings, &topics, &lanes, &stats, &processor, &halt)?;
        Ok(Self {
            settings: settings.clone(),
            topics,
            processor,
            stats,
            first: Some((client, lanes)),
            halt,
            refusals: Arc::default(),
        })
    }

    /// Live counters of this consumer.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// The authorisation refusals this consumer meets, for health.
    pub fn refusals(&self) -> Arc<Refusals> {
        Arc::clone(&self.refusals)
    }

    /// Whether `error` is the broker refusing this consumer's principal; if
    /// so it is noted for health and logged (once a minute) with the
    /// principal, the operation and the resource.
    fn refused(&self, error: &KafkaError) -> bool {
        let Some(code) = error.rdkafka_error_code() else {
            return false;
        };
        let Some(resource) = kafka_refusal::refused(code) else {
            return false;
        };
        let mut properties = kafka::env_properties();
        properties.extend(self.settings.consumer_properties.iter().cloned());
        let name = match resource {
            kafka_refusal::Resource::Group => self.settings.group_id.clone(),
            _ => self.topics.join(", "),
        };
        let sentence = kafka_refusal::sentence(
            &kafka_refusal::principal(&properties),
            "Read",
            resource,
            &name,
            code,
        );
        if self.refusals.note(sentence.clone()) {
            tracing::error!(refusal = %sentence, "Kafka refused this consumer; retrying until an ACL allows it.");
        }
        true
    }

    /// Consumes until `shutdown` fires, then commits the stored offsets.
    ///
    /// Records are handed to one lane per partition: a lane handles its
    /// records strictly in order, while lanes of different partitions run in
    /// parallel. Per-entity ordering needs nothing more, since all events of an
    /// entity share a key and so a partition.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            dead_letter_topic = self.processor.settler.dead_letters.topic(),
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
        let skip_watch = tokio::spawn(skips::watch(
            self.settings.brokers.clone(),
            self.settings.dead_letter_topic.clone(),
            self.settings.group_id.clone(),
            self.settings.retention,
            Arc::clone(&self.processor.settler.skips),
            halt.clone(),
        ));
        let mut healer = Healer::new(self.settings.self_heal, self.settings.stall_rejoin);
        let mut next = self.first.take();
        let mut patience = Patience::new();
        loop {
            let (client, lanes) = match next.take() {
                Some(pair) => pair,
                None => {
                    let lanes = Arc::new(Lanes::new(halt.clone()));
                    match subscribe(
                        &self.settings,
                        &self.topics,
                        &lanes,
                        &self.stats,
                        &self.processor,
                        &halt,
                    ) {
                        Ok(client) => (client, lanes),
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
                    self.stats.recreated.inc();
                    healer.reset();
                    tracing::warn!(%reason, "Recreating the Kafka consumer client.");
                }
            }
        }
        link.abort();
        skip_watch.abort();
        tracing::info!("Inbox consumer stopped.");
    }

    /// One client's life: serve the main queue (rebalances start and stop
    /// the lanes), act on the health checks.
    async fn session(
        &self,
        client: Arc<Client>,
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
        // librdkafka must see the application poll the main queue at least
        // every max.poll.interval.ms or it leaves the group; records go to
        // the partition queues, so the main queue is often silent. Each new
        // `recv` future polls it once, so this tick keeps the member alive
        // through any outage.
        let mut pace = ErrorPace::default();
        let mut keepalive = tokio::time::interval(POLL_KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            let message = tokio::select! {
                () = halt.cancelled() => break Ended::Shutdown,
                _ = keepalive.tick() => continue,
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
                // Every assigned partition has its own queue, so a record
                // here was fetched before its queue was split. Handling it
                // here could overtake records its lane already read; a new
                // client starts cleanly from the committed offsets instead.
                Ok(message) => {
                    break Ended::Recreate(format!(
                        "a record of {}[{}] reached the main queue",
                        rdkafka::Message::topic(&message),
                        rdkafka::Message::partition(&message)
                    ));
                }
                Err(error) => {
                    let step = pace.after_error(tokio::time::Instant::now());
                    if !self.refused(&error)
                        && let Some(unlogged) = step.log
                    {
                        tracing::warn!(%error, unlogged, "Kafka receive failed; retrying.");
                    }
                    if step.pause {
                        tokio::select! {
                            () = halt.cancelled() => break Ended::Shutdown,
                            () = tokio::time::sleep(receive_errors::FLOOD_PAUSE) => {}
                        }
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
        client.context().forget_queues();
        drop(client);
        ended
    }

    /// Leaves and rejoins the group, forcing a rebalance.
    fn rejoin(&self, client: &Client) {
        client.unsubscribe();
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if let Err(error) = client.subscribe(&topics) {
            tracing::error!(%error, "Resubscribing failed; retrying at the next check.");
        }
    }
}

/// Creates a client in the service's group, attaches the lane starter to
/// its context, and subscribes it.
fn subscribe<H: EventHandler>(
    settings: &KafkaSettings,
    topics: &[String],
    lanes: &Arc<Lanes>,
    stats: &Arc<Stats>,
    processor: &Arc<Processor<H>>,
    halt: &CancellationToken,
) -> Result<Arc<Client>, KafkaError> {
    let client: Arc<Client> = Arc::new(
        kafka::configured(
            &settings.brokers,
            &[
                &[
                    ("auto.commit.interval.ms", "1000"),
                    ("auto.offset.reset", "earliest"),
                    // How long the broker may hold a fetch that found nothing.
                    // Measured on Apache Kafka 4.1 (docs/kafka.md): the saga at
                    // 200 orders/s had p50 24-27 ms and p99 86-89 ms with 10,
                    // 32 and 117 ms with 100, 36 and 196 ms with 500; idle, the
                    // broker spends 12 % of a core on three consumers' empty
                    // fetches with 10, 5 % with 500. Latency wins here; raise it
                    // with KAFKA_PROPERTY_FETCH_WAIT_MAX_MS to save idle CPU.
                    ("fetch.wait.max.ms", "10"),
                    // What one partition may hold fetched while its lane waits.
                    ("queued.max.messages.kbytes", "8192"),
                    // Per-partition lag for the metrics (see `stats`).
                    ("statistics.interval.ms", "5000"),
                ],
                settings.group_protocol.defaults(),
            ]
            .concat(),
            &settings.consumer_properties,
            &[
                settings.group_protocol.property(),
                ("group.id", &settings.group_id),
                ("enable.auto.commit", "true"),
                ("enable.auto.offset.store", "false"),
            ],
        )
        .create_with_context(RebalanceContext::new(Arc::clone(lanes), Arc::clone(stats)))?,
    );
    let (processor, halt) = (Arc::clone(processor), halt.clone());
    let starter: LaneStarter = Box::new(move |client, lanes, (topic, partition)| {
        let Some(queue) = client.context().queue(client, &topic, partition) else {
            return false;
        };
        let (processor, client, halt) = (Arc::clone(&processor), Arc::clone(client), halt.clone());
        lanes.start((topic, partition), move |activity, stop| {
            tokio::spawn(run_lane(processor, client, queue, activity, stop, halt))
        });
        true
    });
    client.context().attach(&client, starter);
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    client.subscribe(&topic_refs)?;
    Ok(client)
}

/// Runs the health checks every `CHECK_PERIOD` until `stop`; hands back the
/// healer so its clocks survive a client re-creation (`None` if a check
/// panicked and took it along).
async fn check_periodically(
    mut healer: Healer,
    client: Arc<Client>,
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
