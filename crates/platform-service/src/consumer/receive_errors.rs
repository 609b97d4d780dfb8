//! The errors the consumer's main queue hands over between rebalances.
//!
//! Each is an event librdkafka queued (a broker down, all brokers down, a
//! transport failure), not a poll that failed: during a broker outage
//! hundreds pile up, and behind them waits the rebalance that gives this
//! member its partitions. So they are drained at once. Pausing after each
//! (half a second, as the consumer once did) made a fault run wait two
//! minutes for an assignment the coordinator had sent ten seconds after
//! the broker came back. Only a flood that does not end is paced, and the
//! warning is logged once a second, with how many more there were.

use std::time::Duration;

use tokio::time::Instant;

/// How often a receive error is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// Errors within one [`LOG_EVERY`] past which the consumer pauses: more
/// than any backlog an outage leaves, so only a client that errs without
/// end is slowed.
const FLOOD: u32 = 5_000;
/// The pause in a flood.
pub(super) const FLOOD_PAUSE: Duration = Duration::from_millis(500);

/// What to do about one receive error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    /// Log it, saying how many were not logged since the last one.
    pub log: Option<u32>,
    /// Pause before receiving again.
    pub pause: bool,
}

/// Counts receive errors per second.
#[derive(Debug, Default)]
pub(super) struct ErrorPace {
    window: Option<Instant>,
    seen: u32,
}

impl ErrorPace {
    /// What to do about an error received at `now`.
    pub(super) fn after_error(&mut self, now: Instant) -> Step {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < LOG_EVERY => {
                self.seen += 1;
                let pause = self.seen >= FLOOD;
                if pause {
                    // The next error opens a window of its own, and is
                    // logged with this one's count.
                    self.window = None;
                }
                Step { log: None, pause }
            }
            _ => {
                let unlogged = self.seen;
                self.window = Some(now);
                self.seen = 0;
                Step {
                    log: Some(unlogged),
                    pause: false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_is_drained_without_pauses_and_logged_once_a_second() {
        let mut pace = ErrorPace::default();
        let start = Instant::now();
        let steps: Vec<Step> = (0..300).map(|_| pace.after_error(start)).collect();
        assert_eq!(
            steps[0],
            Step {
                log: Some(0),
                pause: false
            }
        );
        assert!(steps[1..].iter().all(|s| *s
            == Step {
                log: None,
                pause: false
            }));
        let later = pace.after_error(start + LOG_EVERY);
        assert_eq!(
            later,
            Step {
                log: Some(299),
                pause: false
            },
            "the next second's first error says how many were not logged"
        );
    }

    #[test]
    fn an_endless_flood_is_paced() {
        let mut pace = ErrorPace::default();
        let now = Instant::now();
        let pauses = (0..=FLOOD)
            .map(|_| pace.after_error(now))
            .filter(|s| s.pause)
            .count();
        assert_eq!(pauses, 1);
        assert_eq!(
            pace.after_error(now).log,
            Some(FLOOD),
            "after a pause a new window starts, saying what the flood was"
        );
    }
}
