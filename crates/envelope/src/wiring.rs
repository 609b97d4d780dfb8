//! How one service of an application is wired, as data.
//!
//! The platform needs to know, for each service, its name (in topic, group
//! and dead-letter names), the services whose events it reads, every
//! service of the application (whose topics it creates), its CloudEvents
//! `ce_source` and its default port. The application declares this once
//! (the mall in `mall-saga`); services, tests and tools all read it.

/// The wiring of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    /// Short name: `<prefix>.<name>.events` is where it publishes.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The CloudEvents `ce_source` of the events it writes.
    pub source: &'static str,
    /// The services whose events topics it consumes.
    pub reads: &'static [&'static str],
    /// Every service of the application: their events and dead-letter
    /// topics are created at start-up if missing, so no consumer waits on a
    /// topic its producer has not created yet.
    pub all_services: &'static [&'static str],
    /// The `ce_source` of each service in `all_services`, in the same
    /// order: a consumer acts only on records whose source is the topic's
    /// owner.
    pub sources: &'static [&'static str],
    /// The gRPC port used when no address is configured.
    pub default_port: u16,
}

impl Wiring {
    /// The `ce_source` of the service called `name`, if it is one of
    /// `all_services`.
    pub fn source_of(&self, name: &str) -> Option<&'static str> {
        let index = self.all_services.iter().position(|s| *s == name)?;
        self.sources.get(index).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_the_order_of_the_services() {
        let wiring = Wiring {
            name: "a",
            about: "",
            source: "/app/a",
            reads: &["b"],
            all_services: &["a", "b"],
            sources: &["/app/a", "/app/b"],
            default_port: 1,
        };
        assert_eq!(wiring.source_of("b"), Some("/app/b"));
        assert_eq!(wiring.source_of("c"), None);
    }
}
