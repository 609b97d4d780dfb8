//! Starting a service: migrations, pool, topics, consumer and gRPC server.
//!
//! The three services start the same way; only their database, routes and
//! event handler differ. `start` returns once everything listens, so tests
//! can bind port 0 and read the real address back.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_migrations::EmbeddedMigrations;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::config::ServiceArgs;
use crate::consumer::{ConsumerError, EventHandler, InboxConsumer, Stats};
use crate::db::{self, DbError, PgPool};
use crate::grpc::{self, GrpcError};
use crate::kafka::{self, KafkaSettings, TopicError};
use crate::retention::{self, RetentionRuleError};

/// Static facts about one service.
pub struct ServiceSpec {
    /// Short name: `order`, `delivery` or `inventory`.
    pub name: &'static str,
    /// Fully-qualified gRPC service name, for health checks.
    pub grpc_service: &'static str,
    /// Port used when `GRPC_ADDR` is not set.
    pub default_port: u16,
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
    /// A task panicked.
    #[error("service task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A started service.
pub struct Running {
    /// The address the gRPC server listens on.
    pub grpc_addr: SocketAddr,
    /// The consumer's counters.
    pub stats: Arc<Stats>,
    server: JoinHandle<Result<(), GrpcError>>,
    consumer: JoinHandle<()>,
    janitor: JoinHandle<()>,
}

impl Running {
    /// Waits until the server, the consumer and the inbox janitor stopped.
    pub async fn wait(self) -> Result<(), AppError> {
        let served = self.server.await?;
        self.consumer.await?;
        self.janitor.await?;
        Ok(served?)
    }
}

/// Retries a start-up step with backoff for up to `patience`, so a service
/// started together with its database or broker waits for them instead of
/// failing on the first refused connection.
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
    let mut backoff = Duration::from_millis(200);
    loop {
        let error = match step().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if shutdown.is_cancelled() || Instant::now() + backoff > deadline {
            return Err(error);
        }
        tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "Cannot {what} yet; retrying.");
        tokio::select! {
            () = shutdown.cancelled() => return Err(error),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Starts a service that consumes `topics(kafka)` with the handler and serves
/// the routes that `build` returns. Everything stops when `shutdown` fires.
pub async fn start<H, B, T>(
    spec: ServiceSpec,
    args: &ServiceArgs,
    topics: T,
    build: B,
    shutdown: CancellationToken,
) -> Result<Running, AppError>
where
    H: EventHandler,
    B: FnOnce(&Context) -> (Routes, H),
    T: FnOnce(&kafka::Topics) -> Vec<String>,
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
    let settings = args.kafka.settings(spec.name);
    let events = settings.topics.events();
    let dead_letters = settings.topics.dead_letters();
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
    let context = Context {
        pool: pool.clone(),
        kafka: settings.clone(),
    };
    let (routes, handler) = build(&context);
    let consumed = topics(&settings.topics);
    let consumer = InboxConsumer::new(&settings, &consumed, pool.clone(), handler)?;
    let stats = consumer.stats();
    let addr = args
        .grpc_addr
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, spec.default_port)));
    let listener = grpc::bind(addr).await?;
    let grpc_addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(
        service = spec.name,
        %grpc_addr,
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
    let server =
        tokio::spawn(async move { grpc::serve(listener, routes, &[grpc_service], shutdown).await });
    Ok(Running {
        grpc_addr,
        stats,
        server,
        consumer,
        janitor,
    })
}
