//! How long the leader waits for new rows: it finds them by polling, with
//! nothing installed on the writers' side (a `NOTIFY` made every writing
//! transaction take a database-wide turn at commit). After a fetch that
//! found rows the next one follows at once; after an empty one it waits
//! 1 ms, then twice as long after each further empty fetch, up to the
//! longest pause (`RELAY_POLL_INTERVAL_MS`). So a busy outbox is read back
//! to back, a row that arrives in a quiet moment waits about as long as the
//! quiet lasted (never more than the longest pause), and an idle outbox
//! costs one small indexed query per longest pause.

use std::time::Duration;

/// The first pause after a fetch that found nothing.
const FIRST: Duration = Duration::from_millis(1);

/// The pause before the next fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    next: Duration,
    longest: Duration,
}

impl Pause {
    /// Pauses of at most `longest`.
    pub fn new(longest: Duration) -> Self {
        Self {
            next: FIRST.min(longest),
            longest,
        }
    }

    /// The fetch found rows: the next empty one waits the shortest pause.
    pub fn found_rows(&mut self) {
        self.next = FIRST.min(self.longest);
    }

    /// The fetch found nothing: how long to wait now.
    pub fn empty(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.longest);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fetches_double_the_pause_up_to_the_longest_and_rows_reset_it() {
        let mut pause = Pause::new(Duration::from_millis(20));
        let waits: Vec<u128> = (0..7).map(|_| pause.empty().as_millis()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 20, 20]);
        pause.found_rows();
        assert_eq!(pause.empty(), Duration::from_millis(1));
        let mut short = Pause::new(Duration::from_micros(500));
        assert_eq!(short.empty(), Duration::from_micros(500));
    }
}
