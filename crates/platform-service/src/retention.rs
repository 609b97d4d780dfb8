//! Inbox retention: the janitor that keeps the inbox from growing forever.
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

use crate::db::{self, PgPool};

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
pub fn check_rule(inbox_secs: u64, topic_secs: u64) -> Result<(), RetentionRuleError> {
    if inbox_secs > topic_secs {
        Ok(())
    } else {
        Err(RetentionRuleError {
            inbox_secs,
            topic_secs,
        })
    }
}

/// Deletes up to `limit` inbox rows received longer than `retention` ago;
/// returns how many went.
pub async fn purge_inbox(
    pool: &PgPool,
    retention: Duration,
    limit: i64,
) -> Result<usize, diesel::result::Error> {
    let mut conn = pool.get().await.map_err(db::pool_error)?;
    diesel::sql_query(
        "DELETE FROM inbox WHERE ctid IN ( \
             SELECT ctid FROM inbox \
             WHERE received_at < now() - make_interval(secs => $1) \
             LIMIT $2)",
    )
    .bind::<Double, _>(retention.as_secs_f64())
    .bind::<BigInt, _>(limit)
    .execute(&mut conn)
    .await
}

/// Runs [`purge_inbox`] every `interval` until `shutdown` fires. Failures
/// (the database restarting, say) are logged and retried next round.
pub fn spawn_inbox_janitor(
    pool: PgPool,
    retention: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let mut purged = 0;
            loop {
                match purge_inbox(&pool, retention, PURGE_BATCH).await {
                    Ok(n) => {
                        purged += n;
                        if (n as i64) < PURGE_BATCH || shutdown.is_cancelled() {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Inbox clean-up failed; retrying next round.");
                        break;
                    }
                }
            }
            if purged > 0 {
                tracing::info!(
                    purged,
                    retention_secs = retention.as_secs(),
                    "Expired inbox rows deleted."
                );
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_must_outlive_the_topic() {
        assert!(check_rule(8 * 86_400, 7 * 86_400).is_ok());
        let error = check_rule(7 * 86_400, 7 * 86_400).expect_err("equal is too short");
        assert!(error.to_string().contains("must be longer"), "{error}");
        assert!(check_rule(60, 3_600).is_err());
    }
}
