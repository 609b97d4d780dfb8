//! The loop against an in-memory table and broker: per-key order of first
//! appearances, a failed send retried ahead of its key, a row that can
//! never go parked while the rest flows, and the database work of one batch
//! overlapping the broker's work of another.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::health::Bounds;
use crate::pipeline::in_flight::tests::row;

struct Stored {
    row: OutboxRow,
    published: bool,
    parked: bool,
}

/// The outbox table, as the relay's SQL reads it.
#[derive(Default)]
struct Table {
    rows: Mutex<Vec<Stored>>,
    /// Set while the broker has a batch: a fetch then overlaps it.
    sending: AtomicBool,
    fetches_while_sending: AtomicUsize,
}

impl Table {
    fn with(rows: &[(i64, &str)]) -> Self {
        let table = Self::default();
        table
            .rows
            .lock()
            .expect("rows")
            .extend(rows.iter().map(|(id, key)| Stored {
                row: row(*id, key),
                published: false,
                parked: false,
            }));
        table
    }

    fn waiting(&self) -> usize {
        let rows = self.rows.lock().expect("rows");
        rows.iter().filter(|r| !r.published && !r.parked).count()
    }
}

impl Outbox for Table {
    async fn fetch(
        &self,
        limit: i64,
        in_flight: &InFlight,
    ) -> Result<Vec<OutboxRow>, tokio_postgres::Error> {
        if self.sending.load(Ordering::SeqCst) {
            self.fetches_while_sending.fetch_add(1, Ordering::SeqCst);
        }
        tokio::task::yield_now().await;
        let rows = self.rows.lock().expect("rows");
        let parked: HashSet<&str> = rows
            .iter()
            .filter(|r| r.parked && !r.published)
            .filter_map(|r| r.row.key.as_deref())
            .collect();
        // What the SQL leaves out: published, parked, behind a parked row,
        // in flight or of a key in flight.
        let waiting: Vec<OutboxRow> = rows
            .iter()
            .filter(|r| !r.published && !r.parked)
            .filter(|r| r.row.key.as_deref().is_none_or(|key| !parked.contains(key)))
            .filter(|r| !in_flight.ids().contains(&r.row.id))
            .filter(|r| {
                r.row
                    .key
                    .as_ref()
                    .is_none_or(|key| !in_flight.keys().contains(key))
            })
            .take(usize::try_from(limit).expect("limit"))
            .map(|r| r.row.clone())
            .collect();
        Ok(in_flight.admissible(waiting))
    }

    async fn settle(
        &self,
        ids: &[i64],
        _on_publish: OnPublish,
    ) -> Result<u64, tokio_postgres::Error> {
        tokio::task::yield_now().await;
        let mut rows = self.rows.lock().expect("rows");
        let mut marked = 0;
        for stored in rows
            .iter_mut()
            .filter(|r| ids.contains(&r.row.id) && !r.published)
        {
            stored.published = true;
            marked += 1;
        }
        Ok(marked)
    }

    async fn park(&self, id: i64, _reason: &str) -> Result<u64, tokio_postgres::Error> {
        let mut rows = self.rows.lock().expect("rows");
        let stored = rows.iter_mut().find(|r| r.row.id == id).expect("row");
        stored.parked = true;
        Ok(1)
    }
}

/// A broker that fails some rows once and never takes others.
struct Kafka<'a> {
    table: &'a Table,
    fail_once: Mutex<HashSet<i64>>,
    never: HashSet<i64>,
    sent: Mutex<Vec<(i64, Option<String>)>>,
}

impl Broker for Kafka<'_> {
    async fn publish(&self, rows: &[OutboxRow]) -> BatchOutcome {
        self.table.sending.store(true, Ordering::SeqCst);
        // The answers take a while: the database work runs meanwhile.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut outcome = BatchOutcome::default();
        for row in rows {
            if self.never.contains(&row.id) {
                outcome
                    .unsendable
                    .push((row.id, "no such topic".to_owned()));
                continue;
            }
            if self.fail_once.lock().expect("fail").remove(&row.id) {
                outcome.failed += 1;
                outcome
                    .first_error
                    .get_or_insert(KafkaError::MessageProduction(
                        RDKafkaErrorCode::NotEnoughReplicas,
                    ));
                continue;
            }
            self.sent
                .lock()
                .expect("sent")
                .push((row.id, row.key.clone()));
            outcome.publishable.push(row.id);
        }
        self.table.sending.store(false, Ordering::SeqCst);
        outcome
    }

    fn fatal_error(&self) -> Option<String> {
        None
    }
}

#[tokio::test(start_paused = true)]
async fn every_row_goes_out_in_key_order_with_failures_and_parking_while_batches_overlap() {
    // 3 keys interleaved, 40 rows; batches of 2 so most keys wait a turn.
    let rows: Vec<(i64, &str)> = (1..=40)
        .map(|id| {
            (
                id,
                ["a", "b", "c", ""][usize::try_from(id % 4).expect("index")],
            )
        })
        .collect();
    let table = Table::with(&rows);
    // Row 6 (key c) fails once; row 9 (key b) can never go.
    let kafka = Kafka {
        table: &table,
        fail_once: Mutex::new(HashSet::from([6])),
        never: HashSet::from([9]),
        sent: Mutex::new(Vec::new()),
    };
    let policy = Policy {
        batch_size: 2,
        poll_interval: Duration::from_millis(5),
        on_publish: OnPublish::Mark,
        park_after_failures: 3,
        table: "outbox".to_owned(),
    };
    let stats = RelayStats::new("outbox");
    let health = RelayHealth::new(Bounds {
        reconnecting: Duration::from_secs(60),
        stalled: Duration::from_secs(60),
    });
    let leader = Leader {
        outbox: &table,
        broker: &kafka,
        policy: &policy,
        stats: &stats,
        health: &health,
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let (led, ()) = tokio::join!(leader.lead(&shutdown), async {
        // Row 9 is parked and the 7 later rows of key b wait behind it.
        while table.waiting() > 7 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.cancel();
    });
    assert!(led.is_ok(), "the loop ends cleanly on shutdown");

    let sent = kafka.sent.lock().expect("sent").clone();
    let mut by_key: HashMap<Option<String>, Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for (id, key) in &sent {
        if seen.insert(*id) {
            by_key.entry(key.clone()).or_default().push(*id);
        }
    }
    for (key, ids) in &by_key {
        if key.is_some() {
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            assert_eq!(ids, &sorted, "key {key:?}: first appearances in row order");
        }
    }
    assert_eq!(
        by_key[&Some("c".to_owned())].len(),
        10,
        "key c whole, row 6 retried"
    );
    assert_eq!(by_key[&Some("a".to_owned())].len(), 10);
    assert_eq!(by_key[&None].len(), 10);
    assert_eq!(
        by_key[&Some("b".to_owned())],
        [1, 5],
        "key b stops at its parked row"
    );
    let stored = table.rows.lock().expect("rows");
    assert!(stored.iter().any(|r| r.row.id == 9 && r.parked));
    assert_eq!(stats.parked.get(), 1);
    assert!(
        table.fetches_while_sending.load(Ordering::SeqCst) > 0,
        "the next batch was fetched while the broker had one"
    );
}
