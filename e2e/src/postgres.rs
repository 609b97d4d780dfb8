//! Per-test databases on the test PostgreSQL server.

use tokio_postgres::{Client, NoTls};

use crate::required_env;

/// The server URL without a database, e.g. `postgres://mall@127.0.0.1:5433`.
pub fn server_url() -> String {
    required_env("MALL_TEST_POSTGRES_URL")
        .trim_end_matches('/')
        .to_owned()
}

/// Connects to `url`, failing loudly.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Creates an empty database and returns its URL.
pub async fn create_database(name: &str) -> String {
    let admin = connect(&format!("{}/postgres", server_url())).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    format!("{}/{name}", server_url())
}

/// Counts rows of `sql` (which must select one bigint).
pub async fn count(url: &str, sql: &str) -> i64 {
    connect(url).await.query_one(sql, &[]).await.unwrap().get(0)
}
