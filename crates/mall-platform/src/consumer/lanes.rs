//! One lane per partition: records of a partition are handled strictly in
//! order by one task, lanes of different partitions run in parallel.
//!
//! The poll loop never waits on a lane. A lane whose queue grows past
//! [`HIGH_WATER`] gets its partition paused at the client, so the loop keeps
//! polling (heartbeats, rebalances, other partitions) however long a database
//! stall lasts; once the lane drained below [`LOW_WATER`] the partition is
//! resumed. librdkafka resumes fetching right after the last record it handed
//! out, so pausing loses nothing.
//!
//! On revoke the lanes of the revoked partitions are stopped: the record in
//! flight finishes (its offset store then fails harmlessly, and the new owner's
//! inbox rejects the redelivery), the queued ones are dropped for the new
//! owner to fetch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rdkafka::message::OwnedMessage;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Queued records at which a partition is paused.
pub const HIGH_WATER: usize = 64;
/// Queued records at which a paused partition is resumed.
pub const LOW_WATER: usize = 16;

/// (topic, partition).
pub type TopicPartition = (String, i32);

/// What happened when a record was queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Queued {
    /// Queued; nothing to do.
    Fine,
    /// Queued, and the lane is now full: pause this partition.
    Pause,
}

/// The handle the poll loop keeps for one lane.
struct Lane {
    queue: mpsc::UnboundedSender<OwnedMessage>,
    depth: Arc<AtomicUsize>,
    paused: bool,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Whether a lane counts as idle for self-healing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneState {
    /// Records queued or in flight.
    pub depth: usize,
    /// Whether its partition is paused.
    pub paused: bool,
}

/// Every lane of one consumer, shared by the poll loop and the rebalance
/// callback (both run on the polling task; the mutex is never contended
/// for long).
#[derive(Default)]
pub struct Lanes {
    /// Every lane's stop token is a child of this one.
    parent: CancellationToken,
    lanes: Mutex<HashMap<TopicPartition, Lane>>,
    /// Lanes stopped by a revoke, still finishing their record in flight.
    retired: Mutex<Vec<JoinHandle<()>>>,
    /// Fired by a lane that drained below the low water mark.
    drained: Notify,
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

    /// Queues `message` on its partition's lane, spawning the lane with
    /// `spawn(records, depth, stop)` if there is none.
    pub fn push<F>(self: &Arc<Self>, message: OwnedMessage, spawn: F) -> Queued
    where
        F: FnOnce(
            mpsc::UnboundedReceiver<OwnedMessage>,
            Arc<AtomicUsize>,
            CancellationToken,
        ) -> JoinHandle<()>,
    {
        let key = (message.topic_name().to_owned(), message.partition_number());
        let mut lanes = locked(&self.lanes);
        let lane = lanes.entry(key).or_insert_with(|| {
            let (queue, records) = mpsc::unbounded_channel();
            let depth = Arc::new(AtomicUsize::new(0));
            let stop = self.parent.child_token();
            let task = spawn(records, Arc::clone(&depth), stop.clone());
            Lane {
                queue,
                depth,
                paused: false,
                stop,
                task,
            }
        });
        let depth = lane.depth.fetch_add(1, Ordering::AcqRel) + 1;
        if lane.queue.send(message).is_err() {
            // The lane's task ended (a crash point, or it was stopped): the
            // record stays unhandled and is fetched again after a rebalance.
            lane.depth.fetch_sub(1, Ordering::AcqRel);
        }
        if depth >= HIGH_WATER && !lane.paused {
            lane.paused = true;
            Queued::Pause
        } else {
            Queued::Fine
        }
    }

    /// Called by a lane after each record: wakes the poll loop when a paused
    /// lane has room again.
    pub fn note_progress(&self, depth: &AtomicUsize) {
        if depth.load(Ordering::Acquire) <= LOW_WATER {
            self.drained.notify_one();
        }
    }

    /// Waits until some lane drained (or may have).
    pub async fn drained(&self) {
        self.drained.notified().await;
    }

    /// Paused partitions whose lanes have room again; they are marked as
    /// resumed, and the caller resumes them at the client.
    pub fn take_resumable(&self) -> Vec<TopicPartition> {
        let mut lanes = locked(&self.lanes);
        lanes
            .iter_mut()
            .filter(|(_, lane)| lane.paused && lane.depth.load(Ordering::Acquire) <= LOW_WATER)
            .map(|(key, lane)| {
                lane.paused = false;
                key.clone()
            })
            .collect()
    }

    /// Stops the lanes of revoked partitions; their queued records are dropped.
    pub fn revoke(&self, partitions: &[TopicPartition]) -> usize {
        let mut lanes = locked(&self.lanes);
        let mut retired = locked(&self.retired);
        let mut dropped = 0;
        for key in partitions {
            if let Some(lane) = lanes.remove(key) {
                lane.stop.cancel();
                dropped += lane.depth.load(Ordering::Acquire);
                retired.push(lane.task);
            }
        }
        dropped
    }

    /// The state of the lane of `key`, if it has one.
    pub fn state(&self, key: &TopicPartition) -> Option<LaneState> {
        locked(&self.lanes).get(key).map(|lane| LaneState {
            depth: lane.depth.load(Ordering::Acquire),
            paused: lane.paused,
        })
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

/// `OwnedMessage` accessors under names that do not clash with `Message`.
trait Coordinates {
    fn topic_name(&self) -> &str;
    fn partition_number(&self) -> i32;
}

impl Coordinates for OwnedMessage {
    fn topic_name(&self) -> &str {
        rdkafka::Message::topic(self)
    }
    fn partition_number(&self) -> i32 {
        rdkafka::Message::partition(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn record(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "t".to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    /// A lane that handles nothing until told, so the depth is visible.
    fn idle_lane(
        records: mpsc::UnboundedReceiver<OwnedMessage>,
        _depth: Arc<AtomicUsize>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            // Holds the queue open without taking anything from it.
            let _records = records;
            stop.cancelled().await;
        })
    }

    #[tokio::test]
    async fn a_full_lane_pauses_once_and_resumes_when_drained() {
        let lanes = Arc::new(Lanes::default());
        let mut verdicts = Vec::new();
        for offset in 0..(HIGH_WATER as i64 + 5) {
            verdicts.push(lanes.push(record(0, offset), idle_lane));
        }
        let pauses = verdicts.iter().filter(|v| **v == Queued::Pause).count();
        assert_eq!(pauses, 1, "paused exactly once");
        assert_eq!(verdicts[HIGH_WATER - 1], Queued::Pause);
        let key = ("t".to_owned(), 0);
        assert!(lanes.take_resumable().is_empty(), "still full");
        // Drain to the low water mark by hand.
        {
            let guard = locked(&lanes.lanes);
            guard[&key].depth.store(LOW_WATER, Ordering::Release);
        }
        assert_eq!(lanes.take_resumable(), vec![key.clone()]);
        assert!(lanes.take_resumable().is_empty(), "resumed once");
        assert_eq!(lanes.state(&key).map(|s| s.paused), Some(false));
        lanes.stop_all().await;
    }

    #[tokio::test]
    async fn revoking_drops_only_the_revoked_lanes() {
        let lanes = Arc::new(Lanes::default());
        lanes.push(record(0, 0), idle_lane);
        lanes.push(record(0, 1), idle_lane);
        lanes.push(record(1, 0), idle_lane);
        let dropped = lanes.revoke(&[("t".to_owned(), 0), ("t".to_owned(), 7)]);
        assert_eq!(dropped, 2);
        assert!(lanes.state(&("t".to_owned(), 0)).is_none());
        assert!(lanes.state(&("t".to_owned(), 1)).is_some());
        // The revoked lane's task ends; stop_all waits for every task.
        lanes.stop_all().await;
    }
}
