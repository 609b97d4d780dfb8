//! The saga's event table: who publishes each event, which events each
//! service acts on, and how a record becomes one of them.
//!
//! Declared once, here: each service's inbound enum ([`OrderInbound`],
//! [`DeliveryInbound`], [`InventoryInbound`]) is both its decoder and its
//! row of the table ([`Service::handles`]), so the two cannot disagree.

use std::collections::HashMap;
use std::sync::LazyLock;

use mall_proto::SagaEvent;
use mall_proto::delivery::v1::{DeliveryCancelled, DeliveryFailed, DeliveryStarted};
use mall_proto::inventory::v1::{StockDecreaseFailed, StockDecreased, StockIncreased};
use mall_proto::order::v1::{OrderApproved, OrderCancelled, OrderCreated, OrderRejected};
use platform_envelope::cloudevents::{Envelope, Poison};
use prost::Name;

use crate::Service;
use crate::checks::Checked;

pub use mall_proto::{SAGA_EVENT_TYPES as EVENT_TYPES, is_saga_event};

impl Service {
    /// The saga events it publishes, on its own topic.
    pub fn publishes(self) -> Vec<String> {
        match self {
            Self::Order => vec![
                OrderCreated::full_name(),
                OrderApproved::full_name(),
                OrderRejected::full_name(),
                OrderCancelled::full_name(),
            ],
            Self::Delivery => vec![
                DeliveryStarted::full_name(),
                DeliveryFailed::full_name(),
                DeliveryCancelled::full_name(),
            ],
            Self::Inventory => vec![
                StockDecreased::full_name(),
                StockDecreaseFailed::full_name(),
                StockIncreased::full_name(),
            ],
        }
    }

    /// The event types this service acts on (its row of the saga table); it
    /// skips the other events its topics' owners publish.
    pub fn handles(self) -> Vec<String> {
        match self {
            Self::Order => OrderInbound::types(),
            Self::Delivery => DeliveryInbound::types(),
            Self::Inventory => InventoryInbound::types(),
        }
    }
}

static PRODUCERS: LazyLock<HashMap<String, Service>> = LazyLock::new(|| {
    Service::ALL
        .into_iter()
        .flat_map(|service| service.publishes().into_iter().map(move |t| (t, service)))
        .collect()
});

/// The service that publishes `event_type`, if it is a saga event.
pub fn producer_of(event_type: &str) -> Option<Service> {
    PRODUCERS.get(event_type).copied()
}

/// Refuses an event its sender does not publish. The consumer has checked
/// already that `ce_source` is the owner of the topic the record came
/// from, so this ties each event type to its topic: an inventory-owned
/// topic cannot carry a delivery event.
fn from_its_producer(envelope: &Envelope) -> Result<(), Poison> {
    match producer_of(&envelope.event_type) {
        Some(producer) if producer.source() != envelope.source => Err(Poison::new(format!(
            "{} is published by {}, not by {}, which owns {}",
            envelope.event_type,
            producer.source(),
            platform_envelope::echo::echo(&envelope.source, 64),
            envelope.coordinates.topic
        ))),
        _ => Ok(()),
    }
}

impl Service {
    /// What this service's consumer decides about a parsed record, short of
    /// the database: `Ok(true)` it acts on it, `Ok(false)` it skips it,
    /// poison otherwise (a topic it does not read, a source that is not the
    /// topic's owner, and everything its inbound decoder refuses). Tools
    /// use it to tell a dead letter that would only be poison again.
    pub fn screen(self, topics: &crate::Topics, envelope: &Envelope) -> Result<bool, Poison> {
        let topic = &envelope.coordinates.topic;
        let owner = self
            .reads()
            .into_iter()
            .find(|read| &topics.events_of(*read) == topic)
            .ok_or_else(|| {
                Poison::new(format!(
                    "{topic} is not a topic the {} service reads",
                    self.name()
                ))
            })?;
        if owner.source() != envelope.source {
            return Err(Poison::new(format!(
                "ce_source {} is not {}, the only writer of {topic}",
                platform_envelope::echo::echo(&envelope.source, 64),
                owner.source()
            )));
        }
        Ok(match self {
            Self::Order => OrderInbound::decode(envelope)?.is_some(),
            Self::Delivery => DeliveryInbound::decode(envelope)?.is_some(),
            Self::Inventory => InventoryInbound::decode(envelope)?.is_some(),
        })
    }
}

/// The mall's reading of the platform's [`Envelope`].
pub trait SagaEventExt {
    /// Decodes the payload as `M` and checks its fields against the
    /// contract; a bad payload, a value past a limit, or one naming another
    /// order than the record key, is poison.
    fn saga_event<M: SagaEvent + Checked>(&self) -> Result<M, Poison>;

    /// For a type the handler does not act on: a saga event is skipped
    /// (`Ok(None)`), anything else is poison.
    fn not_for_me<T>(&self) -> Result<Option<T>, Poison>;
}

impl SagaEventExt for Envelope {
    fn saga_event<M: SagaEvent + Checked>(&self) -> Result<M, Poison> {
        let event: M = self.decode(M::order_id)?;
        event
            .check()
            .map_err(|why| Poison::new(format!("{}: {why}", self.event_type)))?;
        Ok(event)
    }

    fn not_for_me<T>(&self) -> Result<Option<T>, Poison> {
        self.unhandled(is_saga_event)
    }
}

/// Declares a service's inbound events: an enum with one variant per event
/// it acts on, its decoder and its list of types.
macro_rules! inbound {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident($event:ty)),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $($(#[$vdoc])* $variant($event)),*
        }

        impl $name {
            /// The event types it decodes, in declaration order.
            pub fn types() -> Vec<String> {
                vec![$(<$event as prost::Name>::full_name()),*]
            }

            /// The event a record carries: `Ok(None)` for a saga event the
            /// service does not act on, poison for anything else wrong
            /// (an event its sender does not publish, an unknown type, a
            /// bad payload, a value past the contract's limits).
            pub fn decode(envelope: &Envelope) -> Result<Option<Self>, Poison> {
                from_its_producer(envelope)?;
                $(if envelope.is::<$event>() {
                    return envelope.saga_event::<$event>().map(|e| Some(Self::$variant(e)));
                })*
                envelope.not_for_me()
            }
        }
    };
}

inbound! {
    /// What the order service acts on (saga steps 3 and 4).
    OrderInbound {
        /// Stock was taken: approve.
        StockDecreased(StockDecreased),
        /// Stock was refused: reject.
        StockDecreaseFailed(StockDecreaseFailed),
        /// The delivery failed: reject.
        DeliveryFailed(DeliveryFailed),
    }
}

inbound! {
    /// What the delivery service acts on (saga steps 1 and 5).
    DeliveryInbound {
        /// Start a delivery.
        OrderCreated(OrderCreated),
        /// Compensate: the order was rejected.
        OrderRejected(OrderRejected),
        /// Compensate: the customer cancelled.
        OrderCancelled(OrderCancelled),
    }
}

inbound! {
    /// What the inventory service acts on (saga steps 2 and 6).
    InventoryInbound {
        /// Take the stock.
        DeliveryStarted(DeliveryStarted),
        /// Give the stock back.
        DeliveryCancelled(DeliveryCancelled),
    }
}

#[cfg(test)]
mod tests {
    use platform_envelope::cloudevents::Coordinates;
    use prost::Message;

    use super::*;

    fn envelope(event_type: &str, source: &str, payload: Vec<u8>) -> Envelope {
        Envelope {
            key: 42,
            event_type: event_type.to_owned(),
            event_id: Default::default(),
            source: source.to_owned(),
            traceparent: None,
            tracestate: None,
            payload,
            coordinates: Coordinates {
                topic: "t".into(),
                partition: 0,
                offset: 0,
            },
        }
    }

    const ORDER: &str = Service::Order.source();

    #[test]
    fn an_event_must_name_the_order_of_its_key() {
        let ok = envelope("x", ORDER, OrderCancelled { order_id: 42 }.encode_to_vec());
        assert_eq!(
            ok.saga_event::<OrderCancelled>().map(|e| e.order_id),
            Ok(42)
        );
        let other = envelope("x", ORDER, OrderCancelled { order_id: 7 }.encode_to_vec());
        assert!(other.saga_event::<OrderCancelled>().is_err());
        let garbage = envelope("x", ORDER, b"\xff\xff".to_vec());
        assert!(garbage.saga_event::<OrderCreated>().is_err());
    }

    #[test]
    fn every_saga_event_has_one_producer_named_by_its_package() {
        assert_eq!(PRODUCERS.len(), EVENT_TYPES.len());
        for event_type in EVENT_TYPES.iter() {
            let producer = producer_of(event_type).expect("published by someone");
            assert_eq!(
                event_type.split('.').nth(1),
                Some(producer.name()),
                "{event_type}"
            );
        }
        assert_eq!(producer_of("mall.order.v1.Nope"), None);
    }

    #[test]
    fn each_service_handles_events_of_the_services_it_reads() {
        for service in Service::ALL {
            for event_type in service.handles() {
                let producer = producer_of(&event_type).expect("a saga event");
                assert!(
                    service.reads().contains(&producer),
                    "{service:?} handles {event_type} but does not read {producer:?}"
                );
            }
        }
    }

    #[test]
    fn decoding_follows_the_table() {
        let created = OrderCreated {
            order_id: 42,
            customer_id: 1,
            product_id: 1,
            product_name: "TV".into(),
            qty: 1,
            address: "Seoul".into(),
        };
        let record = envelope(&OrderCreated::full_name(), ORDER, created.encode_to_vec());
        assert_eq!(
            DeliveryInbound::decode(&record),
            Ok(Some(DeliveryInbound::OrderCreated(created.clone())))
        );
        // Published by the topic's owner, but not for delivery: skipped.
        let approved = envelope(
            &OrderApproved::full_name(),
            ORDER,
            OrderApproved { order_id: 42 }.encode_to_vec(),
        );
        assert_eq!(DeliveryInbound::decode(&approved), Ok(None));
        // A value past the contract: poison, naming the field.
        let nul = OrderCreated {
            address: "a\0b".into(),
            ..created
        };
        let record = envelope(&OrderCreated::full_name(), ORDER, nul.encode_to_vec());
        let refused = DeliveryInbound::decode(&record).expect_err("poison");
        assert!(refused.0.contains("address"), "{refused}");
        assert!(
            envelope("mall.order.v1.Nope", ORDER, vec![])
                .not_for_me::<()>()
                .is_err()
        );
    }

    #[test]
    fn screening_checks_the_topic_the_source_and_the_event() {
        let topics = crate::Topics::new("mall");
        let on = |topic: &str, source: &str, event_type: &str, payload: Vec<u8>| {
            let mut record = envelope(event_type, source, payload);
            record.coordinates.topic = topic.to_owned();
            record
        };
        let cancelled = OrderCancelled { order_id: 42 }.encode_to_vec();
        let good = on(
            "mall.order.events",
            ORDER,
            &OrderCancelled::full_name(),
            cancelled.clone(),
        );
        assert_eq!(Service::Delivery.screen(&topics, &good), Ok(true));
        let approved = OrderApproved { order_id: 42 }.encode_to_vec();
        let skipped = on(
            "mall.order.events",
            ORDER,
            &OrderApproved::full_name(),
            approved,
        );
        assert_eq!(Service::Delivery.screen(&topics, &skipped), Ok(false));
        let impostor = on(
            "mall.order.events",
            "/impostor",
            &OrderCancelled::full_name(),
            cancelled.clone(),
        );
        assert!(Service::Delivery.screen(&topics, &impostor).is_err());
        let elsewhere = on(
            "mall.delivery.events",
            ORDER,
            &OrderCancelled::full_name(),
            cancelled,
        );
        assert!(Service::Delivery.screen(&topics, &elsewhere).is_err());
    }

    #[test]
    fn an_event_on_a_topic_whose_owner_does_not_publish_it_is_poison() {
        // A delivery event on the inventory topic (whose records carry the
        // inventory source, or the consumer would have refused them first).
        let forged = envelope(
            &DeliveryCancelled::full_name(),
            Service::Inventory.source(),
            DeliveryCancelled {
                order_id: 42,
                product_id: 1,
                qty: 1,
            }
            .encode_to_vec(),
        );
        let refused = InventoryInbound::decode(&forged).expect_err("poison");
        assert!(refused.0.contains("/mall/delivery"), "{refused}");
        let refused = OrderInbound::decode(&forged).expect_err("poison");
        assert!(refused.0.contains("published by"), "{refused}");
    }
}
