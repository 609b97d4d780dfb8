//! `order-service`: places and cancels orders; where the saga starts.

use anyhow::Context;
use clap::Parser;
use mall_platform::config::ServiceArgs;

/// Command line of the order service.
#[derive(Debug, Parser)]
#[command(version, about = "The order service of the 12st Mall saga")]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mall_platform::telemetry::init();
    let cli = Cli::parse();
    let shutdown = mall_platform::shutdown::on_signal();
    let running = order_service::start(&cli.service, shutdown)
        .await
        .context("order service failed to start")?;
    running.wait().await.context("order service failed")
}
