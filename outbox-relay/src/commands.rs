//! The relay's commands beside relaying: readying a foreign table
//! (`prepare`), and listing and retrying parked rows. Each opens a plain
//! connection with the relay's limits and checks the table first.

use secrecy::ExposeSecret;

use crate::store::{self, ParkedRow};
use crate::{RelayConfig, prepare};

/// Why a relay command (not the relay itself) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The database could not be reached.
    #[error("cannot connect to the outbox database: {0}")]
    Connect(#[from] platform_core::pg::PgError),
    /// A statement failed.
    #[error("outbox query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// The table is not ready for the mapping, or `prepare` refused it.
    #[error(transparent)]
    Check(#[from] prepare::CheckError),
}

/// Prepares the configured table for the mapping (see [`prepare`]):
/// reads the catalogue and decides the statements inside one transaction,
/// runs them there unless `dry_run` (which changes nothing), then checks the
/// table as the relay checks it at start-up. Returns the statements.
pub async fn prepare_table(
    config: &RelayConfig,
    dry_run: bool,
) -> Result<Vec<String>, CommandError> {
    let mapping = config.mapping();
    let mut client = store::plain_connection(
        config.database.database_url.expose_secret(),
        &config.limits(),
    )
    .await?;
    let transaction = client.transaction().await?;
    let statements = prepare::plan(&transaction, &config.table, &mapping).await?;
    if dry_run {
        return Ok(statements);
    }
    for statement in &statements {
        transaction.batch_execute(statement).await?;
    }
    transaction.commit().await?;
    prepare::check(&client, &config.table, &mapping).await?;
    Ok(statements)
}

/// The rows parked in the configured table, oldest first.
pub async fn parked_rows(config: &RelayConfig) -> Result<Vec<ParkedRow>, CommandError> {
    let client = store::plain_connection(
        config.database.database_url.expose_secret(),
        &config.limits(),
    )
    .await?;
    let statements = store::bind(&client, &config.table, &config.mapping()).await?;
    Ok(store::parked(&client, &statements).await?)
}

/// Puts parked rows back in line (`ids`, or all of them): the active relay
/// tries them at its next batch. Returns how many.
pub async fn retry_parked(config: &RelayConfig, ids: Option<&[i64]>) -> Result<u64, CommandError> {
    let client = store::plain_connection(
        config.database.database_url.expose_secret(),
        &config.limits(),
    )
    .await?;
    let statements = store::bind(&client, &config.table, &config.mapping()).await?;
    Ok(store::unpark(&client, &statements, ids).await?)
}
