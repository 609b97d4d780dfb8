//! What a relay replica is doing, for its health endpoint: leading,
//! standing by, reconnecting, or broken (reconnecting for longer than the
//! threshold), or stopping.

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

/// Whether a replica in `role` is healthy at `now`, and what to say. A
/// replica that has been reconnecting for `threshold` or more is broken.
pub fn verdict(role: &Role, now: Instant, threshold: Duration) -> (bool, String) {
    match role {
        Role::Starting => (true, "starting".to_owned()),
        Role::Standby => (true, "standby".to_owned()),
        Role::Leader => (true, "leader".to_owned()),
        Role::Reconnecting { since, reason } => {
            let lasted = now.duration_since(*since);
            if lasted >= threshold {
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
    threshold: Duration,
}

impl RelayHealth {
    /// A replica that is starting, broken after `threshold` of reconnecting.
    pub fn new(threshold: Duration) -> Self {
        Self {
            role: Mutex::new(Role::Starting),
            threshold,
        }
    }

    /// Notes a new role. Trouble that continues keeps the time it began.
    pub fn set(&self, role: Role) {
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
        verdict(&role, Instant::now(), self.threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn leading_and_standing_by_are_healthy_stopping_is_not() {
        let now = Instant::now();
        assert_eq!(verdict(&Role::Leader, now, LIMIT), (true, "leader".into()));
        assert_eq!(
            verdict(&Role::Standby, now, LIMIT),
            (true, "standby".into())
        );
        assert!(!verdict(&Role::Stopping, now, LIMIT).0);
    }

    #[test]
    fn reconnecting_turns_broken_past_the_threshold() {
        let start = Instant::now();
        let role = Role::Reconnecting {
            since: start,
            reason: "connection refused".into(),
        };
        assert!(verdict(&role, start + LIMIT / 2, LIMIT).0);
        let (healthy, text) = verdict(&role, start + LIMIT, LIMIT);
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
        let (healthy, text) = verdict(&role, Instant::now(), LIMIT);
        assert!(!healthy);
        assert!(
            text.contains("User:x") && text.contains("topic t"),
            "{text}"
        );
    }

    #[test]
    fn continuing_trouble_keeps_its_start() {
        let health = RelayHealth::new(Duration::ZERO);
        health.trouble("first");
        health.trouble("second");
        let (healthy, text) = health.check();
        assert!(!healthy);
        assert!(text.contains("second"), "{text}");
        health.set(Role::Leader);
        assert_eq!(health.check(), (true, "leader".into()));
    }
}
