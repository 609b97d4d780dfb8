//! Everything at the gRPC edge: the server (TLS, limits, reflection,
//! graceful shutdown), one layer that observes every call (metrics, spans,
//! the trace context handed to handlers), authentication, the connection cap,
//! truthful health, the one error type of handlers, and paging. (The input
//! rules are `platform_envelope::validate`'s, which the Kafka edge applies
//! too.)

pub mod auth;
pub mod connections;
pub mod error;
pub mod health;
pub mod limits;
pub mod observe;
pub mod paging;
mod server;

pub use server::{GrpcError, Serving, bind, database_status, serve};
