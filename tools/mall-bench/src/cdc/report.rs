//! P8 and P9 as table rows, detail lines and JSON keys.

use serde_json::{Value, json};

use super::{Carrier, Cdc};

fn ratio(ours: f64, baseline: f64) -> f64 {
    if baseline > 0.0 { ours / baseline } else { 0.0 }
}

fn lag(lags: &crate::hist::Latencies) -> String {
    format!("p50 {:.1} ms, p99 {:.1} ms", lags.ms(0.5), lags.ms(0.99))
}

impl Cdc {
    /// P8's rate ratio: ours over Debezium's.
    pub fn drain_ratio(&self) -> f64 {
        ratio(self.relay.drain_rows_per_s, self.debezium.drain_rows_per_s)
    }

    /// The table's rows: P8, then P9 per rate.
    pub fn rows(&self) -> Vec<[String; 7]> {
        let mut rows = vec![[
            "P8".into(),
            "relay vs CDC, drain".into(),
            format!("{:.0} rows/s", self.relay.drain_rows_per_s),
            format!("Debezium {:.0} rows/s", self.debezium.drain_rows_per_s),
            "≥ 2×".into(),
            format!("{} rows each", self.rows),
            format!("{:.2}×", self.drain_ratio()),
        ]];
        for (ours, theirs) in self.relay.steady.iter().zip(&self.debezium.steady) {
            rows.push([
                "P9".into(),
                format!("relay vs CDC, lag at {:.0} rows/s", ours.rate),
                lag(&ours.lags),
                format!("Debezium {}", lag(&theirs.lags)),
                "p99 ≤ 0.5×".into(),
                format!("{} + {} rows", ours.lags.count(), theirs.lags.count()),
                format!(
                    "p99 {:.2}×",
                    ratio(ours.lags.ms(0.99), theirs.lags.ms(0.99))
                ),
            ]);
        }
        rows
    }

    /// One line per carrier: what the database took, the drain's lag, CPU
    /// and memory, duplicates.
    pub fn details(&self) -> Vec<String> {
        [("relay   ", &self.relay), ("Debezium", &self.debezium)]
            .iter()
            .map(|(name, c)| {
                format!(
                    "P8 {name}: database took {:.0} rows/s; lag while draining {}; \
                     {:.1} CPU s for P8+P9; peak RSS {:.0} MiB; {} duplicates",
                    c.written_rows_per_s,
                    lag(&c.drain_lags),
                    c.cpu_secs,
                    c.peak_rss_mib,
                    c.duplicates
                )
            })
            .collect()
    }

    /// The JSON keys: `p8_ratio`, `p9_p99_ratio_<rate>` and the absolute
    /// figures behind them.
    pub fn json(&self, put: &mut impl FnMut(&str, Value)) {
        put("p8_ratio", json!(self.drain_ratio()));
        put("p8_rows", json!(self.rows));
        for (side, c) in [("relay", &self.relay), ("debezium", &self.debezium)] {
            carrier_json(side, c, put);
        }
        for (ours, theirs) in self.relay.steady.iter().zip(&self.debezium.steady) {
            let rate = ours.rate;
            put(
                &format!("p9_p99_ratio_{rate:.0}"),
                json!(ratio(ours.lags.ms(0.99), theirs.lags.ms(0.99))),
            );
        }
    }
}

fn carrier_json(side: &str, c: &Carrier, put: &mut impl FnMut(&str, Value)) {
    put(&format!("p8_{side}_rows_per_s"), json!(c.drain_rows_per_s));
    put(
        &format!("p8_{side}_written_rows_per_s"),
        json!(c.written_rows_per_s),
    );
    put(
        &format!("p8_{side}_lag_p99_ms"),
        json!(c.drain_lags.ms(0.99)),
    );
    put(&format!("p8_{side}_cpu_s"), json!(c.cpu_secs));
    put(&format!("p8_{side}_rss_mib"), json!(c.peak_rss_mib));
    put(&format!("p8_{side}_duplicates"), json!(c.duplicates));
    for s in &c.steady {
        let rate = s.rate;
        put(
            &format!("p9_{side}_p50_ms_{rate:.0}"),
            json!(s.lags.ms(0.5)),
        );
        put(
            &format!("p9_{side}_p99_ms_{rate:.0}"),
            json!(s.lags.ms(0.99)),
        );
        put(
            &format!("p9_{side}_samples_{rate:.0}"),
            json!(s.lags.count()),
        );
    }
}
