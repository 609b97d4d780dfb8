//! `outbox-relay prepare` on a table as a new team has it: a database the
//! mall never touched, Debezium's table in a schema of its own, an owner
//! who prepares it and an application role with only `INSERT` and
//! `SELECT` that writes, qualified and unqualified, before and after. Then
//! what ordering cannot rest on is refused, by `prepare` and by the relay at
//! start (a relay mapping another key, a `CACHE 50` sequence, a sequence
//! squatting the name prepare would use, a trigger disabled or fired only
//! on replicas), and one row that cannot be read (a NULL time) is parked
//! while the later rows flow, keyed by a column named `user`.

use std::time::Duration;

use mall_e2e::kafka::read_topic;
use mall_e2e::mall::brokers;
use mall_e2e::{postgres, unique_name, wait_for};
use outbox_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);

/// Debezium's table, a nullable time column, and a column named `user`.
const TABLE: &str = "
    CREATE TABLE shop.outboxevent (
        id            uuid PRIMARY KEY,
        aggregatetype varchar(255) NOT NULL,
        aggregateid   varchar(255) NOT NULL,
        type          varchar(255) NOT NULL,
        payload       bytea,
        created       timestamptz,
        \"user\"      text
    )";

/// What the application writes: one row, all it has the right to.
const INSERT: &str = "INSERT INTO {table} (id, aggregatetype, aggregateid, type, payload, created, \"user\") \
                      VALUES (gen_random_uuid(), $1, $2, 'Created', $3, $4, $5)";

/// `url` with `role` as its user (the test server trusts local roles).
fn as_role(url: &str, role: &str) -> String {
    let with_role = url.replacen("//mall@", &format!("//{role}@"), 1);
    assert_ne!(
        with_role, url,
        "the test server's URL names the user mall: {url}"
    );
    with_role
}

fn config(url: &str) -> RelayConfig {
    let mut flags = mall_testkit::settings::relay_flags(url, &brokers());
    flags.extend(
        [
            "--preset",
            "debezium",
            "--table",
            "shop.outboxevent",
            "--map-key",
            "user",
            "--map-time",
            "created",
            "--park-after-failures",
            "1",
        ]
        .map(str::to_owned),
    );
    <RelayConfig as clap::Parser>::try_parse_from(flags).expect("relay flags")
}

/// What a relay of `config` says when it refuses to start.
async fn refused_start(config: RelayConfig) -> String {
    Relay::new(config)
        .expect("relay")
        .run(CancellationToken::new())
        .await
        .expect_err("the relay refuses to start")
        .0
}

/// The application's writes, as `client` (its session's `search_path`
/// decides whether the bare name resolves).
async fn write(client: &tokio_postgres::Client, table: &str, kind: &str, user: &str) {
    let sql = INSERT.replace("{table}", table);
    let now = Some(std::time::SystemTime::now());
    client
        .execute(&sql, &[&kind, &user, &vec![1_u8, 2, 3], &now, &user])
        .await
        .unwrap_or_else(|error| panic!("the application's INSERT into {table}: {error:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_keeps_a_least_privilege_writer_writing_and_refuses_what_breaks_order() {
    platform_service::telemetry::init();
    let name = unique_name("prep");
    let database = postgres::create_database(&name).await;
    let (owner, app) = (format!("{name}_owner"), format!("{name}_app"));
    let admin = postgres::connect(database.url()).await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {owner} LOGIN; CREATE ROLE {app} LOGIN;
             ALTER DATABASE {name} OWNER TO {owner};"
        ))
        .await
        .expect("roles");
    let owner_url = as_role(database.url(), &owner);
    let as_owner = postgres::connect(&owner_url).await;
    as_owner
        .batch_execute(&format!(
            "CREATE SCHEMA shop; {TABLE};
             GRANT USAGE ON SCHEMA shop TO {app};
             GRANT INSERT, SELECT ON shop.outboxevent TO {app};"
        ))
        .await
        .expect("the team's table");
    let app_url = as_role(database.url(), &app);
    let qualified = postgres::connect(&app_url).await;
    let unqualified =
        postgres::connect(&format!("{app_url}?options=-c%20search_path%3Dshop")).await;
    let kind = format!("{name}order");
    let topic = format!("outbox.event.{kind}");
    platform_service::kafka::ensure_topics(
        &brokers(),
        std::slice::from_ref(&topic),
        1,
        1,
        platform_service::kafka::Retention::BrokerDefault,
        None,
    )
    .await
    .expect("topic");

    // Before prepare, as the application writes.
    write(&qualified, "shop.outboxevent", &kind, "before-1").await;
    write(&unqualified, "outboxevent", &kind, "before-2").await;

    // A sequence squatting the name prepare would give its own is refused,
    // on a table of the same layout, before anything is changed.
    as_owner
        .batch_execute(
            "CREATE TABLE shop.squatted (LIKE shop.outboxevent);
             CREATE SEQUENCE shop.squatted_relay_seq CACHE 50;",
        )
        .await
        .expect("a squatted name");
    let mut squatted = config(&owner_url);
    squatted.table = outbox_relay::mapping::TableName::parse("shop.squatted").expect("name");
    let refused = outbox_relay::prepare_table(&squatted, false)
        .await
        .expect_err("a sequence of that name exists");
    assert!(refused.to_string().contains("already exists"), "{refused}");

    // The owner prepares; twice changes nothing more.
    for _ in 0..2 {
        outbox_relay::prepare_table(&config(&owner_url), false)
            .await
            .expect("prepare by the table's owner");
    }

    // After prepare: the same role, the same privileges, either name, one
    // row or several at once.
    write(&qualified, "shop.outboxevent", &kind, "after-1").await;
    write(&unqualified, "outboxevent", &kind, "after-2").await;
    qualified
        .execute(
            "INSERT INTO shop.outboxevent (id, aggregatetype, aggregateid, type, created, \"user\") \
             SELECT gen_random_uuid(), $1, 'a', 'Bulk', now(), 'bulk-' || g \
             FROM generate_series(1, 3) g",
            &[&kind],
        )
        .await
        .expect("a multi-row INSERT by the application");
    // Nothing on the table notifies, so a transaction that wrote it can be
    // prepared for two-phase commit.
    qualified.batch_execute("BEGIN").await.expect("begin");
    write(&qualified, "shop.outboxevent", &kind, "two-phase").await;
    let xid = format!("{name}_2pc");
    qualified
        .batch_execute(&format!("PREPARE TRANSACTION '{xid}'"))
        .await
        .expect("PREPARE TRANSACTION on a prepared table (max_prepared_transactions > 0)");
    qualified
        .batch_execute(&format!("COMMIT PREPARED '{xid}'"))
        .await
        .expect("commit the prepared transaction");

    // A relay that maps another key than the trigger locks is refused.
    let mut other_key = config(&owner_url);
    other_key.mapping.key = Some("aggregateid".to_owned());
    let why = refused_start(other_key).await;
    assert!(why.contains("locks key column user"), "{why}");

    // A sequence that hands out numbers out of commit order is refused, by
    // the relay and by prepare.
    as_owner
        .batch_execute("ALTER SEQUENCE shop.outboxevent_relay_seq CACHE 50")
        .await
        .expect("cache");
    let why = refused_start(config(&owner_url)).await;
    assert!(why.contains("CACHE 50"), "{why}");
    let refused = outbox_relay::prepare_table(&config(&owner_url), false)
        .await
        .expect_err("CACHE 50");
    assert!(refused.to_string().contains("CACHE 1"), "{refused}");
    as_owner
        .batch_execute("ALTER SEQUENCE shop.outboxevent_relay_seq CACHE 1")
        .await
        .expect("cache 1");

    // A trigger that fires only on replicas, or not at all, is refused;
    // prepare again puts it back.
    for (how, says) in [
        ("ENABLE REPLICA", "only for replication sessions"),
        ("DISABLE", "is disabled"),
    ] {
        as_owner
            .batch_execute(&format!(
                "ALTER TABLE shop.outboxevent {how} TRIGGER relay_order"
            ))
            .await
            .expect("trigger");
        let why = refused_start(config(&owner_url)).await;
        assert!(why.contains(says), "{why}");
        outbox_relay::prepare_table(&config(&owner_url), false)
            .await
            .expect("prepare again");
    }

    // One row that cannot be read (no time) is parked; the later rows flow.
    qualified
        .execute(
            "INSERT INTO shop.outboxevent (id, aggregatetype, aggregateid, type, \"user\") \
             VALUES (gen_random_uuid(), $1, 'z', 'NoTime', 'timeless')",
            &[&kind],
        )
        .await
        .expect("a row without a time");
    write(&qualified, "shop.outboxevent", &kind, "later").await;
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(
        Relay::new(config(&owner_url))
            .expect("relay")
            .run(shutdown.clone()),
    );
    let parked = wait_for("the timeless row to be parked", LIMIT, || async {
        let parked = outbox_relay::parked_rows(&config(&owner_url))
            .await
            .expect("parked rows");
        (!parked.is_empty()).then_some(parked)
    })
    .await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].key, "timeless");
    assert!(
        parked[0].reason.contains("time column created is NULL"),
        "{}",
        parked[0].reason
    );
    let waiting = "SELECT count(*) FROM shop.outboxevent \
                   WHERE relay_published_at IS NULL AND relay_parked_at IS NULL";
    wait_for("every other row to be published", LIMIT, || async {
        (postgres::count(database.url(), waiting).await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    relay
        .await
        .expect("relay task")
        .expect("relay stops cleanly");

    // Keys come from the column `user`, not from `current_user`; every
    // row but the parked one went out (at least once).
    let records = read_topic(&brokers(), &topic, 1, 9, LIMIT).await;
    let mut keys: Vec<&str> = records.iter().map(|record| record.key_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys,
        [
            "after-1",
            "after-2",
            "before-1",
            "before-2",
            "bulk-1",
            "bulk-2",
            "bulk-3",
            "later",
            "two-phase",
        ]
    );
}
