//! Turns SIGINT/SIGTERM into a cancellation token that every task watches.

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on Ctrl-C or SIGTERM.
///
/// Services and relays stop accepting work when it fires, finish the message
/// or batch in hand, commit offsets and exit, so a restart loses nothing.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutdown signal received, stopping.");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops the process.");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
