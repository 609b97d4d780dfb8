//! "Per key, one row out at a time" across batches: while a batch is with
//! the broker, the next fetch leaves out its rows (they are still waiting
//! heads in the table). The rows behind them are not heads until the settle
//! hands their keys on, and the fetch's guard leaves out any row with an
//! earlier waiting row of its key; here, in memory, the same rule is kept
//! again: no row of a key in flight, and one row per key in a batch.

use std::collections::HashSet;

use crate::store::OutboxRow;

/// The rows with the broker now, and their keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InFlight {
    ids: Vec<i64>,
    keys: Vec<String>,
}

impl InFlight {
    /// Notes `rows` as sent: the next fetch leaves them and their keys out.
    pub fn admit(&mut self, rows: &[OutboxRow]) {
        self.ids.extend(rows.iter().map(|row| row.id));
        self.keys
            .extend(rows.iter().filter_map(|row| row.key.clone()));
    }

    /// The broker answered for every row: its rows and keys are free
    /// (acknowledged rows are settled next; a failed one is fetched again,
    /// still ahead of the later rows of its key).
    pub fn release(&mut self) {
        self.ids.clear();
        self.keys.clear();
    }

    /// The rows the fetch must leave out.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// The rows of `rows` (oldest first) that may go out now: none in
    /// flight, none of a key in flight, and the first row of each key only.
    /// Rows without a key have no order to keep (Kafka spreads them over
    /// partitions anyway), so each may go.
    pub fn admissible(&self, rows: Vec<OutboxRow>) -> Vec<OutboxRow> {
        let ids: HashSet<i64> = self.ids.iter().copied().collect();
        let mut keys: HashSet<String> = self.keys.iter().cloned().collect();
        rows.into_iter()
            .filter(|row| !ids.contains(&row.id))
            .filter(|row| row.key.as_ref().is_none_or(|key| keys.insert(key.clone())))
            .collect()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A row of `key` (empty: no key) with handle `id`.
    pub fn row(id: i64, key: &str) -> OutboxRow {
        OutboxRow {
            id,
            topic: Ok("t".to_owned()),
            key: (!key.is_empty()).then(|| key.to_owned()),
            event_type: String::new(),
            payload: None,
            headers: Vec::new(),
            traceparent: None,
            tracestate: None,
            created: 0.0,
        }
    }

    #[test]
    fn rows_in_flight_their_keys_and_later_rows_of_a_key_are_left_out() {
        let mut in_flight = InFlight::default();
        in_flight.admit(&[row(1, "a"), row(2, "")]);
        assert_eq!(in_flight.ids(), [1, 2]);
        assert_eq!(in_flight.keys, ["a"]);
        let fetched = vec![
            row(1, "a"),
            row(2, ""),
            row(3, "a"),
            row(4, "b"),
            row(5, ""),
            row(6, "b"),
            row(7, "c"),
        ];
        let ids = |rows: Vec<OutboxRow>| rows.iter().map(|row| row.id).collect::<Vec<_>>();
        assert_eq!(ids(in_flight.admissible(fetched.clone())), [4, 5, 7]);
        in_flight.release();
        assert!(in_flight.ids().is_empty() && in_flight.keys.is_empty());
        assert_eq!(ids(in_flight.admissible(fetched)), [1, 2, 4, 5, 7]);
    }
}
