//! CPU seconds by who spent them on this host: the PostgreSQL servers'
//! processes, the Kafka broker's JVM and this process (where P2 runs the
//! relay and the bare producer), read from `/proc/<pid>/stat` before and
//! after a phase. A reaped PostgreSQL backend's time is in its postmaster's
//! children's times, so nothing a phase spent is lost.

use std::fs;

/// Clock ticks per second of `/proc/<pid>/stat`: Linux's `USER_HZ`.
const USER_HZ: f64 = 100.0;

/// CPU seconds so far, or spent between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    /// Every `postgres` process.
    pub postgres: f64,
    /// The Kafka broker (`kafka.Kafka`).
    pub broker: f64,
    /// This process.
    pub own: f64,
}

impl Cpu {
    /// The host's processes now.
    pub fn now() -> Self {
        let mut cpu = Self {
            own: ticks(&read("/proc/self/stat")).map_or(0.0, seconds),
            ..Self::default()
        };
        let Ok(entries) = fs::read_dir("/proc") else {
            return cpu;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let path = entry.path();
            let stat = read(&path.join("stat").to_string_lossy());
            let Some(spent) = ticks(&stat).map(seconds) else {
                continue;
            };
            if stat.contains("(postgres)") {
                cpu.postgres += spent;
            } else if stat.contains("(java)")
                && read(&path.join("cmdline").to_string_lossy()).contains("kafka.Kafka")
            {
                cpu.broker += spent;
            }
        }
        cpu
    }

    /// What was spent since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            postgres: self.postgres - earlier.postgres,
            broker: self.broker - earlier.broker,
            own: self.own - earlier.own,
        }
    }

    /// `PostgreSQL 1.2, broker 3.4, this process 5.6 CPU s`.
    pub fn summary(&self) -> String {
        format!(
            "PostgreSQL {:.1}, broker {:.1}, this process {:.1} CPU s",
            self.postgres, self.broker, self.own
        )
    }
}

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn seconds(ticks: u64) -> f64 {
    ticks as f64 / USER_HZ
}

/// `utime + stime + cutime + cstime` of a `/proc/<pid>/stat` line; the
/// name in parentheses may hold spaces, so fields count from its closing
/// one.
fn ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace()
        .skip(11)
        .take(4)
        .map(|field| field.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_times_are_read_after_the_name() {
        let stat = "42 (post gres) S 1 42 42 0 -1 4194560 10 0 0 0 150 50 7 3 20 0 1 0 100 0 0";
        assert_eq!(ticks(stat), Some(210));
        assert_eq!(ticks("garbage"), None);
        let spent = Cpu {
            postgres: 5.0,
            broker: 2.0,
            own: 1.5,
        }
        .since(&Cpu {
            postgres: 1.0,
            broker: 1.0,
            own: 1.0,
        });
        assert_eq!(spent.postgres, 4.0);
        assert_eq!(spent.own, 0.5);
    }
}
