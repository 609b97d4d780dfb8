//! `inventory-service`: owns products and stock; takes and gives back stock for the saga.

use anyhow::Context;
use clap::Parser;
use mall_platform::config::ServiceArgs;

/// Command line of the inventory service.
#[derive(Debug, Parser)]
#[command(version, about = "The inventory service of the 12st Mall saga")]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mall_platform::telemetry::init();
    let cli = Cli::parse();
    let shutdown = mall_platform::shutdown::on_signal();
    let running = inventory_service::start(&cli.service, shutdown)
        .await
        .context("inventory service failed to start")?;
    running.wait().await.context("inventory service failed")
}
