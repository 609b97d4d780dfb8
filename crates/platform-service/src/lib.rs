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

pub mod app;
pub mod auth;
pub mod config;
pub mod connections;
pub mod consumer;
pub mod db;
pub mod durability;
pub mod error;
pub mod grpc;
pub mod grpc_metrics;
pub mod grpc_tracing;
pub mod health;
pub mod inbox;
pub mod limits;
pub mod outbox;
pub mod paging;
pub mod retention;
pub mod security;
pub mod stall;
pub mod text_enum;
pub mod validate;

pub use platform_core::{
    cloudevents, dead_letter, kafka, kafka_refusal, metrics, pg, pg_tls, record, retry, scrape,
    shutdown, telemetry, topic_facts, traces, wiring,
};
