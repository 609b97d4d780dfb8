//! `outbox-relay`: publishes one database's outbox table to Kafka.

use anyhow::Context;
use clap::Parser;
use outbox_relay::RelayConfig;
use platform_core::metrics::{self, Registry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform_core::telemetry::init();
    let config = RelayConfig::parse();
    config.validate()?;
    // Kept until the relay stopped, so the last spans are exported.
    let _traces = platform_core::traces::install_from_env();
    let shutdown = platform_core::shutdown::on_signal();
    let metrics_addr = config.metrics_addr;
    let relay = outbox_relay::Relay::new(config).context("outbox relay failed to start")?;
    let exporter = match metrics_addr {
        Some(addr) => {
            let registry = Registry::new();
            relay.stats().register(&registry);
            let health = relay.health();
            let check: metrics::HealthCheck = std::sync::Arc::new(move || health.check());
            let listener = metrics::bind(addr).await?;
            Some(tokio::spawn(metrics::serve(
                listener,
                registry,
                Some(check),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let Some(mut exporter) = exporter else {
        relay.run(shutdown).await;
        return Ok(());
    };
    // Supervised: if the metrics and health endpoint ends before shutdown,
    // the relay stops too and the process fails, for its orchestrator to
    // restart it.
    let mut relaying = tokio::spawn(relay.run(shutdown.clone()));
    tokio::select! {
        ended = &mut exporter => {
            let asked_to_stop = shutdown.is_cancelled();
            shutdown.cancel();
            relaying.await.context("relay task")?;
            match ended {
                Ok(Ok(())) if asked_to_stop => {}
                Ok(Ok(())) => anyhow::bail!("the metrics endpoint stopped on its own"),
                Ok(Err(error)) => return Err(error.into()),
                Err(error) => return Err(error.into()),
            }
        }
        relayed = &mut relaying => {
            relayed.context("relay task")?;
            exporter.await??;
        }
    }
    Ok(())
}
