//! "The system is quiet": every outbox published, every consumer group's
//! committed offsets at the end of what it reads, and nothing new on the
//! wire for a while.

use std::time::{Duration, Instant};

use platform_core::kafka::{LogContext, client_config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::tap::Tap;

/// Unpublished outbox rows in one database.
pub async fn unpublished(url: &str) -> anyhow::Result<i64> {
    let row = crate::infra::connect(url)
        .await?
        .query_one(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// How far behind the tap's view of the topics a group's committed offsets are.
fn lag(
    brokers: &str,
    group: &str,
    topics: &[String],
    tap: &Tap,
    partitions: i32,
) -> anyhow::Result<i64> {
    let consumer: BaseConsumer<LogContext> = client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(LogContext)?;
    let mut wanted = TopicPartitionList::new();
    for topic in topics {
        for partition in 0..partitions {
            wanted.add_partition(topic, partition);
        }
    }
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
    let mut lag = 0;
    for topic in topics {
        let ends = tap.ends(topic);
        for partition in 0..partitions {
            let end = ends.get(&partition).copied().unwrap_or(0);
            let at = match committed
                .find_partition(topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(n)) => n,
                _ => 0,
            };
            lag += (end - at).max(0);
        }
    }
    Ok(lag)
}

/// Waits until the mall is quiet twice in a row; returns how long it took,
/// or the last reason it was not quiet once `timeout` passed.
pub async fn wait(
    brokers: &str,
    prefix: &str,
    partitions: i32,
    database_urls: &[String],
    tap: &Tap,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut calm_checks = 0;
    let mut reason = String::from("not checked yet");
    let mut last_report = 0;
    while started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match not_quiet(brokers, prefix, partitions, database_urls, tap).await {
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

async fn not_quiet(
    brokers: &str,
    prefix: &str,
    partitions: i32,
    database_urls: &[String],
    tap: &Tap,
) -> Option<String> {
    for url in database_urls {
        match unpublished(url).await {
            Ok(0) => {}
            Ok(n) => return Some(format!("{n} unpublished outbox rows")),
            Err(error) => return Some(format!("database not readable: {error}")),
        }
    }
    if tap.idle_for() < Duration::from_secs(3) {
        return Some("records still arriving".into());
    }
    for (group, topics) in mall_saga::Topics::new(prefix).groups() {
        let (brokers, tap) = (brokers.to_owned(), tap.clone());
        let group_name = group.clone();
        let measured = tokio::task::spawn_blocking(move || {
            lag(&brokers, &group_name, &topics, &tap, partitions)
        })
        .await
        .unwrap_or_else(|e| Err(e.into()));
        match measured {
            Ok(0) => {}
            Ok(n) => return Some(format!("group {group} is {n} records behind")),
            Err(error) => return Some(format!("offsets of {group} not readable: {error}")),
        }
    }
    None
}
