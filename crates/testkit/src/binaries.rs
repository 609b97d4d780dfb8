//! The mall's binaries as the fleets start them (the fault run's replicas,
//! the benchmark's mall): which program each role is, its name, and the
//! environment that wires it to its database and the brokers, written once
//! here. What a fleet adds (ports, pool sizes, timeouts) it sets with
//! [`ProcessSpec::set`].

use std::path::Path;

use mall_saga::Service;

use crate::process::ProcessSpec;

/// One mall process: a service, or the relay of a service's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The gRPC service and its consumer.
    Service(Service),
    /// The `outbox-relay` beside it, on the same database.
    Relay(Service),
}

impl Role {
    /// The service it belongs to.
    pub fn service(self) -> Service {
        match self {
            Self::Service(service) | Self::Relay(service) => service,
        }
    }

    /// Whether it is a relay.
    pub fn is_relay(self) -> bool {
        matches!(self, Self::Relay(_))
    }

    /// The binary's file name.
    pub fn program(self) -> String {
        match self {
            Self::Service(service) => format!("{}-service", service.name()),
            Self::Relay(_) => "outbox-relay".to_owned(),
        }
    }

    /// The name of replica `n` in logs and reports, e.g. `order-service-1`
    /// or `delivery-relay-0`.
    pub fn replica(self, n: usize) -> String {
        match self {
            Self::Service(service) => format!("{}-service-{n}", service.name()),
            Self::Relay(service) => format!("{}-relay-{n}", service.name()),
        }
    }
}

/// Where a mall process connects.
#[derive(Debug, Clone, Copy)]
pub struct Wiring<'a> {
    /// Its service's database.
    pub database_url: &'a str,
    /// Bootstrap brokers.
    pub brokers: &'a str,
    /// Topic prefix (a service's; a relay takes its topics from the rows).
    pub prefix: &'a str,
}

impl ProcessSpec {
    /// Replica `n` of `role`, from `bin_dir`, logging to a file of its own in
    /// `log_dir`, wired to its database and the brokers (`DATABASE_URL`,
    /// `KAFKA_BROKERS` and, for a service, `KAFKA_TOPIC_PREFIX`).
    pub fn mall(role: Role, n: usize, bin_dir: &Path, log_dir: &Path, wiring: Wiring<'_>) -> Self {
        let name = role.replica(n);
        let spec = Self {
            log: log_dir.join(format!("{name}.log")),
            name,
            program: bin_dir.join(role.program()),
            args: Vec::new(),
            env: Vec::new(),
            uid: None,
        }
        .set("DATABASE_URL", wiring.database_url)
        .set("KAFKA_BROKERS", wiring.brokers);
        match role {
            Role::Service(_) => spec.set("KAFKA_TOPIC_PREFIX", wiring.prefix),
            Role::Relay(_) => spec,
        }
    }

    /// The spec with `key=value` in its environment (replacing an earlier
    /// value of `key`).
    #[must_use]
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_string()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_names_its_binary_and_replicas() {
        let relay = Role::Relay(Service::Delivery);
        assert_eq!(relay.program(), "outbox-relay");
        assert_eq!(relay.replica(1), "delivery-relay-1");
        assert!(relay.is_relay());
        let service = Role::Service(Service::Order);
        assert_eq!(service.program(), "order-service");
        assert_eq!(service.replica(0), "order-service-0");
        assert_eq!(service.service(), Service::Order);
    }

    #[test]
    fn a_service_gets_its_prefix_and_a_relay_does_not() {
        let wiring = Wiring {
            database_url: "postgres://db",
            brokers: "127.0.0.1:9092",
            prefix: "p",
        };
        let dir = Path::new("/bin-dir");
        let service = ProcessSpec::mall(Role::Service(Service::Inventory), 0, dir, dir, wiring)
            .set("GRPC_ADDR", "127.0.0.1:1")
            .set("KAFKA_TOPIC_PREFIX", "q");
        let keys: Vec<&str> = service.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "DATABASE_URL",
                "KAFKA_BROKERS",
                "GRPC_ADDR",
                "KAFKA_TOPIC_PREFIX"
            ]
        );
        assert_eq!(service.env[3].1, "q", "a later value replaces the first");
        assert_eq!(service.program, dir.join("inventory-service"));
        let relay = ProcessSpec::mall(Role::Relay(Service::Inventory), 2, dir, dir, wiring);
        assert!(relay.env.iter().all(|(k, _)| k != "KAFKA_TOPIC_PREFIX"));
        assert_eq!(relay.log, dir.join("inventory-relay-2.log"));
    }
}
