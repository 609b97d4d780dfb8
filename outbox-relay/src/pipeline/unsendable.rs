//! Parking a row the broker can never take, after a bounded number of
//! tries, so the rest of the outbox flows on.

use std::collections::HashMap;

use crate::store::OutboxRow;

/// How many batches a row may be absent from and still keep its count: a
/// row that failed is fetched again one batch later (the next fetch ran
/// while it was still with the broker), so it shows up every other batch.
const REMEMBERED_FOR: u64 = 2;

/// Counts, per row, the sends that could never succeed, and says which
/// rows reached the limit and are to be parked. A row not seen for more
/// than two batches is forgotten, so it holds at most two batches' rows.
pub struct Unsendable {
    limit: u32,
    batch: u64,
    failures: HashMap<i64, (u32, u64)>,
}

impl Unsendable {
    /// Parks after `limit` failed tries (at least one).
    pub fn new(limit: u32) -> Self {
        Self {
            limit: limit.max(1),
            batch: 0,
            failures: HashMap::new(),
        }
    }

    /// Notes the batch `rows` and its `unsendable` rows; returns the rows to
    /// park now, with the reason.
    pub fn count(
        &mut self,
        rows: &[OutboxRow],
        unsendable: &[(i64, String)],
    ) -> Vec<(i64, String)> {
        self.batch += 1;
        let batch = self.batch;
        let failed: HashMap<i64, &String> = unsendable.iter().map(|(id, why)| (*id, why)).collect();
        // A row of this batch that went out is forgotten; one not seen for
        // a while too.
        self.failures.retain(|id, (_, seen)| {
            failed.contains_key(id)
                || (!rows.iter().any(|row| row.id == *id) && *seen + REMEMBERED_FOR >= batch)
        });
        let mut park = Vec::new();
        for row in rows {
            let Some(why) = failed.get(&row.id) else {
                continue;
            };
            let (tries, seen) = self.failures.entry(row.id).or_default();
            *tries += 1;
            *seen = batch;
            if *tries >= self.limit {
                self.failures.remove(&row.id);
                park.push((
                    row.id,
                    format!("{} tries failed for good: {why}", self.limit),
                ));
            }
        }
        park
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::in_flight::tests::row;

    #[test]
    fn a_row_is_parked_after_its_limit_even_when_it_comes_every_other_batch() {
        let mut unsendable = Unsendable::new(3);
        let bad = || vec![(7, "no topic".to_owned())];
        assert!(unsendable.count(&[row(7, "k")], &bad()).is_empty());
        assert!(unsendable.count(&[row(8, "j")], &[]).is_empty());
        assert!(unsendable.count(&[row(7, "k")], &bad()).is_empty());
        assert!(unsendable.count(&[row(9, "i")], &[]).is_empty());
        let parked = unsendable.count(&[row(7, "k")], &bad());
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].0, 7);
        assert!(
            parked[0].1.starts_with("3 tries failed for good: no topic"),
            "{}",
            parked[0].1
        );
    }

    #[test]
    fn a_row_that_went_out_or_stayed_away_is_forgotten() {
        let mut unsendable = Unsendable::new(2);
        assert!(
            unsendable
                .count(&[row(7, "k")], &[(7, "x".to_owned())])
                .is_empty()
        );
        // It went out this time: its count starts again.
        assert!(unsendable.count(&[row(7, "k")], &[]).is_empty());
        assert!(
            unsendable
                .count(&[row(7, "k")], &[(7, "x".to_owned())])
                .is_empty()
        );
        for _ in 0..3 {
            assert!(unsendable.count(&[row(8, "j")], &[]).is_empty());
        }
        assert!(
            unsendable
                .count(&[row(7, "k")], &[(7, "x".to_owned())])
                .is_empty(),
            "away for three batches: forgotten"
        );
    }
}
