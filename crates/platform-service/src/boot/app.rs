//! Starting a service: [`start`] as a list of named phases (each in a file
//! of its own under `boot/`), the [`Running`] service it gives, and the
//! binary's `main`. What a service declares and what its `build` gets are
//! in `spec`, the error in `error`.
//!
//! Every service starts the same way; only its database, routes, event
//! handler and wiring differ. `start` returns once everything listens, so tests
//! can bind port 0 and read the real address back.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use super::database::{self, Pools};
use super::error::AppError;
use super::spec::{Context, ServiceSpec};
use super::supervise::Tasks;
use super::{serve, topics};
use crate::boot::config::{KafkaSettings, ServiceArgs};
use crate::boot::security::{self};
use crate::consumer::{EventHandler, InboxConsumer, InboxGate, Stats};
use crate::store::outbox::Outbox;
use crate::store::retention::{self};
use platform_core::metrics::Registry;

/// A started service.
pub struct Running {
    /// The address the gRPC server listens on.
    pub grpc_addr: SocketAddr,
    /// The address of the metrics endpoint, if one was asked for.
    pub metrics_addr: Option<SocketAddr>,
    /// Every metric of this service, as the endpoint serves them.
    pub metrics: Registry,
    /// The consumer's counters.
    pub stats: Arc<Stats>,
    /// Fires when a background task ended or panicked (health is then
    /// `NOT_SERVING` for good).
    pub failed: CancellationToken,
    shutdown: CancellationToken,
    supervisor: JoinHandle<Result<(), AppError>>,
}

impl Running {
    /// Waits until every task stopped. If one ended on its own, the others
    /// are stopped too and its failure is returned, so the process can
    /// exit with a failure status for its orchestrator to restart it.
    pub async fn wait(self) -> Result<(), AppError> {
        tokio::select! {
            () = self.failed.cancelled() => self.shutdown.cancel(),
            () = self.shutdown.cancelled() => {}
        }
        self.supervisor.await?
    }
}

/// Starts a service that consumes the topics of `spec.wiring.reads` with the
/// handler and serves the routes that `build` returns. Everything stops when
/// `shutdown` fires. The phases, in order: check the settings (TLS,
/// authentication, an open address, retention), prepare the database,
/// provision the topics (and check their durability), build the service,
/// then serve (metrics, health and gRPC, then the consumer and the
/// janitors), all supervised together.
pub async fn start<H, B>(
    spec: ServiceSpec,
    args: &ServiceArgs,
    build: B,
    shutdown: CancellationToken,
) -> Result<Running, AppError>
where
    H: EventHandler,
    B: FnOnce(&Context) -> (Routes, H),
{
    let tls = security::tls(args)?;
    let policy = security::policy(args, spec.rights)?;
    let open = serve::listen_addr(&spec, args);
    security::check_open(policy.as_ref(), open, args.grpc_allow_unauthenticated)?;
    retention::check_rule(args.inbox_retention, args.kafka.topic_retention)?;
    let pools = database::prepare(&spec, args, &shutdown).await?;
    let settings = args.kafka.settings(spec.wiring.name);
    let consumed = topics::provision(&spec.wiring, &settings, args, &shutdown).await?;
    let registry = Registry::new();
    let (routes, consumer) = build_service(&spec, args, &settings, &pools, &registry, build)?;
    let stats = consumer.stats();
    let refusals = consumer.refusals();
    let mut tasks = Tasks::default();
    let verdict = crate::grpc::health::Verdict::starting();
    let metrics_addr =
        serve::metrics_endpoint(args, &registry, &verdict, &mut tasks, &shutdown).await?;
    let failed = CancellationToken::new();
    let edge = serve::Edge {
        routes,
        tls,
        policy,
        refusals,
        probe: pools.probe.clone(),
        registry: registry.clone(),
        verdict,
    };
    let grpc_addr = serve::grpc_server(
        &spec,
        args,
        &settings,
        edge,
        &mut tasks,
        (&shutdown, &failed),
    )
    .await?;
    serve::consume(consumer, &spec, args, &pools, &mut tasks, &shutdown);
    tracing::info!(
        service = spec.wiring.name,
        %grpc_addr,
        metrics_addr = ?metrics_addr,
        group_id = %settings.group_id,
        topics = ?consumed,
        "Service started."
    );
    let supervisor = tokio::spawn(tasks.supervise(shutdown.clone(), failed.clone()));
    Ok(Running {
        grpc_addr,
        metrics_addr,
        metrics: registry,
        stats,
        failed,
        shutdown,
        supervisor,
    })
}

/// The build phase: the service's routes and handler from its `build`, and
/// the inbox consumer around the handler, its counters registered.
fn build_service<H, B>(
    spec: &ServiceSpec,
    args: &ServiceArgs,
    settings: &KafkaSettings,
    pools: &Pools,
    registry: &Registry,
    build: B,
) -> Result<(Routes, InboxConsumer<H>), AppError>
where
    H: EventHandler,
    B: FnOnce(&Context) -> (Routes, H),
{
    let wiring = &spec.wiring;
    let names = &settings.names;
    let context = Context {
        pool: pools.api.clone(),
        kafka: settings.clone(),
        outbox: Outbox::new(wiring.source, names.events(wiring.name)),
        metrics: registry.clone(),
    };
    let (routes, handler) = build(&context);
    let origins = wiring
        .reads
        .iter()
        .filter_map(|read| Some((names.events(read), wiring.source_of(read)?.to_owned())))
        .collect();
    #[cfg(feature = "bench-hooks")]
    let gate = if args.inbox_gate_off {
        InboxGate::Off
    } else {
        InboxGate::Recorded
    };
    #[cfg(not(feature = "bench-hooks"))]
    let gate = {
        let _ = args;
        InboxGate::Recorded
    };
    let consumer = InboxConsumer::new(
        wiring.name,
        settings,
        origins,
        pools.consumer.clone(),
        handler,
        gate,
    )?;
    consumer.stats().register(registry);
    Ok((routes, consumer))
}

/// The whole `main` of a service binary: telemetry, flags and environment
/// (`--help` from the wiring's `about`), signal handling, start, and wait. Errors are
/// logged and end the process with a failure status.
pub fn main<F>(spec: &ServiceSpec, version: &'static str, start: F) -> std::process::ExitCode
where
    F: AsyncFnOnce(&ServiceArgs, CancellationToken) -> Result<Running, AppError>,
{
    use clap::{Args, FromArgMatches};

    platform_core::telemetry::init();
    // Named like the binary (`order-service`), as `--version` prints it;
    // clap wants a `'static` name, and this runs once per process.
    let binary: &'static str = std::env::args_os()
        .next()
        .and_then(|arg0| {
            let path = std::path::PathBuf::from(arg0);
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .map_or(spec.wiring.name, |name| Box::leak(name.into_boxed_str()));
    let command = ServiceArgs::augment_args(clap::Command::new(binary).version(version))
        .about(spec.wiring.about);
    let matches = command.get_matches();
    let args = match ServiceArgs::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "Cannot start the async runtime.");
            return std::process::ExitCode::FAILURE;
        }
    };
    let service = spec.wiring.name;
    let outcome = runtime.block_on(async move {
        // Kept until the service stopped, so the last spans are exported.
        let _traces = platform_core::traces::install_from_env();
        let shutdown = platform_core::shutdown::on_signal();
        start(&args, shutdown).await?.wait().await
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(service, %error, "Service failed.");
            std::process::ExitCode::FAILURE
        }
    }
}
