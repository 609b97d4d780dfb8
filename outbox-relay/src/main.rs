//! `outbox-relay`: publishes one database's outbox table to Kafka.

use anyhow::Context;
use clap::Parser;
use outbox_relay::RelayConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform_core::telemetry::init();
    let config = RelayConfig::parse();
    let shutdown = platform_core::shutdown::on_signal();
    let relay = outbox_relay::Relay::new(config).context("outbox relay failed to start")?;
    relay.run(shutdown).await;
    Ok(())
}
