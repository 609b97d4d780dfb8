//! The relay's per-row acknowledgement times, as its observer reports them
//! (`outbox_relay::observer`): percentiles need every sample, not the
//! histogram's buckets. Gathered only once switched on, so a warm-up is
//! left out.

use std::sync::{Arc, Mutex, PoisonError};

use outbox_relay::Relay;
use outbox_relay::observer::Event;

/// Commit → acknowledgement times, in seconds, since [`Acks::start`].
#[derive(Clone, Default)]
pub struct Acks {
    log: Arc<Mutex<Option<Vec<f64>>>>,
}

impl Acks {
    /// `relay`, observed; and what it acknowledges, gathered by a task of
    /// its own.
    pub fn attach(relay: Relay) -> (Relay, Self) {
        let (observer, mut events) = tokio::sync::mpsc::unbounded_channel();
        let acks = Self::default();
        let log = Arc::clone(&acks.log);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Event::Acked { latency_secs, .. } = event
                    && let Some(log) = log.lock().unwrap_or_else(PoisonError::into_inner).as_mut()
                {
                    log.push(latency_secs);
                }
            }
        });
        (relay.observed(observer), acks)
    }

    /// Gathers from now on.
    pub fn start(&self) {
        *self.log.lock().unwrap_or_else(PoisonError::into_inner) = Some(Vec::new());
    }

    /// How many gathered times `keep` accepts.
    pub fn count(&self, keep: impl Fn(f64) -> bool) -> usize {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |log| log.iter().filter(|secs| keep(**secs)).count())
    }

    /// Every gathered time; gathering stops.
    pub fn take(&self) -> Vec<f64> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default()
    }
}
