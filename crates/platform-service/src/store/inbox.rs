//! The inbox: the exactly-once gate of every consumer.
//!
//! A row keyed by `(order_id, event_type)` (the entity id of the record key,
//! and the event type) is inserted with
//! `ON CONFLICT DO NOTHING` in the same transaction as the effect. Whoever
//! inserts the row applies the effect; everyone else sees a duplicate, unless
//! the row holds a different `ce_id`, which is reported, never swallowed. Rows are
//! never deleted to "reset" anything, compensations included; only the
//! janitor removes rows older than any record the topics can still redeliver.
//! The inbox only removes duplicates: whether a compensation came before its
//! action is for the service's own state to say.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use platform_envelope::cloudevents::Envelope;

/// Diesel schema of the `inbox` table (see `migrations/*/..._outbox_inbox`).
#[allow(missing_docs)]
pub mod schema {
    diesel::table! {
        /// Every event a consumer has applied (or deliberately recorded without effect).
        inbox (order_id, event_type) {
            order_id -> BigInt,
            event_type -> Text,
            event_id -> Uuid,
            topic -> Text,
            kafka_partition -> Integer,
            kafka_offset -> BigInt,
            received_at -> Timestamptz,
        }
    }
}

/// What the inbox said about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// First time `(key, event_type)` is seen: apply the effect.
    Fresh,
    /// The same event (same `ce_id`) again: already applied, skip it.
    Duplicate,
    /// The key is taken by a different event. Something reused an id (an
    /// producer database restored from an old backup, a second producer): the
    /// record is neither applied nor silently dropped.
    Reused {
        /// The `ce_id` the inbox holds for the key.
        recorded: Uuid,
    },
}

/// Records every envelope of a run in the inbox, in one statement, and
/// says for each, in the run's order, what recording them one after the
/// other would have said: the first of a key is fresh
/// when its row is new, a later one with the same event is a duplicate,
/// one with another event a reuse. A second statement reads the events of
/// keys recorded before, only when there are any.
pub async fn record_run(conn: &mut AsyncPgConnection, run: &[&Envelope]) -> QueryResult<Vec<Gate>> {
    let inserted: Vec<Recorded> = RecordRun::of(run).load(conn).await?;
    let taken: Vec<Recorded> = if inserted.len() < run.len() {
        let (order_ids, event_types) = run
            .iter()
            .map(|envelope| (envelope.key, envelope.event_type.as_str()))
            .unzip();
        RecordedFor {
            order_ids,
            event_types,
        }
        .load(conn)
        .await?
    } else {
        Vec::new()
    };
    // A key neither inserted nor found held cannot be judged: a database
    // error, so the run is tried again.
    gates(run, &inserted, &taken).ok_or(diesel::result::Error::NotFound)
}

/// A key's event as the inbox holds it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
struct Recorded {
    #[diesel(sql_type = BigInt)]
    order_id: i64,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = SqlUuid)]
    event_id: Uuid,
}

/// The gates of `run`, given the rows its statement `inserted` and the
/// events the inbox holds for its keys (`taken`); `None` when a key is in
/// neither.
fn gates(run: &[&Envelope], inserted: &[Recorded], taken: &[Recorded]) -> Option<Vec<Gate>> {
    let mut fresh: HashSet<(i64, &str)> = inserted
        .iter()
        .map(|row| (row.order_id, row.event_type.as_str()))
        .collect();
    let held: HashMap<(i64, &str), Uuid> = inserted
        .iter()
        .chain(taken)
        .map(|row| ((row.order_id, row.event_type.as_str()), row.event_id))
        .collect();
    run.iter()
        .map(|envelope| {
            let key = (envelope.key, envelope.event_type.as_str());
            if fresh.remove(&key) {
                return Some(Gate::Fresh);
            }
            let recorded = held.get(&key)?;
            Some(gate_for(*recorded, envelope.event_id))
        })
        .collect()
}

crate::fixed_statement! {
    /// A run's inbox rows, as one array per column: one statement whatever
    /// the run's length.
    struct RecordRun<'a>;
    "INSERT INTO inbox (order_id, event_type, event_id, topic, kafka_partition, kafka_offset) \
     SELECT * FROM unnest("
    { order_ids: Vec<i64> as Array<BigInt> } "::int8[], "
    { event_types: Vec<&'a str> as Array<Text> } "::text[], "
    { event_ids: Vec<Uuid> as Array<SqlUuid> } "::uuid[], "
    { topics: Vec<&'a str> as Array<Text> } "::text[], "
    { partitions: Vec<i32> as Array<Integer> } "::int4[], "
    { offsets: Vec<i64> as Array<BigInt> }
    "::int8[]) ON CONFLICT DO NOTHING RETURNING order_id, event_type, event_id"
}

impl<'a> RecordRun<'a> {
    fn of(run: &[&'a Envelope]) -> Self {
        Self {
            order_ids: run.iter().map(|e| e.key).collect(),
            event_types: run.iter().map(|e| e.event_type.as_str()).collect(),
            event_ids: run.iter().map(|e| e.event_id).collect(),
            topics: run.iter().map(|e| e.coordinates.topic.as_str()).collect(),
            partitions: run.iter().map(|e| e.coordinates.partition).collect(),
            offsets: run.iter().map(|e| e.coordinates.offset).collect(),
        }
    }
}

crate::fixed_statement! {
    /// The events the inbox holds for the keys `(order_ids[i], event_types[i])`.
    struct RecordedFor<'a>;
    "SELECT i.order_id, i.event_type, i.event_id FROM inbox i JOIN unnest("
    { order_ids: Vec<i64> as Array<BigInt> } "::int8[], "
    { event_types: Vec<&'a str> as Array<Text> }
    "::text[]) AS k (order_id, event_type) USING (order_id, event_type)"
}

/// The verdict for a key that is already taken.
fn gate_for(recorded: Uuid, arriving: Uuid) -> Gate {
    if recorded == arriving {
        Gate::Duplicate
    } else {
        Gate::Reused { recorded }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(key: i64, event_type: &str, event_id: Uuid) -> Envelope {
        Envelope {
            key,
            event_type: event_type.to_owned(),
            event_id,
            source: "/mall/test".to_owned(),
            traceparent: None,
            tracestate: None,
            payload: Vec::new(),
            coordinates: platform_envelope::cloudevents::Coordinates {
                topic: "t".to_owned(),
                partition: 0,
                offset: 0,
            },
        }
    }

    fn row(key: i64, event_type: &str, event_id: Uuid) -> Recorded {
        Recorded {
            order_id: key,
            event_type: event_type.to_owned(),
            event_id,
        }
    }

    #[test]
    fn a_run_gets_the_gates_records_one_by_one_would_have_got() {
        let (a, b, c, old) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let run = [
            envelope(1, "x", a),   // new
            envelope(1, "x", a),   // the same event again in the run
            envelope(1, "x", b),   // another event under the key just taken
            envelope(2, "x", old), // recorded before the run
            envelope(3, "y", c),   // a key recorded before, with another event
        ];
        let run: Vec<&Envelope> = run.iter().collect();
        let inserted = [row(1, "x", a)];
        let taken = [row(1, "x", a), row(2, "x", old), row(3, "y", old)];
        assert_eq!(
            gates(&run, &inserted, &taken).expect("every key judged"),
            [
                Gate::Fresh,
                Gate::Duplicate,
                Gate::Reused { recorded: a },
                Gate::Duplicate,
                Gate::Reused { recorded: old },
            ]
        );
        assert_eq!(
            gates(&run, &inserted, &taken[..1]),
            None,
            "key 2 in neither"
        );
    }

    #[test]
    fn same_event_is_a_duplicate_another_is_a_reuse() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        assert_eq!(gate_for(a, a), Gate::Duplicate);
        assert_eq!(gate_for(a, b), Gate::Reused { recorded: a });
    }
}
