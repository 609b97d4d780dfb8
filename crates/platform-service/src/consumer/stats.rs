//! What a consumer counts: Prometheus metrics that tests and the
//! fault-injection tool read back as well.

use rdkafka::Statistics;

use platform_core::metrics::{self, Histogram, IntCounter, IntCounterVec, IntGaugeVec, Registry};

/// Counters and gauges of one inbox consumer.
///
/// Exported as `inbox_consumer_*` once [`Stats::register`]ed; each field is
/// also readable in-process (`stats.applied.get()`).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Events applied for the first time.
    pub applied: IntCounter,
    /// Events the inbox recognised as already applied.
    pub duplicates: IntCounter,
    /// Known events this service does not act on.
    pub ignored: IntCounter,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: IntCounter,
    /// Poison records whose dead letter could not be sent even truncated:
    /// stepped over, their coordinates logged (the original stays on its
    /// topic). Alerted on.
    pub undeliverable: IntCounter,
    /// Records stepped over because an operator marked them (`mall-dlq skip`).
    pub skipped: IntCounter,
    /// Dead letters sent truncated because the whole copy was too large.
    pub truncated: IntCounter,
    /// Failed database attempts that were waited out and retried.
    pub db_retries: IntCounter,
    /// Assignments received from the group (one per rebalance this member
    /// took part in).
    pub assignments: IntCounter,
    /// Times the Kafka client was thrown away and made anew.
    pub recreated: IntCounter,
    /// Records a lane handed over together (one transaction, see
    /// `consumer::apply`).
    pub run_records: Histogram,
    /// Runs split into runs of one, to find the record a database refusal
    /// no retry changes (SQLSTATE class 22 or 23) belongs to.
    pub run_fallbacks: IntCounter,
    records: IntCounterVec,
    lag: IntGaugeVec,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Fresh counters, not yet exported.
    pub fn new() -> Self {
        let records = metrics::counter_vec(
            "inbox_consumer_records_total",
            "Records the inbox consumer finished, by outcome: applied (first time), \
             duplicate (rejected by the inbox), ignored (not for this service), \
             dead_lettered, undeliverable (poison whose dead letter could not be sent), \
             skipped (stepped over as an operator asked).",
            &["outcome"],
        );
        let outcome = |name: &str| records.with_label_values(&[name]);
        Self {
            applied: outcome("applied"),
            duplicates: outcome("duplicate"),
            ignored: outcome("ignored"),
            dead_lettered: outcome("dead_lettered"),
            undeliverable: outcome("undeliverable"),
            skipped: outcome("skipped"),
            truncated: metrics::counter(
                "inbox_consumer_dead_letters_truncated_total",
                "Dead letters sent truncated (payload replaced by its length and SHA-256) \
                 because the whole copy was too large.",
            ),
            db_retries: metrics::counter(
                "inbox_consumer_db_retries_total",
                "Database attempts that failed transiently and were retried.",
            ),
            assignments: metrics::counter(
                "inbox_consumer_assignments_total",
                "Partition assignments received from the consumer group.",
            ),
            recreated: metrics::counter(
                "inbox_consumer_client_recreations_total",
                "Times the Kafka client was replaced by the self-healing check.",
            ),
            run_records: Histogram::with_opts(
                metrics::HistogramOpts::new(
                    "inbox_consumer_run_records",
                    "Records of one partition applied together in one transaction.",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            )
            .expect("a static metric name is valid"),
            run_fallbacks: metrics::counter(
                "inbox_consumer_run_fallbacks_total",
                "Runs split into runs of one to find the record the database refused for good.",
            ),
            lag: metrics::gauge_vec(
                "inbox_consumer_lag",
                "Records between the partition's end and this consumer's position, \
                 per owned partition (librdkafka statistics).",
                &["topic", "partition"],
            ),
            records,
        }
    }

    /// Exports every metric through `registry`.
    pub fn register(&self, registry: &Registry) {
        metrics::register(registry, &self.records);
        metrics::register(registry, &self.db_retries);
        metrics::register(registry, &self.assignments);
        metrics::register(registry, &self.recreated);
        metrics::register(registry, &self.lag);
        metrics::register(registry, &self.run_records);
        metrics::register(registry, &self.run_fallbacks);
        metrics::register(registry, &self.truncated);
    }

    /// Takes the lag of every owned partition from librdkafka's statistics.
    pub(super) fn observe(&self, statistics: &Statistics) {
        for (topic, found) in &statistics.topics {
            for (number, partition) in &found.partitions {
                // -1: librdkafka's internal "unassigned" partition; a
                // negative lag: not known yet.
                if *number < 0 || partition.consumer_lag < 0 {
                    continue;
                }
                self.lag
                    .with_label_values(&[topic.as_str(), &number.to_string()])
                    .set(partition.consumer_lag);
            }
        }
    }

    /// Forgets the lag of partitions this member no longer owns.
    pub(super) fn forget(&self, partitions: &[(String, i32)]) {
        for (topic, number) in partitions {
            let _ = self
                .lag
                .remove_label_values(&[topic.as_str(), &number.to_string()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_read_back_and_export_by_outcome() {
        let stats = Stats::new();
        let registry = Registry::new();
        stats.register(&registry);
        stats.applied.inc();
        stats.duplicates.inc_by(2);
        assert_eq!(stats.applied.get(), 1);
        let text = metrics::render(&registry);
        assert!(
            text.contains("inbox_consumer_records_total{outcome=\"duplicate\"} 2"),
            "{text}"
        );
        stats.forget(&[("t".to_owned(), 0)]);
    }
}
