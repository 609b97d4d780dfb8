//! The transactional outbox writer.
//!
//! A state change and the events it causes are written in one database
//! transaction; the `outbox-relay` sidecar publishes the rows afterwards. A
//! crash can therefore delay an event but never lose it.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use platform_envelope::cloudevents::Trace;

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
            tracestate -> Nullable<Text>,
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
    tracestate: Option<&'a str>,
}

/// An event ready for the outbox: its `ce_type` and protobuf encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// `ce_type`: the protobuf full name.
    pub event_type: String,
    /// The encoded message.
    pub payload: Vec<u8>,
}

impl Outgoing {
    /// Encodes a protobuf message.
    pub fn of<M: prost::Message + prost::Name>(event: &M) -> Self {
        Self {
            event_type: M::full_name(),
            payload: event.encode_to_vec(),
        }
    }
}

/// Writes one service's events into its outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    source: String,
    topic: String,
}

impl Outbox {
    /// Events go to `topic` with `source` as their CloudEvents `ce_source`,
    /// e.g. `/mall/order`.
    pub fn new(source: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            topic: topic.into(),
        }
    }

    /// The topic its events go to (for a statement that writes the outbox
    /// row beside others, as `PlaceOrder`'s does).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Its events' CloudEvents `ce_source`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Queues `event`, keyed by the entity id `key`, inside the caller's
    /// transaction. Returns the event id (`ce_id`).
    pub async fn enqueue(
        &self,
        conn: &mut AsyncPgConnection,
        key: i64,
        event: &Outgoing,
        trace: Trace<'_>,
    ) -> QueryResult<Uuid> {
        let event_id = Uuid::new_v4();
        let key = key.to_string();
        diesel::insert_into(outbox::table)
            .values(NewOutboxRow {
                event_id,
                topic: &self.topic,
                msg_key: &key,
                event_type: &event.event_type,
                source: &self.source,
                subject: &key,
                payload: &event.payload,
                traceparent: trace.traceparent,
                tracestate: trace.traceparent.and(trace.tracestate),
            })
            .execute(conn)
            .await?;
        Ok(event_id)
    }
}
