//! The mall's saga wiring, declared once.
//!
//! Which services there are, where each publishes, which topics each reads,
//! and which event types exist: the services start from it, and the tests,
//! the fault-injection run and the operator tools read the same declaration,
//! so the wiring cannot drift between them. The names follow the platform's
//! convention (`platform_core::kafka::TopicNames`); the saga's rules live in
//! each service's `domain` module.

mod events;
mod topics;

pub use events::{EVENT_TYPES, SagaEventExt, is_saga_event};
pub use topics::{Service, Topics};
