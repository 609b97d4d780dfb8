//! The consumer's client context: logs like every other client, gives each
//! assigned partition its own queue and lane, and stops the lanes of
//! revoked partitions, all inside the rebalance callback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;

use super::lanes::{Lanes, TopicPartition};
use super::stats::Stats;
use platform_core::kafka::LogContext;

/// The client type of the inbox consumer.
pub type Client = StreamConsumer<RebalanceContext>;

/// Starts a lane on a split partition queue; set once the client exists.
pub type LaneStarter =
    Box<dyn Fn(&Arc<Client>, &Lanes, TopicPartition) -> bool + Send + Sync + 'static>;

/// A partition's own queue, split off the client's main queue.
pub type PartitionQueue = StreamPartitionQueue<RebalanceContext>;

/// See the module documentation.
pub struct RebalanceContext {
    lanes: Arc<Lanes>,
    stats: Arc<Stats>,
    /// Each partition's queue, split once for the client's life. Splitting
    /// a partition again hands out a second handle to the same queue, and
    /// dropping a handle turns off the queue's wake-up for every handle: a
    /// lane revoked and reassigned within one rebalance (eager protocol)
    /// once dropped its old handle after the new lane took over, and the new
    /// lane never woke again. One handle per partition, kept, cannot.
    queues: Mutex<HashMap<TopicPartition, Arc<PartitionQueue>>>,
    /// The client this context belongs to (weak: the client owns the context).
    client: OnceLock<Weak<Client>>,
    starter: OnceLock<LaneStarter>,
}

impl RebalanceContext {
    /// A context that starts and stops lanes in `lanes` and counts into `stats`.
    pub fn new(lanes: Arc<Lanes>, stats: Arc<Stats>) -> Self {
        Self {
            lanes,
            stats,
            client: OnceLock::new(),
            starter: OnceLock::new(),
            queues: Mutex::default(),
        }
    }

    /// The queue of `topic`/`partition`, split off the first time.
    pub fn queue(
        &self,
        client: &Arc<Client>,
        topic: &str,
        partition: i32,
    ) -> Option<Arc<PartitionQueue>> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (topic.to_owned(), partition);
        if let Some(queue) = queues.get(&key) {
            return Some(Arc::clone(queue));
        }
        let queue = Arc::new(client.split_partition_queue(topic, partition)?);
        queues.insert(key, Arc::clone(&queue));
        Some(queue)
    }

    /// Lets go of every partition queue once no lane reads them any more
    /// (each holds the client, which holds this context).
    pub fn forget_queues(&self) {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Completes the context once its client exists: from now on assigned
    /// partitions get lanes started by `starter`.
    pub fn attach(&self, client: &Arc<Client>, starter: LaneStarter) {
        let _ = self.client.set(Arc::downgrade(client));
        let _ = self.starter.set(starter);
    }
}

fn partitions(list: &rdkafka::TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for RebalanceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        LogContext.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        LogContext.error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.stats.observe(&statistics);
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked = partitions(list);
                // Commit what is done before the partitions change hands
                // (without waiting: a lost session cannot commit anyway).
                if let Err(error) = consumer.commit_consumer_state(CommitMode::Async) {
                    tracing::debug!(%error, "Nothing to commit before the revoke.");
                }
                let stopped = self.lanes.revoke(&revoked);
                self.stats.forget(&revoked);
                tracing::info!(
                    partitions = ?revoked,
                    stopped,
                    "Partitions revoked; their lanes stop after the record in flight."
                );
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(%error, "Rebalance failed; the client rejoins by itself.");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else {
            return;
        };
        self.stats.assignments.inc();
        let assigned = partitions(list);
        // Split each partition's queue right after the assignment, before
        // anything was fetched for it, and give it a lane.
        let client = self.client.get().and_then(Weak::upgrade);
        match (client, self.starter.get()) {
            (Some(client), Some(starter)) => {
                for key in &assigned {
                    if !starter(&client, &self.lanes, key.clone()) {
                        tracing::error!(topic = %key.0, partition = key.1, "Cannot split a partition queue.");
                    }
                }
            }
            _ => tracing::error!("Partitions assigned before the consumer was ready."),
        }
        tracing::info!(partitions = ?assigned, "Partitions assigned.");
    }
}
