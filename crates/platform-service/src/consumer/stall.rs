//! Noticing partitions that nobody in the group consumes.
//!
//! In Kafka a partition always has an owner once a rebalance ends. Tansu 0.6
//! sometimes ends one without that, or drops a dead member without any
//! rebalance, so its partitions sit unread while the survivors heartbeat
//! happily. The fault-injection run found both. A member that sees records
//! waiting on a partition it does not own, with a committed offset that
//! has not moved for a while, forces a rebalance by leaving and rejoining.
//! In a healthy group that never happens: the owner keeps committing.
//!
//! The same clock serves the consumer's own partitions (see
//! `consumer::heal`): there the offset watched is the client's fetch position.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One partition as the watch sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// Remembers, per partition, since when its committed offset has stood
/// still while records were waiting.
#[derive(Debug)]
pub struct StallWatch {
    limit: Duration,
    standing: HashMap<Partition, (i64, Instant)>,
    assignment: Vec<Partition>,
}

impl StallWatch {
    /// A watch that calls a partition stalled after `limit` without progress.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            standing: HashMap::new(),
            assignment: Vec::new(),
        }
    }

    /// Notes this member's current assignment. A change means a rebalance
    /// just happened, which may already have fixed things, so the clocks
    /// start again; returns whether it changed.
    pub fn note_assignment(&mut self, mut assignment: Vec<Partition>) -> bool {
        assignment.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        if assignment == self.assignment {
            return false;
        }
        self.assignment = assignment;
        self.standing.clear();
        true
    }

    /// Records one observation of a partition this member does not own;
    /// returns whether it is stalled: records waiting (`committed < end`)
    /// and the committed offset unchanged for at least the limit.
    pub fn observe(
        &mut self,
        partition: Partition,
        committed: i64,
        end: i64,
        now: Instant,
    ) -> bool {
        if committed >= end {
            self.standing.remove(&partition);
            return false;
        }
        match self.standing.get(&partition) {
            Some(&(seen, since)) if seen == committed => now.duration_since(since) >= self.limit,
            _ => {
                self.standing.insert(partition, (committed, now));
                false
            }
        }
    }

    /// Forgets one partition's clock (it is busy, so not stalled).
    pub fn forget(&mut self, partition: &Partition) {
        self.standing.remove(partition);
    }

    /// Forgets everything, after a rejoin.
    pub fn reset(&mut self) {
        self.standing.clear();
    }
}

/// Partition `n` of topic `t`, for the tests of the stall and heal rules.
#[cfg(test)]
pub(crate) fn p(n: i32) -> Partition {
    Partition {
        topic: "t".into(),
        partition: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_waiting_partitions_that_stand_still_are_stalled() {
        let limit = Duration::from_secs(30);
        let start = Instant::now();
        let later = start + Duration::from_secs(31);
        let mut watch = StallWatch::new(limit);
        // Records waiting, nobody moves: stalled once the limit has passed.
        assert!(!watch.observe(p(0), 5, 9, start));
        assert!(!watch.observe(p(0), 5, 9, start + Duration::from_secs(10)));
        assert!(watch.observe(p(0), 5, 9, later));
        // Progress restarts the clock.
        assert!(!watch.observe(p(1), 5, 9, start));
        assert!(!watch.observe(p(1), 6, 9, later));
        // Caught up: never stalled.
        assert!(!watch.observe(p(2), 9, 9, start));
        assert!(!watch.observe(p(2), 9, 9, later));
        watch.reset();
        assert!(!watch.observe(p(0), 5, 9, later));
    }

    #[test]
    fn a_rebalance_restarts_the_clocks() {
        let start = Instant::now();
        let later = start + Duration::from_secs(31);
        let mut watch = StallWatch::new(Duration::from_secs(30));
        assert!(watch.note_assignment(vec![p(1)]));
        assert!(!watch.note_assignment(vec![p(1)]), "same assignment");
        assert!(!watch.observe(p(0), 5, 9, start));
        assert!(watch.note_assignment(vec![p(1), p(2)]));
        assert!(!watch.observe(p(0), 5, 9, later), "clock restarted");
    }
}
