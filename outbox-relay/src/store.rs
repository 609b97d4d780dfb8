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

/// The relay session's own limits, as PostgreSQL options.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `lock_timeout`.
    pub lock_timeout: Duration,
    /// `statement_timeout`.
    pub statement_timeout: Duration,
}

impl Limits {
    /// `-c lock_timeout=… -c statement_timeout=…`, in milliseconds.
    pub fn options(&self) -> String {
        format!(
            "-c lock_timeout={} -c statement_timeout={}",
            self.lock_timeout.as_millis(),
            self.statement_timeout.as_millis()
        )
    }
}

/// Opens a plain connection with the relay's limits, driven in the
/// background, for work beside the publishing loop (the backlog, the purge,
/// the parked-row commands).
pub async fn plain_connection(
    url: &str,
    limits: &Limits,
) -> Result<Client, platform_core::pg::PgError> {
    let (client, connection) = platform_core::pg::connect_with(url, &limits.options()).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "Outbox maintenance connection ended.");
        }
    });
    Ok(client)
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
        limits: &Limits,
        table: &str,
        channel: &str,
    ) -> Result<Self, platform_core::pg::PgError> {
        // Keepalives and a TCP user timeout on both ends: a partitioned relay
        // loses its session, and with it the leader lock, within
        // `platform_core::pg::DEAD_PEER_BOUND`. A lock or statement timeout:
        // a leader blocked on a row lock (an open transaction on an outbox
        // row, a manual `FOR UPDATE`) gets an error, loses its session and
        // the leader lock, instead of leading without progress.
        let (client, mut connection) =
            platform_core::pg::connect_with(url, &limits.options()).await?;
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
        // Parked rows stay out, and so do the later rows of their keys.
        let sql = format!(
            "SELECT id, event_id::text, topic, msg_key, event_type, source, subject, payload, traceparent, \
             to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             extract(epoch FROM created_at)::float8, tracestate \
             FROM {table} o WHERE published_at IS NULL AND parked_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM {table} p WHERE p.parked_at IS NOT NULL \
                             AND p.published_at IS NULL AND p.msg_key = o.msg_key) \
             ORDER BY id LIMIT $1",
            table = self.table
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

    /// Parks a row the broker can never take, with the reason.
    pub async fn park(&self, id: i64, reason: &str) -> Result<u64, tokio_postgres::Error> {
        park(&self.client, &self.table, id, reason).await
    }
}

/// Parks row `id` of `table` with `reason`.
async fn park(
    client: &Client,
    table: &str,
    id: i64,
    reason: &str,
) -> Result<u64, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE {table} SET parked_at = now(), parked_reason = $2 \
         WHERE id = $1 AND published_at IS NULL AND parked_at IS NULL"
    );
    client.execute(&sql, &[&id, &reason]).await
}

/// What the outbox holds, beside the publishing loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Unpublished rows waiting to be sent (not parked).
    pub rows: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_age: f64,
    /// Parked rows.
    pub parked: i64,
}

/// Unpublished and parked rows, and the age of the oldest waiting one.
pub async fn backlog(client: &Client, table: &str) -> Result<Backlog, tokio_postgres::Error> {
    let sql = format!(
        "SELECT count(*) FILTER (WHERE parked_at IS NULL), \
         COALESCE(extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL))::float8, 0), \
         count(*) FILTER (WHERE parked_at IS NOT NULL) \
         FROM {table} WHERE published_at IS NULL"
    );
    let row = client.query_one(&sql, &[]).await?;
    Ok(Backlog {
        rows: row.try_get(0)?,
        oldest_age: row.try_get(1)?,
        parked: row.try_get(2)?,
    })
}

/// Deletes rows published longer than `retention` ago, `batch` at a time,
/// until a batch comes back short (so the purge keeps up with any write
/// rate); rows another session has locked are left for the next round.
/// Returns how many it deleted.
pub async fn purge(
    client: &Client,
    table: &str,
    retention: Duration,
    batch: i64,
) -> Result<u64, tokio_postgres::Error> {
    let seconds = retention.as_secs_f64();
    let sql = format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} \
         WHERE published_at < now() - make_interval(secs => $1) LIMIT $2 FOR UPDATE SKIP LOCKED)"
    );
    let statement = client.prepare(&sql).await?;
    let mut total = 0;
    loop {
        let deleted = client.execute(&statement, &[&seconds, &batch]).await?;
        total += deleted;
        if deleted < batch as u64 {
            return Ok(total);
        }
    }
}

/// A parked row, as the `parked` commands show it.
#[derive(Debug, Clone)]
pub struct ParkedRow {
    /// Its id.
    pub id: i64,
    /// Its key.
    pub key: String,
    /// Its topic.
    pub topic: String,
    /// Its type.
    pub event_type: String,
    /// Its payload's length in bytes.
    pub payload_bytes: i64,
    /// When it was parked (RFC 3339).
    pub parked_at: String,
    /// Why.
    pub reason: String,
}

/// Every parked row, oldest first.
pub async fn parked(client: &Client, table: &str) -> Result<Vec<ParkedRow>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT id, msg_key, topic, event_type, octet_length(payload)::int8, \
         to_char(parked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), COALESCE(parked_reason, '') \
         FROM {table} WHERE parked_at IS NOT NULL AND published_at IS NULL ORDER BY id"
    );
    client
        .query(&sql, &[])
        .await?
        .iter()
        .map(|row| {
            Ok(ParkedRow {
                id: row.try_get(0)?,
                key: row.try_get(1)?,
                topic: row.try_get(2)?,
                event_type: row.try_get(3)?,
                payload_bytes: row.try_get(4)?,
                parked_at: row.try_get(5)?,
                reason: row.try_get(6)?,
            })
        })
        .collect()
}

/// Puts parked rows back in line (`ids`, or every one when `None`); the
/// relay tries them again at its next batch. Returns how many.
pub async fn unpark(
    client: &Client,
    table: &str,
    ids: Option<&[i64]>,
) -> Result<u64, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE {table} SET parked_at = NULL, parked_reason = NULL \
         WHERE parked_at IS NOT NULL AND published_at IS NULL AND ($1::int8[] IS NULL OR id = ANY($1))"
    );
    let ids: Option<Vec<i64>> = ids.map(<[i64]>::to_vec);
    client.execute(&sql, &[&ids]).await
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
