//! P3: the relay's lag, commit to broker acknowledgement, while the write
//! path runs at half of P1's rate. The order service runs as a process, the
//! relay in this process so every row's latency can be kept.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use clap::Parser as _;
use mall_testkit::settings::{brokers, relay_flags};
use outbox_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

use crate::acks::Acks;
use crate::fleet::{Fleet, Scope};
use crate::hist::Latencies;
use crate::load;

/// Lag percentiles and the rate they were taken at.
pub struct Lag {
    /// Offered orders per second.
    pub rate: f64,
    /// Commit → acknowledgement.
    pub latencies: Latencies,
}

/// Offers `rate` orders/s for `duration` and records every row's lag.
pub async fn measure(
    bin_dir: &Path,
    logs: &Path,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Lag> {
    let fleet = Fleet::start(bin_dir, logs, Scope::OrderOnly).await?;
    let relay = Relay::new(RelayConfig::try_parse_from(relay_flags(
        &fleet.urls[0],
        &brokers(),
    ))?)?;
    let (relay, acks) = Acks::attach(relay);
    let stats = relay.stats();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.child_token()));
    let clients: Vec<_> = (0..4).map(|_| fleet.order_client()).collect();
    // Until the relay leads and has published a first row, nothing is measured.
    load::place_one(&clients[0], 1).await?;
    while stats.published.get() == 0 {
        if running.is_finished() {
            bail!("the relay stopped");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    acks.start();
    let run = load::open_loop(&clients, &[1], rate, duration).await;
    let accepted = run.accepted.len();
    // Wait until every accepted order's row has been published.
    loop {
        let logged = acks.count(|_| true);
        if logged >= accepted {
            break;
        }
        if running.is_finished() {
            bail!("the relay stopped with {logged} of {accepted} rows published");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let _ = running.await;
    let mut latencies = Latencies::new();
    for secs in acks.take() {
        latencies.record_secs(secs);
    }
    Ok(Lag { rate, latencies })
}
