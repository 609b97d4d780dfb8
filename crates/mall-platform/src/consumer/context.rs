//! The consumer's client context: logs like every mall client, and tears
//! down the lanes of revoked partitions inside the rebalance callback.

use std::sync::Arc;

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use super::Stats;
use super::lanes::{Lanes, TopicPartition};
use crate::kafka::LogContext;

/// See the module documentation.
pub struct RebalanceContext {
    lanes: Arc<Lanes>,
    stats: Arc<Stats>,
}

impl RebalanceContext {
    /// A context that revokes from `lanes` and counts into `stats`.
    pub fn new(lanes: Arc<Lanes>, stats: Arc<Stats>) -> Self {
        Self { lanes, stats }
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
                let dropped = self.lanes.revoke(&revoked);
                tracing::info!(
                    partitions = ?revoked,
                    dropped,
                    "Partitions revoked; their queued records are left to the next owner."
                );
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(%error, "Rebalance failed; the client rejoins by itself.");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            Stats::bump(&self.stats.assignments);
            // A partition paused before a revoke must not stay paused when
            // it comes back.
            if let Err(error) = consumer.resume(list) {
                tracing::debug!(%error, "Resuming the new assignment failed.");
            }
            tracing::info!(partitions = ?partitions(list), "Partitions assigned.");
        }
    }
}
