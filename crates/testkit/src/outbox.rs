//! Bare outbox databases for relay tests: the schema, a topic, rows written
//! as any writer would, and the topic read back per key.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Client;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

use crate::env::unique_name;
use crate::postgres::{self, TestDatabase};
use crate::settings::{PARTITIONS, brokers};
use crate::topics::read_topic;

/// The outbox and inbox schema every service shares, and nothing else.
const OUTBOX_SCHEMA: EmbeddedMigrations = embed_migrations!("../../migrations/shared");

/// An empty database with the outbox schema and a topic to relay to;
/// returns (the database, topic).
pub async fn outbox_database(prefix: &str) -> (TestDatabase, String) {
    platform_core::telemetry::init();
    let name = unique_name(prefix);
    let url = postgres::create_database(&name).await;
    migrate_outbox(&url).await;
    let topic = format!("{name}.events");
    platform_core::kafka::ensure_topics(
        &brokers(),
        std::slice::from_ref(&topic),
        PARTITIONS,
        1,
        platform_core::kafka::Retention::BrokerDefault,
        None,
    )
    .await
    .expect("topic");
    (url, topic)
}

/// Gives the database at `url` the outbox schema (on any server, e.g. the
/// benchmark's second one), failing loudly.
pub async fn migrate_outbox(url: &str) {
    platform_service::db::migrate(url, OUTBOX_SCHEMA)
        .await
        .unwrap_or_else(|e| panic!("cannot give {url} the outbox schema: {e}"));
}

/// Outbox rows of the database at `url` not published yet.
pub async fn unpublished(url: &str) -> i64 {
    postgres::count(
        url,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
    )
    .await
}

/// Inserts one outbox row for `key` with `payload`, in whatever transaction
/// `client` is in; takes no lock of its own, as a writer that knows nothing
/// of the relay would.
pub async fn insert_row(client: &Client, topic: &str, key: &str, payload: &str) {
    client
        .execute(
            "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload) \
             VALUES (gen_random_uuid(), $1, $2, 'test.Seq', '/test', $2, $3)",
            &[&topic, &key, &payload.as_bytes()],
        )
        .await
        .expect("insert outbox row");
}

/// Reads `topic` until `at_least` records arrived; returns each key's
/// payloads in the order they are on the topic, duplicates included.
pub async fn payloads_per_key(topic: &str, at_least: usize) -> HashMap<String, Vec<String>> {
    let records = read_topic(
        &brokers(),
        topic,
        PARTITIONS,
        at_least,
        Duration::from_secs(60),
    )
    .await;
    let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
    for record in &records {
        let payload = String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default());
        per_key
            .entry(record.key_str().to_owned())
            .or_default()
            .push(payload.into_owned());
    }
    per_key
}
