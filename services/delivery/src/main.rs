//! `delivery-service`: one delivery per order, started or failed by the saga.

use anyhow::Context;
use clap::Parser;
use mall_platform::config::ServiceArgs;

/// Command line of the delivery service.
#[derive(Debug, Parser)]
#[command(version, about = "The delivery service of the 12st Mall saga")]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mall_platform::telemetry::init();
    let cli = Cli::parse();
    let shutdown = mall_platform::shutdown::on_signal();
    let running = delivery_service::start(&cli.service, shutdown)
        .await
        .context("delivery service failed to start")?;
    running.wait().await.context("delivery service failed")
}
