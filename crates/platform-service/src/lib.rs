//! The consuming and serving half of a transactional-outbox platform, free
//! of any domain.
//!
//! A service built on it writes its events to an outbox table in the same
//! transaction as its state change, consumes other services' events through
//! an inbox that makes every effect happen once, dead-letters what can never
//! be processed, and serves gRPC with health and reflection. Which topics a
//! service reads, what its events are called and what they do belong to the
//! application (in this repository, `mall-saga` and the three services).
//!
//! The light half, with no diesel or gRPC, is `platform-core`; its modules
//! are re-exported here so a service needs only this crate.

pub mod boot;
pub mod consumer;
pub mod grpc;
pub mod store;

// The short paths services use (code inside this crate imports from the
// module, or the crate, that defines a thing).
pub use boot::{app, config, durability, security, spec};
pub use grpc::{auth, connections, error, health, limits, paging};
pub use store::{db, inbox, outbox, retention, text_enum};

pub use platform_core::{
    dead_letter, kafka, kafka_refusal, metrics, pg, pg_tls, record, retry, shutdown, telemetry,
    topic_facts, traces,
};
pub use platform_envelope::{cloudevents, validate, wiring};
