//! Waiting until the system is quiet, by the test kit's one rule
//! (`mall_testkit::quiet`): every group committed exactly where the event
//! partitions end (the broker's high watermarks), every outbox is empty, and
//! the ends did not move meanwhile; and, for this run's checks, the tap has
//! read up to those ends.

use std::time::{Duration, Instant};

use mall_testkit::quiet::{self, Look};
use mall_testkit::topics::{Ends, committed};

use crate::tap::Tap;

/// Unpublished outbox rows in one database.
async fn unpublished(url: &str) -> anyhow::Result<i64> {
    let row = crate::infra::connect(url)
        .await?
        .query_one(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Waits until the mall is quiet twice in a row; returns how long it took,
/// or the last reason it was not quiet once `timeout` passed.
pub async fn wait(
    brokers: &str,
    prefix: &str,
    partitions: i32,
    databases: &[(&'static str, String)],
    tap: &Tap,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut calm_checks = 0;
    let mut reason = String::from("not checked yet");
    let mut last_report = 0;
    while started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match not_quiet(brokers, prefix, partitions, databases, tap).await {
            None => {
                calm_checks += 1;
                if calm_checks >= 2 {
                    return Ok(started.elapsed());
                }
            }
            Some(why) => {
                calm_checks = 0;
                if started.elapsed().as_secs() / 10 != last_report {
                    last_report = started.elapsed().as_secs() / 10;
                    tracing::info!(reason = %why, waited_secs = started.elapsed().as_secs(), "Not quiet yet.");
                }
                reason = why;
            }
        }
    }
    Err(reason)
}

/// Why the mall is not quiet by one look, or `None`.
async fn not_quiet(
    brokers: &str,
    prefix: &str,
    partitions: i32,
    databases: &[(&'static str, String)],
    tap: &Tap,
) -> Option<String> {
    let topics = mall_saga::Topics::new(prefix);
    let events = topics.events();
    let events = &events;
    let ends = |what: &'static str| async move {
        quiet::high_watermarks(brokers, events, partitions)
            .await
            .map_err(|error| format!("{what} ends not readable: {error}"))
    };
    let mut look = Look {
        ends: match ends("first").await {
            Ok(ends) => ends,
            Err(why) => return Some(why),
        },
        ..Look::default()
    };
    for (group, read) in topics.groups() {
        match committed(brokers, &group, &read, partitions).await {
            Ok(at) => look.committed.push((group, at)),
            Err(error) => return Some(format!("offsets of {group} not readable: {error}")),
        }
    }
    for (service, url) in databases {
        match unpublished(url).await {
            Ok(rows) => look.unpublished.push(((*service).to_owned(), rows)),
            Err(error) => return Some(format!("{service} database not readable: {error}")),
        }
    }
    look.ends_after = match ends("second").await {
        Ok(ends) => ends,
        Err(why) => return Some(why),
    };
    quiet::not_quiet(&look).or_else(|| tap_behind(tap, &look.ends))
}

/// Whether the tap has yet to read up to `ends`, which the checks need.
fn tap_behind(tap: &Tap, ends: &Ends) -> Option<String> {
    let mut positions: Vec<_> = ends.iter().collect();
    positions.sort();
    positions
        .into_iter()
        .find_map(|((topic, partition), &end)| {
            let read = tap.ends(topic).get(partition).copied().unwrap_or(0);
            (read < end).then(|| format!("the tap read {topic}[{partition}] to {read} of {end}"))
        })
}
