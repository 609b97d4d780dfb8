//! Handing a key on (docs/relay.md, "Fair to every key"). The fetch takes
//! the heads of keys, rows the ordering trigger (or the sweep) marked as
//! their key's first; once a row is settled, the next waiting row of its
//! key is next in line. The settle finds those rows under each key's
//! ordering lock, taken without waiting, and they are kept here, in memory,
//! until a fetch takes them: the table is not written for it. A key whose
//! lock a writer held is owed and tried again at the next settle. Both sets
//! are bounded; whatever falls out of them, or a crash forgets, the sweep
//! marks as heads within its period.

use std::collections::HashSet;

use crate::pipeline::InFlight;
use crate::store::OutboxRow;

/// The most keys owed, and the most rows kept next in line; beyond them the
/// sweep (every `maintenance::SWEEP_PERIOD`) takes over.
pub const MOST_KEPT: usize = 10_000;

/// What a fetch found: the heads, and the rows next in line still waiting.
#[derive(Debug, Default, Clone)]
pub struct Candidates {
    /// Heads, oldest first.
    pub heads: Vec<OutboxRow>,
    /// Of the rows next in line, those still waiting and first of their key.
    pub next: Vec<OutboxRow>,
}

/// Keys to hand on, and rows next in line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Handover {
    owed: Vec<String>,
    next: Vec<i64>,
}

impl Handover {
    /// The keys to hand on at this settle: those of the rows acknowledged
    /// (`publishable`, their handles) and those owed from earlier, each
    /// once. Rows without a key have nothing behind them. The rows that were
    /// not acknowledged are kept next in line: each is still its key's
    /// first, head or not, and is tried again.
    pub fn keys(&mut self, rows: &[OutboxRow], publishable: &[i64]) -> Vec<String> {
        let acknowledged: HashSet<i64> = publishable.iter().copied().collect();
        self.keep(
            rows.iter()
                .map(|row| row.id)
                .filter(|id| !acknowledged.contains(id)),
        );
        let mut seen = HashSet::new();
        std::mem::take(&mut self.owed)
            .into_iter()
            .chain(
                rows.iter()
                    .filter(|row| acknowledged.contains(&row.id))
                    .filter_map(|row| row.key.clone()),
            )
            .filter(|key| seen.insert(key.clone()))
            .collect()
    }

    /// What the settle did: the rows next in line for the keys it handed
    /// on, and the keys it could not (a writer held their locks).
    pub fn settled(&mut self, next: Vec<i64>, owed: Vec<String>) {
        self.keep(next);
        self.owed = owed;
        if self.owed.len() > MOST_KEPT {
            tracing::warn!(
                owed = self.owed.len(),
                kept = MOST_KEPT,
                "Writers held the locks of many keys the relay had to hand on; the sweep hands on \
                 the rest."
            );
            self.owed.truncate(MOST_KEPT);
        }
    }

    fn keep(&mut self, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            if self.next.len() < MOST_KEPT && !self.next.contains(&id) {
                self.next.push(id);
            }
        }
    }

    /// The rows next in line, for the fetch.
    pub fn next(&self) -> &[i64] {
        &self.next
    }

    /// Whether rows wait next in line (then the loop fetches at once).
    pub fn has_next(&self) -> bool {
        !self.next.is_empty()
    }

    /// How many keys are owed.
    pub fn owed(&self) -> usize {
        self.owed.len()
    }

    /// The batch from what a fetch found: heads and rows next in line
    /// together, oldest first, one per key, none in flight, at most
    /// `limit`. The rows next in line that did not fit stay next in line;
    /// those the fetch no longer found (settled, parked) are forgotten.
    pub fn take(&mut self, found: Candidates, limit: i64, in_flight: &InFlight) -> Vec<OutboxRow> {
        let valid: HashSet<i64> = found.next.iter().map(|row| row.id).collect();
        let mut rows = found.heads;
        rows.extend(found.next);
        rows.sort_by_key(|row| row.id);
        rows.dedup_by_key(|row| row.id);
        let mut batch = in_flight.admissible(rows);
        batch.truncate(usize::try_from(limit).unwrap_or(0));
        let taken: HashSet<i64> = batch.iter().map(|row| row.id).collect();
        self.next
            .retain(|id| valid.contains(id) && !taken.contains(id));
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::in_flight::tests::row;

    #[test]
    fn acknowledged_keys_and_owed_ones_are_handed_on_once_each_and_failed_rows_kept() {
        let mut handover = Handover::default();
        let rows = [row(1, "a"), row(2, "b"), row(3, ""), row(4, "c")];
        // Row 2 failed: its key hands nothing on, the row is tried again.
        assert_eq!(handover.keys(&rows, &[1, 3, 4]), ["a", "c"]);
        assert_eq!(handover.next(), [2]);
        handover.settled(vec![7], vec!["c".to_owned()]);
        assert_eq!(handover.owed(), 1);
        assert_eq!(handover.next(), [2, 7]);
        let next = [row(5, "c"), row(6, "d")];
        assert_eq!(handover.keys(&next, &[5, 6]), ["c", "d"]);
        assert_eq!(handover.owed(), 0, "taken by the settle that tries them");
    }

    #[test]
    fn a_batch_merges_heads_and_rows_next_in_line_by_age_and_keeps_what_did_not_fit() {
        let mut handover = Handover::default();
        handover.settled(vec![5, 9, 12], Vec::new());
        let found = Candidates {
            heads: vec![row(3, "x"), row(10, "y")],
            // 12 is no longer waiting: the fetch did not find it.
            next: vec![row(5, "a"), row(9, "b")],
        };
        let batch = handover.take(found, 3, &InFlight::default());
        let ids: Vec<i64> = batch.iter().map(|row| row.id).collect();
        assert_eq!(ids, [3, 5, 9], "oldest first, across both");
        assert_eq!(
            handover.next(),
            Vec::<i64>::new().as_slice(),
            "9 and 5 taken, 12 gone"
        );

        handover.settled(vec![20, 21], Vec::new());
        let found = Candidates {
            heads: vec![row(1, "x")],
            next: vec![row(20, "a"), row(21, "b")],
        };
        let batch = handover.take(found, 2, &InFlight::default());
        assert_eq!(batch.len(), 2);
        assert_eq!(handover.next(), [21], "what did not fit stays next in line");
    }

    #[test]
    fn the_sets_are_bounded() {
        let mut handover = Handover::default();
        handover.settled(
            (0..(MOST_KEPT + 5) as i64).collect(),
            (0..MOST_KEPT + 5).map(|n| n.to_string()).collect(),
        );
        assert_eq!(handover.owed(), MOST_KEPT);
        assert_eq!(handover.next().len(), MOST_KEPT);
    }
}
