//! Everything at the gRPC edge: the server (TLS, limits, observability,
//! reflection, graceful shutdown), authentication, the connection cap,
//! truthful health, the one error type of handlers, paging and the input
//! rules.

pub mod auth;
pub mod call_metrics;
pub mod call_spans;
pub mod connections;
pub mod error;
pub mod health;
pub mod limits;
pub mod paging;
mod server;
pub mod validate;

pub use server::{GrpcError, Serving, bind, database_status, serve};
