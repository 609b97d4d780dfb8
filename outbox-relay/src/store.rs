//! The relay's side of the outbox table: leadership, fetching, marking and
//! clean-up, all on one PostgreSQL connection.
//!
//! The session-level advisory lock lives on the same connection that fetches
//! and marks rows. If that connection dies the lock is released and no
//! further row can be marked through it, so a standby can take over safely.

use std::time::Duration;

use tokio_postgres::{Client, Statement};

use crate::config::OnPublish;
use crate::mapping::sql::Statements;
use crate::mapping::{Mapping, TableName};
use crate::pipeline::heads::Candidates;
use crate::pipeline::{InFlight, Outbox};
use crate::prepare::CheckError;
use crate::row;
pub use crate::row::OutboxRow;

/// First key of the two-int advisory lock that elects the active relay.
const LOCK_CLASS: i32 = 0x6f75_7462;

/// The publishing session walks the ordering column's index for its fetch,
/// whatever the statistics say. A table that grew faster than autovacuum
/// analyses it (a burst, a backlog after an outage: ANALYZE runs at most
/// once a minute) looks a few rows large to the planner, which then reads
/// every unpublished row and sorts them for each batch of 500: measured at
/// 200,000 waiting rows, 430 ms per fetch that way, about 1 ms walking the
/// index (docs/benchmarks.md). Without sorting, the only way to the oldest
/// rows is that walk. The statements of this session never need a sort:
/// the fetch, and marking, deleting or parking rows by their ordering key.
const WALK_THE_INDEX: &str = "-c enable_sort=off";

/// The relay session's own limits, as PostgreSQL options.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `lock_timeout`.
    pub lock_timeout: Duration,
    /// `statement_timeout`.
    pub statement_timeout: Duration,
}

impl Limits {
    /// `-c lock_timeout=… -c statement_timeout=…`, in milliseconds.
    pub fn options(&self) -> String {
        format!(
            "-c lock_timeout={} -c statement_timeout={}",
            self.lock_timeout.as_millis(),
            self.statement_timeout.as_millis()
        )
    }
}

/// Opens a plain connection with the relay's limits, driven in the
/// background, for the parked-row commands.
pub async fn plain_connection(
    url: &str,
    limits: &Limits,
) -> Result<Client, platform_core::pg::PgError> {
    connection_with(url, &limits.options()).await
}

/// Opens the connection of the work beside the publishing loop (the
/// backlog, the purge, the sweep), with the relay's limits. Like the
/// publishing session it walks indexes rather than sorting: the sweep's
/// steps, planned with statistics taken before a burst, each sorted every
/// waiting row (4.8 s for one sweep of 1,000 keys, the leader's marks
/// waiting meanwhile).
pub async fn maintenance_connection(
    url: &str,
    limits: &Limits,
) -> Result<Client, platform_core::pg::PgError> {
    connection_with(url, &format!("{} {WALK_THE_INDEX}", limits.options())).await
}

async fn connection_with(url: &str, options: &str) -> Result<Client, platform_core::pg::PgError> {
    let (client, connection) = platform_core::pg::connect_with(url, options).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "Outbox maintenance connection ended.");
        }
    });
    Ok(client)
}

/// Why a relay session could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached.
    #[error(transparent)]
    Connect(#[from] platform_core::pg::PgError),
    /// A statement failed.
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
    /// The table lacks what the mapping needs.
    #[error("{0}")]
    NotReady(String),
}

impl From<CheckError> for StoreError {
    fn from(error: CheckError) -> Self {
        match error {
            CheckError::NotReady(why) => Self::NotReady(why),
            CheckError::Query(error) => Self::Query(error),
        }
    }
}

/// Checks `table` against `mapping` and builds its statements, naming the
/// table with the schema it was found in.
pub async fn bind(
    client: &Client,
    table: &TableName,
    mapping: &Mapping,
) -> Result<Statements, CheckError> {
    let (table, payload) = crate::prepare::check(client, table, mapping).await?;
    Ok(Statements::new(&table, mapping, payload))
}

/// A connection to the outbox database.
pub struct Store {
    client: Client,
    mapping: Mapping,
    prepared: Prepared,
}

/// The publishing loop's statements, prepared once per session: a statement
/// sent as text is parsed, planned and described on every call, one round
/// trip more each time (the fetch and the mark run once per batch).
struct Prepared {
    fetch: Statement,
    mark: Statement,
    delete: Statement,
    park: Statement,
    begin: Statement,
    lock_keys: Statement,
    fetch_next: Statement,
    next_of_keys: Statement,
    commit: Statement,
}

impl Prepared {
    async fn new(client: &Client, statements: &Statements) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            fetch: client.prepare(&statements.fetch).await?,
            mark: client.prepare(&statements.mark).await?,
            delete: client.prepare(&statements.delete).await?,
            park: client.prepare(&statements.park).await?,
            begin: client.prepare("BEGIN").await?,
            lock_keys: client.prepare(&statements.lock_keys).await?,
            fetch_next: client.prepare(&statements.fetch_next).await?,
            next_of_keys: client.prepare(&statements.next_of_keys).await?,
            commit: client.prepare("COMMIT").await?,
        })
    }
}

impl Store {
    /// Connects and checks that `table` is ready for `mapping`.
    pub async fn connect(
        url: &str,
        limits: &Limits,
        table: &TableName,
        mapping: &Mapping,
    ) -> Result<Self, StoreError> {
        // Keepalives and a TCP user timeout on both ends: a partitioned relay
        // loses its session, and with it the leader lock, within
        // `platform_core::pg::DEAD_PEER_BOUND`. A lock or statement timeout:
        // a leader blocked on a row lock (an open transaction on an outbox
        // row, a manual `FOR UPDATE`) gets an error, loses its session and
        // the leader lock, instead of leading without progress.
        let options = format!("{} {WALK_THE_INDEX}", limits.options());
        let (client, connection) = platform_core::pg::connect_with(url, &options).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "Outbox database connection lost.");
            }
        });
        let statements = bind(&client, table, mapping).await?;
        let prepared = Prepared::new(&client, &statements).await?;
        Ok(Self {
            client,
            mapping: mapping.clone(),
            prepared,
        })
    }

    /// Tries to become the active relay for this database.
    pub async fn try_lead(&self, lock_id: i32) -> Result<bool, tokio_postgres::Error> {
        let row = self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LOCK_CLASS, &lock_id],
            )
            .await?;
        row.try_get(0)
    }

    /// The oldest heads of their keys, none in flight, and of the rows
    /// `next` (next in line for their keys) those still waiting and first
    /// of their key; both read in one round trip.
    ///
    /// One row per key out at a time is what makes the order per key
    /// strict: a row is sent only once every earlier row of its key is
    /// acknowledged, so a send that fails past all retries can never be
    /// overtaken by a later row of its key. Ids follow commit order per key
    /// (the ordering trigger draws them under a per-key lock), so "earlier"
    /// is commit order.
    pub async fn fetch(
        &self,
        limit: i64,
        in_flight: &InFlight,
        next: &[i64],
    ) -> Result<Candidates, tokio_postgres::Error> {
        let decode = |rows: Vec<tokio_postgres::Row>| {
            rows.iter()
                .map(|row| row::decode(&self.mapping, row))
                .collect::<Result<Vec<_>, _>>()
        };
        let ids = in_flight.ids();
        let heads_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&limit, &ids];
        let heads = self.client.query(&self.prepared.fetch, &heads_params);
        if next.is_empty() {
            return Ok(Candidates {
                heads: decode(heads.await?)?,
                next: Vec::new(),
            });
        }
        let next_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&next];
        let next = self.client.query(&self.prepared.fetch_next, &next_params);
        let (heads, next) = tokio::try_join!(heads, next)?;
        Ok(Candidates {
            heads: decode(heads)?,
            next: decode(next)?,
        })
    }

    /// Settles rows the broker acknowledged (marks or deletes them) and
    /// finds the next waiting row of each of `keys`, in one transaction of
    /// two round trips. A key whose lock a writer holds is left to that
    /// writer's trigger and returned, to be tried again.
    pub async fn settle(
        &self,
        ids: &[i64],
        keys: &[String],
        on_publish: OnPublish,
    ) -> Result<Settled, tokio_postgres::Error> {
        let client = &self.client;
        let prepared = &self.prepared;
        let sql = match on_publish {
            OnPublish::Mark => &prepared.mark,
            OnPublish::Delete => &prepared.delete,
        };
        let settle = async {
            if ids.is_empty() {
                Ok(0)
            } else {
                client.execute(sql, &[&ids]).await
            }
        };
        if keys.is_empty() {
            let rows = settle.await?;
            return Ok(Settled {
                rows,
                ..Settled::default()
            });
        }
        // Sent together (tokio-postgres pipelines requests polled together,
        // in the order polled): the locks are taken by a statement of their
        // own, so the lookup's snapshot, taken after them, sees every row a
        // writer of those keys committed.
        let keys_param: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&keys];
        let (_, rows, locked) = tokio::try_join!(
            client.execute(&prepared.begin, &[]),
            settle,
            client.query(&prepared.lock_keys, &keys_param),
        )?;
        let locked = locked
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if locked.is_empty() {
            client.execute(&prepared.commit, &[]).await?;
            Vec::new()
        } else {
            let locked_param: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&locked];
            let (next, _) = tokio::try_join!(
                client.query(&prepared.next_of_keys, &locked_param),
                client.execute(&prepared.commit, &[]),
            )?;
            next.iter()
                .map(|row| row.try_get::<_, i64>(0))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Settled {
            rows,
            next,
            owed: owed(keys, &locked),
        })
    }

    /// Parks a row the broker can never take, with the reason.
    pub async fn park(&self, id: i64, reason: &str) -> Result<u64, tokio_postgres::Error> {
        self.client
            .execute(&self.prepared.park, &[&id, &reason])
            .await
    }
}

impl Outbox for Store {
    async fn fetch(
        &self,
        limit: i64,
        in_flight: &InFlight,
        next: &[i64],
    ) -> Result<Candidates, tokio_postgres::Error> {
        Store::fetch(self, limit, in_flight, next).await
    }

    async fn settle(
        &self,
        ids: &[i64],
        keys: &[String],
        on_publish: OnPublish,
    ) -> Result<Settled, tokio_postgres::Error> {
        Store::settle(self, ids, keys, on_publish).await
    }

    async fn park(&self, id: i64, reason: &str) -> Result<u64, tokio_postgres::Error> {
        Store::park(self, id, reason).await
    }
}

/// What settling a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Rows marked or deleted.
    pub rows: u64,
    /// The rows next in line for the keys handed on.
    pub next: Vec<i64>,
    /// Keys not handed on because a writer held the key's lock: that
    /// writer's trigger may have seen the settled row still waiting, so the
    /// key is tried again at the next settle (and by the sweep, should the
    /// relay stop first).
    pub owed: Vec<String>,
}

/// The keys of `keys` not in `locked`, each once.
fn owed(keys: &[String], locked: &[String]) -> Vec<String> {
    let locked: std::collections::HashSet<&String> = locked.iter().collect();
    let mut seen = std::collections::HashSet::new();
    keys.iter()
        .filter(|key| !locked.contains(key) && seen.insert(*key))
        .cloned()
        .collect()
}

/// Makes every key's first waiting row its head where none is; returns how
/// many rows it changed (docs/relay.md, "Fair to every key").
pub async fn sweep(client: &Client, statements: &Statements) -> Result<u64, tokio_postgres::Error> {
    client.execute(&statements.sweep, &[]).await
}

/// What the outbox holds, beside the publishing loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Unpublished rows waiting to be sent (not parked).
    pub rows: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_age: f64,
    /// Parked rows.
    pub parked: i64,
}

/// Unpublished and parked rows, and the age of the oldest waiting one.
pub async fn backlog(
    client: &Client,
    statements: &Statements,
) -> Result<Backlog, tokio_postgres::Error> {
    let row = client.query_one(&statements.backlog, &[]).await?;
    Ok(Backlog {
        rows: row.try_get(0)?,
        oldest_age: row.try_get(1)?,
        parked: row.try_get(2)?,
    })
}

/// Deletes rows published longer than `retention` ago, `batch` at a time,
/// until a batch comes back short (so the purge keeps up with any write
/// rate); rows another session has locked are left for the next round.
/// Returns how many it deleted.
pub async fn purge(
    client: &Client,
    statements: &Statements,
    retention: Duration,
    batch: i64,
) -> Result<u64, tokio_postgres::Error> {
    let seconds = retention.as_secs_f64();
    let statement = client.prepare(&statements.purge).await?;
    let mut total = 0;
    loop {
        let deleted = client.execute(&statement, &[&seconds, &batch]).await?;
        total += deleted;
        if deleted < batch as u64 {
            return Ok(total);
        }
    }
}

/// A parked row, as the `parked` commands show it.
#[derive(Debug, Clone)]
pub struct ParkedRow {
    /// Its id.
    pub id: i64,
    /// Its key.
    pub key: String,
    /// Its topic.
    pub topic: String,
    /// Its type.
    pub event_type: String,
    /// Its payload's length in bytes.
    pub payload_bytes: i64,
    /// When it was parked (RFC 3339).
    pub parked_at: String,
    /// Why.
    pub reason: String,
}

/// Every parked row, oldest first.
pub async fn parked(
    client: &Client,
    statements: &Statements,
) -> Result<Vec<ParkedRow>, tokio_postgres::Error> {
    client
        .query(&statements.parked, &[])
        .await?
        .iter()
        .map(|row| {
            Ok(ParkedRow {
                id: row.try_get(0)?,
                key: row.try_get(1)?,
                topic: row.try_get(2)?,
                event_type: row.try_get(3)?,
                payload_bytes: row.try_get(4)?,
                parked_at: row.try_get(5)?,
                reason: row.try_get(6)?,
            })
        })
        .collect()
}

/// Puts parked rows back in line (`ids`, or every one when `None`); the
/// relay tries them again at its next batch. Returns how many.
pub async fn unpark(
    client: &Client,
    statements: &Statements,
    ids: Option<&[i64]>,
) -> Result<u64, tokio_postgres::Error> {
    let ids: Option<Vec<i64>> = ids.map(<[i64]>::to_vec);
    client.execute(&statements.unpark, &[&ids]).await
}
