//! Self-healing: a consumer that stopped receiving records it should be
//! receiving gets a new Kafka client.
//!
//! Two checks run every [`CHECK_PERIOD`], on the blocking pool since the
//! broker calls block:
//!
//! * **Own partitions** (on by default, `KAFKA_SELF_HEAL_SECS`): a partition
//!   this member owns, whose lane is idle (waiting for records), but whose
//!   fetch position stays below the end of the partition. The client is not
//!   fetching, as after a lost session whose rejoin never completed. The
//!   cure is a new client: it joins the group afresh and fetches from the
//!   committed offsets, so nothing is lost, and the inbox absorbs what is
//!   redelivered.
//! * **Partitions nobody owns** (opt-in, `KAFKA_STALL_REJOIN_SECS`; see
//!   [`super::stall`]): first a rejoin; if the stall is still there at the
//!   next verdict, a new client.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::context::Client;
use super::lanes::Lanes;
use super::stall::{Partition, StallWatch};

/// How often the checks run.
pub const CHECK_PERIOD: Duration = Duration::from_secs(10);
/// Timeout of each broker call of a check.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a check asks the consumer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// All is well.
    Nothing,
    /// Leave and rejoin the group.
    Rejoin(Vec<Partition>),
    /// Throw the client away and make a new one, for this reason.
    Recreate(String),
}

/// The state of both checks across rounds.
pub struct Healer {
    own: Option<StallWatch>,
    /// Records each own lane had handled at the last check: a lane that
    /// moved since needs no broker call to prove it is alive.
    handled: HashMap<Partition, u64>,
    others: Option<StallWatch>,
    stall_limit: Duration,
    rejoined_at: Option<Instant>,
}

impl Healer {
    /// `self_heal`: limit of the own-partition check; `stall_rejoin`: limit
    /// of the opt-in check; `None` turns a check off.
    pub fn new(self_heal: Option<Duration>, stall_rejoin: Option<Duration>) -> Self {
        Self {
            own: self_heal.map(StallWatch::new),
            handled: HashMap::new(),
            others: stall_rejoin.map(StallWatch::new),
            stall_limit: stall_rejoin.unwrap_or_default(),
            rejoined_at: None,
        }
    }

    /// Forgets every clock, for a new client that deserves its own chance.
    pub fn reset(&mut self) {
        for watch in [self.own.as_mut(), self.others.as_mut()]
            .into_iter()
            .flatten()
        {
            watch.reset();
        }
    }

    /// Whether any check is on.
    pub fn is_on(&self) -> bool {
        self.own.is_some() || self.others.is_some()
    }

    /// One round of both checks.
    pub fn check(
        &mut self,
        consumer: &Client,
        lanes: &Lanes,
        topics: &[String],
    ) -> Result<Action, KafkaError> {
        let assignment = consumer.assignment()?;
        let owned: Vec<Partition> = assignment
            .elements()
            .iter()
            .map(|e| Partition {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            })
            .collect();
        if let Some(watch) = self.own.as_mut() {
            let starving = starving_partitions(watch, &mut self.handled, consumer, lanes, &owned)?;
            if !starving.is_empty() {
                return Ok(Action::Recreate(format!(
                    "own partitions {starving:?} have records the client does not fetch"
                )));
            }
        }
        let Some(watch) = self.others.as_mut() else {
            return Ok(Action::Nothing);
        };
        if watch.note_assignment(owned) {
            return Ok(Action::Nothing);
        }
        let stalled = stalled_partitions(watch, consumer, &assignment, topics)?;
        if stalled.is_empty() {
            return Ok(Action::Nothing);
        }
        watch.reset();
        let now = Instant::now();
        Ok(escalate(
            &mut self.rejoined_at,
            self.stall_limit,
            now,
            stalled,
        ))
    }
}

/// A stall right after a rejoin did not help: the next cure is a new client.
fn escalate(
    rejoined_at: &mut Option<Instant>,
    limit: Duration,
    now: Instant,
    stalled: Vec<Partition>,
) -> Action {
    match *rejoined_at {
        Some(at) if now.duration_since(at) <= limit * 3 => {
            *rejoined_at = None;
            Action::Recreate(format!(
                "partitions {stalled:?} stayed unconsumed after a rejoin"
            ))
        }
        _ => {
            *rejoined_at = Some(now);
            Action::Rejoin(stalled)
        }
    }
}

fn starving_partitions(
    watch: &mut StallWatch,
    handled: &mut HashMap<Partition, u64>,
    consumer: &Client,
    lanes: &Lanes,
    owned: &[Partition],
) -> Result<Vec<Partition>, KafkaError> {
    if watch.note_assignment(owned.to_vec()) {
        return Ok(Vec::new());
    }
    let positions = consumer.position()?;
    let now = Instant::now();
    let mut starving = Vec::new();
    for partition in owned {
        let key = (partition.topic.clone(), partition.partition);
        let (busy, count) = lanes.activity(&key).unwrap_or((false, 0));
        // First sight is no proof of life: the broker is asked then.
        let moved = handled
            .insert(partition.clone(), count)
            .is_some_and(|before| before != count);
        if busy || moved {
            watch.forget(partition);
            continue;
        }
        let (low, high) =
            consumer.fetch_watermarks(&partition.topic, partition.partition, CALL_TIMEOUT)?;
        let at = match positions
            .find_partition(&partition.topic, partition.partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(n)) => n,
            // Nothing handed out since the assignment: where it starts.
            _ => committed_or(consumer, partition, low)?,
        };
        if watch.observe(partition.clone(), at, high, now) {
            starving.push(partition.clone());
        }
    }
    Ok(starving)
}

fn committed_or(
    consumer: &Client,
    partition: &Partition,
    fallback: i64,
) -> Result<i64, KafkaError> {
    let mut list = TopicPartitionList::new();
    list.add_partition(&partition.topic, partition.partition);
    let committed = consumer.committed_offsets(list, CALL_TIMEOUT)?;
    Ok(
        match committed
            .find_partition(&partition.topic, partition.partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(n)) => n,
            _ => fallback,
        },
    )
}

/// Partitions this member does not own that stood still with records
/// waiting (see [`super::stall`]).
fn stalled_partitions(
    watch: &mut StallWatch,
    consumer: &Client,
    ours: &TopicPartitionList,
    topics: &[String],
) -> Result<Vec<Partition>, KafkaError> {
    let mut wanted = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
        for found in metadata.topics() {
            for partition in found.partitions() {
                if ours.find_partition(topic, partition.id()).is_none() {
                    wanted.add_partition(topic, partition.id());
                }
            }
        }
    }
    if wanted.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(wanted, CALL_TIMEOUT)?;
    let now = Instant::now();
    let mut stalled = Vec::new();
    for element in committed.elements() {
        let (topic, number) = (element.topic(), element.partition());
        let (_, end) = consumer.fetch_watermarks(topic, number, CALL_TIMEOUT)?;
        let at = match element.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        };
        let partition = Partition {
            topic: topic.to_owned(),
            partition: number,
        };
        if watch.observe(partition.clone(), at, end, now) {
            stalled.push(partition);
        }
    }
    Ok(stalled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::stall::p;

    #[test]
    fn a_stall_after_a_rejoin_recreates_the_client() {
        let limit = Duration::from_secs(30);
        let start = Instant::now();
        let mut rejoined = None;
        assert_eq!(
            escalate(&mut rejoined, limit, start, vec![p(0)]),
            Action::Rejoin(vec![p(0)])
        );
        let again = escalate(&mut rejoined, limit, start + limit * 2, vec![p(0)]);
        assert!(matches!(again, Action::Recreate(_)), "{again:?}");
        // Long after a rejoin that helped, a new stall starts with a rejoin again.
        assert_eq!(
            escalate(&mut rejoined, limit, start + limit * 10, vec![p(1)]),
            Action::Rejoin(vec![p(1)])
        );
        assert_eq!(
            escalate(&mut rejoined, limit, start + limit * 20, vec![p(1)]),
            Action::Rejoin(vec![p(1)])
        );
    }

    #[test]
    fn checks_can_be_off() {
        assert!(!Healer::new(None, None).is_on());
        assert!(Healer::new(Some(Duration::from_secs(60)), None).is_on());
    }
}
