//! One lane per partition: records of a partition are handled strictly in
//! order by one task, lanes of different partitions run in parallel.
//!
//! Each lane reads its own partition queue, split off the client's main
//! queue when the partition is assigned (as restate's ingress does). A lane
//! that waits for the database simply stops reading: librdkafka then stops
//! fetching that partition once its queue holds `queued.max.messages.kbytes`,
//! while the poll loop keeps serving the main queue (heartbeats, rebalances)
//! and every other partition keeps flowing. Nothing is paused or sought, so
//! nothing can be skipped.
//!
//! On revoke the lanes of the revoked partitions are stopped: the record in
//! flight finishes (its offset store then fails harmlessly, and the new
//! owner's inbox rejects the redelivery); what the queue still held is the
//! new owner's to fetch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// (topic, partition).
pub type TopicPartition = (String, i32);

/// The handle kept for one lane.
struct Lane {
    /// Set while the lane handles a record (or waits for the database).
    busy: Arc<AtomicBool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Every lane of one client, shared by the rebalance callback (which starts
/// and stops lanes), the health check and the poll loop.
#[derive(Default)]
pub struct Lanes {
    /// Every lane's stop token is a child of this one.
    parent: CancellationToken,
    lanes: Mutex<HashMap<TopicPartition, Lane>>,
    /// Lanes stopped by a revoke, still finishing their record in flight.
    retired: Mutex<Vec<JoinHandle<()>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lanes {
    /// Lanes that also stop when `parent` is cancelled.
    pub fn new(parent: CancellationToken) -> Self {
        Self {
            parent,
            ..Self::default()
        }
    }

    /// Starts the lane of `key` with `spawn(busy, stop)`; a lane the key
    /// still had (an eager rebalance revokes and assigns the same partition)
    /// is stopped first.
    pub fn start<F>(&self, key: TopicPartition, spawn: F)
    where
        F: FnOnce(Arc<AtomicBool>, CancellationToken) -> JoinHandle<()>,
    {
        let busy = Arc::new(AtomicBool::new(false));
        let stop = self.parent.child_token();
        let task = spawn(Arc::clone(&busy), stop.clone());
        if let Some(old) = locked(&self.lanes).insert(key, Lane { busy, stop, task }) {
            old.stop.cancel();
            locked(&self.retired).push(old.task);
        }
    }

    /// Stops the lanes of revoked partitions; returns how many it stopped.
    pub fn revoke(&self, partitions: &[TopicPartition]) -> usize {
        let mut lanes = locked(&self.lanes);
        let mut retired = locked(&self.retired);
        let mut stopped = 0;
        for key in partitions {
            if let Some(lane) = lanes.remove(key) {
                lane.stop.cancel();
                retired.push(lane.task);
                stopped += 1;
            }
        }
        stopped
    }

    /// Whether the lane of `key` is handling a record; `None` without a lane.
    pub fn is_busy(&self, key: &TopicPartition) -> Option<bool> {
        locked(&self.lanes)
            .get(key)
            .map(|lane| lane.busy.load(Ordering::Acquire))
    }

    /// Whether `key` has a lane.
    #[cfg(test)]
    pub fn has(&self, key: &TopicPartition) -> bool {
        locked(&self.lanes).contains_key(key)
    }

    /// Stops every lane and waits until each finished its record in flight.
    pub async fn stop_all(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut lanes = locked(&self.lanes);
            let mut retired = locked(&self.retired);
            let mut tasks: Vec<JoinHandle<()>> = retired.drain(..).collect();
            for (_, lane) in lanes.drain() {
                lane.stop.cancel();
                tasks.push(lane.task);
            }
            tasks
        };
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "A consumer lane failed.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(partition: i32) -> TopicPartition {
        ("t".to_owned(), partition)
    }

    /// A lane that is busy until stopped.
    fn working(busy: Arc<AtomicBool>, stop: CancellationToken) -> JoinHandle<()> {
        busy.store(true, Ordering::Release);
        tokio::spawn(async move { stop.cancelled().await })
    }

    #[tokio::test]
    async fn revoking_stops_only_the_revoked_lanes() {
        let lanes = Lanes::default();
        lanes.start(key(0), working);
        lanes.start(key(1), working);
        assert_eq!(lanes.is_busy(&key(0)), Some(true));
        assert_eq!(lanes.revoke(&[key(0), key(7)]), 1);
        assert!(!lanes.has(&key(0)));
        assert!(lanes.has(&key(1)));
        assert_eq!(lanes.is_busy(&key(7)), None);
        lanes.stop_all().await;
        assert!(!lanes.has(&key(1)));
    }

    #[tokio::test]
    async fn a_reassigned_partition_replaces_its_old_lane() {
        let lanes = Lanes::default();
        let first_stop = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&first_stop);
        lanes.start(key(0), move |busy, stop| {
            *locked(&seen) = Some(stop.clone());
            working(busy, stop)
        });
        lanes.start(key(0), working);
        let first = locked(&first_stop).clone().expect("first lane started");
        assert!(first.is_cancelled(), "the old lane was stopped");
        lanes.stop_all().await;
    }

    #[tokio::test]
    async fn the_parent_stops_every_lane() {
        let parent = CancellationToken::new();
        let lanes = Lanes::new(parent.clone());
        let stops = Arc::new(Mutex::new(Vec::new()));
        for partition in 0..3 {
            let stops = Arc::clone(&stops);
            lanes.start(key(partition), move |busy, stop| {
                locked(&stops).push(stop.clone());
                working(busy, stop)
            });
        }
        parent.cancel();
        assert!(locked(&stops).iter().all(CancellationToken::is_cancelled));
        lanes.stop_all().await;
    }
}
