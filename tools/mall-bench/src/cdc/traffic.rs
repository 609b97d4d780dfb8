//! P8 and P9's traffic: outbox rows written as fast as the database takes
//! them or at a steady rate, each carrying its sequence number at the head
//! of its payload, and a consumer noting when each first arrives on the
//! topic. Both times come from this one process's monotonic clock, so no
//! two clocks are ever compared.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::hist::Latencies;

/// Payload size of every row: the sequence number in 20 digits, then
/// padding (P2's rows are 300 bytes too).
const PAYLOAD_BYTES: usize = 300;
/// Distinct keys, as P2's rows.
const KEYS: u64 = 1_000;
/// Sequence numbers from here on are canaries (start-up probes), never
/// measured.
pub const CANARY_BASE: u64 = 1 << 40;

/// One INSERT of the rows `first..=last` (one transaction). Keys rise with
/// the sequence inside a statement, so concurrent writers take the outbox's
/// per-key locks in one order.
const INSERT: &str = "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload) \
     SELECT gen_random_uuid(), $1, (s % $4)::text, 'mall.bench.v1.Row', '/mall/bench', (s % $4)::text, \
            convert_to(lpad(s::text, 20, '0') || repeat('x', $5), 'UTF8') \
     FROM generate_series($2::bigint, $3::bigint) AS s";

/// The sequence number at the head of a payload.
pub fn sequence_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(..20)?).ok()?.parse().ok()
}

/// Writes the rows `first..=last` to the outbox in one transaction.
async fn insert(client: &Client, topic: &str, first: u64, last: u64) -> anyhow::Result<()> {
    let padding = i32::try_from(PAYLOAD_BYTES - 20)?;
    client
        .execute(
            INSERT,
            &[
                &topic,
                &i64::try_from(first)?,
                &i64::try_from(last)?,
                &i64::try_from(KEYS)?,
                &padding,
            ],
        )
        .await
        .with_context(|| format!("inserting outbox rows {first}..={last}"))?;
    Ok(())
}

/// When each row's transaction was acknowledged, by sequence number.
pub type Commits = Vec<(u64, Instant)>;

/// Writes `rows` rows from sequence `first` on, `per_txn` per transaction,
/// from every client at once, as fast as the database takes them.
pub async fn burst(
    clients: &[Arc<Client>],
    topic: &str,
    first: u64,
    rows: u64,
    per_txn: u64,
) -> anyhow::Result<Commits> {
    let next = Arc::new(AtomicU64::new(first));
    let end = first + rows;
    let mut writers = Vec::new();
    for client in clients {
        let (client, next, topic) = (client.clone(), next.clone(), topic.to_owned());
        writers.push(tokio::spawn(async move {
            let mut commits = Commits::new();
            loop {
                let start = next.fetch_add(per_txn, Ordering::Relaxed);
                if start >= end {
                    return anyhow::Ok(commits);
                }
                let last = (start + per_txn).min(end) - 1;
                insert(&client, &topic, start, last).await?;
                let at = Instant::now();
                commits.extend((start..=last).map(|seq| (seq, at)));
            }
        }));
    }
    let mut commits = Commits::with_capacity(usize::try_from(rows)?);
    for writer in writers {
        commits.extend(writer.await??);
    }
    Ok(commits)
}

/// Writes one row per transaction at `rate` rows/s for `duration`, from
/// sequence `first` on, spread over the clients (open loop: a row is due at
/// its time whether or not the previous one committed).
pub async fn steady(
    clients: &[Arc<Client>],
    topic: &str,
    first: u64,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Commits> {
    let rows = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let (due, queue) = mpsc::channel::<u64>(usize::try_from(rows)?.max(1));
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let mut writers = Vec::new();
    for client in clients {
        let (client, queue, topic) = (client.clone(), queue.clone(), topic.to_owned());
        writers.push(tokio::spawn(async move {
            let mut commits = Commits::new();
            loop {
                let Some(seq) = queue.lock().await.recv().await else {
                    return anyhow::Ok(commits);
                };
                insert(&client, &topic, seq, seq).await?;
                commits.push((seq, Instant::now()));
            }
        }));
    }
    let start = tokio::time::Instant::now();
    for i in 0..rows {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        due.send(first + i).await?;
    }
    drop(due);
    let mut commits = Commits::with_capacity(usize::try_from(rows)?);
    for writer in writers {
        commits.extend(writer.await??);
    }
    Ok(commits)
}

/// Inserts one canary row (sequence `seq`, at or above [`CANARY_BASE`]).
pub async fn canary(client: &Client, topic: &str, seq: u64) -> anyhow::Result<()> {
    insert(client, topic, seq, seq).await
}

#[derive(Default)]
struct Seen {
    first: HashMap<u64, Instant>,
    duplicates: u64,
}

/// A consumer of one topic from its beginning, noting each sequence
/// number's first arrival; stops when dropped.
pub struct Watcher {
    seen: Arc<Mutex<Seen>>,
    measured: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// Starts reading every partition of `topic`.
    pub fn start(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", mall_testkit::env::unique_name("bench-cdc"))
            .set("enable.auto.commit", "false")
            // Apache Kafka answers a fetch as soon as a record is there;
            // this only bounds an idle fetch.
            .set("fetch.wait.max.ms", "100")
            .create()
            .context("creating the topic watcher")?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let measured = Arc::new(AtomicU64::new(0));
        let (seen_w, measured_w) = (seen.clone(), measured.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok(message) = consumer.recv().await else {
                    // An error repeats while the broker is away: no spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let at = Instant::now();
                let Some(seq) = message.payload().and_then(sequence_of) else {
                    continue;
                };
                let mut seen = seen_w.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.first.insert(seq, at).is_some() {
                    seen.duplicates += 1;
                } else if seq < CANARY_BASE {
                    measured_w.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Self {
            seen,
            measured,
            task,
        })
    }

    /// Whether the row `seq` has arrived.
    pub fn has(&self, seq: u64) -> bool {
        self.lock().first.contains_key(&seq)
    }

    /// Records that arrived a second time.
    pub fn duplicates(&self) -> u64 {
        self.lock().duplicates
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `total` measured rows (canaries aside) have arrived,
    /// failing after `patience` without one more arriving, or as soon as
    /// `alive` says the carrier has stopped.
    pub async fn wait_for(
        &self,
        total: u64,
        patience: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let mut last = (self.measured.load(Ordering::Relaxed), Instant::now());
        loop {
            let now = self.measured.load(Ordering::Relaxed);
            if now >= total {
                return Ok(());
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > patience {
                bail!("{now} of {total} rows arrived, none for {patience:?}");
            }
            if !alive() {
                bail!("the carrier stopped with {now} of {total} rows arrived");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Commit → arrival of each committed row, and the last arrival.
    pub fn lags(&self, commits: &Commits) -> anyhow::Result<(Latencies, Instant)> {
        let seen = self.lock();
        let mut lags = Latencies::new();
        let mut last: Option<Instant> = None;
        for (seq, committed) in commits {
            let arrived = *seen
                .first
                .get(seq)
                .with_context(|| format!("row {seq} never arrived"))?;
            lags.record(arrived.saturating_duration_since(*committed));
            last = Some(last.map_or(arrived, |l| l.max(arrived)));
        }
        Ok((lags, last.context("no rows")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_read_from_the_payload_head() {
        let mut payload = format!("{:020}", 12_345).into_bytes();
        payload.extend([b'x'; 280]);
        assert_eq!(sequence_of(&payload), Some(12_345));
        assert_eq!(sequence_of(b"123"), None);
        assert_eq!(sequence_of(&[b'x'; 300]), None);
    }
}
