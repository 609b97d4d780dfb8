//! Everything at the gRPC edge: the server (TLS, limits, reflection,
//! graceful shutdown), one layer that observes every call (metrics, spans,
//! the trace context handed to handlers), authentication, the connection cap,
//! truthful health, the one error type of handlers, paging and the input
//! rules.

pub mod auth;
pub mod connections;
pub mod error;
pub mod health;
pub mod limits;
pub mod observe;
pub mod paging;
mod server;
pub mod validate;

pub use server::{GrpcError, Serving, bind, database_status, serve};
