//! Starting a service: migrations, pool, topics, consumer and gRPC server.
//!
//! Every service starts the same way; only its database, routes, event
//! handler and wiring differ. `start` returns once everything listens, so tests
//! can bind port 0 and read the real address back.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_migrations::EmbeddedMigrations;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::config::{KafkaSettings, ServiceArgs};
use crate::consumer::{ConsumerError, EventHandler, InboxConsumer, Stats};
use crate::db::{self, DbError, PgPool};
use crate::grpc::{self, GrpcError};
use crate::grpc_metrics::GrpcMetrics;
use crate::kafka::{self, TopicError};
use crate::metrics::{self, MetricsError, Registry};
use crate::outbox::Outbox;
use crate::retention::{self, RetentionRuleError};
use crate::retry::Patience;
use crate::wiring::Wiring;

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
}

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

/// Errors starting or running a service.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Database set-up failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Topics could not be created.
    #[error(transparent)]
    Topics(#[from] TopicError),
    /// The consumer could not start.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The gRPC server failed.
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    /// The configured retentions break the inbox retention rule.
    #[error(transparent)]
    Retention(#[from] RetentionRuleError),
    /// The metrics endpoint failed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A task panicked.
    #[error("service task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

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
    server: JoinHandle<Result<(), GrpcError>>,
    exporter: Option<JoinHandle<Result<(), MetricsError>>>,
    consumer: JoinHandle<()>,
    janitor: JoinHandle<()>,
}

impl Running {
    /// Waits until the server, the consumer and the inbox janitor stopped.
    pub async fn wait(self) -> Result<(), AppError> {
        let served = self.server.await?;
        self.consumer.await?;
        self.janitor.await?;
        if let Some(exporter) = self.exporter {
            exporter.await??;
        }
        Ok(served?)
    }
}

/// Retries a start-up step with the platform's backoff for up to
/// `patience`, so a service started together with its database or broker
/// waits for them instead of failing on the first refused connection.
async fn patiently<T, E, F, Fut>(
    what: &str,
    patience: Duration,
    shutdown: &CancellationToken,
    mut step: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + patience;
    let mut waiting = Patience::new();
    loop {
        let error = match step().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        tracing::warn!(%error, attempt = waiting.attempts() + 1, waited_ms = waiting.waited().as_millis() as u64, "Cannot {what} yet; retrying.");
        if !waiting.sleep(shutdown).await {
            return Err(error);
        }
    }
}

/// Starts a service that consumes the topics of `spec.wiring.reads` with the
/// handler and serves the routes that `build` returns. Everything stops when
/// `shutdown` fires.
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
    retention::check_rule(args.inbox_retention_secs, args.kafka.topic_retention_secs)?;
    let patience = args.startup_timeout();
    patiently("migrate the database", patience, &shutdown, || {
        db::migrate(&args.database_url, (spec.migrations)())
    })
    .await?;
    let pool = patiently("connect to the database", patience, &shutdown, || {
        db::connect(
            &args.database_url,
            args.db_pool_size,
            args.statement_timeout(),
        )
    })
    .await?;
    let wiring = spec.wiring;
    let settings = args.kafka.settings(wiring.name);
    let names = &settings.names;
    let events: Vec<String> = wiring
        .all_services
        .iter()
        .map(|s| names.events(s))
        .collect();
    let dead_letters: Vec<String> = wiring
        .all_services
        .iter()
        .map(|s| names.dead_letters(s))
        .collect();
    let dead_letter_retention = settings
        .dead_letter_retention
        .map_or(kafka::Retention::Forever, kafka::Retention::For);
    patiently("create the topics", patience, &shutdown, || async {
        kafka::ensure_topics(
            &settings.brokers,
            &events,
            settings.partitions,
            settings.replication,
            kafka::Retention::For(settings.retention),
        )
        .await?;
        kafka::ensure_topics(
            &settings.brokers,
            &dead_letters,
            settings.partitions,
            settings.replication,
            dead_letter_retention,
        )
        .await
    })
    .await?;
    let registry = Registry::new();
    let context = Context {
        pool: pool.clone(),
        kafka: settings.clone(),
        outbox: Outbox::new(wiring.source, names.events(wiring.name)),
        metrics: registry.clone(),
    };
    let (routes, handler) = build(&context);
    let consumed: Vec<String> = wiring.reads.iter().map(|s| names.events(s)).collect();
    let consumer = InboxConsumer::new(&settings, &consumed, pool.clone(), handler)?;
    let stats = consumer.stats();
    stats.register(&registry);
    let grpc_metrics = GrpcMetrics::new(&registry);
    let (exporter, metrics_addr) = match args.metrics_addr {
        Some(addr) => {
            let listener = metrics::bind(addr).await?;
            let bound = listener.local_addr().unwrap_or(addr);
            let served = tokio::spawn(metrics::serve(listener, registry.clone(), shutdown.clone()));
            (Some(served), Some(bound))
        }
        None => (None, None),
    };
    let addr = args
        .grpc_addr
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, wiring.default_port)));
    let listener = grpc::bind(addr).await?;
    let grpc_addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(
        service = wiring.name,
        %grpc_addr,
        metrics_addr = ?metrics_addr,
        group_id = %settings.group_id,
        topics = ?consumed,
        "Service started."
    );
    let consumer = tokio::spawn(consumer.run(shutdown.clone()));
    let janitor = retention::spawn_inbox_janitor(
        pool,
        args.inbox_retention(),
        args.inbox_purge_interval(),
        shutdown.clone(),
    );
    let grpc_service = spec.grpc_service;
    let descriptors = spec.descriptors;
    let server = tokio::spawn(async move {
        grpc::serve(
            listener,
            routes,
            &[grpc_service],
            descriptors,
            grpc_metrics,
            shutdown,
        )
        .await
    });
    Ok(Running {
        grpc_addr,
        metrics_addr,
        metrics: registry,
        stats,
        server,
        exporter,
        consumer,
        janitor,
    })
}

/// The whole `main` of a service binary: telemetry, flags and environment
/// (`--help` from the wiring's `about`), signal handling, start, and wait. Errors are
/// logged and end the process with a failure status.
pub fn main<F>(spec: &ServiceSpec, version: &'static str, start: F) -> std::process::ExitCode
where
    F: AsyncFnOnce(&ServiceArgs, CancellationToken) -> Result<Running, AppError>,
{
    use clap::{Args, FromArgMatches};

    crate::telemetry::init();
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
        let shutdown = crate::shutdown::on_signal();
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
