//! Latency percentiles from an HDR histogram, never from averages.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies in microseconds, from 1 µs to an hour, 3 significant digits.
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Records one latency (clamped into the histogram's range).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
    }

    /// Records one latency given in seconds; negative values count as 0.
    pub fn record_secs(&mut self, secs: f64) {
        self.record(Duration::from_secs_f64(secs.max(0.0)));
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The `quantile` (0..=1) in milliseconds; 0 without samples.
    pub fn ms(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// `p50 a ms, p99 b ms (n samples)`.
    pub fn summary(&self) -> String {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms ({} samples)",
            self.ms(0.5),
            self.ms(0.99),
            self.count()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_samples() {
        let mut latencies = Latencies::new();
        assert_eq!(latencies.ms(0.5), 0.0);
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        latencies.record_secs(-1.0);
        assert_eq!(latencies.count(), 101);
        assert!(
            (latencies.ms(0.5) - 50.0).abs() < 0.5,
            "{}",
            latencies.ms(0.5)
        );
        assert!(
            (latencies.ms(0.99) - 99.0).abs() < 0.5,
            "{}",
            latencies.ms(0.99)
        );
        assert!(latencies.summary().contains("101 samples"));
    }
}
