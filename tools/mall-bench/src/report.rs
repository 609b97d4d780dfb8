//! The benchmark's one table, and the same figures as one JSON object.

use serde_json::{Value, json};

use crate::drain::Drain;
use crate::inbox_cost::InboxCost;
use crate::lag::Lag;
use crate::saga::{LatencyRun, Step};
use crate::write_path::WritePath;

/// Every figure of one run.
pub struct Figures {
    /// P1.
    pub write: WritePath,
    /// P2 and P2b.
    pub drain: Drain,
    /// P3.
    pub lag: Lag,
    /// P4, one per rate.
    pub latency: Vec<LatencyRun>,
    /// P5's steps, in order.
    pub steps: Vec<Step>,
    /// P6.
    pub inbox: InboxCost,
    /// P7: (process, peak RSS MiB) during P5.
    pub rss: Vec<(String, f64)>,
}

fn ratio(ours: f64, baseline: f64) -> f64 {
    if baseline > 0.0 { ours / baseline } else { 0.0 }
}

impl Figures {
    /// P5: the highest offered rate the mall sustained (0 if none).
    pub fn sustained(&self) -> f64 {
        self.steps
            .iter()
            .filter(|s| s.sustained)
            .map(|s| s.offered)
            .fold(0.0, f64::max)
    }

    /// P6: how much slower the consumer is with the inbox, in percent.
    pub fn inbox_overhead_pct(&self) -> f64 {
        (1.0 - ratio(self.inbox.with_inbox, self.inbox.without_inbox)) * 100.0
    }

    /// The table, one line per figure, ratio last.
    pub fn table(&self) -> String {
        let (w, d, l, i) = (&self.write, &self.drain, &self.lag, &self.inbox);
        let mut rows: Vec<[String; 7]> = vec![[
            "#".into(),
            "figure".into(),
            "ours".into(),
            "baseline (same run)".into(),
            "target".into(),
            "samples".into(),
            "ratio".into(),
        ]];
        rows.push([
            "P1".into(),
            "write path, 16 clients".into(),
            format!("{:.0} PlaceOrder/s", w.ours),
            format!("pgbench {:.0} tx/s", w.pgbench),
            "≥ 0.8×".into(),
            format!("{} calls", w.calls),
            format!("{:.2}×", ratio(w.ours, w.pgbench)),
        ]);
        rows.push([
            "P2".into(),
            "relay drain".into(),
            format!("{:.0} rows/s", d.relay),
            format!("bare producer {:.0} rec/s", d.raw),
            "≥ 0.5×".into(),
            format!("{} rows", d.rows),
            format!("{:.2}×", ratio(d.relay, d.raw)),
        ]);
        rows.push([
            "P2b".into(),
            "relay vs naive".into(),
            format!("{:.0} rows/s", d.relay),
            format!("naive relay {:.0} rows/s", d.naive),
            "≥ 20×".into(),
            format!("{} naive rows", d.naive_rows),
            format!("{:.1}×", ratio(d.relay, d.naive)),
        ]);
        rows.push([
            "P3".into(),
            format!("relay lag at {:.0} orders/s", l.rate),
            format!("p50 {:.1} ms, p99 {:.1} ms", l.latencies.ms(0.5), l.latencies.ms(0.99)),
            "—".into(),
            "p50 ≤ 5, p99 ≤ 25 ms".into(),
            format!("{} rows", l.latencies.count()),
            "—".into(),
        ]);
        for run in &self.latency {
            rows.push([
                "P4".into(),
                format!("saga latency at {:.0} orders/s", run.rate),
                format!("p50 {:.1} ms, p99 {:.1} ms", run.saga.ms(0.5), run.saga.ms(0.99)),
                format!("PlaceOrder {}", run.calls.summary()),
                "p50 ≤ 30, p99 ≤ 100 ms".into(),
                format!("{} orders", run.saga.count()),
                "—".into(),
            ]);
        }
        rows.push([
            "P5".into(),
            "saga throughput".into(),
            format!("{:.0} orders/s", self.sustained()),
            format!("P1 {:.0}/s", w.ours),
            "≥ 1,000 orders/s".into(),
            format!("{} steps", self.steps.len()),
            format!("{:.2}×", ratio(self.sustained(), w.ours)),
        ]);
        rows.push([
            "P6".into(),
            "inbox cost".into(),
            format!("{:.0} rec/s, replay {:.0} rec/s", i.with_inbox, i.replay),
            format!("no inbox {:.0} rec/s", i.without_inbox),
            "≤ 15 %; replay ≥ 2×".into(),
            format!("{} records × 3", i.records),
            format!(
                "{:.0} % slower; replay {:.1}×",
                self.inbox_overhead_pct(),
                ratio(i.replay, i.with_inbox)
            ),
        ]);
        let worst = self.rss.iter().map(|(_, m)| *m).fold(0.0, f64::max);
        rows.push([
            "P7".into(),
            "peak RSS during P5".into(),
            format!("max {worst:.0} MiB"),
            "—".into(),
            "≤ 64 MiB each".into(),
            format!("{} processes", self.rss.len()),
            "—".into(),
        ]);
        let widths: Vec<usize> = (0..7)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let line = |r: &[String; 7]| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("| {} |", cells.join(" | "))
        };
        let mut out = vec![line(&rows[0])];
        out.push(format!(
            "|{}|",
            widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|")
        ));
        out.extend(rows[1..].iter().map(line));
        out.join("\n")
    }

    /// P5's steps and P7's processes, one line each.
    pub fn details(&self) -> String {
        let mut out = Vec::new();
        for s in &self.steps {
            out.push(format!(
                "P5 step {:>5.0}/s: {:>6} accepted, all settled {:>5.1} s after the offer ended: {}",
                s.offered,
                s.accepted,
                s.drained_secs,
                if s.sustained { "kept up" } else { "fell behind" }
            ));
        }
        for (name, mib) in &self.rss {
            out.push(format!("P7 {name:<17} peak RSS {mib:>6.1} MiB"));
        }
        out.join("\n")
    }

    /// The figures as one JSON object (numbers, not strings).
    pub fn json(&self) -> Value {
        let (w, d, l, i) = (&self.write, &self.drain, &self.lag, &self.inbox);
        let low = self.latency.first();
        let high = self.latency.last();
        let p4 = |run: Option<&LatencyRun>, q: f64| run.map_or(0.0, |r| r.saga.ms(q));
        json!({
            "p1_ratio": ratio(w.ours, w.pgbench),
            "p1_place_order_per_s": w.ours,
            "p1_pgbench_tps": w.pgbench,
            "p1_calls": w.calls,
            "p2_ratio": ratio(d.relay, d.raw),
            "p2b_ratio": ratio(d.relay, d.naive),
            "p2_relay_rows_per_s": d.relay,
            "p2_raw_producer_per_s": d.raw,
            "p2b_naive_rows_per_s": d.naive,
            "p2_rows": d.rows,
            "p2b_naive_rows": d.naive_rows,
            "p3_rate": l.rate,
            "p3_p50_ms": l.latencies.ms(0.5),
            "p3_p99_ms": l.latencies.ms(0.99),
            "p3_samples": l.latencies.count(),
            "p4_p50_ms": self.latency.iter().map(|r| r.saga.ms(0.5)).fold(0.0, f64::max),
            "p4_p99_ms": self.latency.iter().map(|r| r.saga.ms(0.99)).fold(0.0, f64::max),
            "p4_low_rate": low.map_or(0.0, |r| r.rate),
            "p4_low_p50_ms": p4(low, 0.5),
            "p4_low_p99_ms": p4(low, 0.99),
            "p4_low_samples": low.map_or(0, |r| r.saga.count()),
            "p4_high_rate": high.map_or(0.0, |r| r.rate),
            "p4_high_p50_ms": p4(high, 0.5),
            "p4_high_p99_ms": p4(high, 0.99),
            "p4_high_samples": high.map_or(0, |r| r.saga.count()),
            "p5_orders_per_s": self.sustained(),
            "p5_ratio": ratio(self.sustained(), w.ours),
            "p5_steps": self.steps.len(),
            "p6_overhead_pct": self.inbox_overhead_pct(),
            "p6_with_inbox_per_s": i.with_inbox,
            "p6_without_inbox_per_s": i.without_inbox,
            "p6_replay_per_s": i.replay,
            "p6_replay_speedup": ratio(i.replay, i.with_inbox),
            "p6_replay_applied": i.replay_applied,
            "p6_records": i.records,
            "p7_max_rss_mib": self.rss.iter().map(|(_, m)| *m).fold(0.0, f64::max),
            "p7_rss_mib": self.rss.iter().map(|(n, m)| (n.clone(), json!(m))).collect::<serde_json::Map<_, _>>(),
        })
    }
}
