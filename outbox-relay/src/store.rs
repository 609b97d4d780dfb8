//! The relay's side of the outbox table: leadership, fetching, marking and
//! clean-up, all on one PostgreSQL connection.
//!
//! The session-level advisory lock lives on the same connection that fetches
//! and marks rows. If that connection dies the lock is released and no
//! further row can be marked through it, so a standby can take over safely.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client};

/// First key of the two-int advisory lock that elects the active relay.
const LOCK_CLASS: i32 = 0x6f75_7462;

/// One outbox row, ready to publish.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Position in commit order (per key).
    pub id: i64,
    /// `ce_id`.
    pub event_id: String,
    /// Destination topic.
    pub topic: String,
    /// Record key (the order id).
    pub key: String,
    /// `ce_type`.
    pub event_type: String,
    /// `ce_source`.
    pub source: String,
    /// `ce_subject`.
    pub subject: String,
    /// Record value.
    pub payload: Vec<u8>,
    /// W3C trace context, if any.
    pub traceparent: Option<String>,
    /// W3C `tracestate`, kept beside the `traceparent`.
    pub tracestate: Option<String>,
    /// `ce_time`, RFC 3339 in UTC.
    pub time: String,
    /// `created_at` in seconds since the Unix epoch, for the publish latency.
    pub created: f64,
}

/// A connection to the outbox database.
pub struct Store {
    client: Client,
    table: String,
    wake: Arc<Notify>,
}

impl Store {
    /// Connects and starts listening on `channel`; `wake` fires on every
    /// notification.
    pub async fn connect(
        url: &str,
        table: &str,
        channel: &str,
    ) -> Result<Self, platform_core::pg::PgError> {
        // Keepalives and a TCP user timeout on both ends: a partitioned relay
        // loses its session, and with it the leader lock, within
        // `platform_core::pg::DEAD_PEER_BOUND`.
        let (client, mut connection) = platform_core::pg::connect(url).await?;
        let wake = Arc::new(Notify::new());
        let notify = Arc::clone(&wake);
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => notify.notify_one(),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "Outbox database connection lost.");
                        break;
                    }
                }
            }
            // Wake the loop so it notices the dead connection at once.
            notify.notify_one();
        });
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        Ok(Self {
            client,
            table: table.to_owned(),
            wake,
        })
    }

    /// Fires when a notification arrives or the connection drops.
    pub fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Tries to become the active relay for this database.
    pub async fn try_lead(&self, lock_id: i32) -> Result<bool, tokio_postgres::Error> {
        let row = self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LOCK_CLASS, &lock_id],
            )
            .await?;
        row.try_get(0)
    }

    /// The oldest unpublished rows, in id order, at most one per key.
    ///
    /// One per key is what makes the order per key strict: a row is sent only
    /// once every earlier row of its key is acknowledged and marked, so a
    /// send that fails past all retries can never be overtaken by a later row
    /// of its key. Ids follow commit order per key (the `outbox_order_per_key`
    /// trigger draws them under a per-key lock), so "earlier" is commit order.
    pub async fn fetch(&self, limit: i64) -> Result<Vec<OutboxRow>, tokio_postgres::Error> {
        let rows = self.fetch_oldest(limit).await?;
        Ok(first_per_key(rows))
    }

    async fn fetch_oldest(&self, limit: i64) -> Result<Vec<OutboxRow>, tokio_postgres::Error> {
        let sql = format!(
            "SELECT id, event_id::text, topic, msg_key, event_type, source, subject, payload, traceparent, \
             to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             extract(epoch FROM created_at)::float8, tracestate \
             FROM {} WHERE published_at IS NULL ORDER BY id LIMIT $1",
            self.table
        );
        let rows = self.client.query(&sql, &[&limit]).await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxRow {
                    id: row.try_get(0)?,
                    event_id: row.try_get(1)?,
                    topic: row.try_get(2)?,
                    key: row.try_get(3)?,
                    event_type: row.try_get(4)?,
                    source: row.try_get(5)?,
                    subject: row.try_get(6)?,
                    payload: row.try_get(7)?,
                    traceparent: row.try_get(8)?,
                    time: row.try_get(9)?,
                    created: row.try_get(10)?,
                    tracestate: row.try_get(11)?,
                })
            })
            .collect()
    }

    /// Marks rows the broker acknowledged.
    pub async fn mark_published(&self, ids: &[i64]) -> Result<u64, tokio_postgres::Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE {} SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL",
            self.table
        );
        self.client.execute(&sql, &[&ids]).await
    }

    /// Unpublished rows and the age of the oldest one, in seconds.
    pub async fn backlog(&self) -> Result<(i64, f64), tokio_postgres::Error> {
        let sql = format!(
            "SELECT count(*), COALESCE(extract(epoch FROM now() - min(created_at))::float8, 0) \
             FROM {} WHERE published_at IS NULL",
            self.table
        );
        let row = self.client.query_one(&sql, &[]).await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Deletes up to `limit` rows published longer than `retention` ago.
    pub async fn purge(
        &self,
        retention: Duration,
        limit: i64,
    ) -> Result<u64, tokio_postgres::Error> {
        let seconds = retention.as_secs_f64();
        let sql = format!(
            "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} \
             WHERE published_at < now() - make_interval(secs => $1) LIMIT $2)",
            table = self.table
        );
        self.client.execute(&sql, &[&seconds, &limit]).await
    }
}

/// Keeps the first row of each key, in the order given.
fn first_per_key(rows: Vec<OutboxRow>) -> Vec<OutboxRow> {
    let mut seen = std::collections::HashSet::new();
    rows.into_iter()
        .filter(|row| seen.insert(row.key.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, key: &str) -> OutboxRow {
        OutboxRow {
            id,
            event_id: String::new(),
            topic: String::new(),
            key: key.to_owned(),
            event_type: String::new(),
            source: String::new(),
            subject: String::new(),
            payload: Vec::new(),
            traceparent: None,
            tracestate: None,
            time: String::new(),
            created: 0.0,
        }
    }

    #[test]
    fn only_the_oldest_row_of_each_key_goes_out() {
        let rows = vec![
            row(1, "a"),
            row(2, "b"),
            row(3, "a"),
            row(4, "c"),
            row(5, "b"),
        ];
        let ids: Vec<i64> = first_per_key(rows).iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 2, 4]);
    }
}
