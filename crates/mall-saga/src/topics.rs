//! The three services, the topics they publish and read, and their groups.

use platform_envelope::names::TopicNames;
use platform_envelope::wiring::Wiring;

/// A service of the mall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Places and cancels orders; settles them from stock and delivery events.
    Order,
    /// Starts and cancels deliveries from order events.
    Delivery,
    /// Takes and gives back stock from delivery events.
    Inventory,
}

impl Service {
    /// Every service, in saga order.
    pub const ALL: [Self; 3] = [Self::Order, Self::Delivery, Self::Inventory];

    /// Every service's name, in saga order.
    pub const NAMES: [&'static str; 3] = ["order", "delivery", "inventory"];
    /// Their `ce_source`s, in the order of [`Service::NAMES`].
    pub const SOURCES: [&'static str; 3] = [
        Self::Order.source(),
        Self::Delivery.source(),
        Self::Inventory.source(),
    ];

    /// Short name: in topic, group and database names.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Delivery => "delivery",
            Self::Inventory => "inventory",
        }
    }

    /// The services whose events this one reacts to (the saga table).
    pub fn reads(self) -> Vec<Self> {
        self.reads_names()
            .iter()
            .filter_map(|name| Self::named(name))
            .collect()
    }

    /// The names of the services it reads: the declaration [`Service::reads`]
    /// and the platform's `Wiring` are made from.
    pub const fn reads_names(self) -> &'static [&'static str] {
        match self {
            Self::Order => &["inventory", "delivery"],
            Self::Delivery => &["order"],
            Self::Inventory => &["delivery"],
        }
    }

    /// The CloudEvents `ce_source` of its events.
    pub const fn source(self) -> &'static str {
        match self {
            Self::Order => "/mall/order",
            Self::Delivery => "/mall/delivery",
            Self::Inventory => "/mall/inventory",
        }
    }

    /// Its default gRPC port (the contract: 8081, 8082, 8083).
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Order => 8081,
            Self::Delivery => 8082,
            Self::Inventory => 8083,
        }
    }

    /// The platform's view of it: name, topics read, source, port.
    pub const fn wiring(self) -> Wiring {
        Wiring {
            name: self.name(),
            about: match self {
                Self::Order => "The order service of the 12st Mall saga",
                Self::Delivery => "The delivery service of the 12st Mall saga",
                Self::Inventory => "The inventory service of the 12st Mall saga",
            },
            source: self.source(),
            reads: self.reads_names(),
            all_services: &Self::NAMES,
            sources: &Self::SOURCES,
            default_port: self.default_port(),
        }
    }

    /// The service called `name`, if any.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The mall's topic names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    names: TopicNames,
}

impl Topics {
    /// Uses `prefix` (for example `mall`) in front of every topic name.
    pub fn new(prefix: &str) -> Self {
        Self {
            names: TopicNames::new(prefix),
        }
    }

    /// The prefix, without a trailing dot.
    pub fn prefix(&self) -> &str {
        self.names.prefix()
    }

    /// Where `service` publishes.
    pub fn events_of(&self, service: Service) -> String {
        self.names.events(service.name())
    }

    /// Where `service`'s consumer dead-letters.
    pub fn dead_letters_of(&self, service: Service) -> String {
        self.names.dead_letters(service.name())
    }

    /// The consumer group of `service` (the default one).
    pub fn group_of(&self, service: Service) -> String {
        self.names.group(service.name())
    }

    /// The topics `service` reads.
    pub fn read_by(&self, service: Service) -> Vec<String> {
        service.reads().iter().map(|s| self.events_of(*s)).collect()
    }

    /// Where the order service publishes.
    pub fn order_events(&self) -> String {
        self.events_of(Service::Order)
    }

    /// Where the delivery service publishes.
    pub fn delivery_events(&self) -> String {
        self.events_of(Service::Delivery)
    }

    /// Where the inventory service publishes.
    pub fn inventory_events(&self) -> String {
        self.events_of(Service::Inventory)
    }

    /// The three event topics.
    pub fn events(&self) -> Vec<String> {
        Service::ALL.map(|s| self.events_of(s)).to_vec()
    }

    /// The three dead-letter topics.
    pub fn dead_letters(&self) -> Vec<String> {
        Service::ALL.map(|s| self.dead_letters_of(s)).to_vec()
    }

    /// Every topic of the mall: the three event topics and the three dead-letter topics.
    pub fn all(&self) -> Vec<String> {
        let mut all = self.events();
        all.extend(self.dead_letters());
        all
    }

    /// Each consumer group with the topics it reads.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        Service::ALL
            .map(|s| (self.group_of(s), self.read_by(s)))
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let topics = Topics::new("shop.");
        assert_eq!(topics.order_events(), "shop.order.events");
        assert_eq!(
            topics.dead_letters_of(Service::Delivery),
            "shop.delivery.dlq"
        );
        assert_eq!(topics.group_of(Service::Inventory), "shop.inventory");
        assert_eq!(topics.all().len(), 6);
    }

    #[test]
    fn the_wiring_is_the_saga_table() {
        let topics = Topics::new("mall");
        assert_eq!(
            topics.read_by(Service::Order),
            ["mall.inventory.events", "mall.delivery.events"]
        );
        assert_eq!(topics.read_by(Service::Delivery), ["mall.order.events"]);
        assert_eq!(topics.read_by(Service::Inventory), ["mall.delivery.events"]);
        for service in Service::ALL {
            let names: Vec<&str> = service.reads().iter().map(|s| s.name()).collect();
            assert_eq!(names, service.reads_names(), "every name read is a service");
            assert_eq!(Service::named(service.name()), Some(service));
            assert!(Service::NAMES.contains(&service.name()));
            assert!(
                !service.reads().contains(&service),
                "no service reads itself"
            );
        }
    }
}
