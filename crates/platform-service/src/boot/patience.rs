//! Start-up steps that wait for the database or the broker: a service
//! started together with them retries with the platform's backoff (`backon`,
//! [`platform_core::retry::for_at_most`]) for up to `STARTUP_TIMEOUT_SECS` instead of
//! failing on the first refused connection, and stops waiting on shutdown.

use std::time::Duration;

use backon::Retryable;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use platform_core::retry;

/// Runs `step` until it succeeds, `patience` has passed (counting the
/// attempts' own time, not only the waits between them: an attempt against a
/// broker that refuses the credentials can take seconds), or `shutdown`
/// fires; the last error otherwise.
pub(super) async fn patiently<T, E, F, Fut>(
    what: &str,
    patience: Duration,
    shutdown: &CancellationToken,
    step: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0_u32;
    let deadline = Instant::now() + patience;
    let token = shutdown.clone();
    step.retry(retry::for_at_most(patience))
        .sleep(move |delay| {
            let stop = token.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => {}
                }
            }
        })
        .when(|_| Instant::now() < deadline && !shutdown.is_cancelled())
        .notify(|error, delay| {
            attempt += 1;
            tracing::warn!(%error, attempt, retry_in_ms = delay.as_millis() as u64, "Cannot {what} yet; retrying.");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_that_comes_good_is_waited_for() {
        let mut calls = 0;
        let answer = patiently(
            "count",
            Duration::from_secs(30),
            &CancellationToken::new(),
            || {
                calls += 1;
                let now = calls;
                async move { if now < 3 { Err("not yet") } else { Ok(now) } }
            },
        )
        .await;
        assert_eq!(answer, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_attempts_count_against_the_patience() {
        let mut calls = 0;
        let answer: Result<(), &str> = patiently(
            "be slow",
            Duration::from_millis(300),
            &CancellationToken::new(),
            || {
                calls += 1;
                async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err("slow")
                }
            },
        )
        .await;
        assert_eq!(answer, Err("slow"));
        assert!(
            calls <= 2,
            "{calls} attempts of 200 ms within 300 ms of patience"
        );
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait_with_the_last_error() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let answer: Result<(), &str> =
            patiently("fail", Duration::from_secs(3600), &shutdown, || async {
                Err("down")
            })
            .await;
        assert_eq!(answer, Err("down"));
    }
}
