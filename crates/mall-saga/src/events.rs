//! Reading saga events out of an envelope.

use mall_proto::SagaEvent;
use mall_proto::delivery::v1::{DeliveryCancelled, DeliveryFailed, DeliveryStarted};
use mall_proto::inventory::v1::{StockDecreaseFailed, StockDecreased};
use mall_proto::order::v1::{OrderCancelled, OrderCreated, OrderRejected};
use platform_core::cloudevents::{Envelope, Poison};
use prost::Name;

use crate::Service;

pub use mall_proto::{SAGA_EVENT_TYPES as EVENT_TYPES, is_saga_event};

impl Service {
    /// The event types this service acts on (the saga table); it skips the
    /// other saga events on the topics it reads.
    pub fn handles(self) -> Vec<String> {
        match self {
            Self::Order => vec![
                StockDecreased::full_name(),
                StockDecreaseFailed::full_name(),
                DeliveryFailed::full_name(),
            ],
            Self::Delivery => vec![
                OrderCreated::full_name(),
                OrderRejected::full_name(),
                OrderCancelled::full_name(),
            ],
            Self::Inventory => vec![DeliveryStarted::full_name(), DeliveryCancelled::full_name()],
        }
    }
}

/// The mall's reading of the platform's [`Envelope`].
pub trait SagaEventExt {
    /// Decodes the payload as `M`; a bad payload, or one naming another
    /// order than the record key, is poison.
    fn saga_event<M: SagaEvent>(&self) -> Result<M, Poison>;

    /// For a type the handler does not act on: a saga event is skipped
    /// (`Ok(None)`), anything else is poison.
    fn not_for_me<T>(&self) -> Result<Option<T>, Poison>;
}

impl SagaEventExt for Envelope {
    fn saga_event<M: SagaEvent>(&self) -> Result<M, Poison> {
        self.decode(M::order_id)
    }

    fn not_for_me<T>(&self) -> Result<Option<T>, Poison> {
        self.unhandled(is_saga_event)
    }
}

#[cfg(test)]
mod tests {
    use mall_proto::order::v1::{OrderCancelled, OrderCreated};
    use platform_core::cloudevents::Coordinates;
    use prost::Message;

    use super::*;

    fn envelope(event_type: &str, payload: Vec<u8>) -> Envelope {
        Envelope {
            key: 42,
            event_type: event_type.to_owned(),
            event_id: Default::default(),
            source: "/mall/order".into(),
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

    #[test]
    fn an_event_must_name_the_order_of_its_key() {
        let ok = envelope("x", OrderCancelled { order_id: 42 }.encode_to_vec());
        assert_eq!(
            ok.saga_event::<OrderCancelled>().map(|e| e.order_id),
            Ok(42)
        );
        let other = envelope("x", OrderCancelled { order_id: 7 }.encode_to_vec());
        assert!(other.saga_event::<OrderCancelled>().is_err());
        let garbage = envelope("x", b"\xff\xff".to_vec());
        assert!(garbage.saga_event::<OrderCreated>().is_err());
    }

    #[test]
    fn each_service_handles_saga_events_of_the_topics_it_reads() {
        for service in Service::ALL {
            for event_type in service.handles() {
                assert!(is_saga_event(&event_type), "{event_type}");
                let producer = event_type.split('.').nth(1).unwrap_or_default();
                assert!(
                    service.reads_names().contains(&producer),
                    "{service:?} handles {event_type} but does not read {producer}"
                );
            }
        }
    }

    #[test]
    fn known_types_are_skipped_and_unknown_ones_are_poison() {
        assert_eq!(
            envelope("mall.order.v1.OrderApproved", vec![]).not_for_me::<()>(),
            Ok(None)
        );
        assert!(
            envelope("mall.order.v1.Nope", vec![])
                .not_for_me::<()>()
                .is_err()
        );
    }
}
