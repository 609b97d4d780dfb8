//! Retention: the janitors that keep the inbox (and any other table of
//! rows that expire, such as request ids) from growing forever.
//!
//! The rule: an inbox row must outlive every redelivery that can still reach
//! it, or a replayed action would pass the gate again. A record can be
//! redelivered only while it is on its topic, so the inbox retention must
//! exceed the topics' `retention.ms`; start-up refuses a shorter one (see
//! [`check_rule`]). The margin above the topic retention covers how long an
//! event may sit unpublished in a producer's outbox or unread in a consumer's
//! lag, so size it for the longest outage you are willing to recover from.

use std::time::Duration;

use diesel::sql_types::{BigInt, Double};
use diesel_async::RunQueryDsl;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::db::{self, PgPool};

/// Rows deleted per statement, so a large backlog never holds long locks.
pub const PURGE_BATCH: i64 = 5_000;

/// The inbox retention is not longer than the redelivery window.
#[derive(Debug, thiserror::Error)]
#[error(
    "INBOX_RETENTION_SECS ({inbox_secs}) must be longer than KAFKA_TOPIC_RETENTION_SECS \
     ({topic_secs}): an inbox row must outlive every redelivery of its event, or a replay \
     would apply the event twice"
)]
pub struct RetentionRuleError {
    /// Configured inbox retention.
    pub inbox_secs: u64,
    /// Configured topic retention.
    pub topic_secs: u64,
}

/// Enforces the retention rule on the configured values.
pub fn check_rule(inbox: Duration, topic: Duration) -> Result<(), RetentionRuleError> {
    if inbox > topic {
        Ok(())
    } else {
        Err(RetentionRuleError {
            inbox_secs: inbox.as_secs(),
            topic_secs: topic.as_secs(),
        })
    }
}

/// A table whose rows expire: a janitor deletes rows whose `column` (a
/// timestamp with an index) is older than the retention. Names are the
/// application's own constants, never input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiring {
    /// The table.
    pub table: &'static str,
    /// Its timestamp column.
    pub column: &'static str,
}

/// The inbox: a row expires `INBOX_RETENTION_SECS` after it was received.
pub const INBOX: Expiring = Expiring {
    table: "inbox",
    column: "received_at",
};

/// Deletes up to `limit` rows of `expiring` older than `retention`; returns
/// how many went.
pub async fn purge(
    pool: &PgPool,
    expiring: Expiring,
    retention: Duration,
    limit: i64,
) -> Result<usize, diesel::result::Error> {
    let mut conn = pool.get().await.map_err(db::pool_error)?;
    let Expiring { table, column } = expiring;
    diesel::sql_query(format!(
        "DELETE FROM {table} WHERE ctid IN ( \
             SELECT ctid FROM {table} \
             WHERE {column} < now() - make_interval(secs => $1) \
             LIMIT $2)"
    ))
    .bind::<Double, _>(retention.as_secs_f64())
    .bind::<BigInt, _>(limit)
    .execute(&mut conn)
    .await
}

/// Deletes up to `limit` inbox rows received longer than `retention` ago;
/// returns how many went.
pub async fn purge_inbox(
    pool: &PgPool,
    retention: Duration,
    limit: i64,
) -> Result<usize, diesel::result::Error> {
    purge(pool, INBOX, retention, limit).await
}

/// Runs [`purge`] on `expiring` every `interval` until `shutdown` fires,
/// deleting batch after batch until one comes back short. Failures (the
/// database restarting, say) are logged and retried next round.
pub async fn janitor(
    pool: PgPool,
    expiring: Expiring,
    retention: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let mut purged = 0;
        loop {
            match purge(&pool, expiring, retention, PURGE_BATCH).await {
                Ok(n) => {
                    purged += n;
                    if (n as i64) < PURGE_BATCH || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(table = expiring.table, %error, "Clean-up failed; retrying next round.");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(
                table = expiring.table,
                purged,
                retention_secs = retention.as_secs(),
                "Expired rows deleted."
            );
        }
    }
}

/// Runs the inbox [`janitor`] as a task of its own.
pub fn spawn_inbox_janitor(
    pool: PgPool,
    retention: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(janitor(pool, INBOX, retention, interval, shutdown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_must_outlive_the_topic() {
        let days = |n: u64| Duration::from_secs(n * 86_400);
        assert!(check_rule(days(8), days(7)).is_ok());
        let error = check_rule(days(7), days(7)).expect_err("equal is too short");
        assert!(error.to_string().contains("must be longer"), "{error}");
        assert!(check_rule(Duration::from_secs(60), Duration::from_secs(3_600)).is_err());
    }
}
