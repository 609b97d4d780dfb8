//! The mall's saga wiring, declared once.
//!
//! Which services there are, where each publishes, which topics each reads,
//! which event types exist, who publishes each and which each service acts
//! on, and the contract's value limits: the services start from it, and the
//! tests, the fault-injection run and the operator tools read the same
//! declaration, so the wiring cannot drift between them. The names follow
//! the platform's convention (`platform_envelope::names::TopicNames`); the saga's
//! rules live in each service's `domain` module.

pub mod checks;
mod events;
pub mod limits;
mod topics;

pub use events::{
    DeliveryInbound, EVENT_TYPES, InventoryInbound, OrderInbound, SagaEventExt, is_saga_event,
    producer_of,
};
pub use topics::{Service, Topics};
