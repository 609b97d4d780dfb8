//! A team's own outbox, in Debezium's layout, in a database the mall never
//! touched: written with plain SQL by lock-free writers (long and short
//! transactions interleaved on a few keys, and one hot key with more rows
//! waiting than a batch holds), readied with `prepare`, and relayed by two
//! `outbox-relay` processes with the `debezium` preset while the leading
//! one is killed (SIGKILL). On the topics: every row, in commit order per key (taken from
//! PostgreSQL's own commit timestamps), on `outbox.event.<aggregatetype>`,
//! keyed by `aggregateid`, its `id` header and payload bytes unchanged. A
//! re-send after the kill may repeat a row the dead leader had sent but not
//! marked (at-least-once; consumers dedupe by the `id` header), but never
//! puts one out of order. A row whose `aggregatetype` makes no topic name,
//! and one whose topic does not exist, are parked with the reason, the rest
//! flowing. Once with marking, once with
//! delete-on-publish.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mall_e2e::kafka::read_topic;
use mall_e2e::mall::brokers;
use mall_e2e::scrape::{scrape, value};
use mall_e2e::{postgres, required_env, unique_name, wait_for};
use mall_saga::Service;
use mall_testkit::binaries::{Role, Wiring};
use mall_testkit::process::{Process, ProcessSpec};
use outbox_relay::{Relay, RelayConfig};
use rand::Rng;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 3;
const WRITERS: usize = 4;
const TRANSACTIONS: usize = 40;
const KEYS: [&str; 3] = ["a-1", "a-2", "b-1"];
/// A key with more rows waiting than a batch holds (500), written before
/// the relays start.
const HOT_KEY: &str = "a-hot";
const HOT_ROWS: usize = 600;

/// Debezium's documented outbox table, and the test's own record of what
/// each transaction wrote (its rows are never updated, so their `xmin` keeps
/// the writer's transaction and its commit time).
const SCHEMA: &str = "
    CREATE TABLE outboxevent (
        id            uuid PRIMARY KEY,
        aggregatetype varchar(255) NOT NULL,
        aggregateid   varchar(255) NOT NULL,
        type          varchar(255) NOT NULL,
        payload       bytea
    );
    CREATE TABLE written (
        n bigserial, id uuid PRIMARY KEY, aggregatetype text, aggregateid text, payload bytea
    );
";

/// What one writer transaction does: rows into the outbox and the record.
const WRITE: &str = "
    WITH row AS (
        INSERT INTO outboxevent (id, aggregatetype, aggregateid, type, payload)
        VALUES (gen_random_uuid(), $1, $2, 'Created', $3) RETURNING *
    )
    INSERT INTO written (id, aggregatetype, aggregateid, payload)
    SELECT id, aggregatetype, aggregateid, payload FROM row";

fn config(url: &str, on_publish: &str) -> RelayConfig {
    let mut flags = mall_testkit::settings::relay_flags(url, &brokers());
    flags.extend(
        [
            "--preset",
            "debezium",
            "--table",
            "outboxevent",
            "--on-publish",
            on_publish,
        ]
        .map(str::to_owned),
    );
    <RelayConfig as clap::Parser>::try_parse_from(flags).expect("relay flags")
}

/// A relay process of the debezium mapping on `url`, its metrics on a port
/// of its own (`MALL_BIN_DIR`, set by scripts/test.sh, holds the binary).
async fn relay_process(url: &str, on_publish: &str, n: usize) -> (Process, SocketAddr) {
    let bin_dir = PathBuf::from(required_env("MALL_BIN_DIR"));
    let log_dir = std::env::temp_dir().join(unique_name("relay-foreign-"));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let metrics = SocketAddr::from(([127, 0, 0, 1], mall_testkit::free_port().expect("port")));
    let spec = ProcessSpec::mall(
        Role::Relay(Service::Order),
        n,
        &bin_dir,
        &log_dir,
        Wiring {
            database_url: url,
            brokers: &brokers(),
            prefix: "",
        },
    )
    .set("RELAY_PRESET", "debezium")
    .set("OUTBOX_TABLE", "outboxevent")
    .set("RELAY_ON_PUBLISH", on_publish)
    .set("RELAY_STANDBY_RETRY_MS", 200)
    .set("METRICS_ADDR", metrics)
    .set("RUST_LOG", "warn");
    let process = spec
        .spawn("the foreign-writer test")
        .await
        .unwrap_or_else(|e| panic!("{e} (scripts/test.sh builds outbox-relay into MALL_BIN_DIR)"));
    (process, metrics)
}

/// Whether the relay serving metrics at `addr` leads, and how many rows it
/// published (`None` while it does not answer yet).
async fn leads(addr: SocketAddr) -> Option<(bool, f64)> {
    mall_testkit::scrape::get(addr, "/metrics", Duration::from_secs(2))
        .await
        .ok()?;
    let text = scrape(addr).await;
    Some((
        value(&text, "outbox_relay_leader", &[]) == 1.0,
        value(&text, "outbox_relay_published_rows_total", &[]),
    ))
}

/// A binary payload no text encoding would survive.
fn payload(writer: usize, transaction: usize, row: usize) -> Vec<u8> {
    let mut bytes = vec![0xff, 0x00, 0x80];
    bytes.extend(format!("{writer}/{transaction}/{row}").bytes());
    bytes.push(0xfe);
    bytes
}

/// One lock-free writer: transactions of one to three rows of one random
/// aggregate (as an application writes the events of one change), some
/// held open a little, so writers of one key interleave. (Transactions that
/// wrote several keys in different orders could deadlock on the per-key
/// ordering lock; docs/relay.md says so.)
async fn writer(url: String, index: usize, types: [String; 2]) {
    let client = postgres::connect(&url).await;
    for transaction in 0..TRANSACTIONS {
        client.batch_execute("BEGIN").await.expect("begin");
        let rows = rand::rng().random_range(1..=3);
        let key = KEYS[rand::rng().random_range(0..KEYS.len())];
        let kind = &types[usize::from(key.starts_with('b'))];
        for row in 0..rows {
            client
                .execute(WRITE, &[kind, &key, &payload(index, transaction, row)])
                .await
                .expect("insert");
        }
        if rand::rng().random_bool(0.3) {
            client
                .batch_execute("SELECT pg_sleep(0.02)")
                .await
                .expect("hold");
        }
        client.batch_execute("COMMIT").await.expect("commit");
    }
}

async fn foreign_writer_relayed(on_publish: &str) {
    platform_service::telemetry::init();
    let name = unique_name("foreign");
    let database = postgres::create_database(&name).await;
    let url = database.url().to_owned();
    let admin = postgres::connect(&url).await;
    admin.batch_execute(SCHEMA).await.expect("schema");
    let types = [format!("{name}order"), format!("{name}customer")];
    let topics: Vec<String> = types.iter().map(|t| format!("outbox.event.{t}")).collect();
    platform_service::kafka::ensure_topics(
        &brokers(),
        &topics,
        PARTITIONS,
        1,
        platform_service::kafka::Retention::BrokerDefault,
        None,
    )
    .await
    .expect("topics");

    // Rows written before the table was prepared, one after the other.
    for (index, key) in KEYS.iter().enumerate() {
        let kind = &types[usize::from(key.starts_with('b'))];
        admin
            .execute(WRITE, &[kind, key, &payload(99, index, 0)])
            .await
            .expect("insert before prepare");
    }
    // A hostile row: its aggregatetype makes no topic name. It is parked
    // with the reason; everything else flows.
    admin
        .execute(
            "INSERT INTO outboxevent VALUES (gen_random_uuid(), 'no such/topic', 'x-1', 'Created', '')",
            &[],
        )
        .await
        .expect("insert a hostile row");
    // And one for a topic nobody created: refused at once, not after the
    // producer's 30 s wait for the topic to appear.
    admin
        .execute(
            "INSERT INTO outboxevent VALUES (gen_random_uuid(), $1, 'x-2', 'Created', '')",
            &[&format!("{name}nosuch")],
        )
        .await
        .expect("insert a row for a missing topic");

    // A relay on the unprepared table refuses, naming what is missing.
    let refused = Relay::new(config(&url, on_publish))
        .expect("relay")
        .run(CancellationToken::new())
        .await
        .expect_err("an unprepared table is refused");
    assert!(refused.0.contains("relay_seq"), "{refused}");
    assert!(refused.0.contains("outbox-relay prepare"), "{refused}");

    // `--dry-run` prints and changes nothing; then the real run, twice.
    let sql = outbox_relay::prepare_table(&config(&url, on_publish), true)
        .await
        .expect("dry run");
    assert!(sql.iter().any(|statement| statement.contains("relay_seq")));
    let columns = "SELECT count(*) FROM information_schema.columns \
                   WHERE table_name = 'outboxevent' AND column_name LIKE 'relay_%'";
    assert_eq!(
        postgres::count(&url, columns).await,
        0,
        "dry run changed nothing"
    );
    // A mapping naming a column the table lacks is refused before any change.
    let mut wrong = config(&url, on_publish);
    wrong.mapping.key = Some("tenant".to_owned());
    let refused = outbox_relay::prepare_table(&wrong, false)
        .await
        .expect_err("a missing key column");
    assert!(
        refused.to_string().contains("no column tenant"),
        "{refused}"
    );
    assert_eq!(
        postgres::count(&url, columns).await,
        0,
        "nothing was changed"
    );
    for _ in 0..2 {
        outbox_relay::prepare_table(&config(&url, on_publish), false)
            .await
            .expect("prepare (idempotent)");
    }
    assert_eq!(postgres::count(&url, columns).await, 6);

    // A hot key: more rows waiting than a batch holds, in one transaction.
    admin.batch_execute("BEGIN").await.expect("begin");
    for row in 0..HOT_ROWS {
        admin
            .execute(WRITE, &[&types[0], &HOT_KEY, &payload(98, 0, row)])
            .await
            .expect("insert a hot row");
    }
    admin.batch_execute("COMMIT").await.expect("commit");

    // Two relay processes; the writers start.
    let mut replicas = Vec::new();
    for n in 0..2 {
        replicas.push(relay_process(&url, on_publish, n).await);
    }
    let writers: Vec<_> = (0..WRITERS)
        .map(|index| tokio::spawn(writer(url.clone(), index, types.clone())))
        .collect();

    // The leading process is killed (SIGKILL) once it has published part of
    // the rows.
    let leader = wait_for("a leader to publish", LIMIT, || async {
        for (index, (_, metrics)) in replicas.iter().enumerate() {
            if let Some((true, published)) = leads(*metrics).await
                && published >= 20.0
            {
                return Some(index);
            }
        }
        None
    })
    .await;
    replicas[leader].0.kill().await.expect("SIGKILL the leader");
    let survivor = replicas[1 - leader].1;
    for writer in writers {
        writer.await.expect("writer");
    }
    let total = usize::try_from(postgres::count(&url, "SELECT count(*) FROM written").await)
        .expect("count");
    let waiting = match on_publish {
        "delete" => "SELECT count(*) FROM outboxevent WHERE relay_parked_at IS NULL",
        _ => {
            "SELECT count(*) FROM outboxevent WHERE relay_published_at IS NULL \
              AND relay_parked_at IS NULL"
        }
    };
    wait_for("every row to be published", LIMIT, || async {
        (postgres::count(&url, waiting).await == 0).then_some(())
    })
    .await;
    let parked = outbox_relay::parked_rows(&config(&url, on_publish))
        .await
        .expect("parked rows");
    assert_eq!(parked.len(), 2, "only the two hostile rows are parked");
    assert_eq!(parked[0].key, "x-1");
    assert!(
        parked[0]
            .reason
            .contains("cannot be part of a Kafka topic name"),
        "{}",
        parked[0].reason
    );
    assert_eq!(parked[1].key, "x-2");
    assert!(
        parked[1].reason.contains("does not exist"),
        "{}",
        parked[1].reason
    );
    let (leading, published) = leads(survivor).await.expect("the standby answers");
    assert!(leading, "the standby took over");
    assert!(published > 0.0, "the standby published after the kill");
    drop(replicas);

    // PostgreSQL's commit order per key, and what each row holds.
    let rows = admin
        .query(
            "SELECT id::text, aggregatetype, aggregateid, payload FROM written \
             ORDER BY aggregateid, pg_xact_commit_timestamp(xmin), n",
            &[],
        )
        .await
        .expect("commit timestamps (is track_commit_timestamp on?)");
    let mut committed: HashMap<String, Vec<String>> = HashMap::new();
    let mut expected: HashMap<String, (String, String, Vec<u8>)> = HashMap::new();
    for row in &rows {
        let (id, kind, key, bytes): (String, String, String, Vec<u8>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        committed.entry(key.clone()).or_default().push(id.clone());
        expected.insert(id, (format!("outbox.event.{kind}"), key, bytes));
    }

    let mut on_the_wire: HashMap<String, Vec<String>> = HashMap::new();
    let mut records = 0;
    for topic in &topics {
        let at_least = expected.values().filter(|(t, _, _)| t == topic).count();
        for record in read_topic(&brokers(), topic, PARTITIONS, at_least, LIMIT).await {
            let id = record
                .headers
                .iter()
                .find(|(name, _)| name == "id")
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
                .expect("an id header");
            let (want_topic, want_key, want_payload) = expected
                .get(&id)
                .unwrap_or_else(|| panic!("unknown row {id}"));
            assert_eq!(
                &record.topic, want_topic,
                "row {id}: topic from aggregatetype"
            );
            assert_eq!(record.key_str(), want_key, "row {id}: key = aggregateid");
            assert_eq!(
                record.payload.as_ref(),
                Some(want_payload),
                "row {id}: payload bytes"
            );
            on_the_wire.entry(want_key.clone()).or_default().push(id);
            records += 1;
        }
    }
    for (key, ids) in &on_the_wire {
        // Each row's first appearance, in order, is the commit order; a
        // repeat only re-sends a row already on the topic.
        let mut seen = HashSet::new();
        let first: Vec<&String> = ids.iter().filter(|id| seen.insert(*id)).collect();
        let want: Vec<&String> = committed[key].iter().collect();
        assert_eq!(first, want, "key {key}: every row once, in commit order");
    }
    assert_eq!(
        on_the_wire.len(),
        KEYS.len() + 1,
        "every key, the hot one too"
    );
    assert!(on_the_wire[HOT_KEY].len() >= HOT_ROWS, "every hot row");
    eprintln!(
        "{on_publish}: {total} rows, {records} records ({} re-sent after the kill)",
        records - total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_debezium_table_is_relayed_in_commit_order_through_a_leader_kill() {
    foreign_writer_relayed("mark").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_on_publish_relays_the_same_and_leaves_the_table_empty() {
    foreign_writer_relayed("delete").await;
}
