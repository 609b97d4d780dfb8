//! The per-key locks of a prepared table, as writers meet them: the locks
//! of one statement are taken once per key and in one order (sorted by lock
//! id, at the statement's end), so two multi-row statements that write the
//! same two keys in opposite orders both commit where row-by-row locking
//! deadlocked; and the numbers drawn before the lock still follow commit
//! order per key, under `READ COMMITTED` (checked under the lock, drawn
//! again when another writer committed a later one meanwhile) and under
//! `REPEATABLE READ` (whose snapshot cannot see that writer: always drawn
//! again). Each statement is held between its first and second row at a
//! gate (an advisory lock the test holds), so the interleaving is forced,
//! not hoped for.

use std::time::Duration;

use mall_e2e::mall::brokers;
use mall_e2e::{postgres, unique_name, wait_for};
use outbox_relay::RelayConfig;

const LIMIT: Duration = Duration::from_secs(60);
/// The gate's advisory lock (a class of its own, never the relay's).
const GATE: i32 = 4242;

const SCHEMA: &str = "
    CREATE TABLE outboxevent (
        id            uuid PRIMARY KEY,
        aggregatetype varchar(255) NOT NULL,
        aggregateid   varchar(255) NOT NULL,
        type          varchar(255) NOT NULL,
        payload       bytea
    )";

/// One statement, two rows: the first inserted at once, the second only
/// once the gate opens (a `CASE` keeps the first row from asking).
const TWO_ROWS: &str = "
    INSERT INTO outboxevent (id, aggregatetype, aggregateid, type, payload)
    SELECT gen_random_uuid(), 'order', v.k, 'Created', '\\x01'::bytea
      FROM (VALUES (1, $1::text), (2, $2::text)) v(i, k)
     WHERE CASE WHEN v.i = 1 THEN true
                ELSE pg_advisory_xact_lock_shared(4242, 1) IS NOT NULL END";

/// Each row with the commit time of the transaction that wrote it, by key
/// and ordering column.
const ROWS: &str = "
    SELECT aggregateid::text, relay_seq, relay_head, xmin::text,
           pg_xact_commit_timestamp(xmin)::text
      FROM outboxevent ORDER BY aggregateid, relay_seq";

fn config(url: &str) -> RelayConfig {
    let mut flags = mall_testkit::settings::relay_flags(url, &brokers());
    flags.extend(["--preset", "debezium", "--table", "outboxevent"].map(str::to_owned));
    <RelayConfig as clap::Parser>::try_parse_from(flags).expect("relay flags")
}

/// A fresh database with Debezium's table, prepared.
async fn prepared(name: &str) -> postgres::TestDatabase {
    let database = postgres::create_database(name).await;
    postgres::connect(database.url())
        .await
        .batch_execute(SCHEMA)
        .await
        .expect("the team's table");
    outbox_relay::prepare_table(&config(database.url()), false)
        .await
        .expect("prepare");
    database
}

/// A session holding the gate shut until it is dropped or opened.
async fn shut_gate(url: &str) -> tokio_postgres::Client {
    let gate = postgres::connect(url).await;
    gate.execute("SELECT pg_advisory_lock($1, 1)", &[&GATE])
        .await
        .expect("shut the gate");
    gate
}

/// Waits until `n` statements wait at the gate.
async fn waiting_at_gate(url: &str, n: i64) {
    let sql = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = {GATE} \
         AND NOT granted AND database = (SELECT oid FROM pg_database \
         WHERE datname = current_database())"
    );
    wait_for(&format!("{n} statements at the gate"), LIMIT, || async {
        (postgres::count(url, &sql).await == n).then_some(())
    })
    .await;
}

/// Per key, the ordering column follows commit order, and the key's first
/// row is a head; with `one_head`, its only one (a writer whose snapshot is
/// older than its lock can leave an extra head, which the fetch's guard
/// skips).
async fn in_commit_order(url: &str, one_head: bool) -> Vec<(String, i64, String)> {
    let client = postgres::connect(url).await;
    let rows = client
        .query(ROWS, &[])
        .await
        .expect("commit timestamps (is track_commit_timestamp on?)");
    let rows: Vec<(String, i64, bool, String, String)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect();
    for pair in rows.windows(2) {
        let [(key, seq, _, _, at), (next_key, next_seq, _, _, next_at)] = pair else {
            continue;
        };
        if key == next_key {
            assert!(
                at <= next_at,
                "{key}: row {seq} committed at {at}, after row {next_seq} at {next_at}: {rows:?}"
            );
        }
    }
    let mut keys: Vec<&String> = rows.iter().map(|row| &row.0).collect();
    keys.dedup();
    for key in keys {
        let heads: Vec<i64> = rows
            .iter()
            .filter(|row| &row.0 == key && row.2)
            .map(|row| row.1)
            .collect();
        let first = rows.iter().find(|row| &row.0 == key).map(|row| row.1);
        assert_eq!(heads.first().copied(), first, "{key}'s heads: {rows:?}");
        if one_head {
            assert_eq!(heads.len(), 1, "{key}'s heads: {rows:?}");
        }
    }
    rows.into_iter()
        .map(|(key, seq, _, xid, _)| (key, seq, xid))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_multi_row_statements_on_the_same_keys_both_commit_in_commit_order() {
    platform_service::telemetry::init();
    let name = unique_name("lockorder");
    let database = prepared(&name).await;
    let url = database.url().to_owned();
    let gate = shut_gate(&url).await;

    // Each statement's first row is in before the gate: row-by-row locking
    // would now hold a and b, one each, and each statement would wait for
    // the other's.
    let write = |first: &'static str, second: &'static str| {
        let url = url.clone();
        tokio::spawn(async move {
            postgres::connect(&url)
                .await
                .execute(TWO_ROWS, &[&first, &second])
                .await
        })
    };
    let forward = write("a", "b");
    let backward = write("b", "a");
    waiting_at_gate(&url, 2).await;
    gate.execute("SELECT pg_advisory_unlock($1, 1)", &[&GATE])
        .await
        .expect("open the gate");
    for (statement, keys) in [(forward, "a, b"), (backward, "b, a")] {
        let inserted = statement
            .await
            .expect("writer task")
            .unwrap_or_else(|error| panic!("the statement writing {keys}: {error:?}"));
        assert_eq!(inserted, 2);
    }

    let rows = in_commit_order(&url, true).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    let writers: Vec<&str> = rows.iter().map(|(_, _, xid)| xid.as_str()).collect();
    assert_eq!(
        (writers[0] == writers[2], writers[0] != writers[1]),
        (true, true),
        "one transaction is first on both keys: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeatable_read_writer_numbers_its_rows_after_a_writer_it_cannot_see() {
    platform_service::telemetry::init();
    let name = unique_name("lockrr");
    let database = prepared(&name).await;
    let url = database.url().to_owned();
    let gate = shut_gate(&url).await;

    // The slow writer's snapshot is taken, its row of key a is numbered,
    // and it waits at the gate before its statement ends (it holds no lock
    // yet).
    let slow = {
        let url = url.clone();
        tokio::spawn(async move {
            let client = postgres::connect(&url).await;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
                .await?;
            client.execute(TWO_ROWS, &[&"a", &"c"]).await?;
            client.batch_execute("COMMIT").await
        })
    };
    waiting_at_gate(&url, 1).await;
    // Meanwhile another writer numbers a later row of a and commits.
    postgres::connect(&url)
        .await
        .execute(
            "INSERT INTO outboxevent (id, aggregatetype, aggregateid, type) \
             VALUES (gen_random_uuid(), 'order', 'a', 'Quick')",
            &[],
        )
        .await
        .expect("the quick writer");
    gate.execute("SELECT pg_advisory_unlock($1, 1)", &[&GATE])
        .await
        .expect("open the gate");
    slow.await
        .expect("writer task")
        .expect("the repeatable-read writer commits");

    // The quick writer committed first, so its row comes first; the slow
    // writer's row of a was numbered before it, and drawn again.
    let rows = in_commit_order(&url, false).await;
    let a: Vec<&(String, i64, String)> = rows.iter().filter(|row| row.0 == "a").collect();
    assert_eq!(a.len(), 2, "{rows:?}");
}
