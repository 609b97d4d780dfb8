//! PostgreSQL pool and migrations.
//!
//! Modelled on crates.io: a diesel-async pool on deadpool whose `post_create`
//! hook sets `statement_timeout`, so a stuck query can never hold a connection
//! (and a Kafka partition) forever.

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{BuildError, Hook, HookError, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, PoolError as ManagerError};
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::EmbeddedMigrations;

/// The connection pool every service uses.
pub type PgPool = Pool<AsyncPgConnection>;

/// Error returned when no pooled connection can be had.
pub use diesel_async::pooled_connection::deadpool::PoolError;

/// Advisory lock key (two-int form) that serialises concurrent migration runs
/// of replicas starting at the same moment.
const MIGRATION_LOCK: (i32, i32) = (0x6d61_6c6c, 0);

/// Database set-up errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The pool could not be built.
    #[error("cannot build the database pool: {0}")]
    Build(#[from] BuildError),
    /// No connection could be had.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] DieselError),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migration(String),
}

/// Builds the pool and checks that one connection can be opened, so a wrong
/// `DATABASE_URL` fails at start-up rather than on the first request.
pub async fn connect(
    url: &str,
    max_size: usize,
    statement_timeout: Duration,
) -> Result<PgPool, DbError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    let timeout_ms = statement_timeout.as_millis();
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .post_create(Hook::async_fn(move |conn: &mut AsyncPgConnection, _| {
            Box::pin(async move {
                conn.batch_execute(&format!("SET statement_timeout = {timeout_ms}"))
                    .await
                    .map_err(|e| HookError::Backend(ManagerError::QueryError(e)))
            })
        }))
        .build()?;
    drop(
        pool.get()
            .await
            .map_err(|e| DbError::Connect(e.to_string()))?,
    );
    Ok(pool)
}

/// Applies the pending embedded migrations, holding an advisory lock so that
/// replicas starting together take turns.
pub async fn migrate(url: &str, migrations: EmbeddedMigrations) -> Result<(), DbError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::{Connection, RunQueryDsl};
        use diesel_migrations::MigrationHarness;

        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| DbError::Connect(e.to_string()))?;
        let (a, b) = MIGRATION_LOCK;
        diesel::sql_query(format!("SELECT pg_advisory_lock({a}, {b})")).execute(&mut conn)?;
        let applied = conn
            .run_pending_migrations(migrations)
            .map(|versions| versions.len())
            .map_err(|e| DbError::Migration(e.to_string()));
        diesel::sql_query(format!("SELECT pg_advisory_unlock({a}, {b})")).execute(&mut conn)?;
        let applied = applied?;
        tracing::info!(applied, "Database migrations are up to date.");
        Ok(())
    })
    .await
    .map_err(|e| DbError::Migration(format!("migration task failed: {e}")))?
}

/// Whether an error is worth retrying: lost connections, pool exhaustion,
/// serialization failures and timeouts, as opposed to bugs in a query.
pub fn is_transient(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(kind, info) => {
            matches!(
                kind,
                DatabaseErrorKind::SerializationFailure
                    | DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::UnableToSendCommand
            ) || info.message().contains("statement timeout")
                || info.message().contains("terminating connection")
        }
        DieselError::BrokenTransactionManager => true,
        _ => false,
    }
}

/// Turns a pool error into the diesel error space so callers handle one type.
pub fn pool_error(error: PoolError) -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::ClosedConnection,
        Box::new(format!("no database connection available: {error}")),
    )
}
