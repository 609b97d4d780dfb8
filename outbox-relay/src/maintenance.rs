//! Work beside the publishing loop, on a connection of its own, so a
//! publishing loop that is blocked cannot freeze it: counting the backlog
//! (on every replica: the count is the table's, whoever leads) and, on the
//! leader, deleting published rows past their retention until it has
//! caught up, and sweeping for keys left without a head.

use std::sync::Arc;
use std::time::{Duration, Instant};

use platform_core::retry::Patience;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::{OnPublish, RelayConfig};
use crate::stats::RelayStats;
use crate::store;

/// How often the backlog is counted.
pub const BACKLOG_PERIOD: Duration = Duration::from_secs(2);
/// How often the leader sweeps for keys whose first waiting row is not
/// their head (docs/relay.md, "Fair to every key"): rows a writer under
/// REPEATABLE READ inserted while the row ahead was being settled, rows
/// behind a head deleted by hand, rows a crashed leader had next in line.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(10);
/// Rows one purge statement deletes at most; the purge repeats until a
/// statement deletes fewer.
pub const PURGE_BATCH: i64 = 10_000;

/// Counts and purges until `shutdown`, reconnecting after any failure.
pub async fn run(config: RelayConfig, stats: Arc<RelayStats>, shutdown: CancellationToken) {
    let mut patience = Patience::new();
    while !shutdown.is_cancelled() {
        let error = match rounds(&config, &stats, &shutdown).await {
            Ok(()) => return,
            Err(error) => error,
        };
        tracing::warn!(%error, attempts = patience.attempts() + 1, "Outbox maintenance failed; reconnecting.");
        if !patience.sleep(&shutdown).await {
            return;
        }
    }
}

async fn rounds(
    config: &RelayConfig,
    stats: &RelayStats,
    shutdown: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = store::maintenance_connection(
        config.database.database_url.expose_secret(),
        &config.limits(),
    )
    .await?;
    let statements = store::bind(&client, &config.table, &config.mapping()).await?;
    let retention = config.retention;
    let mut last_purge: Option<Instant> = None;
    let mut last_sweep: Option<Instant> = None;
    loop {
        let backlog = store::backlog(&client, &statements).await?;
        stats.backlog_rows.set(backlog.rows);
        stats.oldest_age.set(backlog.oldest_age);
        stats.parked_rows.set(backlog.parked);
        let leads = stats.leader.get() == 1;
        // Deleted rows leave nothing to purge.
        let purges = config.on_publish == OnPublish::Mark;
        if leads && purges && last_purge.is_none_or(|at| at.elapsed() >= config.purge_interval) {
            let purged = store::purge(&client, &statements, retention, PURGE_BATCH).await?;
            if purged > 0 {
                tracing::info!(purged, "Old published outbox rows deleted.");
            }
            last_purge = Some(Instant::now());
        }
        if !leads {
            last_sweep = None;
        } else if last_sweep.is_none_or(|at| at.elapsed() >= SWEEP_PERIOD) {
            let swept = store::sweep(&client, &statements).await?;
            stats.swept.inc_by(swept);
            if swept > 0 {
                tracing::info!(
                    swept,
                    "Outbox rows made the heads of their keys by the sweep; they go out next."
                );
            }
            last_sweep = Some(Instant::now());
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(BACKLOG_PERIOD) => {}
        }
    }
}
