//! Figures read from every replica's metrics endpoint (`METRICS_ADDR`), as
//! an operator's Prometheus would read them: inbox duplicates, dead
//! letters and relay elections.
//!
//! A process keeps its counters in memory, so a killed replica's last
//! values are banked when it goes: the fleet scrapes every replica each
//! second and once more right before a kill. What a replica counted after
//! its last scrape and before dying on its own is lost, so the figures are
//! lower bounds, exact when no replica died unannounced.

use mall_testkit::scrape::sum;

/// What is read, by figure: (metric, labels).
const READ: [(&str, &[(&str, &str)]); 3] = [
    ("inbox_consumer_records_total", &[("outcome", "duplicate")]),
    (
        "inbox_consumer_records_total",
        &[("outcome", "dead_lettered")],
    ),
    ("outbox_relay_elections_total", &[]),
];

/// The figures of one replica across its incarnations.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    banked: [f64; 3],
    last: [f64; 3],
}

impl Counts {
    /// Takes the current incarnation's values from a scrape.
    pub fn observe(&mut self, exposition: &str) {
        for (slot, (name, labels)) in self.last.iter_mut().zip(READ) {
            *slot = sum(exposition, name, labels);
        }
    }

    /// The incarnation ended (killed or exited): keep what it counted.
    pub fn incarnation_ended(&mut self) {
        for (banked, last) in self.banked.iter_mut().zip(self.last.iter_mut()) {
            *banked += *last;
            *last = 0.0;
        }
    }

    /// Inbox duplicates, dead letters and relay elections, so far.
    pub fn totals(&self) -> Totals {
        let total = |i: usize| (self.banked[i] + self.last[i]) as u64;
        Totals {
            duplicates: total(0),
            dead_lettered: total(1),
            elections: total(2),
        }
    }
}

/// Figures summed over replicas.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Records the inboxes rejected as already applied.
    pub duplicates: u64,
    /// Records the consumers dead-lettered.
    pub dead_lettered: u64,
    /// Times a relay replica became the active one.
    pub elections: u64,
}

impl std::iter::Sum for Totals {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| Self {
            duplicates: a.duplicates + b.duplicates,
            dead_lettered: a.dead_lettered + b.dead_lettered,
            elections: a.elections + b.elections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(duplicates: u64, elections: u64) -> String {
        format!(
            "inbox_consumer_records_total{{outcome=\"duplicate\"}} {duplicates}\n\
             inbox_consumer_records_total{{outcome=\"applied\"}} 99\n\
             outbox_relay_elections_total {elections}\n"
        )
    }

    #[test]
    fn a_killed_incarnation_keeps_what_it_counted() {
        let mut counts = Counts::default();
        counts.observe(&exposition(5, 1));
        counts.observe(&exposition(7, 1));
        counts.incarnation_ended();
        // The new process counts from zero again.
        counts.observe(&exposition(2, 1));
        assert_eq!(
            counts.totals(),
            Totals {
                duplicates: 9,
                dead_lettered: 0,
                elections: 2
            }
        );
        let both: Totals = [counts.totals(), counts.totals()].into_iter().sum();
        assert_eq!(both.duplicates, 18);
    }
}
