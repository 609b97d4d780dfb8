//! The one error of starting or running a service.

use platform_core::kafka::TopicError;
use platform_core::metrics::MetricsError;

use crate::boot::durability::DurabilityError;
use crate::boot::security::SecurityError;
use crate::consumer::ConsumerError;
use crate::grpc::GrpcError;
use crate::store::db::DbError;
use crate::store::retention::RetentionRuleError;

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
