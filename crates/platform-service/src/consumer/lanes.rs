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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// (topic, partition).
pub type TopicPartition = (String, i32);

/// What a lane is doing, for the health check.
#[derive(Debug, Default)]
pub struct Activity {
    busy: AtomicBool,
    handled: AtomicU64,
}

impl Activity {
    /// The lane took a run of records (and may now wait for the database).
    pub fn begin(&self) {
        self.busy.store(true, Ordering::Release);
    }

    /// The lane is done with its run.
    pub fn end(&self) {
        self.handled.fetch_add(1, Ordering::AcqRel);
        self.busy.store(false, Ordering::Release);
    }

    /// (busy, runs handled so far).
    pub fn read(&self) -> (bool, u64) {
        (
            self.busy.load(Ordering::Acquire),
            self.handled.load(Ordering::Acquire),
        )
    }
}

/// The handle kept for one lane.
struct Lane {
    activity: Arc<Activity>,
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

    /// Starts the lane of `key` with `spawn(activity, stop)`; a lane the key
    /// still had (an eager rebalance revokes and assigns the same partition)
    /// is stopped first.
    pub fn start<F>(&self, key: TopicPartition, spawn: F)
    where
        F: FnOnce(Arc<Activity>, CancellationToken) -> JoinHandle<()>,
    {
        let activity = Arc::new(Activity::default());
        let stop = self.parent.child_token();
        let task = spawn(Arc::clone(&activity), stop.clone());
        let lane = Lane {
            activity,
            stop,
            task,
        };
        if let Some(old) = locked(&self.lanes).insert(key, lane) {
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

    /// Whether the lane of `key` is handling a record, and how many it
    /// handled so far; `None` without a lane.
    pub fn activity(&self, key: &TopicPartition) -> Option<(bool, u64)> {
        locked(&self.lanes)
            .get(key)
            .map(|lane| lane.activity.read())
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
    fn working(activity: Arc<Activity>, stop: CancellationToken) -> JoinHandle<()> {
        activity.begin();
        tokio::spawn(async move { stop.cancelled().await })
    }

    #[tokio::test]
    async fn revoking_stops_only_the_revoked_lanes() {
        let lanes = Lanes::default();
        lanes.start(key(0), working);
        lanes.start(key(1), working);
        assert_eq!(lanes.activity(&key(0)), Some((true, 0)));
        assert_eq!(lanes.revoke(&[key(0), key(7)]), 1);
        assert!(!lanes.has(&key(0)));
        assert!(lanes.has(&key(1)));
        assert_eq!(lanes.activity(&key(7)), None);
        lanes.stop_all().await;
        assert!(!lanes.has(&key(1)));
    }

    #[tokio::test]
    async fn a_reassigned_partition_replaces_its_old_lane() {
        let lanes = Lanes::default();
        let first_stop = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&first_stop);
        lanes.start(key(0), move |activity, stop| {
            *locked(&seen) = Some(stop.clone());
            working(activity, stop)
        });
        lanes.start(key(0), working);
        let first = locked(&first_stop).clone().expect("first lane started");
        assert!(first.is_cancelled(), "the old lane was stopped");
        lanes.stop_all().await;
    }

    #[test]
    fn activity_counts_handled_records() {
        let activity = Activity::default();
        assert_eq!(activity.read(), (false, 0));
        activity.begin();
        assert_eq!(activity.read(), (true, 0));
        activity.end();
        assert_eq!(activity.read(), (false, 1));
    }

    #[tokio::test]
    async fn the_parent_stops_every_lane() {
        let parent = CancellationToken::new();
        let lanes = Lanes::new(parent.clone());
        let stops = Arc::new(Mutex::new(Vec::new()));
        for partition in 0..3 {
            let stops = Arc::clone(&stops);
            lanes.start(key(partition), move |activity, stop| {
                locked(&stops).push(stop.clone());
                working(activity, stop)
            });
        }
        parent.cancel();
        assert!(locked(&stops).iter().all(CancellationToken::is_cancelled));
        lanes.stop_all().await;
    }
}
