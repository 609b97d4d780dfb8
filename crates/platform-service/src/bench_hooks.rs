//! Switches only a benchmark may pull, built only with the `bench-hooks`
//! feature. Nothing in a service calls them; they exist so `mall-bench` can
//! measure what the inbox costs by running the same consumer without it.

use std::sync::atomic::{AtomicBool, Ordering};

static INBOX_GATE_OFF: AtomicBool = AtomicBool::new(false);

/// Turns the inbox gate off (`true`) or on again for every consumer of this
/// process: records are applied without being recorded or checked, so a
/// replay applies them again. Never for anything but a measurement.
pub fn set_inbox_gate_off(off: bool) {
    INBOX_GATE_OFF.store(off, Ordering::SeqCst);
}

/// Whether [`set_inbox_gate_off`] switched the gate off.
pub(crate) fn inbox_gate_off() -> bool {
    INBOX_GATE_OFF.load(Ordering::Relaxed)
}
