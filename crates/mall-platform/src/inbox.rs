//! The inbox: the exactly-once gate of every consumer.
//!
//! A row keyed by `(order_id, event_type)` is inserted with
//! `ON CONFLICT DO NOTHING` in the same transaction as the effect. Whoever
//! inserts the row applies the effect; everyone else sees a duplicate. Rows are
//! never deleted to "reset" anything, compensations included (the seed's bugs
//! 2 and 3).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

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

/// Records `envelope` in the inbox. Returns `true` when this is the first
/// time `(order_id, event_type)` is seen, `false` for a duplicate.
pub async fn record(conn: &mut AsyncPgConnection, envelope: &Envelope) -> QueryResult<bool> {
    let inserted = diesel::insert_into(inbox::table)
        .values((
            inbox::order_id.eq(envelope.order_id),
            inbox::event_type.eq(&envelope.event_type),
            inbox::event_id.eq(envelope.event_id),
            inbox::topic.eq(&envelope.coordinates.topic),
            inbox::kafka_partition.eq(envelope.coordinates.partition),
            inbox::kafka_offset.eq(envelope.coordinates.offset),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Whether any of `event_types` was already recorded for `order_id`; used to
/// let a compensation that arrived first stop the late action it undoes.
pub async fn contains_any(
    conn: &mut AsyncPgConnection,
    order_id: i64,
    event_types: &[String],
) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        inbox::table
            .filter(inbox::order_id.eq(order_id))
            .filter(inbox::event_type.eq_any(event_types)),
    ))
    .get_result(conn)
    .await
}
