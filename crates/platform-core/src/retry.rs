//! One retry policy for every "wait until it works" loop.
//!
//! The database or broker being unwell is never a reason to give up on a
//! valid event, so these waits have no attempt limit: they are capped
//! (`MAX_DELAY`) and jittered (so replicas that failed together do not retry
//! in lock-step), and they end only on success or shutdown. The delays come
//! from `backon`; the loop around them stays in the caller, which knows how
//! to stop.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// First delay of a retry sequence.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// The delays of one retry sequence: exponential from [`MIN_DELAY`] to
/// [`MAX_DELAY`], jittered, never exhausted.
pub fn delays() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The same curve as [`delays`] for a wait that may give up: it ends once
/// about `total` has been waited between attempts (the attempts' own time
/// does not count; a caller whose attempts can be slow also checks a
/// deadline). For start-up and tools, never for a valid event. Use with
/// `backon::Retryable`.
pub fn for_at_most(total: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .with_total_delay(Some(total))
        .without_max_times()
}

/// A wait that goes on until it succeeds, counting its attempts so the logs
/// can say how long something has been waiting.
#[derive(Debug)]
pub struct Patience {
    delays: ExponentialBackoff,
    started: Instant,
    attempts: u32,
}

impl Default for Patience {
    fn default() -> Self {
        Self::new()
    }
}

impl Patience {
    /// Starts counting now.
    pub fn new() -> Self {
        Self {
            delays: delays(),
            started: Instant::now(),
            attempts: 0,
        }
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time since the first attempt.
    pub fn waited(&self) -> Duration {
        self.started.elapsed()
    }

    /// The delay before the next attempt (counts one more failed attempt).
    pub fn next_delay(&mut self) -> Duration {
        self.attempts += 1;
        self.delays.next().unwrap_or(MAX_DELAY)
    }

    /// Sleeps the next delay; `false` if `shutdown` fired first.
    pub async fn sleep(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_capped_and_never_run_out() {
        let mut patience = Patience::new();
        for _ in 0..1_000 {
            let delay = patience.next_delay();
            // Jitter adds at most one more base delay.
            assert!(delay <= MAX_DELAY * 2, "{delay:?}");
        }
        assert_eq!(patience.attempts(), 1_000);
    }

    #[test]
    fn a_bounded_wait_ends() {
        let total: Duration = for_at_most(Duration::from_secs(10)).build().sum();
        assert!(
            total <= Duration::from_secs(10) + MAX_DELAY * 2,
            "{total:?}"
        );
        assert!(total >= Duration::from_secs(1), "{total:?}");
    }

    #[test]
    fn delays_grow_from_the_minimum() {
        let mut patience = Patience::new();
        let first = patience.next_delay();
        assert!(first >= MIN_DELAY && first <= MIN_DELAY * 2, "{first:?}");
        // 0.1, 0.2, 0.4, ... s: past the sixth doubling the cap holds.
        let late: Vec<Duration> = (0..30).map(|_| patience.next_delay()).skip(10).collect();
        assert!(late.iter().all(|d| *d >= MAX_DELAY), "{late:?}");
    }
}
