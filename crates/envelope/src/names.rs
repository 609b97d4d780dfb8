//! Topic names derived from one prefix, by one convention.

/// Topic names derived from one configurable prefix, by one convention:
/// each service publishes to `<prefix>.<service>.events` and dead-letters to
/// `<prefix>.<service>.dlq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    prefix: String,
}

impl TopicNames {
    /// Uses `prefix` (for example `mall`) in front of every topic name.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('.').to_owned(),
        }
    }

    /// The prefix, without a trailing dot.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where `service` publishes its events.
    pub fn events(&self, service: &str) -> String {
        format!("{}.{service}.events", self.prefix)
    }

    /// Where `service`'s consumer sends records it can never process.
    pub fn dead_letters(&self, service: &str) -> String {
        format!("{}.{service}.dlq", self.prefix)
    }

    /// The consumer group of `service`, unless configured otherwise.
    pub fn group(&self, service: &str) -> String {
        format!("{}.{service}", self.prefix)
    }
}
