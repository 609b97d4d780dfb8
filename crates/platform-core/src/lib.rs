//! The light half of a transactional-outbox platform, free of any domain.
//!
//! What a relay sidecar, an operator's tool and a service all need to speak
//! to Kafka and PostgreSQL the same way: the CloudEvents binding of a record,
//! Kafka client settings and topic creation, the dead-letter headers,
//! PostgreSQL connections whose dead peers are noticed in bounded time,
//! patient retries, Prometheus metrics, telemetry and shutdown. It pulls in neither diesel nor
//! gRPC, so the relay and the tools stay small. `platform-service` builds the
//! consuming and serving half on top of it.

pub use platform_envelope::{cloudevents, echo, validate, wiring};

pub mod dead_letter;
pub mod kafka;
pub mod kafka_refusal;
pub mod metrics;
pub mod pg;
pub mod pg_tls;
pub mod record;
pub mod retry;
pub mod scan;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod topic_facts;
pub mod traces;
