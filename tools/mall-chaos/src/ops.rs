//! The ordinary failures of production, beyond crashes: a failover's
//! read-only window, lock contention with forced deadlocks, and network
//! partitions dropped in the kernel.
//!
//! Partitions use nftables: each replica runs under its own uid (see
//! `fleet`), and a rule drops that uid's packets to PostgreSQL's or the
//! broker's port. The kernel drops them, so both TCP ends see a silent peer
//! (a user-space proxy would keep both sessions alive and prove nothing).

use std::time::Duration;

use anyhow::Context;
use backon::Retryable;
use mall_testkit::{nft, postgres};
use platform_core::retry;

use crate::infra;

/// Connects, retrying while PostgreSQL restarts (another fault may be
/// crash-restarting it right now).
async fn connect_patiently(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    (|| infra::connect(url))
        .retry(retry::for_at_most(PATIENCE))
        .await
}

/// How long an operation of the injector keeps retrying.
const PATIENCE: Duration = Duration::from_secs(30);

async fn set_read_only(admin_url: &str, database: &str, on: bool) -> anyhow::Result<()> {
    let attempt = || async {
        let admin = connect_patiently(admin_url).await?;
        postgres::switch_read_only(&admin, database, on).await?;
        anyhow::Ok(())
    };
    attempt
        .retry(retry::for_at_most(PATIENCE))
        .await
        .with_context(|| format!("cannot switch {database}"))
}

/// Makes `database` read-only for `window`, as a managed PostgreSQL is
/// between losing its primary and promoting a replica: every session ends,
/// every new write fails with SQLSTATE 25006.
pub async fn read_only_window(
    admin_url: &str,
    database: &str,
    window: Duration,
) -> anyhow::Result<()> {
    set_read_only(admin_url, database, true).await?;
    tokio::time::sleep(window).await;
    set_read_only(admin_url, database, false).await
}

/// Holds every inventory row from an outside session for `window`, so the
/// inventory consumers hit lock timeouts, and turns the waits into
/// deadlocks by asking for the per-order advisory locks the waiting
/// consumers hold. The outside session never detects deadlocks itself, so
/// the consumer is always the victim (SQLSTATE 40P01). Another fault (a
/// restart, a read-only window) may end the session; the hold then starts
/// again until the window is over. A window that forced no deadlock is
/// stretched, up to [`DEADLOCK_PATIENCE`], until it forces one. Returns how
/// many deadlocks it forced:
/// each advisory lock it got from a consumer waiting on its rows means
/// PostgreSQL chose that consumer as the deadlock victim. (The server's own
/// `pg_stat_database.deadlocks` is no help here: a crash-restart, another
/// fault, resets it.)
pub async fn lock_contention(url: &str, window: Duration) -> anyhow::Result<i64> {
    // One hold at a time: two at once fight over the same rows (each one's
    // `FOR UPDATE` times out behind the other's), and the consumers queue
    // behind the loser instead of the holder, so neither forces a deadlock.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut forced = 0;
    // The rows may be held for a while by someone else (a consumer cut off
    // by a partition keeps its locks until the server notices, up to the
    // keepalive bound): the window starts once the rows are ours.
    let give_up = tokio::time::Instant::now() + ACQUIRE_PATIENCE;
    let mut started: Option<tokio::time::Instant> = None;
    let mut last_error = None;
    let mut delays = retry::delays();
    loop {
        if let Some(at) = started
            && held_long_enough(at.elapsed(), window, forced)
        {
            break;
        }
        if started.is_none() && tokio::time::Instant::now() >= give_up {
            anyhow::bail!("never held the inventory rows: {last_error:?}");
        }
        match hold(url, &mut started, window, &mut forced).await {
            Ok(()) => {}
            Err(error) => {
                tracing::info!(
                    error = format!("{error:#}"),
                    "Lock contention: the hold ended or could not start; trying again."
                );
                last_error = Some(format!("{error:#}"));
                tokio::time::sleep(delays.next().unwrap_or(retry::MAX_DELAY)).await;
            }
        }
    }
    Ok(forced)
}

/// How much longer than its window lock contention holds the rows while
/// it has forced no deadlock yet: other faults (the inventory's replicas
/// killed, its database read-only, the brokers down) can keep every
/// consumer away from the rows for the whole window.
const DEADLOCK_PATIENCE: Duration = Duration::from_secs(45);

/// Whether a hold that began `elapsed` ago and `forced` deadlocks may end:
/// after its `window` once it forced one, and in any case
/// [`DEADLOCK_PATIENCE`] later.
fn held_long_enough(elapsed: Duration, window: Duration, forced: i64) -> bool {
    elapsed >= window && (forced > 0 || elapsed >= window + DEADLOCK_PATIENCE)
}

/// How long lock contention may wait to get hold of the rows.
const ACQUIRE_PATIENCE: Duration = Duration::from_secs(90);

/// One session's hold, until `window` after the first hold began
/// (`started`, set when the rows are first ours).
async fn hold(
    url: &str,
    started: &mut Option<tokio::time::Instant>,
    window: Duration,
    forced: &mut i64,
) -> anyhow::Result<()> {
    let holder = connect_patiently(url).await?;
    holder
        .batch_execute(
            // READ WRITE: a read-only window on the same database (another
            // fault) changes only the default.
            "BEGIN READ WRITE; SET LOCAL deadlock_timeout = '1h'; SET LOCAL lock_timeout = '3s'; \
             SELECT id FROM inventories FOR UPDATE",
        )
        .await
        .context("locking the inventory rows")?;
    let started = *started.get_or_insert_with(tokio::time::Instant::now);
    while !held_long_enough(started.elapsed(), window, *forced) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Advisory locks (bigint form) held by sessions that started waiting
        // for a row less than 700 ms ago: PostgreSQL checks a waiter for
        // deadlocks once, after deadlock_timeout (1 s), so the cycle must be
        // closed before that for the consumer to be the one found in it.
        let held = holder
            .query(
                "SELECT DISTINCT (h.classid::bigint << 32) | h.objid::bigint \
                 FROM pg_locks h JOIN pg_locks w ON w.pid = h.pid \
                 WHERE h.locktype = 'advisory' AND h.objsubid = 1 AND h.granted \
                 AND NOT w.granted AND w.locktype IN ('transactionid', 'tuple') \
                 AND w.waitstart > clock_timestamp() - interval '700 milliseconds' \
                 LIMIT 3",
                &[],
            )
            .await?;
        for row in held {
            let key: i64 = row.get(0);
            // A savepoint, so a lock timeout does not end the whole hold.
            holder.batch_execute("SAVEPOINT grab").await?;
            match holder
                .execute("SELECT pg_advisory_xact_lock($1)", &[&key])
                .await
            {
                Ok(_) => {
                    *forced += 1;
                    holder.batch_execute("RELEASE SAVEPOINT grab").await?;
                }
                Err(_) => holder.batch_execute("ROLLBACK TO SAVEPOINT grab").await?,
            }
        }
    }
    holder.batch_execute("COMMIT").await?;
    Ok(())
}

/// Adds the partition `table` with `rules`, off the async threads.
async fn cut(table: &str, rules: Vec<Vec<String>>) -> anyhow::Result<()> {
    let table = table.to_owned();
    tokio::task::spawn_blocking(move || {
        let rules: Vec<Vec<&str>> = rules
            .iter()
            .map(|rule| rule.iter().map(String::as_str).collect())
            .collect();
        nft::Cut::add(&table, &rules).map(nft::Cut::keep)
    })
    .await??;
    Ok(())
}

/// Drops every packet the processes of `uid` send to `ports` for `window`,
/// then heals. `table` names the nftables table, unique per fault.
pub async fn partition(
    uid: u32,
    ports: &[u16],
    window: Duration,
    table: &str,
) -> anyhow::Result<()> {
    let rule = [
        "meta",
        "skuid",
        &uid.to_string(),
        "tcp",
        "dport",
        &nft::port_set(ports),
        "drop",
    ]
    .map(str::to_owned)
    .to_vec();
    cut(table, vec![rule]).await?;
    tokio::time::sleep(window).await;
    heal(table).await
}

/// Cuts a process off from everyone: drops every packet its `uid` sends and
/// every packet sent to its `ports` (on loopback each packet passes the
/// output hook once, so this covers both directions of every connection).
/// `table` names the nftables table; [`heal`] removes it.
pub async fn isolate(uid: u32, ports: &[u16], table: &str) -> anyhow::Result<()> {
    let from = ["meta", "skuid", &uid.to_string(), "drop"]
        .map(str::to_owned)
        .to_vec();
    let to = ["tcp", "dport", &nft::port_set(ports), "drop"]
        .map(str::to_owned)
        .to_vec();
    cut(table, vec![from, to]).await
}

/// Removes the nftables table of an [`isolate`] or a [`partition`].
pub async fn heal(table: &str) -> anyhow::Result<()> {
    let table = table.to_owned();
    tokio::task::spawn_blocking(move || nft::heal(&table)).await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contention_holds_past_its_window_until_it_forced_a_deadlock() {
        let window = Duration::from_secs(10);
        assert!(!held_long_enough(Duration::from_secs(5), window, 3));
        assert!(held_long_enough(window, window, 1));
        assert!(!held_long_enough(window, window, 0));
        assert!(!held_long_enough(
            window + Duration::from_secs(44),
            window,
            0
        ));
        assert!(held_long_enough(window + DEADLOCK_PATIENCE, window, 0));
    }
}
