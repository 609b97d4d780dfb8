//! gRPC bootstrap: TLS, authentication, limits (calls, streams, request
//! sizes, connections, keepalive, connection age), metrics, reflection (v1
//! and v1alpha) and graceful shutdown.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::{Server, ServerTlsConfig};

use crate::grpc::auth::Authenticate;
use crate::grpc::connections;
use crate::grpc::limits::{HTTP2_KEEPALIVE, INFRASTRUCTURE_MAX_REQUEST_BYTES, Limits, Shed};
use crate::grpc::observe::GrpcObserve;

/// Services every server offers besides its own.
const INFRASTRUCTURE_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Errors starting or running a gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address tried.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Reflection could not be built from the descriptor set.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `addr`, turning the error into one that names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, GrpcError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| GrpcError::Bind { addr, source })
}

/// How a server serves, besides its routes.
pub struct Serving {
    /// The names reflection lists (the application's services).
    pub services: Vec<&'static str>,
    /// The encoded `FileDescriptorSet` reflection describes.
    pub descriptors: &'static [u8],
    /// Counts, times and traces every call (see [`crate::grpc::observe`]).
    pub observe: GrpcObserve,
    /// Holds every call to its limits (see [`crate::grpc::limits`]).
    pub limits: Limits,
    /// TLS (and mTLS), or plaintext when `None`.
    pub tls: Option<ServerTlsConfig>,
    /// Authentication and rights, or none (local use) when `None`.
    pub auth: Option<Authenticate>,
    /// Whether server reflection is served.
    pub reflection: bool,
}

/// Serves `routes` (which carry `grpc.health.v1`, see [`crate::grpc::health`]) on
/// `listener`, plus server reflection in both `v1` and `v1alpha` when asked
/// (grpcurl releases before 1.8.7 speak only `v1alpha`). Returns once
/// `shutdown` fires and in-flight calls finished.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    serving: Serving,
    shutdown: CancellationToken,
) -> Result<(), GrpcError> {
    let Serving {
        services,
        descriptors,
        observe,
        limits,
        tls,
        auth,
        reflection,
    } = serving;
    // List only what this server serves: the shared descriptor set also
    // describes the other services, which would answer UNIMPLEMENTED here.
    let reflector = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        services
            .iter()
            .copied()
            .chain(INFRASTRUCTURE_SERVICES)
            .fold(builder, |builder, name| builder.with_service_name(name))
    };
    let routes = if reflection {
        routes
            .add_service(
                reflector()
                    .build_v1()?
                    .max_decoding_message_size(INFRASTRUCTURE_MAX_REQUEST_BYTES),
            )
            .add_service(
                reflector()
                    .build_v1alpha()?
                    .max_decoding_message_size(INFRASTRUCTURE_MAX_REQUEST_BYTES),
            )
    } else {
        routes
    };
    let local = listener.local_addr().ok();
    tracing::info!(
        addr = ?local,
        services = ?services,
        tls = tls.is_some(),
        authentication = auth.is_some(),
        reflection,
        "gRPC server listening."
    );
    // Observed outermost, so shed and refused calls are counted and traced too.
    let layers = tower::ServiceBuilder::new()
        .layer(observe)
        .layer(Shed::new(limits.concurrency, limits.stream_deadline))
        .option_layer(auth)
        .into_inner();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let (ping, answer) = HTTP2_KEEPALIVE;
    builder
        .timeout(limits.timeout)
        .max_concurrent_streams(Some(limits.streams_per_connection))
        .http2_keepalive_interval(Some(ping))
        .http2_keepalive_timeout(Some(answer))
        .max_connection_age(limits.connection_age)
        .layer(layers)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            connections::admitted(listener, limits.max_connections),
            shutdown.cancelled_owned(),
        )
        .await?;
    tracing::info!("gRPC server stopped.");
    Ok(())
}

/// The status a database failure maps to: `UNAVAILABLE` for transient
/// trouble (the caller may retry), `INTERNAL` for anything else. Bad input is
/// validated before the database is touched, so it never lands here.
pub fn database_status(error: &diesel::result::Error) -> tonic::Status {
    if crate::store::db::is_transient(error) {
        tracing::warn!(%error, "Database unavailable for a gRPC call.");
        tonic::Status::unavailable("the database is unavailable; retry shortly")
    } else {
        tracing::error!(%error, "Database error in a gRPC call.");
        tonic::Status::internal("internal database error")
    }
}
