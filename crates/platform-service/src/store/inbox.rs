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

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::cloudevents::Envelope;

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

use schema::inbox;

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

/// Records `envelope` in the inbox and says whether it is new, a duplicate
/// of what was applied, or a different event under a key already taken.
pub async fn record(conn: &mut AsyncPgConnection, envelope: &Envelope) -> QueryResult<Gate> {
    let inserted = diesel::insert_into(inbox::table)
        .values((
            inbox::order_id.eq(envelope.key),
            inbox::event_type.eq(&envelope.event_type),
            inbox::event_id.eq(envelope.event_id),
            inbox::topic.eq(&envelope.coordinates.topic),
            inbox::kafka_partition.eq(envelope.coordinates.partition),
            inbox::kafka_offset.eq(envelope.coordinates.offset),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        return Ok(Gate::Fresh);
    }
    let recorded: Uuid = inbox::table
        .find((envelope.key, &envelope.event_type))
        .select(inbox::event_id)
        .first(conn)
        .await?;
    Ok(gate_for(recorded, envelope.event_id))
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

    #[test]
    fn same_event_is_a_duplicate_another_is_a_reuse() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        assert_eq!(gate_for(a, a), Gate::Duplicate);
        assert_eq!(gate_for(a, b), Gate::Reused { recorded: a });
    }
}
