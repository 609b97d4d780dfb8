//! The figure block a run ends with.

use std::fmt::Write as _;
use std::time::Duration;

use crate::check::Findings;
use crate::counts::Totals;
use crate::faults::{KINDS, Tally};
use crate::load::Outcome;

/// Everything the figure block shows.
pub struct Figures<'a> {
    /// The seed.
    pub seed: u64,
    /// Orders asked for.
    pub orders_requested: usize,
    /// What the customers saw.
    pub outcome: &'a Outcome,
    /// What the injector did.
    pub tally: &'a Tally,
    /// What the checker found.
    pub findings: &'a Findings,
    /// Inbox rejections, dead letters and relay elections, from the
    /// replicas' metrics endpoints (see `counts`).
    pub counted: Totals,
    /// Replicas that died on their own.
    pub unexpected_exits: u64,
    /// Load and faults.
    pub load_time: Duration,
    /// From the end of load and faults until quiet, or why it never was.
    pub time_to_quiet: Result<Duration, String>,
}

impl Figures<'_> {
    /// The block, ready to print.
    pub fn render(&self) -> String {
        let f = self.findings;
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            let _ = writeln!(out, "  {label:<38} {value}");
        };
        line("seed", self.seed.to_string());
        line(
            "orders placed (acknowledged)",
            format!("{} of {}", self.outcome.placed.len(), self.orders_requested),
        );
        line(
            "  calls retried with unknown outcome",
            self.outcome.ambiguous.to_string(),
        );
        line(
            "  cancellations accepted / refused",
            format!(
                "{} / {}",
                self.outcome.cancelled.len(),
                self.outcome.cancel_refused
            ),
        );
        line(
            "orders in the system",
            format!(
                "{} (approved {}, rejected {}, cancelled {})",
                f.orders, f.approved, f.rejected, f.cancelled
            ),
        );
        let total: u64 = self.tally.by_kind.values().sum();
        line("faults injected", total.to_string());
        for kind in KINDS {
            line(
                &format!("  {kind}"),
                self.tally
                    .by_kind
                    .get(kind)
                    .copied()
                    .unwrap_or(0)
                    .to_string(),
            );
        }
        line(
            "  deadlocks forced (40P01)",
            self.tally.deadlocks.to_string(),
        );
        line(
            "  faults that failed to inject",
            self.tally.failures.len().to_string(),
        );
        line(
            "  relay elections (fail-overs)",
            self.counted.elections.to_string(),
        );
        line(
            "  replicas that exited on their own",
            self.unexpected_exits.to_string(),
        );
        line(
            "messages redelivered or duplicated",
            self.tally.resent.to_string(),
        );
        line(
            "duplicates rejected by the inbox",
            self.counted.duplicates.to_string(),
        );
        line(
            "dead-lettered messages",
            format!(
                "{} of {} expected, from {} poison sent ({} DLQ records, {} counted by the consumers)",
                f.dead_lettered,
                f.dead_letter_expected,
                self.tally.poison,
                f.dead_letter_records,
                self.counted.dead_lettered
            ),
        );
        line(
            "real events dead-lettered",
            f.real_dead_lettered.to_string(),
        );
        line("orders stuck", f.stuck.to_string());
        line("events lost", f.lost.to_string());
        line("stock double-taken (units)", f.double_taken.to_string());
        line(
            "compensations double-applied (units)",
            f.double_compensated.to_string(),
        );
        line("other invariant violations", f.violations.len().to_string());
        line(
            "load and faults",
            format!("{:.1} s", self.load_time.as_secs_f64()),
        );
        line(
            "time to quiet",
            match &self.time_to_quiet {
                Ok(d) => format!("{:.1} s", d.as_secs_f64()),
                Err(why) => format!("never ({why})"),
            },
        );
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        line("verdict", verdict.to_owned());
        format!("== 12st Mall fault-injection run ==\n{out}")
    }

    /// Whether the run proves the promise.
    pub fn passed(&self) -> bool {
        self.findings.passed() && self.time_to_quiet.is_ok() && self.tally.failures.is_empty()
    }
}
