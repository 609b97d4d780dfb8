//! Handing a key on: once a row is settled, the next waiting row of its key
//! becomes the key's head, and only heads are fetched (docs/relay.md, "Fair
//! to every key"). The settle does it under each key's ordering lock, taken
//! without waiting; a key whose lock a writer holds is handed on at a later
//! settle, and the keys still owed are kept here, in a bounded set (the
//! sweep covers what falls out of it, and whatever a crash forgets).

use std::collections::HashSet;

use crate::store::OutboxRow;

/// The most keys kept for a later hand-over; beyond it the sweep (every
/// `maintenance::SWEEP_PERIOD`) hands them on.
pub const MOST_OWED: usize = 10_000;

/// Keys whose next row is still to be made their head.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Handover {
    owed: Vec<String>,
}

impl Handover {
    /// The keys to hand on at this settle: those of the rows acknowledged
    /// (`publishable`, their handles) and those owed from earlier, each
    /// once. Rows without a key have nothing behind them.
    pub fn keys(&mut self, rows: &[OutboxRow], publishable: &[i64]) -> Vec<String> {
        let acknowledged: HashSet<i64> = publishable.iter().copied().collect();
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

    /// The keys the settle could not hand on: owed until the next one.
    pub fn left(&mut self, keys: Vec<String>) {
        self.owed = keys;
        if self.owed.len() > MOST_OWED {
            tracing::warn!(
                owed = self.owed.len(),
                kept = MOST_OWED,
                "Writers held the locks of many keys the relay had to hand on; the sweep hands on \
                 the rest."
            );
            self.owed.truncate(MOST_OWED);
        }
    }

    /// How many keys are owed.
    pub fn owed(&self) -> usize {
        self.owed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::in_flight::tests::row;

    #[test]
    fn acknowledged_keys_and_owed_ones_are_handed_on_once_each() {
        let mut handover = Handover::default();
        let rows = [row(1, "a"), row(2, "b"), row(3, ""), row(4, "c")];
        // Row 2 failed: its key keeps its head, nothing to hand on.
        assert_eq!(handover.keys(&rows, &[1, 3, 4]), ["a", "c"]);
        handover.left(vec!["c".to_owned()]);
        assert_eq!(handover.owed(), 1);
        let next = [row(5, "c"), row(6, "d")];
        assert_eq!(handover.keys(&next, &[5, 6]), ["c", "d"]);
        assert_eq!(handover.owed(), 0, "taken by the settle that tries them");
    }

    #[test]
    fn the_owed_set_is_bounded() {
        let mut handover = Handover::default();
        handover.left((0..MOST_OWED + 5).map(|n| n.to_string()).collect());
        assert_eq!(handover.owed(), MOST_OWED);
    }
}
