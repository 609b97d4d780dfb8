//! What a relay counts: Prometheus metrics that tests read back as well.

use platform_core::metrics::{self, Gauge, Histogram, IntCounter, IntGauge, Registry};

/// Counters and gauges of one relay replica, exported as `outbox_relay_*`
/// and `outbox_*` once [`RelayStats::register`]ed.
#[derive(Debug)]
pub struct RelayStats {
    /// Rows published and marked.
    pub published: IntCounter,
    /// Batches sent.
    pub batches: IntCounter,
    /// Times this replica became the active relay.
    pub elected: IntCounter,
    /// Sends the broker did not acknowledge (retried in a later batch).
    pub send_failures: IntCounter,
    /// Times the producer was replaced after a fatal error or a send that
    /// timed out past every retry (the relay stepped down meanwhile).
    pub producer_rebuilt: IntCounter,
    /// 1 while this replica leads, 0 while it stands by or reconnects.
    pub leader: IntGauge,
    /// Seconds from a row's commit (its `created_at`) to the broker's
    /// acknowledgement.
    pub publish_latency: Histogram,
    /// Unpublished rows in the table waiting to be sent, as this replica
    /// last counted them (every replica counts, beside its publishing loop).
    pub backlog_rows: IntGauge,
    /// Parked rows: unpublished rows the broker can never take, set aside.
    pub parked_rows: IntGauge,
    /// Rows this replica parked.
    pub parked: IntCounter,
    /// Age of the oldest unpublished row, in seconds (0 when none waits).
    pub oldest_age: Gauge,
    /// Rows the sweep marked as the heads of their keys: rows a previous
    /// leader had next in line, rows written under REPEATABLE READ while the
    /// row ahead was settled, rows behind a head deleted by hand, rows of
    /// busy keys next in line at that moment.
    pub swept: IntCounter,
}

impl RelayStats {
    /// Fresh metrics for the relay of `table`, not yet exported.
    pub fn new(table: &str) -> Self {
        let labelled =
            |name: &str, help: &str| metrics::Opts::new(name, help).const_label("table", table);
        Self {
            published: metrics::counter(
                "outbox_relay_published_rows_total",
                "Outbox rows published to Kafka and marked published.",
            ),
            batches: metrics::counter("outbox_relay_batches_total", "Batches of outbox rows sent."),
            elected: metrics::counter(
                "outbox_relay_elections_total",
                "Times this replica became the active relay.",
            ),
            send_failures: metrics::counter(
                "outbox_relay_send_failures_total",
                "Rows the broker did not acknowledge; they are sent again.",
            ),
            producer_rebuilt: metrics::counter(
                "outbox_relay_producer_rebuilds_total",
                "Times the Kafka producer was replaced after a fatal error.",
            ),
            leader: metrics::gauge(
                "outbox_relay_leader",
                "1 while this replica is the active relay, 0 while it stands by.",
            ),
            publish_latency: Histogram::with_opts(
                metrics::HistogramOpts::new(
                    "outbox_relay_publish_latency_seconds",
                    "Time from a row's commit (created_at) to the broker's acknowledgement.",
                )
                .buckets(metrics::LATENCY_BUCKETS.to_vec()),
            )
            .expect("a static metric name is valid"),
            backlog_rows: IntGauge::with_opts(labelled(
                "outbox_unpublished_rows",
                "Rows of the outbox table waiting to be published (parked ones aside), as last counted.",
            ))
            .expect("a static metric name is valid"),
            oldest_age: Gauge::with_opts(labelled(
                "outbox_oldest_unpublished_age_seconds",
                "Age of the oldest unpublished outbox row (0 when none waits).",
            ))
            .expect("a static metric name is valid"),
            parked_rows: IntGauge::with_opts(labelled(
                "outbox_parked_rows",
                "Unpublished outbox rows parked because the broker can never take them.",
            ))
            .expect("a static metric name is valid"),
            parked: metrics::counter(
                "outbox_relay_parked_rows_total",
                "Rows this relay parked after sends that could never succeed.",
            ),
            swept: metrics::counter(
                "outbox_relay_swept_rows_total",
                "Rows the relay's sweep marked as the first of their key.",
            ),
        }
    }

    /// Exports every metric through `registry`.
    pub fn register(&self, registry: &Registry) {
        metrics::register(registry, &self.published);
        metrics::register(registry, &self.batches);
        metrics::register(registry, &self.elected);
        metrics::register(registry, &self.send_failures);
        metrics::register(registry, &self.producer_rebuilt);
        metrics::register(registry, &self.leader);
        metrics::register(registry, &self.publish_latency);
        metrics::register(registry, &self.backlog_rows);
        metrics::register(registry, &self.oldest_age);
        metrics::register(registry, &self.parked_rows);
        metrics::register(registry, &self.parked);
        metrics::register(registry, &self.swept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_labelled_with_its_table() {
        let stats = RelayStats::new("outbox");
        let registry = Registry::new();
        stats.register(&registry);
        stats.backlog_rows.set(7);
        let text = metrics::render(&registry);
        assert!(
            text.contains("outbox_unpublished_rows{table=\"outbox\"} 7"),
            "{text}"
        );
    }
}
