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
use crate::pipeline::heads::Candidates;
use crate::pipeline::in_flight::tests::row;

struct Stored {
    row: OutboxRow,
    published: bool,
    parked: bool,
    head: bool,
}

/// The outbox table, as the relay's SQL reads it.
#[derive(Default)]
struct Table {
    rows: Mutex<Vec<Stored>>,
    /// Set while the broker has a batch: a fetch then overlaps it.
    sending: AtomicBool,
    fetches_while_sending: AtomicUsize,
    /// Keys a writer holds the ordering lock of: the settle cannot hand
    /// them on.
    held: Mutex<HashSet<String>>,
    /// Rows fetched, in order, and how many fetches there were.
    fetched: Mutex<Vec<Vec<i64>>>,
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
                head: false,
            }));
        table.sweep();
        table
    }

    /// What the sweep and the trigger do: each key's first waiting row,
    /// and every row without a key, is a head.
    fn sweep(&self) {
        let mut rows = self.rows.lock().expect("rows");
        let mut seen = HashSet::new();
        for stored in rows.iter_mut().filter(|r| !r.published) {
            if stored
                .row
                .key
                .as_ref()
                .is_none_or(|key| seen.insert(key.clone()))
            {
                stored.head = true;
            }
        }
    }

    fn waiting(&self) -> usize {
        let rows = self.rows.lock().expect("rows");
        rows.iter().filter(|r| !r.published && !r.parked).count()
    }
}

impl Table {
    /// Whether the row at `at` is its key's first waiting row.
    fn first_of_key(rows: &[Stored], at: usize) -> bool {
        rows[at].row.key.as_ref().is_none_or(|key| {
            !rows[..at]
                .iter()
                .any(|e| !e.published && e.row.key.as_ref() == Some(key))
        })
    }
}

impl Outbox for Table {
    async fn fetch(
        &self,
        limit: i64,
        in_flight: &InFlight,
        next: &[i64],
    ) -> Result<Candidates, tokio_postgres::Error> {
        if self.sending.load(Ordering::SeqCst) {
            self.fetches_while_sending.fetch_add(1, Ordering::SeqCst);
        }
        tokio::task::yield_now().await;
        let rows = self.rows.lock().expect("rows");
        // What the SQL reads: waiting heads, not parked, not in flight, each
        // its key's first waiting row; and the rows next in line that still
        // are.
        let heads: Vec<OutboxRow> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.head && !r.published && !r.parked)
            .filter(|(_, r)| !in_flight.ids().contains(&r.row.id))
            .filter(|(at, _)| Self::first_of_key(&rows, *at))
            .take(usize::try_from(limit).expect("limit"))
            .map(|(_, r)| r.row.clone())
            .collect();
        let next: Vec<OutboxRow> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| next.contains(&r.row.id) && !r.published && !r.parked)
            .filter(|(at, _)| Self::first_of_key(&rows, *at))
            .map(|(_, r)| r.row.clone())
            .collect();
        let mut fetched: Vec<i64> = heads.iter().chain(&next).map(|row| row.id).collect();
        fetched.sort_unstable();
        self.fetched.lock().expect("fetched").push(fetched);
        Ok(Candidates { heads, next })
    }

    async fn settle(
        &self,
        ids: &[i64],
        keys: &[String],
        _on_publish: OnPublish,
    ) -> Result<Settled, tokio_postgres::Error> {
        tokio::task::yield_now().await;
        let held = self.held.lock().expect("held").clone();
        let mut rows = self.rows.lock().expect("rows");
        let mut marked = 0;
        for stored in rows
            .iter_mut()
            .filter(|r| ids.contains(&r.row.id) && !r.published)
        {
            stored.published = true;
            marked += 1;
        }
        let mut owed = Vec::new();
        let mut next = Vec::new();
        for key in keys {
            if held.contains(key) {
                owed.push(key.clone());
            } else if let Some(first) = rows
                .iter()
                .find(|r| !r.published && r.row.key.as_ref() == Some(key))
            {
                next.push(first.row.id);
            }
        }
        Ok(Settled {
            rows: marked,
            next,
            owed,
        })
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
    // Row 9 is parked and the 7 later rows of key b wait behind it.
    let stats = run_until(&kafka, 2, async |table: &Table, _: &Kafka<'_>| {
        while table.waiting() > 7 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;

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

impl<'a> Kafka<'a> {
    /// A broker that takes every row of `table`.
    fn taking_all(table: &'a Table) -> Self {
        Self {
            table,
            fail_once: Mutex::new(HashSet::new()),
            never: HashSet::new(),
            sent: Mutex::new(Vec::new()),
        }
    }

    /// What it was sent, in order.
    fn sent(&self) -> Vec<(i64, Option<String>)> {
        self.sent.lock().expect("sent").clone()
    }
}

/// Runs the loop on `kafka`'s table with batches of `batch_size` until
/// `until` returns, then shuts it down; returns the loop's counters.
async fn run_until(
    kafka: &Kafka<'_>,
    batch_size: i64,
    until: impl AsyncFn(&Table, &Kafka<'_>) -> (),
) -> RelayStats {
    let policy = Policy {
        batch_size,
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
        outbox: kafka.table,
        broker: kafka,
        policy: &policy,
        stats: &stats,
        health: &health,
        observer: None,
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let (led, ()) = tokio::join!(leader.lead(&shutdown), async {
        until(kafka.table, kafka).await;
        stop.cancel();
    });
    assert!(led.is_ok(), "the loop ends cleanly on shutdown");
    stats
}

#[tokio::test(start_paused = true)]
async fn a_cold_key_goes_out_in_the_first_batch_behind_a_hot_key_of_many_rows() {
    // 1,000 rows of one key, then one row of another: the fetch takes the
    // heads of keys, so the cold row is in the very first batch.
    let mut rows: Vec<(i64, &str)> = (1..=1_000).map(|id| (id, "hot")).collect();
    rows.push((1_001, "cold"));
    let table = Table::with(&rows);
    let kafka = Kafka::taking_all(&table);
    run_until(&kafka, 500, async |table: &Table, _: &Kafka<'_>| {
        while table.fetched.lock().expect("fetched").len() < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let sent = kafka.sent();
    let fetched = table.fetched.lock().expect("fetched").clone();
    assert_eq!(
        fetched[0],
        [1, 1_001],
        "one head per key, the cold one included"
    );
    let hot: Vec<i64> = sent
        .iter()
        .filter(|(_, key)| key.as_deref() == Some("hot"))
        .map(|(id, _)| *id)
        .collect();
    let mut in_order = hot.clone();
    in_order.sort_unstable();
    assert_eq!(hot, in_order, "the hot key's rows go out in order");
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_lock_a_writer_holds_is_handed_on_once_the_writer_is_done() {
    let table = Table::with(&[(1, "a"), (2, "a"), (3, "b"), (4, "b")]);
    table.held.lock().expect("held").insert("a".to_owned());
    let kafka = Kafka::taking_all(&table);
    run_until(&kafka, 10, async |table: &Table, kafka: &Kafka<'_>| {
        // Key b drains; key a's second row waits for its hand-over.
        while table.waiting() > 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = table.fetched.lock().expect("fetched").len();
        while table.fetched.lock().expect("fetched").len() < before + 5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ids: Vec<i64> = kafka
            .sent
            .lock()
            .expect("sent")
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert!(
            !ids.contains(&2),
            "row 2 is not a head while the writer holds key a: {ids:?}"
        );
        table.held.lock().expect("held").clear();
        while table.waiting() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let ids: Vec<i64> = kafka.sent().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 3, 4, 2], "key b flows while key a waits");
}
