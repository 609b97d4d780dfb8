//! Prometheus metrics: one registry per process, served over plain HTTP.
//!
//! Every part of a process (consumer, relay, gRPC layer, a service's own
//! figures) registers its metrics into the [`Registry`] it is given, never
//! into a global one, so tests can run several services in one process and
//! still read each one's numbers apart. [`serve`] answers `GET /metrics` in
//! the Prometheus text format (0.0.4), which `promtool check metrics` and
//! every scraper accept.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use prometheus::core::Collector;
pub use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Latency buckets in seconds, from 1 ms to 30 s: wide enough for a gRPC
/// call, a relay publish and a whole saga.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Registers `metric` into `registry`. A clash (the same name registered
/// twice) is a programming error; it is logged rather than allowed to stop
/// a running process, and the metric still counts, unexported.
pub fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: &M) {
    if let Err(error) = registry.register(Box::new(metric.clone())) {
        tracing::error!(%error, "Cannot register a metric; it will not be exported.");
    }
}

/// A counter; `name` and `help` are static, so building it cannot fail.
pub fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("a static metric name is valid")
}

/// A counter family with `labels`.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("a static metric name is valid")
}

/// A gauge.
pub fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("a static metric name is valid")
}

/// A gauge family with `labels`.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("a static metric name is valid")
}

/// A latency histogram (seconds) with [`LATENCY_BUCKETS`] and `labels`.
pub fn latency_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("a static metric name is valid")
}

/// The registry's metrics in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        tracing::error!(%error, "Cannot encode the metrics.");
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

/// Errors serving metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// Address tried (`METRICS_ADDR`).
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("metrics server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Binds the metrics address, so a caller can read the real port back.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// A health verdict for `GET /health`: healthy or not, and what to say.
pub type HealthCheck = std::sync::Arc<dyn Fn() -> (bool, String) + Send + Sync>;

/// Serves `GET /metrics` from `registry` on `listener` until `shutdown`,
/// and `GET /health` (200 or 503, with the verdict's text) when `health`
/// is given: for processes without a gRPC server, such as the relay.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: Option<HealthCheck>,
    shutdown: CancellationToken,
) -> Result<(), MetricsError> {
    let mut app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        TextEncoder::new().format_type().to_owned(),
                    )],
                    render(&registry),
                )
            }
        }),
    );
    if let Some(check) = health {
        app = app.route(
            "/health",
            get(move || {
                let (healthy, text) = check();
                let status = if healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                async move { (status, text) }
            }),
        );
    }
    tracing::info!(addr = ?listener.local_addr().ok(), "Metrics endpoint listening.");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_render_in_the_text_format() {
        let registry = Registry::new();
        let sent = counter_vec("things_sent_total", "Things sent.", &["kind"]);
        register(&registry, &sent);
        sent.with_label_values(&["a"]).inc_by(3);
        let text = render(&registry);
        assert!(text.contains("# TYPE things_sent_total counter"), "{text}");
        assert!(text.contains("things_sent_total{kind=\"a\"} 3"), "{text}");
        // A second registration of the same name is refused, not a panic.
        register(&registry, &sent);
    }
}
