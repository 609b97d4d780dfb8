//! Generated Rust types for the 12st Mall protobuf contract.
//!
//! The `.proto` files beside this crate are the public contract: outside
//! clients generate their own code from them, and the saga events travel on
//! Kafka as these messages. Keep generated types at the edges and convert them
//! into domain types with `TryFrom`.
#![allow(missing_docs, clippy::all)]

pub mod codec;

/// Encoded `FileDescriptorSet` of every mall proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mall_descriptor.bin"));

/// `mall.order.v1`: the order service and the events it publishes.
pub mod order {
    /// Version 1 of the order contract.
    pub mod v1 {
        tonic::include_proto!("mall.order.v1");
    }
}

/// `mall.delivery.v1`: the delivery service and the events it publishes.
pub mod delivery {
    /// Version 1 of the delivery contract.
    pub mod v1 {
        tonic::include_proto!("mall.delivery.v1");
    }
}

/// `mall.inventory.v1`: the inventory service and the events it publishes.
pub mod inventory {
    /// Version 1 of the inventory contract.
    pub mod v1 {
        tonic::include_proto!("mall.inventory.v1");
    }
}

/// `ce_type` of every saga event, i.e. the protobuf full names. A consumer
/// ignores a known type it does not act on and dead-letters any other.
pub const SAGA_EVENT_TYPES: [&str; 10] = [
    "mall.order.v1.OrderCreated",
    "mall.order.v1.OrderApproved",
    "mall.order.v1.OrderRejected",
    "mall.order.v1.OrderCancelled",
    "mall.delivery.v1.DeliveryStarted",
    "mall.delivery.v1.DeliveryFailed",
    "mall.delivery.v1.DeliveryCancelled",
    "mall.inventory.v1.StockDecreased",
    "mall.inventory.v1.StockDecreaseFailed",
    "mall.inventory.v1.StockIncreased",
];

/// A saga event: every one names the order it belongs to, which must match
/// the record key it travels under.
pub trait SagaEvent: prost::Message + prost::Name + Default {
    /// The order this event belongs to.
    fn order_id(&self) -> i64;
}

macro_rules! saga_events {
    ($($event:path),* $(,)?) => {
        $(impl SagaEvent for $event {
            fn order_id(&self) -> i64 {
                self.order_id
            }
        })*
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
    SAGA_EVENT_TYPES.contains(&event_type)
}

#[cfg(test)]
mod tests {
    use prost::Name;

    use super::*;

    #[test]
    fn event_type_list_matches_the_generated_names() {
        let generated = [
            order::v1::OrderCreated::full_name(),
            order::v1::OrderApproved::full_name(),
            order::v1::OrderRejected::full_name(),
            order::v1::OrderCancelled::full_name(),
            delivery::v1::DeliveryStarted::full_name(),
            delivery::v1::DeliveryFailed::full_name(),
            delivery::v1::DeliveryCancelled::full_name(),
            inventory::v1::StockDecreased::full_name(),
            inventory::v1::StockDecreaseFailed::full_name(),
            inventory::v1::StockIncreased::full_name(),
        ];
        assert_eq!(generated.map(|s| s), SAGA_EVENT_TYPES.map(str::to_owned));
        assert!(!is_saga_event("mall.order.v1.Order"));
    }
}
