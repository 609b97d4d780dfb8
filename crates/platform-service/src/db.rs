//! PostgreSQL pool and migrations.
//!
//! Modelled on crates.io: a diesel-async pool on deadpool whose connections
//! set `statement_timeout`, so a stuck query can never hold a connection (and
//! a Kafka partition) forever, and the keepalive limits of [`crate::pg`], so a
//! partition cannot either. Failures are classified by SQLSTATE class
//! ([`classify`]).

use std::time::Duration;

use diesel::ConnectionError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{BuildError, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
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
///
/// Every pooled connection carries the keepalive and TCP user timeout limits
/// of [`crate::pg`] on both ends, and `statement_timeout`.
pub async fn connect(
    url: &str,
    max_size: usize,
    statement_timeout: Duration,
    checkout_timeout: Duration,
) -> Result<PgPool, DbError> {
    let timeout_ms = statement_timeout.as_millis();
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |url| Box::pin(open(url.to_owned(), Some(timeout_ms))));
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    // A checkout that finds every connection busy (or cannot make a new
    // one) gives up after `checkout_timeout`, so a call answers UNAVAILABLE
    // instead of waiting forever.
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(checkout_timeout))
        .create_timeout(Some(checkout_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()?;
    drop(
        pool.get()
            .await
            .map_err(|e| DbError::Connect(e.to_string()))?,
    );
    Ok(pool)
}

/// One connection with the dead-peer limits, the URL's TLS mode and, when
/// given, a statement timeout in milliseconds.
async fn open(
    url: String,
    statement_timeout_ms: Option<u128>,
) -> diesel::ConnectionResult<AsyncPgConnection> {
    let bad = |e: &dyn std::error::Error| ConnectionError::BadConnection(crate::pg::chain(e));
    let (mut pg, tls) = crate::pg::config(&url).map_err(|e| bad(&e))?;
    if let Some(timeout_ms) = statement_timeout_ms {
        let options = format!(
            "{} -c statement_timeout={timeout_ms}",
            pg.get_options().unwrap_or_default()
        );
        pg.options(&options);
    }
    let connector = crate::pg_tls::connector(&tls).map_err(|e| bad(&e))?;
    let (client, connection) = pg.connect(connector).await.map_err(|e| bad(&e))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// Applies the pending embedded migrations, holding an advisory lock so that
/// replicas starting together take turns.
pub async fn migrate(url: &str, migrations: EmbeddedMigrations) -> Result<(), DbError> {
    let conn = open(url.to_owned(), None)
        .await
        .map_err(|e| DbError::Connect(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        use diesel::RunQueryDsl;
        use diesel_migrations::MigrationHarness;

        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
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

/// What a failed database call means for the work that hit it.
///
/// Decided by SQLSTATE class, never by message text. diesel-async keeps the
/// SQLSTATE to itself except for the class 23 codes, which it turns into
/// their own `DatabaseErrorKind`s; everything it cannot name is, by the rule
/// below, a reason to wait. docs/guarantees.md has the whole table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database, the connection or the pool is unwell: read-only during a
    /// failover (25006), a deadlock (40P01) or serialization failure (40001),
    /// a lock or statement timeout (55P03, 57014), too many connections
    /// (53300), a full disk (53100), an administrator's shutdown (57P01), a
    /// lost connection (08xxx), and every code not listed as permanent. Wait
    /// and try again, for as long as it takes.
    Transient,
    /// The data itself breaks a rule of the schema (class 23: unique, foreign
    /// key, not-null, check, exclusion). No retry can change that.
    Permanent,
}

/// Classifies a diesel error; see [`Failure`].
pub fn classify(error: &DieselError) -> Failure {
    match error {
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation
            | DatabaseErrorKind::ForeignKeyViolation
            | DatabaseErrorKind::NotNullViolation
            | DatabaseErrorKind::CheckViolation
            | DatabaseErrorKind::RestrictViolation
            | DatabaseErrorKind::ExclusionViolation,
            _,
        ) => Failure::Permanent,
        _ => Failure::Transient,
    }
}

/// Whether an error is worth retrying (see [`classify`]).
pub fn is_transient(error: &DieselError) -> bool {
    classify(error) == Failure::Transient
}

/// Turns a pool error into the diesel error space so callers handle one type.
pub fn pool_error(error: PoolError) -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::ClosedConnection,
        Box::new(format!("no database connection available: {error}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(kind: DatabaseErrorKind) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(String::from("some server text")))
    }

    #[test]
    fn integrity_violations_are_permanent() {
        for kind in [
            DatabaseErrorKind::UniqueViolation,
            DatabaseErrorKind::ForeignKeyViolation,
            DatabaseErrorKind::NotNullViolation,
            DatabaseErrorKind::CheckViolation,
            DatabaseErrorKind::RestrictViolation,
            DatabaseErrorKind::ExclusionViolation,
        ] {
            assert_eq!(classify(&database(kind)), Failure::Permanent, "{kind:?}");
        }
    }

    #[test]
    fn everything_else_waits_whatever_the_message_says() {
        for kind in [
            DatabaseErrorKind::ReadOnlyTransaction,
            DatabaseErrorKind::SerializationFailure,
            DatabaseErrorKind::ClosedConnection,
            DatabaseErrorKind::UnableToSendCommand,
        ] {
            assert_eq!(classify(&database(kind)), Failure::Transient, "{kind:?}");
        }
        // Codes diesel-async does not name (40P01, 55P03, 57014, 53300, ...)
        // arrive as an unnamed kind: they wait too.
        let unnamed = DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(String::from("deadlock detected")),
        );
        assert_eq!(classify(&unnamed), Failure::Transient);
        assert_eq!(
            classify(&DieselError::BrokenTransactionManager),
            Failure::Transient
        );
        assert!(is_transient(&pool_error_from_text("timed out")));
    }

    fn pool_error_from_text(text: &str) -> DieselError {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new(text.to_owned()),
        )
    }
}
