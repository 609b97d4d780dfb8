//! An outside observer of every topic: it keeps a copy of each record (for
//! replays, duplicate injection and the final loss check) and knows where
//! each partition ends (for the quiet check).
//!
//! The observer must never lose sight of a record, or the checker would
//! report events lost that the mall delivered. A full run once did exactly
//! that: after a broker restart the client's default `auto.offset.reset`
//! (`latest`) silently jumped past records. So the tap sets it to `error`,
//! answers an out-of-range error by seeking back to the next offset it
//! needs, and notes any gap between consecutive offsets it reads. A run
//! whose tap has a gap is a failed run (exit 2), never a loss of the mall's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform_core::kafka::{LogContext, client_config};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

pub use platform_core::record::CapturedRecord as Record;

#[derive(Default)]
struct State {
    records: Vec<Record>,
    /// Next offset to read, per (topic, partition).
    ends: HashMap<(String, i32), i64>,
    /// Ranges of offsets the tap skipped: (topic, partition, from, to).
    gaps: Vec<(String, i32, i64, i64)>,
}

/// The running observer.
#[derive(Clone)]
pub struct Tap {
    state: Arc<Mutex<State>>,
}

impl Tap {
    /// Starts reading `topics` (each with `partitions`) from offset 0.
    /// Explicit offsets need no consumer group and no ListOffsets.
    pub fn start(brokers: &str, topics: &[String], partitions: i32) -> anyhow::Result<Self> {
        let consumer: StreamConsumer<LogContext> = client_config(brokers)
            .set("group.id", format!("chaos-tap-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            // Never jump silently: an out-of-range offset is an error the tap
            // answers by seeking back to what it still needs.
            .set("auto.offset.reset", "error")
            .create_with_context(LogContext)?;
        let mut assignment = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for topic in topics {
            for partition in 0..partitions {
                assignment.add_partition_offset(topic, partition, Offset::Offset(0))?;
                ends.insert((topic.clone(), partition), 0);
            }
        }
        consumer.assign(&assignment)?;
        let state = Arc::new(Mutex::new(State {
            ends,
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(message) => {
                        let record = Record::from_message(&message);
                        let mut state = lock(&shared);
                        let key = (record.topic.clone(), record.partition);
                        let end = state.ends.get(&key).copied().unwrap_or(0);
                        if record.offset > end {
                            tracing::error!(
                                topic = %record.topic,
                                partition = record.partition,
                                from = end,
                                to = record.offset,
                                "The tap skipped records."
                            );
                            state.gaps.push((
                                record.topic.clone(),
                                record.partition,
                                end,
                                record.offset,
                            ));
                        }
                        state.ends.insert(key, end.max(record.offset + 1));
                        state.records.push(record);
                    }
                    Err(error) => {
                        // A broker down or cut off is a fault the run injects
                        // itself; anything else deserves a warning.
                        let transport = matches!(
                            error.rdkafka_error_code(),
                            Some(
                                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                                    | rdkafka::types::RDKafkaErrorCode::AllBrokersDown
                            )
                        );
                        if transport {
                            tracing::info!(%error, "Tap read failed; seeking back to what it still needs.");
                        } else {
                            tracing::warn!(%error, "Tap read failed; seeking back to what it still needs.");
                        }
                        let ends = lock(&shared).ends.clone();
                        let mut again = TopicPartitionList::new();
                        for ((topic, partition), end) in &ends {
                            if again
                                .add_partition_offset(topic, *partition, Offset::Offset(*end))
                                .is_err()
                            {
                                tracing::error!(%topic, partition, "Tap cannot seek back.");
                            }
                        }
                        if let Err(error) = consumer.assign(&again) {
                            tracing::warn!(%error, "Tap cannot re-assign; retrying.");
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(Self { state })
    }

    /// A copy of every record of `topic` read so far.
    pub fn records(&self, topic: &str) -> Vec<Record> {
        lock(&self.state)
            .records
            .iter()
            .filter(|r| r.topic == topic)
            .cloned()
            .collect()
    }

    /// Next offset per partition of `topic`, as far as the tap has read.
    pub fn ends(&self, topic: &str) -> HashMap<i32, i64> {
        lock(&self.state)
            .ends
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, p), end)| (*p, *end))
            .collect()
    }

    /// Offset ranges the tap skipped, as "topic[partition] from..to"; a run
    /// with any cannot be judged.
    pub fn blind_spots(&self) -> Vec<String> {
        lock(&self.state)
            .gaps
            .iter()
            .map(|(topic, partition, from, to)| format!("{topic}[{partition}] {from}..{to}"))
            .collect()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
