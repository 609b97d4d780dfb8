//! PostgreSQL pool and migrations.
//!
//! Modelled on crates.io: a diesel-async pool on deadpool whose connections
//! set `statement_timeout`, so a stuck query can never hold a connection (and
//! a Kafka partition) forever, and the keepalive limits of [`platform_core::pg`], so a
//! partition cannot either. Failures are classified by SQLSTATE class
//! ([`classify`]).

use std::time::Duration;

use diesel::ConnectionError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{BuildError, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
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
/// of [`platform_core::pg`] on both ends, and `statement_timeout`.
pub async fn connect(
    url: &str,
    max_size: usize,
    statement_timeout: Duration,
    checkout_timeout: Duration,
) -> Result<PgPool, DbError> {
    let timeout_ms = statement_timeout.as_millis();
    let mut config = ManagerConfig::default();
    // A checkout hands out a pooled connection without a test query (a
    // round trip on every call and every consumer run): one the server
    // closed is dropped as broken, and a statement on one that died since
    // fails like any database error (retried, or UNAVAILABLE).
    config.recycling_method = RecyclingMethod::Fast;
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
    let bad =
        |e: &dyn std::error::Error| ConnectionError::BadConnection(platform_core::pg::chain(e));
    let (mut pg, tls) = platform_core::pg::config(&url).map_err(|e| bad(&e))?;
    if let Some(timeout_ms) = statement_timeout_ms {
        let options = format!(
            "{} -c statement_timeout={timeout_ms}",
            pg.get_options().unwrap_or_default()
        );
        pg.options(&options);
    }
    let connector = platform_core::pg_tls::connector(&tls).map_err(|e| bad(&e))?;
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
/// Decided by the SQLSTATE the server sent (diesel 2.4 hands it over as
/// [`DatabaseErrorInformation::sqlstate`]), never by message text.
/// docs/guarantees.md has the whole table.
///
/// [`DatabaseErrorInformation::sqlstate`]: diesel::result::DatabaseErrorInformation::sqlstate
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database, the connection or the pool is unwell: read-only during a
    /// failover (25006), a deadlock (40P01) or serialization failure (40001),
    /// a lock or statement timeout (55P03, 57014), too many connections
    /// (53300), a full disk (53100), an administrator's shutdown (57P01), a
    /// lost connection (08xxx, or no code at all), and every code not listed
    /// as permanent. Wait and try again, for as long as it takes.
    Transient,
    /// The data itself is wrong: class 22 (data exception: a NUL byte or an
    /// invalid encoding, a number out of range, text too long for its
    /// column) or class 23 (integrity: unique, foreign key, not-null, check,
    /// exclusion). No retry can change that.
    Permanent,
}

/// SQLSTATE classes whose errors no retry can change.
const PERMANENT_CLASSES: [&str; 2] = ["22", "23"];

/// Classifies a diesel error; see [`Failure`].
pub fn classify(error: &DieselError) -> Failure {
    let DieselError::DatabaseError(kind, info) = error else {
        return Failure::Transient;
    };
    match info.sqlstate() {
        Some(code) if PERMANENT_CLASSES.contains(&code.class().as_str()) => Failure::Permanent,
        Some(_) => Failure::Transient,
        // No code: a lost connection or an error made on this side; the
        // kinds diesel names for class 23 are the only permanent ones.
        None => match kind {
            DatabaseErrorKind::UniqueViolation
            | DatabaseErrorKind::ForeignKeyViolation
            | DatabaseErrorKind::NotNullViolation
            | DatabaseErrorKind::CheckViolation
            | DatabaseErrorKind::RestrictViolation
            | DatabaseErrorKind::ExclusionViolation => Failure::Permanent,
            _ => Failure::Transient,
        },
    }
}

/// The SQLSTATE of a database error, when the server sent one (for logs).
pub fn sqlstate(error: &DieselError) -> Option<String> {
    match error {
        DieselError::DatabaseError(_, info) => info.sqlstate().map(|code| code.to_string()),
        _ => None,
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
        let unnamed = DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(String::from("invalid byte sequence")),
        );
        assert_eq!(classify(&unnamed), Failure::Transient);
        assert_eq!(
            classify(&DieselError::BrokenTransactionManager),
            Failure::Transient
        );
        assert!(is_transient(&pool_error_from_text("timed out")));
    }

    /// What the server sends: a message and a SQLSTATE.
    struct Sent(&'static str);

    impl diesel::result::DatabaseErrorInformation for Sent {
        fn message(&self) -> &str {
            "whatever the server says"
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
        fn sqlstate(&self) -> Option<diesel::result::SqlState> {
            self.0.parse().ok()
        }
    }

    fn sent(code: &'static str) -> DieselError {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(Sent(code)))
    }

    #[test]
    fn the_sqlstate_class_decides() {
        // Class 22: a NUL byte (22021), a number out of range (22003), text
        // too long (22001); class 23: exclusion and restrict, which diesel
        // does not name.
        for code in [
            "22021", "22003", "22001", "22P02", "23P01", "23001", "23505",
        ] {
            assert_eq!(classify(&sent(code)), Failure::Permanent, "{code}");
        }
        for code in [
            "25006", "40001", "40P01", "53300", "53100", "55P03", "57014", "57P01", "08006",
            "42501", "XX000",
        ] {
            assert_eq!(classify(&sent(code)), Failure::Transient, "{code}");
        }
        assert_eq!(sqlstate(&sent("22021")).as_deref(), Some("22021"));
        assert_eq!(sqlstate(&DieselError::NotFound), None);
    }

    fn pool_error_from_text(text: &str) -> DieselError {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new(text.to_owned()),
        )
    }
}
