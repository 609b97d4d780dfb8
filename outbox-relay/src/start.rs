//! Starting a relay the way its binary does, for the binary and for the test
//! kit alike: the relay, its metrics and health endpoint when one is
//! configured, and the two supervised together, so the wiring is written
//! once.

use std::net::SocketAddr;
use std::sync::Arc;

use platform_core::metrics::{self, MetricsError, Registry};
use rdkafka::error::KafkaError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{Relay, RelayConfig, RelayStats};

/// Why a relay did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its producer could not be made (a bad Kafka setting).
    #[error("outbox relay failed to start: {0}")]
    Kafka(#[from] KafkaError),
    /// Its metrics endpoint could not listen.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Why a running relay stopped other than when asked.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// The metrics and health endpoint failed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The metrics and health endpoint ended on its own.
    #[error("the metrics endpoint stopped on its own")]
    MetricsEnded,
    /// The table is not ready for the mapping.
    #[error(transparent)]
    NotReady(#[from] crate::NotReady),
    /// A task panicked.
    #[error("relay task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A started relay.
pub struct Running {
    /// Its counters.
    pub stats: Arc<RelayStats>,
    /// Where its metrics and health are served (the bound port when the
    /// configured one was 0), if configured.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), StopError>>,
}

/// Starts the relay of `config` and, with `metrics_addr` set, its `GET
/// /metrics` and `GET /health` endpoint; both stop on `shutdown`.
pub async fn start(
    config: RelayConfig,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let metrics_addr = config.observability.metrics_addr;
    let relay = Relay::new(config)?;
    let stats = relay.stats();
    let mut tasks = JoinSet::new();
    let bound = match metrics_addr {
        Some(addr) => {
            let registry = Registry::new();
            stats.register(&registry);
            let health = relay.health();
            let check: metrics::HealthCheck = Arc::new(move || health.check());
            let listener = metrics::bind(addr).await?;
            let bound = listener.local_addr().map_err(MetricsError::Serve)?;
            let stop = shutdown.clone();
            tasks.spawn(async move {
                metrics::serve(listener, registry, Some(check), stop.clone()).await?;
                if stop.is_cancelled() {
                    Ok(())
                } else {
                    Err(StopError::MetricsEnded)
                }
            });
            Some(bound)
        }
        None => None,
    };
    let stop = shutdown.clone();
    tasks.spawn(async move {
        relay.run(stop).await?;
        Ok(())
    });
    Ok(Running {
        stats,
        metrics_addr: bound,
        shutdown,
        tasks,
    })
}

impl Running {
    /// Waits until the relay stopped. Supervised: when either task ends
    /// (the relay on shutdown, the endpoint on failure), the other is asked
    /// to stop too, and the first failure is the answer, for an
    /// orchestrator to restart the process.
    pub async fn wait(mut self) -> Result<(), StopError> {
        let mut outcome = Ok(());
        while let Some(ended) = self.tasks.join_next().await {
            self.shutdown.cancel();
            let ended = ended.map_err(StopError::from).and_then(|result| result);
            if outcome.is_ok() {
                outcome = ended;
            }
        }
        outcome
    }
}
