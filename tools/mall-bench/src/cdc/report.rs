//! P8, P9 and P12 as table rows, detail lines and JSON keys. Each figure is
//! the median over the rounds (the carriers alternating which goes first),
//! its spread printed beside it; a ratio is taken within each round, where
//! both carriers met the same machine, then its median.

use serde_json::{Value, json};

use super::{Carrier, Cdc};
use crate::rounds::{median, ratio, spread};

fn lag(lags: &crate::hist::Latencies) -> String {
    format!("p50 {:.1} ms, p99 {:.1} ms", lags.ms(0.5), lags.ms(0.99))
}

/// One figure of a carrier, round by round.
fn each(carriers: &[Carrier], figure: impl Fn(&Carrier) -> f64) -> Vec<f64> {
    carriers.iter().map(figure).collect()
}

impl Cdc {
    /// Ours over Debezium's, round by round.
    fn ratios(&self, figure: impl Fn(&Carrier) -> f64) -> Vec<f64> {
        self.relay
            .iter()
            .zip(&self.debezium)
            .map(|(ours, theirs)| ratio(figure(ours), figure(theirs)))
            .collect()
    }

    /// The rates P9 ran at.
    fn rates(&self) -> Vec<f64> {
        self.relay
            .first()
            .map(|c| c.steady.iter().map(|s| s.rate).collect())
            .unwrap_or_default()
    }

    /// P9's p99 at the `at`-th rate, in ms.
    fn p99(at: usize) -> impl Fn(&Carrier) -> f64 {
        move |c: &Carrier| c.steady.get(at).map_or(0.0, |s| s.lags.ms(0.99))
    }

    /// P8's rate ratio beside writers: ours over Debezium's, the median.
    pub fn drain_ratio(&self) -> f64 {
        median(&self.ratios(|c| c.drain_rows_per_s))
    }

    /// P8's rate ratio draining a backlog, the median.
    pub fn backlog_ratio(&self) -> f64 {
        median(&self.ratios(|c| c.backlog_rows_per_s))
    }

    /// P12: CPU seconds for the same rows, ours over Debezium's, the median.
    pub fn cpu_ratio(&self) -> f64 {
        median(&self.ratios(|c| c.cpu_secs + c.backlog_cpu_secs))
    }

    /// A table row of a rate figure: medians of both sides, the ratio's
    /// median and spread.
    fn rate_row(
        &self,
        figure: &str,
        what: &str,
        target: &str,
        rate: impl Fn(&Carrier) -> f64 + Copy,
    ) -> [String; 7] {
        let ratios = self.ratios(rate);
        [
            figure.into(),
            what.into(),
            format!(
                "{:.0} rows/s ({})",
                median(&each(&self.relay, rate)),
                spread(&each(&self.relay, rate), 0)
            ),
            format!(
                "Debezium {:.0} rows/s ({})",
                median(&each(&self.debezium, rate)),
                spread(&each(&self.debezium, rate), 0)
            ),
            target.into(),
            format!("{} rows each, {} rounds", self.rows, self.relay.len()),
            format!("{:.2}× ({})", median(&ratios), spread(&ratios, 2)),
        ]
    }

    /// The table's rows: P8 both ways, P9 per rate, P12.
    pub fn rows(&self) -> Vec<[String; 7]> {
        let mut rows = vec![
            self.rate_row("P8", "relay vs CDC, beside writers", "≥ 2×", |c| {
                c.drain_rows_per_s
            }),
            self.rate_row("P8", "relay vs CDC, a backlog", "≥ 2×", |c| {
                c.backlog_rows_per_s
            }),
        ];
        for (at, rate) in self.rates().into_iter().enumerate() {
            let ours = each(&self.relay, Self::p99(at));
            let theirs = each(&self.debezium, Self::p99(at));
            let ratios = self.ratios(Self::p99(at));
            rows.push([
                "P9".into(),
                format!("relay vs CDC, lag p99 at {rate:.0} rows/s"),
                format!("{:.1} ms ({})", median(&ours), spread(&ours, 1)),
                format!(
                    "Debezium {:.1} ms ({})",
                    median(&theirs),
                    spread(&theirs, 1)
                ),
                "p99 ≤ 0.5×".into(),
                format!("{} rounds", self.relay.len()),
                format!("{:.2}× ({})", median(&ratios), spread(&ratios, 2)),
            ]);
        }
        let cpu = |c: &Carrier| c.cpu_secs + c.backlog_cpu_secs;
        let ratios = self.ratios(cpu);
        rows.push([
            "P12".into(),
            "relay vs CDC, CPU for the same rows".into(),
            format!(
                "{:.1} CPU s, peak {:.0} MiB",
                median(&each(&self.relay, cpu)),
                median(&each(&self.relay, |c| c.peak_rss_mib))
            ),
            format!(
                "Debezium {:.1} CPU s, peak {:.0} MiB",
                median(&each(&self.debezium, cpu)),
                median(&each(&self.debezium, |c| c.peak_rss_mib))
            ),
            "≤ 0.5×; ≤ 64 MiB".into(),
            "P8 both ways and P9".into(),
            format!("{:.2}× ({})", median(&ratios), spread(&ratios, 2)),
        ]);
        rows
    }

    /// One line per carrier and round: what the database took, the drain's
    /// lag, P9's lags, CPU and memory, duplicates.
    pub fn details(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, carriers) in [("relay   ", &self.relay), ("Debezium", &self.debezium)] {
            for (round, c) in carriers.iter().enumerate() {
                let steady: Vec<String> = c
                    .steady
                    .iter()
                    .map(|s| format!("at {:.0}/s {}", s.rate, lag(&s.lags)))
                    .collect();
                lines.push(format!(
                    "P8 {name} round {}: database took {:.0} rows/s; {:.0} rows/s beside writers, \
                     lag {}; backlog {:.0} rows/s; P9 {}; {:.1} + {:.1} CPU s; peak RSS {:.0} MiB; \
                     {} duplicates",
                    round + 1,
                    c.written_rows_per_s,
                    c.drain_rows_per_s,
                    lag(&c.drain_lags),
                    c.backlog_rows_per_s,
                    steady.join(", "),
                    c.cpu_secs,
                    c.backlog_cpu_secs,
                    c.peak_rss_mib,
                    c.duplicates
                ));
            }
        }
        lines
    }

    /// The JSON keys: `p8_ratio`, `p8_backlog_ratio`, `p9_p99_ratio_<rate>`,
    /// `p12_cpu_ratio`, each the median over the rounds, and the medians
    /// behind them.
    pub fn json(&self, put: &mut impl FnMut(&str, Value)) {
        put("p8_ratio", json!(self.drain_ratio()));
        put("p8_backlog_ratio", json!(self.backlog_ratio()));
        put("p8_rows", json!(self.rows));
        put("p8_rounds", json!(self.relay.len()));
        put("p12_cpu_ratio", json!(self.cpu_ratio()));
        for (side, carriers) in [("relay", &self.relay), ("debezium", &self.debezium)] {
            carrier_json(side, carriers, put);
        }
        for (at, rate) in self.rates().into_iter().enumerate() {
            put(
                &format!("p9_p99_ratio_{rate:.0}"),
                json!(median(&self.ratios(Self::p99(at)))),
            );
        }
    }
}

fn carrier_json(side: &str, carriers: &[Carrier], put: &mut impl FnMut(&str, Value)) {
    let m = |figure: &dyn Fn(&Carrier) -> f64| json!(median(&each(carriers, figure)));
    put(&format!("p8_{side}_rows_per_s"), m(&|c| c.drain_rows_per_s));
    put(
        &format!("p8_{side}_backlog_rows_per_s"),
        m(&|c| c.backlog_rows_per_s),
    );
    put(
        &format!("p8_{side}_written_rows_per_s"),
        m(&|c| c.written_rows_per_s),
    );
    put(
        &format!("p8_{side}_lag_p99_ms"),
        m(&|c| c.drain_lags.ms(0.99)),
    );
    put(&format!("p8_{side}_cpu_s"), m(&|c| c.cpu_secs));
    put(
        &format!("p12_{side}_cpu_s"),
        m(&|c| c.cpu_secs + c.backlog_cpu_secs),
    );
    put(&format!("p8_{side}_rss_mib"), m(&|c| c.peak_rss_mib));
    put(
        &format!("p8_{side}_duplicates"),
        json!(carriers.iter().map(|c| c.duplicates).sum::<u64>()),
    );
    let rates: Vec<f64> = carriers
        .first()
        .map(|c| c.steady.iter().map(|s| s.rate).collect())
        .unwrap_or_default();
    for (at, rate) in rates.into_iter().enumerate() {
        let q = |quantile: f64| {
            move |c: &Carrier| c.steady.get(at).map_or(0.0, |s| s.lags.ms(quantile))
        };
        put(&format!("p9_{side}_p50_ms_{rate:.0}"), m(&q(0.5)));
        put(&format!("p9_{side}_p99_ms_{rate:.0}"), m(&q(0.99)));
        put(
            &format!("p9_{side}_samples_{rate:.0}"),
            json!(
                carriers
                    .iter()
                    .map(|c| c.steady.get(at).map_or(0, |s| s.lags.count()))
                    .sum::<u64>()
            ),
        );
    }
}
