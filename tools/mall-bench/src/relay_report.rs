//! P2, P3 and P10, the relay's own figures, as table rows, detail lines and
//! JSON keys. Each is measured `--relay-rounds` times (3): the median is the
//! figure and its spread (lowest–highest) is printed beside it; a ratio is
//! taken within each round, where both sides met the same machine, then
//! its median.

use serde_json::{Value, json};

use crate::cpu::Cpu;
use crate::drain::Drain;
use crate::fair::Fair;
use crate::lag::Lag;
use crate::rounds::{median, ratio, spread};

/// `median (lowest–highest)` of `values`, with `decimals` decimals.
fn with_spread(values: &[f64], decimals: usize) -> String {
    format!(
        "{:.decimals$} ({})",
        median(values),
        spread(values, decimals)
    )
}

/// One figure of each round.
fn each<T>(rounds: &[T], figure: impl Fn(&T) -> f64) -> Vec<f64> {
    rounds.iter().map(figure).collect()
}

/// Ours over the baseline, round by round.
fn ratios<T>(rounds: &[T], ours: impl Fn(&T) -> f64, baseline: impl Fn(&T) -> f64) -> Vec<f64> {
    rounds.iter().map(|r| ratio(ours(r), baseline(r))).collect()
}

/// P2, P2b and P2d as table rows.
pub fn drain_rows(drains: &[Drain]) -> Vec<[String; 7]> {
    let Some(first) = drains.first() else {
        return Vec::new();
    };
    let samples = format!("{} rows, {} rounds", first.rows, drains.len());
    let relay = each(drains, |d| d.relay);
    vec![
        [
            "P2".into(),
            "relay drain".into(),
            format!("{} rows/s", with_spread(&relay, 0)),
            format!(
                "bare producer {} rec/s",
                with_spread(&each(drains, |d| d.raw), 0)
            ),
            "≥ 0.8×".into(),
            samples.clone(),
            format!(
                "{}×",
                with_spread(&ratios(drains, |d| d.relay, |d| d.raw), 2)
            ),
        ],
        [
            "P2b".into(),
            "relay vs naive".into(),
            format!("{} rows/s", with_spread(&relay, 0)),
            format!(
                "naive relay {} rows/s",
                with_spread(&each(drains, |d| d.naive), 0)
            ),
            "≥ 20×".into(),
            format!("{} rounds", drains.len()),
            format!(
                "{}×",
                with_spread(&ratios(drains, |d| d.relay, |d| d.naive), 1)
            ),
        ],
        [
            "P2d".into(),
            "relay drain, delete on publish".into(),
            format!(
                "{} rows/s",
                with_spread(&each(drains, |d| d.relay_delete), 0)
            ),
            format!("marking {} rows/s", with_spread(&relay, 0)),
            "—".into(),
            samples,
            format!(
                "{}×",
                with_spread(&ratios(drains, |d| d.relay_delete, |d| d.relay), 2)
            ),
        ],
    ]
}

/// P3 as a table row.
pub fn lag_rows(lags: &[Lag]) -> Vec<[String; 7]> {
    let Some(first) = lags.first() else {
        return Vec::new();
    };
    let p50 = each(lags, |l| l.latencies.ms(0.5));
    let p99 = each(lags, |l| l.latencies.ms(0.99));
    vec![[
        "P3".into(),
        format!("relay lag at {:.0} orders/s", first.rate),
        format!(
            "p50 {} ms, p99 {} ms",
            with_spread(&p50, 1),
            with_spread(&p99, 1)
        ),
        "—".into(),
        "p50 ≤ 5, p99 ≤ 25 ms".into(),
        format!(
            "{} rows, {} rounds",
            lags.iter().map(|l| l.latencies.count()).sum::<u64>(),
            lags.len()
        ),
        "—".into(),
    ]]
}

/// P10 as a table row.
pub fn fair_rows(fairs: &[Fair]) -> Vec<[String; 7]> {
    let Some(first) = fairs.first() else {
        return Vec::new();
    };
    vec![[
        "P10".into(),
        format!("cold keys' lag beside one key of {} rows", first.hot_rows),
        format!(
            "p50 {} ms, p99 {} ms",
            with_spread(&each(fairs, |f| f.cold.ms(0.5)), 1),
            with_spread(&each(fairs, |f| f.cold.ms(0.99)), 1)
        ),
        format!(
            "hot key {} rows/s",
            with_spread(&each(fairs, |f| f.hot_rows_per_s), 0)
        ),
        "p99 ≤ 25 ms".into(),
        format!(
            "{} cold rows at {:.0}/s, {} rounds",
            fairs.iter().map(|f| f.cold.count()).sum::<u64>(),
            first.rate,
            fairs.len()
        ),
        "—".into(),
    ]]
}

/// Where P2's CPU went, round by round.
pub fn details(drains: &[Drain]) -> Vec<String> {
    drains
        .iter()
        .enumerate()
        .flat_map(|(round, d)| {
            [
                format!(
                    "P2 round {}: relay drain {:.0} rows/s, CPU: {}",
                    round + 1,
                    d.relay,
                    d.relay_cpu.summary()
                ),
                format!(
                    "P2 round {}: bare producer {:.0} rec/s, CPU: {}",
                    round + 1,
                    d.raw,
                    d.raw_cpu.summary()
                ),
            ]
        })
        .collect()
}

/// The JSON keys of P2, P3 and P10: each the median over the rounds.
pub fn json(drains: &[Drain], lags: &[Lag], fairs: &[Fair], put: &mut impl FnMut(&str, Value)) {
    if let Some(first) = drains.first() {
        let m = |values: Vec<f64>| json!(median(&values));
        put("p2_ratio", m(ratios(drains, |d| d.relay, |d| d.raw)));
        put("p2b_ratio", m(ratios(drains, |d| d.relay, |d| d.naive)));
        put(
            "p2d_ratio",
            m(ratios(drains, |d| d.relay_delete, |d| d.relay)),
        );
        put("p2_relay_rows_per_s", m(each(drains, |d| d.relay)));
        put("p2d_delete_rows_per_s", m(each(drains, |d| d.relay_delete)));
        put("p2_raw_producer_per_s", m(each(drains, |d| d.raw)));
        put("p2b_naive_rows_per_s", m(each(drains, |d| d.naive)));
        put("p2_rows", json!(first.rows));
        put("p2_rounds", json!(drains.len()));
        put(
            "p2b_naive_rows",
            json!(drains.iter().map(|d| d.naive_rows).sum::<u64>()),
        );
        for (side, relay) in [("relay", true), ("raw", false)] {
            let cpu = |d: &Drain| -> Cpu { if relay { d.relay_cpu } else { d.raw_cpu } };
            put(
                &format!("p2_{side}_cpu_postgres_s"),
                m(each(drains, |d| cpu(d).postgres)),
            );
            put(
                &format!("p2_{side}_cpu_broker_s"),
                m(each(drains, |d| cpu(d).broker)),
            );
            put(
                &format!("p2_{side}_cpu_process_s"),
                m(each(drains, |d| cpu(d).own)),
            );
        }
    }
    if let Some(first) = lags.first() {
        put("p3_rate", json!(first.rate));
        put(
            "p3_p50_ms",
            json!(median(&each(lags, |l| l.latencies.ms(0.5)))),
        );
        put(
            "p3_p99_ms",
            json!(median(&each(lags, |l| l.latencies.ms(0.99)))),
        );
        put(
            "p3_samples",
            json!(lags.iter().map(|l| l.latencies.count()).sum::<u64>()),
        );
        put("p3_rounds", json!(lags.len()));
    }
    if let Some(first) = fairs.first() {
        put(
            "p10_cold_p50_ms",
            json!(median(&each(fairs, |f| f.cold.ms(0.5)))),
        );
        put(
            "p10_cold_p99_ms",
            json!(median(&each(fairs, |f| f.cold.ms(0.99)))),
        );
        put(
            "p10_hot_rows_per_s",
            json!(median(&each(fairs, |f| f.hot_rows_per_s))),
        );
        put("p10_hot_rows", json!(first.hot_rows));
        put(
            "p10_cold_samples",
            json!(fairs.iter().map(|f| f.cold.count()).sum::<u64>()),
        );
        put("p10_rounds", json!(fairs.len()));
    }
}
