//! What a relay replica is doing, for its health endpoint: leading (and how
//! long ago its last publishing cycle finished), standing by, reconnecting,
//! or broken (reconnecting for longer than the threshold, or leading without
//! finishing a cycle for longer than the stall bound), or stopping.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A replica's role at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Connecting for the first time.
    Starting,
    /// Connected; another replica holds the lock.
    Standby,
    /// Holds the lock and publishes.
    Leader,
    /// Lost its database session or its producer, since then, for this reason.
    Reconnecting {
        /// When the trouble began.
        since: Instant,
        /// What went wrong.
        reason: String,
    },
    /// Leads, but the broker refuses its principal (an ACL is missing).
    Refused {
        /// Who was refused what, on what.
        reason: String,
    },
    /// Shutting down.
    Stopping,
}

/// The bounds a verdict is given against.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Reconnecting this long is broken.
    pub reconnecting: Duration,
    /// Leading without finishing a cycle this long is stalled.
    pub stalled: Duration,
}

/// Whether a replica in `role` is healthy, and what to say. `stuck` is how
/// long this replica has had the lead (or been losing and retaking it)
/// without finishing a publishing cycle; `None` while it stands by. A
/// replica reconnecting for `bounds.reconnecting` or more is broken, and one
/// stuck for `bounds.stalled` is stalled, whatever it is doing right now.
pub fn verdict(
    role: &Role,
    now: Instant,
    stuck: Option<Duration>,
    bounds: Bounds,
) -> (bool, String) {
    if let Some(stuck) = stuck.filter(|stuck| *stuck >= bounds.stalled)
        && matches!(role, Role::Leader | Role::Reconnecting { .. })
    {
        let doing = match role {
            Role::Reconnecting { reason, .. } => format!("; reconnecting: {reason}"),
            _ => String::new(),
        };
        return (
            false,
            format!(
                "stalled: no publishing cycle finished for {}s{doing}",
                stuck.as_secs()
            ),
        );
    }
    match role {
        Role::Starting => (true, "starting".to_owned()),
        Role::Standby => (true, "standby".to_owned()),
        Role::Leader => (
            true,
            format!(
                "leader; last cycle {:.1}s ago",
                stuck.unwrap_or_default().as_secs_f64()
            ),
        ),
        Role::Reconnecting { since, reason } => {
            let lasted = now.duration_since(*since);
            if lasted >= bounds.reconnecting {
                (
                    false,
                    format!("broken: reconnecting for {}s: {reason}", lasted.as_secs()),
                )
            } else {
                (true, format!("reconnecting: {reason}"))
            }
        }
        Role::Refused { reason } => (false, format!("refused: {reason}")),
        Role::Stopping => (false, "stopping".to_owned()),
    }
}

/// The shared role of one replica.
#[derive(Debug)]
pub struct RelayHealth {
    role: Mutex<Role>,
    /// When this replica, having the lead, last finished a publishing cycle
    /// or took the lead from standing by; `None` while it stands by.
    progress: Mutex<Option<Instant>>,
    bounds: Bounds,
}

impl RelayHealth {
    /// A replica that is starting, judged against `bounds`.
    pub fn new(bounds: Bounds) -> Self {
        Self {
            role: Mutex::new(Role::Starting),
            progress: Mutex::new(None),
            bounds,
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A publishing cycle (fetch, send, mark; or a wait with nothing to
    /// send) finished now.
    pub fn cycled(&self) {
        *self.progress() = Some(Instant::now());
    }

    /// Notes a new role. Trouble that continues keeps the time it began. A
    /// replica that takes the lead from standing by starts its progress
    /// clock; one that loses and retakes the lead without finishing a cycle
    /// keeps it running, so a leader that cannot make progress shows as
    /// stalled however often it reconnects.
    pub fn set(&self, role: Role) {
        match role {
            Role::Leader => {
                let mut progress = self.progress();
                if progress.is_none() {
                    *progress = Some(Instant::now());
                }
            }
            Role::Standby => *self.progress() = None,
            _ => {}
        }
        let mut current = self.role.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Role::Reconnecting { .. }, Role::Reconnecting { since, .. }) = (&role, &*current) {
            let since = *since;
            if let Role::Reconnecting { reason, .. } = role {
                *current = Role::Reconnecting { since, reason };
            }
            return;
        }
        *current = role;
    }

    /// Trouble began now (or continues), for `reason`.
    pub fn trouble(&self, reason: impl Into<String>) {
        self.set(Role::Reconnecting {
            since: Instant::now(),
            reason: reason.into(),
        });
    }

    /// The verdict now: healthy or not, and what to say.
    pub fn check(&self) -> (bool, String) {
        let role = self
            .role
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let stuck = self.progress().map(|at| at.elapsed());
        verdict(&role, Instant::now(), stuck, self.bounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        reconnecting: Duration::from_secs(10),
        stalled: Duration::from_secs(60),
    };
    const FRESH: Option<Duration> = Some(Duration::from_millis(200));

    #[test]
    fn leading_and_standing_by_are_healthy_stopping_is_not() {
        let now = Instant::now();
        let (healthy, text) = verdict(&Role::Leader, now, FRESH, BOUNDS);
        assert!(healthy);
        assert_eq!(text, "leader; last cycle 0.2s ago");
        assert_eq!(
            verdict(&Role::Standby, now, FRESH, BOUNDS),
            (true, "standby".into())
        );
        assert!(!verdict(&Role::Stopping, now, FRESH, BOUNDS).0);
    }

    #[test]
    fn a_leader_without_a_finished_cycle_past_the_bound_is_stalled() {
        let stuck = Some(BOUNDS.stalled);
        let (healthy, text) = verdict(&Role::Leader, Instant::now(), stuck, BOUNDS);
        assert!(!healthy);
        assert!(
            text.starts_with("stalled") && text.contains("60s"),
            "{text}"
        );
        // Losing and retaking the lead does not hide it.
        let again = Role::Reconnecting {
            since: Instant::now(),
            reason: "canceling statement due to lock timeout".into(),
        };
        let (healthy, text) = verdict(&again, Instant::now(), stuck, BOUNDS);
        assert!(!healthy);
        assert!(
            text.contains("stalled") && text.contains("lock timeout"),
            "{text}"
        );
        // A standby has no cycles to finish.
        assert!(verdict(&Role::Standby, Instant::now(), None, BOUNDS).0);
    }

    #[test]
    fn reconnecting_turns_broken_past_the_threshold() {
        let start = Instant::now();
        let role = Role::Reconnecting {
            since: start,
            reason: "connection refused".into(),
        };
        let limit = BOUNDS.reconnecting;
        assert!(verdict(&role, start + limit / 2, FRESH, BOUNDS).0);
        let (healthy, text) = verdict(&role, start + limit, FRESH, BOUNDS);
        assert!(!healthy);
        assert!(
            text.starts_with("broken") && text.contains("connection refused"),
            "{text}"
        );
    }

    #[test]
    fn a_refused_leader_is_unhealthy_and_says_why() {
        let role = Role::Refused {
            reason: "Kafka refused User:x the Write operation on topic t".into(),
        };
        let (healthy, text) = verdict(&role, Instant::now(), FRESH, BOUNDS);
        assert!(!healthy);
        assert!(
            text.contains("User:x") && text.contains("topic t"),
            "{text}"
        );
    }

    #[test]
    fn continuing_trouble_keeps_its_start() {
        let health = RelayHealth::new(Bounds {
            reconnecting: Duration::ZERO,
            stalled: Duration::from_secs(60),
        });
        health.trouble("first");
        health.trouble("second");
        let (healthy, text) = health.check();
        assert!(!healthy);
        assert!(text.contains("second"), "{text}");
        health.set(Role::Leader);
        let (healthy, text) = health.check();
        assert!(healthy && text.starts_with("leader"), "{text}");
    }

    #[test]
    fn the_progress_clock_runs_across_lost_leads_and_stops_on_standby() {
        let health = RelayHealth::new(Bounds {
            reconnecting: Duration::from_secs(10),
            stalled: Duration::ZERO,
        });
        health.set(Role::Leader);
        health.trouble("lock timeout");
        health.set(Role::Leader);
        let (healthy, text) = health.check();
        assert!(!healthy && text.starts_with("stalled"), "{text}");
        health.set(Role::Standby);
        assert_eq!(health.check(), (true, "standby".into()));
    }
}
