//! The transactional outbox writer.
//!
//! A state change and the events it causes are written in one database
//! transaction; the `outbox-relay` sidecar publishes the rows afterwards. A
//! crash can therefore delay an event but never lose it (the seed's bug 1).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// Diesel schema of the `outbox` table (see `migrations/*/..._outbox_inbox`).
#[allow(missing_docs)]
pub mod schema {
    diesel::table! {
        /// Events waiting for (or kept after) publication. The relay owns
        /// `published_at`; writers only insert.
        outbox (id) {
            id -> BigInt,
            event_id -> Uuid,
            topic -> Text,
            msg_key -> Text,
            event_type -> Text,
            source -> Text,
            subject -> Text,
            payload -> Bytea,
            traceparent -> Nullable<Text>,
            created_at -> Timestamptz,
            published_at -> Nullable<Timestamptz>,
        }
    }
}

use schema::outbox;

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct NewOutboxRow<'a> {
    event_id: Uuid,
    topic: &'a str,
    msg_key: &'a str,
    event_type: &'a str,
    source: &'a str,
    subject: &'a str,
    payload: &'a [u8],
    traceparent: Option<&'a str>,
}

/// Writes one service's events into its outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    source: String,
}

impl Outbox {
    /// `source` becomes the CloudEvents `ce_source`, e.g. `/mall/order`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
        }
    }

    /// Queues `event` for `topic`, keyed by `order_id`, inside the caller's
    /// transaction. Returns the event id (`ce_id`).
    pub async fn enqueue<M>(
        &self,
        conn: &mut AsyncPgConnection,
        topic: &str,
        order_id: i64,
        event: &M,
        traceparent: Option<&str>,
    ) -> QueryResult<Uuid>
    where
        M: prost::Message + prost::Name,
    {
        let event_id = Uuid::new_v4();
        let key = order_id.to_string();
        let payload = event.encode_to_vec();
        let event_type = M::full_name();
        diesel::insert_into(outbox::table)
            .values(NewOutboxRow {
                event_id,
                topic,
                msg_key: &key,
                event_type: &event_type,
                source: &self.source,
                subject: &key,
                payload: &payload,
                traceparent,
            })
            .execute(conn)
            .await?;
        Ok(event_id)
    }
}
