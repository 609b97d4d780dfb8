//! What the leader's loop tells whoever embeds the relay and asked: each
//! row the broker acknowledged, with its commit → acknowledgement time (a
//! benchmark's percentiles need every sample, not histogram buckets), and
//! each time it found nothing to publish and paused (a test waits on that).
//! Events go to a channel handed in with [`crate::Relay::observed`]; the
//! binary hands none, and the loop then only checks an `Option`.

use tokio::sync::mpsc::UnboundedSender;

/// One thing the leader's loop did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// The broker acknowledged row `id`, `latency_secs` after its commit
    /// (its creation time).
    Acked {
        /// The row's handle (its ordering column).
        id: i64,
        /// Seconds from the row's creation to the acknowledgement.
        latency_secs: f64,
    },
    /// The leader found nothing to publish and paused.
    Idle,
}

/// Where the events go. Unbounded: whoever hands one in reads it.
pub type Observer = UnboundedSender<Event>;

/// Sends `event` if someone listens; a receiver that went away is ignored.
pub fn tell(observer: Option<&Observer>, event: Event) {
    if let Some(observer) = observer {
        let _ = observer.send(event);
    }
}
