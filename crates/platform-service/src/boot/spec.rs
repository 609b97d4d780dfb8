//! What a service declares about itself ([`ServiceSpec`]) and what its
//! `build` gets to make its routes and event handler ([`Context`]).

use std::time::Duration;

use diesel_migrations::EmbeddedMigrations;
use platform_core::metrics::Registry;
use platform_envelope::wiring::Wiring;

use crate::boot::config::{KafkaSettings, ServiceArgs};
use crate::store::db::PgPool;
use crate::store::outbox::Outbox;
use crate::store::retention::Expiring;

/// Static facts about one service.
pub struct ServiceSpec {
    /// Its place in the application: name, topics, source, port.
    pub wiring: Wiring,
    /// Encoded `FileDescriptorSet` describing its gRPC API, for reflection.
    pub descriptors: &'static [u8],
    /// Fully-qualified gRPC service name, for health checks.
    pub grpc_service: &'static str,
    /// The service's migration set (a function, since the set is not `Clone`
    /// and start-up may need it more than once).
    pub migrations: fn() -> EmbeddedMigrations,
    /// The right each gRPC method needs when authentication is on, by path
    /// (`/package.Service/Method`); a method not listed is refused.
    pub rights: &'static [(&'static str, &'static str)],
    /// Tables of its own whose rows expire (request ids), each with the
    /// setting that says after how long; a janitor deletes them.
    pub expiring: &'static [(Expiring, RetentionOf)],
}

/// The setting that says how long rows of an [`Expiring`] table are kept.
pub type RetentionOf = fn(&ServiceArgs) -> Duration;

/// What a service needs to build its gRPC routes and event handler.
pub struct Context {
    /// The database pool.
    pub pool: PgPool,
    /// Resolved Kafka settings.
    pub kafka: KafkaSettings,
    /// Writes the service's events to its topic, with its source.
    pub outbox: Outbox,
    /// Where the service's own metrics go (the consumer's and the gRPC
    /// layer's are registered already).
    pub metrics: Registry,
}
