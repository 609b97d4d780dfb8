//! Starting a service: migrations, pool, topics, consumer and gRPC server.
//!
//! Every service starts the same way; only its database, routes, event
//! handler and wiring differ. `start` returns once everything listens, so tests
//! can bind port 0 and read the real address back.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_migrations::EmbeddedMigrations;
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::auth::Authenticate;
use crate::config::{KafkaSettings, ServiceArgs};
use crate::consumer::{ConsumerError, EventHandler, InboxConsumer, InboxGate, Stats};
use crate::db::{self, DbError, PgPool};
use crate::durability::{self, DurabilityError};
use crate::grpc::{self, GrpcError, Serving};
use crate::grpc_metrics::{DeclaredPaths, GrpcMetrics};
use crate::grpc_tracing::GrpcTracing;
use crate::health::{self, Health, Probes};
use crate::kafka::{self, TopicError};
use crate::metrics::{self, MetricsError, Registry};
use crate::outbox::Outbox;
use crate::retention::{self, Expiring, RetentionRuleError};
use crate::retry::Patience;
use crate::security::{self, SecurityError};
use crate::topic_facts;
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
    /// A TLS or authentication setting cannot be used.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// A consumed topic breaks the inbox rule.
    #[error(transparent)]
    Durability(#[from] DurabilityError),
    /// A setting is out of its range.
    #[error(transparent)]
    Config(#[from] crate::config::OutOfRange),
    /// The metrics endpoint failed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A task panicked.
    #[error("service task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A background task ended before shutdown, failed or panicked.
    #[error("the service's {task} task stopped: {reason}")]
    TaskEnded {
        /// Which task.
        task: &'static str,
        /// How it ended.
        reason: String,
    },
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

/// A task of the service, by name, whose end is watched.
type Task = (&'static str, JoinHandle<Result<(), String>>);

/// Spawns `work` as a supervised task called `name`.
fn task<E: std::fmt::Display>(
    name: &'static str,
    work: impl Future<Output = Result<(), E>> + Send + 'static,
) -> Task {
    (
        name,
        tokio::spawn(async move { work.await.map_err(|e| e.to_string()) }),
    )
}

/// Waits for every task. One that ends before shutdown, fails or panics
/// cancels `failed` (the health monitor then reports `NOT_SERVING`); the
/// first such failure is the result once all have ended.
async fn supervise(
    tasks: Vec<Task>,
    shutdown: CancellationToken,
    failed: CancellationToken,
) -> Result<(), AppError> {
    let mut pending: FuturesUnordered<_> = tasks
        .into_iter()
        .map(|(name, handle)| async move { (name, handle.await) })
        .collect();
    let mut first = None;
    while let Some((task, outcome)) = pending.next().await {
        let reason = match outcome {
            Err(error) => Some(format!("panicked or was aborted: {error}")),
            Ok(Err(error)) => Some(error),
            Ok(Ok(())) if !shutdown.is_cancelled() => Some("ended on its own".to_owned()),
            Ok(Ok(())) => None,
        };
        if let Some(reason) = reason
            && first.is_none()
        {
            tracing::error!(task, %reason, "A service task ended; health is NOT_SERVING and the service stops.");
            failed.cancel();
            first = Some(AppError::TaskEnded { task, reason });
        }
    }
    first.map_or(Ok(()), Err)
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
    args.validate()?;
    let tls = security::tls(args)?;
    let policy = security::policy(args, spec.rights)?;
    retention::check_rule(args.inbox_retention_secs, args.kafka.topic_retention_secs)?;
    let patience = args.startup_timeout();
    patiently("migrate the database", patience, &shutdown, || {
        db::migrate(args.database_url.expose_secret(), (spec.migrations)())
    })
    .await?;
    // Three pools: gRPC calls, the consumer's lanes and janitors, and the
    // health probe, so heavy API traffic (or a lock it waits on) takes no
    // connection the saga or the probe needs.
    let open = |size: usize| {
        let url = args.database_url.expose_secret().to_owned();
        let (statement, checkout) = (args.statement_timeout(), args.pool_timeout());
        let shutdown = &shutdown;
        async move {
            patiently("connect to the database", patience, shutdown, || {
                db::connect(&url, size, statement, checkout)
            })
            .await
        }
    };
    let pool = open(args.db_pool_size).await?;
    let consumer_pool = open(usize::try_from(args.db_consumer_pool_size).unwrap_or(8)).await?;
    let probe_pool = open(1).await?;
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
            settings.min_insync_replicas,
        )
        .await?;
        kafka::ensure_topics(
            &settings.brokers,
            &dead_letters,
            settings.partitions,
            settings.replication,
            dead_letter_retention,
            settings.min_insync_replicas,
        )
        .await
    })
    .await?;
    // How the broker really keeps what this service consumes.
    let consumed: Vec<String> = wiring.reads.iter().map(|s| names.events(s)).collect();
    let described = patiently("describe the topics", patience, &shutdown, || {
        topic_facts::describe(&settings.brokers, &consumed)
    })
    .await?;
    durability::enforce(&described, args.inbox_retention(), settings.replication)?;
    let registry = Registry::new();
    let context = Context {
        pool: pool.clone(),
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
    let gate = InboxGate::Recorded;
    let consumer = InboxConsumer::new(
        wiring.name,
        &settings,
        origins,
        consumer_pool.clone(),
        handler,
        gate,
    )?;
    let stats = consumer.stats();
    stats.register(&registry);
    let declared = DeclaredPaths::new(spec.rights.iter().map(|(path, _)| *path));
    let grpc_metrics = GrpcMetrics::new(&registry, declared.clone());
    let mut tasks = Vec::new();
    let mut metrics_addr = None;
    if let Some(addr) = args.metrics_addr {
        let listener = metrics::bind(addr).await?;
        metrics_addr = Some(listener.local_addr().unwrap_or(addr));
        tasks.push(task(
            "metrics",
            metrics::serve(listener, registry.clone(), None, shutdown.clone()),
        ));
    }
    let addr = args
        .grpc_addr
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, wiring.default_port)));
    security::check_open(policy.as_ref(), addr, args.grpc_allow_unauthenticated)?;
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
    let failed = CancellationToken::new();
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health::new(reporter, &[spec.grpc_service]);
    health.set(ServingStatus::Serving).await;
    let probes = Probes {
        pool: probe_pool,
        broker: Arc::new(
            kafka::client_config(&settings.brokers)
                .create_with_context(kafka::LogContext)
                .map_err(ConsumerError::from)?,
        ),
        topic: names.events(wiring.name),
        refusals: consumer.refusals(),
    };
    tasks.push(task(
        "health",
        health::monitor(
            health,
            probes,
            Duration::from_secs(args.health_unavailable_after_secs),
            shutdown.clone(),
            failed.clone(),
        )
        .map(Ok::<(), String>),
    ));
    tasks.push(task(
        "consumer",
        consumer.run(shutdown.clone()).map(Ok::<(), String>),
    ));
    tasks.push(task(
        "inbox janitor",
        retention::janitor(
            consumer_pool.clone(),
            retention::INBOX,
            args.inbox_retention(),
            args.inbox_purge_interval(),
            shutdown.clone(),
        )
        .map(Ok::<(), String>),
    ));
    for (expiring, retention_of) in spec.expiring {
        tasks.push(task(
            expiring.table,
            retention::janitor(
                consumer_pool.clone(),
                *expiring,
                retention_of(args),
                args.inbox_purge_interval(),
                shutdown.clone(),
            )
            .map(Ok::<(), String>),
        ));
    }
    // The server outlives the shutdown signal by the grace period, while
    // health already says NOT_SERVING.
    let server_stop = CancellationToken::new();
    {
        let (signal, stop) = (shutdown.clone(), server_stop.clone());
        let grace = Duration::from_millis(args.shutdown_grace_ms);
        tokio::spawn(async move {
            signal.cancelled().await;
            tokio::time::sleep(grace).await;
            stop.cancel();
        });
    }
    let grpc_service = spec.grpc_service;
    let descriptors = spec.descriptors;
    let limits = args.limits();
    let routes = routes.add_service(
        health_service.max_decoding_message_size(crate::limits::INFRASTRUCTURE_MAX_REQUEST_BYTES),
    );
    let serving = Serving {
        services: vec![grpc_service],
        descriptors,
        metrics: grpc_metrics,
        limits,
        tls,
        auth: policy.map(Authenticate::new),
        reflection: args.grpc_reflection,
        tracing: GrpcTracing::new(wiring.name, declared),
    };
    tasks.push(task(
        "gRPC server",
        grpc::serve(listener, routes, serving, server_stop),
    ));
    let supervisor = tokio::spawn(supervise(tasks, shutdown.clone(), failed.clone()));
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
        // Kept until the service stopped, so the last spans are exported.
        let _traces = crate::traces::install_from_env();
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
