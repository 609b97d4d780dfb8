//! gRPC bootstrap: health, reflection (v1 and v1alpha) and graceful shutdown.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;

use crate::grpc_metrics::GrpcMetrics;
use crate::limits::{Limits, Shed};

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

/// Serves `routes` (which carry `grpc.health.v1`, see [`crate::health`]) on
/// `listener`, plus server reflection in both `v1` and `v1alpha`, since
/// grpcurl releases before 1.8.7 speak only `v1alpha`; `services` are the
/// names reflection lists and `descriptors` the encoded `FileDescriptorSet`
/// it describes.
/// Every call is counted and timed by `metrics`, and held to `limits`
/// (see [`crate::limits`]).
/// Returns once `shutdown` fires and in-flight calls finished.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
    descriptors: &'static [u8],
    metrics: GrpcMetrics,
    limits: Limits,
    shutdown: CancellationToken,
) -> Result<(), GrpcError> {
    // List only what this server serves: the shared descriptor set also
    // describes the other services, which would answer UNIMPLEMENTED here.
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        services
            .iter()
            .copied()
            .chain(INFRASTRUCTURE_SERVICES)
            .fold(builder, |builder, name| builder.with_service_name(name))
    };
    let routes = routes
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, services = ?services, "gRPC server listening.");
    // Metrics outermost, so shed calls are counted too.
    let layers = tower::ServiceBuilder::new()
        .layer(metrics)
        .layer(Shed::new(limits.concurrency))
        .into_inner();
    Server::builder()
        .timeout(limits.timeout)
        .max_concurrent_streams(Some(limits.streams_per_connection))
        .layer(layers)
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await?;
    tracing::info!("gRPC server stopped.");
    Ok(())
}

/// The status a database failure maps to: `UNAVAILABLE` for transient
/// trouble (the caller may retry), `INTERNAL` for anything else. Bad input is
/// validated before the database is touched, so it never lands here.
pub fn database_status(error: &diesel::result::Error) -> tonic::Status {
    if crate::db::is_transient(error) {
        tracing::warn!(%error, "Database unavailable for a gRPC call.");
        tonic::Status::unavailable("the database is unavailable; retry shortly")
    } else {
        tracing::error!(%error, "Database error in a gRPC call.");
        tonic::Status::internal("internal database error")
    }
}
