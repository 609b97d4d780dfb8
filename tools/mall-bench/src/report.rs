//! The benchmark's one table, and the same figures as one JSON object.

use serde_json::{Value, json};

use crate::cdc::Cdc;
use crate::drain::Drain;
use crate::fair::Fair;
use crate::inbox_cost::InboxCost;
use crate::lag::Lag;
use crate::rebalance::Rebalance;
use crate::relay_report;
use crate::rounds::{self, ratio};
use crate::saga::{LatencyRun, Step};
use crate::wakeup::Wakeup;
use crate::write_path::WritePath;

/// Every figure of one run (`None` or empty: not measured, see `--only`).
#[derive(Default)]
pub struct Figures {
    /// P1.
    pub write: Option<WritePath>,
    /// P2 and P2b.
    pub drain: Vec<Drain>,
    /// P3.
    pub lag: Vec<Lag>,
    /// P4, one per rate.
    pub latency: Vec<LatencyRun>,
    /// P5's steps, in order.
    pub steps: Vec<Step>,
    /// P6.
    pub inbox: Option<InboxCost>,
    /// P7: (process, peak RSS MiB) during P5.
    pub rss: Vec<(String, f64)>,
    /// R1, one per group protocol.
    pub rebalance: Vec<Rebalance>,
    /// P5c's steps: P5 on the three-broker cluster.
    pub cluster_steps: Vec<Step>,
    /// P8 and P9.
    pub cdc: Option<Cdc>,
    /// P10.
    pub fair: Vec<Fair>,
    /// P11.
    pub wakeup: Option<Wakeup>,
}

impl Figures {
    /// P5: the highest offered rate the mall sustained (0 if none).
    pub fn sustained(&self) -> f64 {
        sustained(&self.steps)
    }

    /// P6: how much slower the consumer is with the inbox, in percent.
    fn inbox_overhead_pct(inbox: &InboxCost) -> f64 {
        (1.0 - ratio(inbox.with_inbox, inbox.without_inbox)) * 100.0
    }

    fn p1(&self) -> f64 {
        self.write.as_ref().map_or(0.0, |w| w.ours)
    }

    /// The table, one line per measured figure, ratio last.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 7]> = vec![
            [
                "#",
                "figure",
                "ours",
                "baseline (same run)",
                "target",
                "samples",
                "ratio",
            ]
            .map(String::from),
        ];
        if let Some(w) = &self.write {
            rows.push([
                "P1".into(),
                "write path, 16 clients".into(),
                format!("{:.0} PlaceOrder/s", w.ours),
                format!("pgbench {:.0} tx/s", w.pgbench),
                "≥ 0.8×".into(),
                format!("{} calls", w.calls),
                format!("{:.2}×", ratio(w.ours, w.pgbench)),
            ]);
        }
        rows.extend(relay_report::drain_rows(&self.drain));
        if let Some(w) = &self.wakeup {
            rows.push([
                "P11".into(),
                "write tx beside the relay's wake-up".into(),
                format!(
                    "{:.0} tx/s ({})",
                    rounds::median(&w.with),
                    rounds::spread(&w.with, 0)
                ),
                format!(
                    "no relay {:.0} tx/s ({}); old NOTIFY {:.0} tx/s ({})",
                    rounds::median(&w.without),
                    rounds::spread(&w.without, 0),
                    rounds::median(&w.notify),
                    rounds::spread(&w.notify, 0)
                ),
                "≥ 0.9×".into(),
                format!("{} rounds", w.with.len()),
                format!("{:.2}×", w.ratio()),
            ]);
        }
        rows.extend(relay_report::lag_rows(&self.lag));
        for run in &self.latency {
            let bound = if run.pending > 0 { "≥ " } else { "" };
            rows.push([
                "P4".into(),
                format!("saga latency at {:.0} orders/s", run.rate),
                format!(
                    "p50 {bound}{:.1} ms, p99 {bound}{:.1} ms",
                    run.saga.ms(0.5),
                    run.saga.ms(0.99)
                ),
                format!("PlaceOrder {}", run.calls.summary()),
                "p50 ≤ 30, p99 ≤ 100 ms".into(),
                if run.pending > 0 {
                    format!(
                        "{} orders, {} unsettled at cut-off",
                        run.saga.count(),
                        run.pending
                    )
                } else {
                    format!("{} orders", run.saga.count())
                },
                "—".into(),
            ]);
        }
        if !self.steps.is_empty() {
            rows.push([
                "P5".into(),
                "saga throughput".into(),
                format!("{:.0} orders/s", self.sustained()),
                format!("P1 {:.0}/s", self.p1()),
                "≥ 1,000 orders/s".into(),
                format!("{} steps", self.steps.len()),
                format!("{:.2}×", ratio(self.sustained(), self.p1())),
            ]);
        }
        if !self.cluster_steps.is_empty() {
            let cluster = sustained(&self.cluster_steps);
            rows.push([
                "P5c".into(),
                "saga throughput, 3 brokers, RF 3, min ISR 2".into(),
                format!("{cluster:.0} orders/s"),
                format!("P5 {:.0}/s", self.sustained()),
                "say the ratio".into(),
                format!("{} steps", self.cluster_steps.len()),
                format!("{:.2}×", ratio(cluster, self.sustained())),
            ]);
        }
        if let Some(i) = &self.inbox {
            rows.push([
                "P6".into(),
                "inbox cost".into(),
                format!("{:.0} rec/s, replay {:.0} rec/s", i.with_inbox, i.replay),
                format!("no inbox {:.0} rec/s", i.without_inbox),
                "≤ 5 %; replay ≥ 3×".into(),
                format!("{} records × 3", i.records),
                format!(
                    "{:.0} % slower; replay {:.1}×",
                    Self::inbox_overhead_pct(i),
                    ratio(i.replay, i.with_inbox)
                ),
            ]);
        }
        if !self.rss.is_empty() {
            rows.push([
                "P7".into(),
                "peak RSS during P5".into(),
                format!("max {:.0} MiB", self.max_rss()),
                "—".into(),
                "≤ 64 MiB each".into(),
                format!("{} processes", self.rss.len()),
                "—".into(),
            ]);
        }
        if let Some(cdc) = &self.cdc {
            rows.extend(cdc.rows());
        }
        rows.extend(relay_report::fair_rows(&self.fair));
        render(&rows)
    }

    fn max_rss(&self) -> f64 {
        self.rss.iter().map(|(_, m)| *m).fold(0.0, f64::max)
    }

    /// P5's steps, P7's processes and R1's protocols, one line each.
    pub fn details(&self) -> String {
        let rebalance = self.rebalance.iter().map(|r| {
            format!(
                "R1 group.protocol={:<8} saga while a member joins: p50 {:.0} ms, max {:.0} ms; \
                 while it leaves: p50 {:.0} ms, max {:.0} ms ({} orders each)",
                r.protocol, r.join.0, r.join.1, r.leave.0, r.leave.1, r.samples
            )
        });
        let steps = self.steps.iter().map(step_line);
        let cluster_steps = self
            .cluster_steps
            .iter()
            .map(|s| format!("P5c: {}", step_line(s)));
        let cdc = self.cdc.iter().flat_map(Cdc::details);
        let drain = relay_report::details(&self.drain);
        let rss = self
            .rss
            .iter()
            .map(|(name, mib)| format!("P7 {name:<17} peak RSS {mib:>6.1} MiB"));
        steps
            .chain(cluster_steps)
            .chain(rss)
            .chain(rebalance)
            .chain(cdc)
            .chain(drain)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The measured figures as one JSON object (numbers, not strings).
    pub fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        let mut put = |key: &str, value: Value| {
            out.insert(key.to_owned(), value);
        };
        if let Some(w) = &self.write {
            put("p1_ratio", json!(ratio(w.ours, w.pgbench)));
            put("p1_place_order_per_s", json!(w.ours));
            put("p1_pgbench_tps", json!(w.pgbench));
            put("p1_calls", json!(w.calls));
        }
        relay_report::json(&self.drain, &self.lag, &self.fair, &mut put);
        if let Some(w) = &self.wakeup {
            put("p11_ratio", json!(w.ratio()));
            put("p11_with_tps", json!(rounds::median(&w.with)));
            put("p11_without_tps", json!(rounds::median(&w.without)));
            put("p11_notify_tps", json!(rounds::median(&w.notify)));
            put(
                "p11_notify_ratio",
                json!(ratio(rounds::median(&w.notify), rounds::median(&w.without))),
            );
            put("p11_rounds", json!(w.with.len()));
        }
        if !self.latency.is_empty() {
            let worst = |q: f64| {
                self.latency
                    .iter()
                    .map(|r| r.saga.ms(q))
                    .fold(0.0, f64::max)
            };
            put("p4_p50_ms", json!(worst(0.5)));
            put("p4_p99_ms", json!(worst(0.99)));
            for run in &self.latency {
                let rate = run.rate;
                put(&format!("p4_at_{rate:.0}_p50_ms"), json!(run.saga.ms(0.5)));
                put(&format!("p4_at_{rate:.0}_p99_ms"), json!(run.saga.ms(0.99)));
                put(&format!("p4_at_{rate:.0}_samples"), json!(run.saga.count()));
                put(&format!("p4_at_{rate:.0}_unsettled"), json!(run.pending));
            }
        }
        if !self.steps.is_empty() {
            put("p5_orders_per_s", json!(self.sustained()));
            put("p5_ratio", json!(ratio(self.sustained(), self.p1())));
            put("p5_steps", json!(self.steps.len()));
        }
        if !self.cluster_steps.is_empty() {
            let cluster = sustained(&self.cluster_steps);
            put("p5c_orders_per_s", json!(cluster));
            put("p5c_ratio", json!(ratio(cluster, self.sustained())));
            put("p5c_steps", json!(self.cluster_steps.len()));
        }
        if let Some(i) = &self.inbox {
            put("p6_overhead_pct", json!(Self::inbox_overhead_pct(i)));
            put("p6_with_inbox_per_s", json!(i.with_inbox));
            put("p6_without_inbox_per_s", json!(i.without_inbox));
            put("p6_replay_per_s", json!(i.replay));
            put("p6_replay_speedup", json!(ratio(i.replay, i.with_inbox)));
            put("p6_replay_applied", json!(i.replay_applied));
            put("p6_records", json!(i.records));
        }
        if !self.rss.is_empty() {
            put("p7_max_rss_mib", json!(self.max_rss()));
            let each: serde_json::Map<_, _> = self
                .rss
                .iter()
                .map(|(n, m)| (n.clone(), json!(m)))
                .collect();
            put("p7_rss_mib", Value::Object(each));
        }
        for r in &self.rebalance {
            let p = r.protocol;
            put(&format!("r1_{p}_join_p50_ms"), json!(r.join.0));
            put(&format!("r1_{p}_join_max_ms"), json!(r.join.1));
            put(&format!("r1_{p}_leave_p50_ms"), json!(r.leave.0));
            put(&format!("r1_{p}_leave_max_ms"), json!(r.leave.1));
        }
        if let Some(cdc) = &self.cdc {
            cdc.json(&mut put);
        }
        Value::Object(out)
    }
}

/// The highest offered rate of `steps` that was sustained (0 if none).
fn sustained(steps: &[Step]) -> f64 {
    steps
        .iter()
        .filter(|s| s.sustained)
        .map(|s| s.offered)
        .fold(0.0, f64::max)
}

/// One P5 step, as a line.
pub fn step_line(s: &Step) -> String {
    let verdict = if s.sustained {
        "kept up"
    } else {
        "fell behind"
    };
    if s.pending > 0 {
        format!(
            "P5 step {:>5.0}/s: {:>6} accepted, {} still pending {:.0} s after the offer ended: {verdict}",
            s.offered, s.accepted, s.pending, s.drained_secs
        )
    } else {
        format!(
            "P5 step {:>5.0}/s: {:>6} accepted, all settled {:>5.1} s after the offer ended: {verdict}",
            s.offered, s.accepted, s.drained_secs
        )
    }
}

/// Rows as a Markdown table, columns padded.
fn render(rows: &[[String; 7]]) -> String {
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
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    ));
    out.extend(rows[1..].iter().map(line));
    out.join("\n")
}
