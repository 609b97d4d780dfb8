//! The one rule for "the mall is quiet", shared by the e2e tests and the
//! fault run: judged from the broker and the databases alone, never from a
//! pause in traffic.
//!
//! A look is taken in this order: where every event partition ends, what
//! every consumer group committed, how many outbox rows are unpublished,
//! and where the partitions end afterwards. The mall is quiet when every
//! group committed exactly the first ends (so every record was handled and
//! its effect committed: offsets are stored after the commit), every outbox
//! is empty (so every event those effects wrote is published), and the ends
//! did not move meanwhile (so none of those events came after the first
//! ends, where a group could still have to read it).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::topics::Ends;

/// One look at the mall, in the order the rule needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Look {
    /// Where each event partition ended when the look began.
    pub ends: Ends,
    /// What each consumer group committed on the partitions it reads.
    pub committed: Vec<(String, Ends)>,
    /// Unpublished outbox rows, by database (service name).
    pub unpublished: Vec<(String, i64)>,
    /// Where each event partition ended when the look was over.
    pub ends_after: Ends,
}

/// Why the mall is not quiet by `look`, or `None` when it is.
pub fn not_quiet(look: &Look) -> Option<String> {
    for (group, committed) in &look.committed {
        let mut positions: Vec<_> = committed.iter().collect();
        positions.sort();
        for (at, offset) in positions {
            if look.ends.get(at) != Some(offset) {
                return Some(format!(
                    "{group} committed {offset} on {at:?}, which ends at {:?}",
                    look.ends.get(at)
                ));
            }
        }
    }
    if let Some((database, rows)) = look.unpublished.iter().find(|(_, rows)| *rows != 0) {
        return Some(format!("{database} has {rows} unpublished outbox rows"));
    }
    (look.ends_after != look.ends).then(|| "records were published meanwhile".to_owned())
}

/// Where every partition of `topics` ends by the broker's high watermarks
/// (for a looker that reads the topics on its own, such as the fault run's
/// tap, which must then have read up to them).
pub async fn high_watermarks(
    brokers: &str,
    topics: &[String],
    partitions: i32,
) -> rdkafka::error::KafkaResult<Ends> {
    let (brokers, topics) = (brokers.to_owned(), topics.to_vec());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = platform_core::kafka::client_config(&brokers).create()?;
        let mut ends = HashMap::new();
        for topic in &topics {
            for partition in 0..partitions {
                let (_, high) =
                    consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
                ends.insert((topic.clone(), partition), high);
            }
        }
        Ok(ends)
    })
    .await
    .unwrap_or_else(|e| panic!("high-watermark task: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(at: &[i64]) -> Ends {
        at.iter()
            .enumerate()
            .map(|(p, &end)| (("t.order.events".to_owned(), p as i32), end))
            .collect()
    }

    fn quiet_look() -> Look {
        Look {
            ends: ends(&[4, 0, 7]),
            committed: vec![("t.delivery".into(), ends(&[4, 0, 7]))],
            unpublished: vec![("order".into(), 0), ("delivery".into(), 0)],
            ends_after: ends(&[4, 0, 7]),
        }
    }

    #[test]
    fn everything_handled_published_and_still_is_quiet() {
        assert_eq!(not_quiet(&quiet_look()), None);
    }

    #[test]
    fn a_group_behind_or_ahead_of_the_ends_is_not_quiet() {
        let mut behind = quiet_look();
        behind.committed[0].1 = ends(&[4, 0, 6]);
        assert!(not_quiet(&behind).is_some_and(|why| why.contains("t.delivery")));
        let mut unread = quiet_look();
        unread.ends = ends(&[4, 0, 8]);
        unread.ends_after = ends(&[4, 0, 8]);
        assert!(not_quiet(&unread).is_some());
    }

    #[test]
    fn an_unpublished_row_or_a_moved_end_is_not_quiet() {
        let mut pending = quiet_look();
        pending.unpublished[1].1 = 2;
        assert_eq!(
            not_quiet(&pending).as_deref(),
            Some("delivery has 2 unpublished outbox rows")
        );
        let mut moved = quiet_look();
        moved.ends_after = ends(&[5, 0, 7]);
        assert!(not_quiet(&moved).is_some_and(|why| why.contains("meanwhile")));
    }
}
