//! Per-test databases on the test PostgreSQL server.

use tokio_postgres::{Client, NoTls};

use crate::env::required_env;

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

/// A database made for one test; dropped when the guard goes, whether the
/// test passed or panicked (as crates.io's `TestDatabase`).
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
}

impl TestDatabase {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl std::ops::Deref for TestDatabase {
    type Target = str;

    fn deref(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = format!("{}/postgres", server_url());
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop is synchronous and may run inside a runtime: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin_url, NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                client.batch_execute(&sql).await.map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// Creates an empty database, dropped again when the returned guard is.
pub async fn create_database(name: &str) -> TestDatabase {
    let admin = connect(&format!("{}/postgres", server_url())).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    TestDatabase {
        url: format!("{}/{name}", server_url()),
        name: name.to_owned(),
    }
}

/// Counts rows of `sql` (which must select one bigint).
pub async fn count(url: &str, sql: &str) -> i64 {
    connect(url).await.query_one(sql, &[]).await.unwrap().get(0)
}

/// The database name at the end of a URL made by [`create_database`].
pub fn database_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Puts a database in or out of read-only mode the way a managed
/// PostgreSQL looks between losing its primary and promoting a replica: new
/// transactions are read-only (SQLSTATE 25006 on any write), and every
/// existing session is ended so none keeps the old mode.
pub async fn set_read_only(url: &str, read_only: bool) {
    let name = database_name(url);
    let admin = connect(&format!("{}/postgres", server_url())).await;
    switch_read_only(&admin, name, read_only)
        .await
        .unwrap_or_else(|e| panic!("cannot switch {name} read-only {read_only}: {e}"));
}

/// What [`set_read_only`] does, through `admin` (a session on another
/// database of the server) and with its error returned: for the fault run,
/// which retries while PostgreSQL restarts.
pub async fn switch_read_only(
    admin: &Client,
    database: &str,
    read_only: bool,
) -> Result<(), tokio_postgres::Error> {
    let mode = if read_only { "on" } else { "off" };
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {database} SET default_transaction_read_only = {mode}"
        ))
        .await?;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await?;
    Ok(())
}

/// Makes a database unreachable the way an outage looks to its clients:
/// new connections are refused and every existing session is ended; or
/// reachable again.
pub async fn set_reachable(url: &str, reachable: bool) {
    let name = database_name(url);
    let admin = connect(&format!("{}/postgres", server_url())).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {reachable}"
        ))
        .await
        .unwrap_or_else(|e| panic!("cannot set ALLOW_CONNECTIONS {reachable} on {name}: {e}"));
    if !reachable {
        end_sessions(&admin, name).await;
    }
}

/// Ends every session of database `name` but `admin`'s own.
async fn end_sessions(admin: &Client, name: &str) {
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("cannot end the sessions of {name}: {e}"));
}
