//! The serving phase of start-up: the metrics endpoint, the consumer and the
//! janitors as supervised tasks, truthful health, and the gRPC server with
//! its layers, kept up for the shutdown grace period after the signal.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use super::database::Pools;
use super::error::AppError;
use super::spec::ServiceSpec;
use super::supervise::Tasks;
use crate::boot::config::{KafkaSettings, ServiceArgs};
use crate::consumer::{ConsumerError, EventHandler, InboxConsumer};
use crate::grpc::auth::{Authenticate, Policy};
use crate::grpc::health::{self, Health, Probes, Verdict};
use crate::grpc::limits::INFRASTRUCTURE_MAX_REQUEST_BYTES;
use crate::grpc::observe::{DeclaredPaths, GrpcObserve};
use crate::grpc::{self, Serving};
use crate::store::db::PgPool;
use crate::store::retention;
use platform_core::kafka;
use platform_core::kafka_refusal::Refusals;
use platform_core::metrics::{self, Registry};

/// Serves `GET /metrics` from `registry` when `METRICS_ADDR` is set, and
/// `GET /health` with the gRPC health's verdict; the bound address.
pub(super) async fn metrics_endpoint(
    args: &ServiceArgs,
    registry: &Registry,
    verdict: &Verdict,
    tasks: &mut Tasks,
    shutdown: &CancellationToken,
) -> Result<Option<SocketAddr>, AppError> {
    let Some(addr) = args.observability.metrics_addr else {
        return Ok(None);
    };
    let listener = metrics::bind(addr).await?;
    let bound = listener.local_addr().unwrap_or(addr);
    tasks.spawn(
        "metrics",
        metrics::serve(
            listener,
            registry.clone(),
            Some(verdict.check()),
            shutdown.clone(),
        ),
    );
    Ok(Some(bound))
}

/// Runs the consumer and the janitors of the inbox and of the service's own
/// expiring tables.
pub(super) fn consume<H: EventHandler>(
    consumer: InboxConsumer<H>,
    spec: &ServiceSpec,
    args: &ServiceArgs,
    pools: &Pools,
    tasks: &mut Tasks,
    shutdown: &CancellationToken,
) {
    tasks.spawn_infallible("consumer", consumer.run(shutdown.clone()));
    let purge = args.inbox_purge_interval;
    let janitor = |expiring, retention| {
        retention::janitor(
            pools.consumer.clone(),
            expiring,
            retention,
            purge,
            shutdown.clone(),
        )
    };
    tasks.spawn_infallible(
        "inbox janitor",
        janitor(retention::INBOX, args.inbox_retention),
    );
    for (expiring, retention_of) in spec.expiring {
        tasks.spawn_infallible(expiring.table, janitor(*expiring, retention_of(args)));
    }
}

/// What the gRPC phase needs besides the settings.
pub(super) struct Edge {
    /// The service's routes, as its `build` made them.
    pub routes: Routes,
    /// The checked TLS configuration, if any.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// The checked authentication policy, if any.
    pub policy: Option<Policy>,
    /// The consumer's authorisation refusals, for health.
    pub refusals: Arc<Refusals>,
    /// The health probe's database connection.
    pub probe: PgPool,
    /// Where the gRPC layer's metrics go.
    pub registry: Registry,
    /// Health's verdict, shared with `GET /health`.
    pub verdict: Verdict,
}

/// Where the gRPC server listens: `GRPC_ADDR`, or the service's default
/// port on loopback.
pub(super) fn listen_addr(spec: &ServiceSpec, args: &ServiceArgs) -> SocketAddr {
    args.grpc_addr
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, spec.wiring.default_port)))
}

/// Binds the gRPC address, starts the health monitor and the server; the
/// bound address.
pub(super) async fn grpc_server(
    spec: &ServiceSpec,
    args: &ServiceArgs,
    settings: &KafkaSettings,
    edge: Edge,
    tasks: &mut Tasks,
    (shutdown, failed): (&CancellationToken, &CancellationToken),
) -> Result<SocketAddr, AppError> {
    let wiring = &spec.wiring;
    let addr = listen_addr(spec, args);
    let listener = grpc::bind(addr).await?;
    let grpc_addr = listener.local_addr().unwrap_or(addr);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health::new(reporter, &[spec.grpc_service], edge.verdict);
    health.set(ServingStatus::Serving, "").await;
    let probes = probes(settings, wiring.name, edge.probe, edge.refusals)?;
    tasks.spawn_infallible(
        "health",
        health::monitor(
            health,
            probes,
            args.observability.health_unavailable_after,
            shutdown.clone(),
            failed.clone(),
        ),
    );
    let server_stop = grace_stop(args, shutdown, tasks);
    let declared = DeclaredPaths::new(spec.rights.iter().map(|(path, _)| *path));
    let routes = edge
        .routes
        .add_service(health_service.max_decoding_message_size(INFRASTRUCTURE_MAX_REQUEST_BYTES));
    let serving = Serving {
        services: vec![spec.grpc_service],
        descriptors: spec.descriptors,
        observe: GrpcObserve::new(wiring.name, &edge.registry, declared),
        limits: args.limits(),
        tls: edge.tls,
        auth: edge.policy.map(Authenticate::new),
        reflection: args.grpc_reflection,
    };
    tasks.spawn(
        "gRPC server",
        grpc::serve(listener, routes, serving, server_stop),
    );
    Ok(grpc_addr)
}

/// What the health monitor probes: the database (a connection of its own),
/// the broker (a metadata client) and the consumer's authorisation refusals.
fn probes(
    settings: &KafkaSettings,
    service: &str,
    pool: PgPool,
    refusals: Arc<Refusals>,
) -> Result<Probes, AppError> {
    Ok(Probes {
        pool,
        broker: Arc::new(
            kafka::client_config(&settings.brokers)
                .create_with_context(kafka::LogContext)
                .map_err(ConsumerError::from)?,
        ),
        topic: settings.names.events(service),
        refusals,
    })
}

/// The token that stops the gRPC server: the shutdown signal plus the grace
/// period (`SHUTDOWN_GRACE_MS`), during which health already says
/// `NOT_SERVING` while calls are still served.
fn grace_stop(
    args: &ServiceArgs,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> CancellationToken {
    let server_stop = CancellationToken::new();
    let (signal, stop, grace) = (shutdown.clone(), server_stop.clone(), args.shutdown_grace);
    tasks.spawn_infallible("shutdown grace", async move {
        signal.cancelled().await;
        tokio::time::sleep(grace).await;
        stop.cancel();
    });
    server_stop
}
