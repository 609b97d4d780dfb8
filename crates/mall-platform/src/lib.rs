//! Shared plumbing of the 12st Mall services.
//!
//! Every service needs the same reliable-messaging machinery: a PostgreSQL
//! pool with migrations, a transactional outbox writer, an inbox-guarded
//! Kafka consumer loop with dead-lettering, and a gRPC server with health and
//! reflection. Keeping it here keeps the services down to their business rules.

pub mod app;
pub mod cloudevents;
pub mod config;
pub mod consumer;
pub mod db;
pub mod dead_letter;
pub mod grpc;
pub mod inbox;
pub mod kafka;
pub mod outbox;
pub mod paging;
pub mod pg;
pub mod record;
pub mod retention;
pub mod retry;
pub mod shutdown;
pub mod stall;
pub mod telemetry;
pub mod validate;
