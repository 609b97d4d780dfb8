//! R1: what a consumer group rebalance costs the saga, for each group
//! protocol: the saga latency of orders placed while a delivery replica
//! joins the group, and while it leaves again (SIGTERM), at a steady rate.
//! With `classic` every member gives up every partition until the group
//! has re-formed; with `consumer` (KIP-848) only the partitions that move
//! pause.

use std::path::Path;
use std::time::Duration;

use platform_service::consumer::GroupProtocol;

use crate::saga::{Change, Saga};

/// R1 for one protocol.
pub struct Rebalance {
    /// The protocol.
    pub protocol: &'static str,
    /// Saga p50 and max (ms) while a member joins.
    pub join: (f64, f64),
    /// Saga p50 and max (ms) while a member leaves.
    pub leave: (f64, f64),
    /// Orders measured in each phase.
    pub samples: u64,
}

/// R1 at `rate` orders/s, `duration` per phase, on a fresh mall whose
/// services speak `protocol`.
pub async fn measure(
    bin_dir: &Path,
    logs: &Path,
    protocol: GroupProtocol,
    rate: f64,
    duration: Duration,
    shape: crate::saga::Shape,
) -> anyhow::Result<Rebalance> {
    let name: &'static str = match protocol {
        GroupProtocol::Classic => "classic",
        GroupProtocol::Consumer => "consumer",
    };
    let mut saga = Saga::start_with(
        bin_dir,
        logs,
        shape,
        &[("KAFKA_GROUP_PROTOCOL", name.to_owned())],
    )
    .await?;
    let (joined, replica) = saga.latency_across(rate, duration, Change::Join).await?;
    let replica = replica.unwrap_or_default();
    let (left, _) = saga
        .latency_across(rate, duration, Change::Leave(replica))
        .await?;
    Ok(Rebalance {
        protocol: name,
        join: (joined.saga.ms(0.5), joined.saga.ms(1.0)),
        leave: (left.saga.ms(0.5), left.saga.ms(1.0)),
        samples: joined.saga.count().min(left.saga.count()),
    })
}
