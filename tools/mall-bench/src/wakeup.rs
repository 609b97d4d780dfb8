//! P11: what the relay's wake-up costs the writers. pgbench runs the order
//! handler's write transaction (P1's) on a fresh order database, with as
//! many clients as P1, in rounds that alternate the sides:
//! - **with** the relay leading on that database, woken as it ships (it
//!   polls; nothing is installed on the writers' side);
//! - **without** a relay;
//! - for reference, **NOTIFY**: no relay, and the statement trigger that
//!   woke the relay before (`pg_notify` at every writing commit).
//!
//! The rows pgbench writes are marked published as they are written, so
//! the relay only polls: the figure is its wake-up, not its publishing (P2
//! and P3 measure that).

use std::path::Path;
use std::time::Duration;

use clap::Parser as _;
use mall_testkit::settings::{brokers, relay_flags};
use outbox_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, Scope};
use crate::rounds::median;
use crate::write_path::{place_order_sql, run_pgbench};

/// The older relay's wake-up, as its migration installed it.
const NOTIFY_TRIGGER: &str = "
    CREATE FUNCTION bench_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('outbox', '');
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER bench_outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION bench_outbox_notify();";

/// Transactions/s of each side, one per round.
pub struct Wakeup {
    /// With the relay polling.
    pub with: Vec<f64>,
    /// Without a relay.
    pub without: Vec<f64>,
    /// With the NOTIFY trigger of older relays, no relay.
    pub notify: Vec<f64>,
}

impl Wakeup {
    /// With over without, medians.
    pub fn ratio(&self) -> f64 {
        let without = median(&self.without);
        if without > 0.0 {
            median(&self.with) / without
        } else {
            0.0
        }
    }
}

/// Runs `rounds` rounds of the three sides, `duration` each.
pub async fn measure(
    bin_dir: &Path,
    logs: &Path,
    pgbench: &str,
    clients: usize,
    duration: Duration,
    rounds: usize,
) -> anyhow::Result<Wakeup> {
    let fleet = Fleet::start(bin_dir, logs, Scope::OrderOnly).await?;
    let url = &fleet.urls[0];
    let sql = place_order_sql(true);
    let file = logs.join("place-order-published.sql");
    let admin = mall_testkit::postgres::connect(url).await;
    let mut figures = Wakeup {
        with: Vec::new(),
        without: Vec::new(),
        notify: Vec::new(),
    };
    for round in 0..rounds {
        // Alternate which side goes first, so neither always meets a warmer
        // (or more bloated) table.
        let with_first = round % 2 == 0;
        for with_relay in [with_first, !with_first] {
            if with_relay {
                let relay = Relay::new(RelayConfig::try_parse_from(relay_flags(url, &brokers()))?)?;
                let stats = relay.stats();
                let stop = CancellationToken::new();
                let running = tokio::spawn(relay.run(stop.child_token()));
                while stats.leader.get() == 0 {
                    anyhow::ensure!(!running.is_finished(), "the relay stopped");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                figures
                    .with
                    .push(run_pgbench(pgbench, url, &file, &sql, clients, duration)?);
                stop.cancel();
                let _ = running.await;
            } else {
                figures
                    .without
                    .push(run_pgbench(pgbench, url, &file, &sql, clients, duration)?);
            }
        }
        admin.batch_execute(NOTIFY_TRIGGER).await?;
        figures
            .notify
            .push(run_pgbench(pgbench, url, &file, &sql, clients, duration)?);
        admin
            .batch_execute(
                "DROP TRIGGER bench_outbox_notify ON outbox; DROP FUNCTION bench_outbox_notify();",
            )
            .await?;
    }
    Ok(figures)
}
