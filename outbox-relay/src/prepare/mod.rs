//! Making a table the relay does not own ready for it, once, without
//! breaking the application's `INSERT`s; and the start-up check that a
//! table is ready.
//!
//! `prepare` adds: an ordering column drawn from a sequence of its own by
//! a `BEFORE INSERT` row trigger and checked by a statement trigger under
//! transaction-scoped locks on the statement's keys, taken once each and in
//! one order (so for one key, its order is commit order, whoever writes;
//! [`triggers`]), the
//! creation time, the relay's published and parked columns, and the indexes
//! its queries use; nothing that wakes the relay (it polls). It reads the catalogue first ([`catalog`]), decides from what
//! it read alone ([`plan`]), and refuses before changing anything what it
//! cannot vouch for. The start-up check ([`readiness`]) reads the same
//! facts and refuses a relay whose mapping the triggers do not implement.

pub mod catalog;
pub mod plan;
pub mod readiness;
pub mod record;
pub mod triggers;

use tokio_postgres::{Client, GenericClient};

use crate::mapping::sql::Payload;
use crate::mapping::{Mapping, Qualified, TableName};

/// Why a table is not ready, or could not be looked at.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Something the mapping needs is missing or differs.
    #[error("{0}")]
    NotReady(String),
    /// The catalogue could not be read.
    #[error("cannot inspect the outbox table: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// Checks that `table` is ready for `mapping`: returns the table as the
/// catalogue found it (with its schema) and how its payload is read.
pub async fn check(
    client: &Client,
    table: &TableName,
    mapping: &Mapping,
) -> Result<(Qualified, Payload), CheckError> {
    let facts = catalog::inspect(client, table, &mapping.order).await?;
    let payload = readiness::judge(mapping, facts.as_ref(), &table.to_string())
        .map_err(CheckError::NotReady)?;
    let facts = facts.unwrap_or_else(|| unreachable!("judge found the table"));
    Ok((facts.table, payload))
}

/// The statements that would prepare `table` for `mapping` as it is now,
/// or why nothing may be changed (see [`plan::statements`]).
pub async fn plan(
    client: &impl GenericClient,
    table: &TableName,
    mapping: &Mapping,
) -> Result<Vec<String>, CheckError> {
    let facts = catalog::inspect(client, table, &mapping.order).await?;
    plan::statements(mapping, facts.as_ref(), &table.to_string()).map_err(CheckError::NotReady)
}
