//! The database phase of start-up: migrations, then three pools, so heavy
//! API traffic (or a lock it waits on) takes no connection the saga or the
//! health probe needs.

use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use super::error::AppError;
use super::patience::patiently;
use super::spec::ServiceSpec;
use crate::boot::config::ServiceArgs;
use crate::store::db::{self, PgPool};

/// The service's connections, by who uses them.
pub(super) struct Pools {
    /// gRPC calls (`DB_POOL_SIZE`).
    pub api: PgPool,
    /// The consumer's lanes and the janitors (`DB_CONSUMER_POOL_SIZE`).
    pub consumer: PgPool,
    /// The health probe: one connection.
    pub probe: PgPool,
}

/// Applies the service's migrations and opens its pools, waiting for the
/// database for up to `STARTUP_TIMEOUT_SECS`.
pub(super) async fn prepare(
    spec: &ServiceSpec,
    args: &ServiceArgs,
    shutdown: &CancellationToken,
) -> Result<Pools, AppError> {
    let patience = args.startup_timeout;
    let url = args.database.database_url.expose_secret();
    patiently("migrate the database", patience, shutdown, || {
        db::migrate(url, (spec.migrations)())
    })
    .await?;
    let open = async |size: usize| {
        patiently("connect to the database", patience, shutdown, || {
            db::connect(url, size, args.db_statement_timeout, args.db_pool_timeout)
        })
        .await
    };
    Ok(Pools {
        api: open(args.db_pool_size).await?,
        consumer: open(args.db_consumer_pool_size).await?,
        probe: open(1).await?,
    })
}
