//! Generated Rust types for the 12st Mall protobuf contract.
//!
//! The `.proto` files beside this crate are the public contract: outside
//! clients generate their own code from them, and the saga events travel on
//! Kafka as these messages. Keep generated types at the edges and convert them
//! into domain types with `TryFrom`.
#![allow(missing_docs, clippy::all)]

#[cfg(feature = "grpc")]
pub mod codec;

/// Encoded `FileDescriptorSet` of every mall proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mall_descriptor.bin"));

/// `mall.order.v1`: the order service and the events it publishes.
pub mod order {
    /// Version 1 of the order contract.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mall.order.v1.rs"));
    }
}

/// `mall.delivery.v1`: the delivery service and the events it publishes.
pub mod delivery {
    /// Version 1 of the delivery contract.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mall.delivery.v1.rs"));
    }
}

/// `mall.inventory.v1`: the inventory service and the events it publishes.
pub mod inventory {
    /// Version 1 of the inventory contract.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mall.inventory.v1.rs"));
    }
}

/// A saga event: every one names the order it belongs to, which must match
/// the record key it travels under.
pub trait SagaEvent: prost::Message + prost::Name + Default {
    /// The order this event belongs to.
    fn order_id(&self) -> i64;
}

/// The one list of saga events: everything else (the type names, decoding
/// for people) is generated from it.
macro_rules! saga_events {
    ($($event:path),* $(,)?) => {
        $(impl SagaEvent for $event {
            fn order_id(&self) -> i64 {
                self.order_id
            }
        })*

        /// `ce_type` of every saga event (the protobuf full names), in saga
        /// order. A consumer ignores a known type it does not act on and
        /// dead-letters any other.
        pub static SAGA_EVENT_TYPES: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec![$(<$event as prost::Name>::full_name()),*]);

        /// Decodes `bytes` as the saga event named `event_type` and renders
        /// it for people; `None` for a type that is not a saga event.
        pub fn describe(event_type: &str, bytes: &[u8]) -> Option<Result<String, prost::DecodeError>> {
            $(if event_type == <$event as prost::Name>::full_name() {
                return Some(<$event as prost::Message>::decode(bytes).map(|e| format!("{e:?}")));
            })*
            None
        }
    };
}

saga_events!(
    order::v1::OrderCreated,
    order::v1::OrderApproved,
    order::v1::OrderRejected,
    order::v1::OrderCancelled,
    delivery::v1::DeliveryStarted,
    delivery::v1::DeliveryFailed,
    delivery::v1::DeliveryCancelled,
    inventory::v1::StockDecreased,
    inventory::v1::StockDecreaseFailed,
    inventory::v1::StockIncreased,
);

/// Whether `event_type` names a saga event.
pub fn is_saga_event(event_type: &str) -> bool {
    SAGA_EVENT_TYPES.iter().any(|known| known == event_type)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_saga_event_is_known_by_its_full_name() {
        assert_eq!(SAGA_EVENT_TYPES.len(), 10);
        assert_eq!(SAGA_EVENT_TYPES[0], "mall.order.v1.OrderCreated");
        assert!(is_saga_event("mall.inventory.v1.StockIncreased"));
        assert!(!is_saga_event("mall.order.v1.Order"));
    }

    #[test]
    fn describe_decodes_known_types_only() {
        let bytes = order::v1::OrderApproved { order_id: 5 }.encode_to_vec();
        let shown = describe("mall.order.v1.OrderApproved", &bytes)
            .expect("known")
            .expect("decodes");
        assert!(shown.contains("order_id: 5"), "{shown}");
        assert!(describe("mall.order.v1.Order", &bytes).is_none());
        assert!(
            describe("mall.order.v1.OrderCreated", b"\xff")
                .expect("known")
                .is_err()
        );
    }
}
