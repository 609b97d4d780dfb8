//! Errors of the order API and their gRPC status codes.

use mall_platform::db;
use mall_platform::paging::PageError;
use tonic::Status;

/// Everything an order call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// The order does not exist.
    #[error("order {0} not found")]
    NotFound(i64),
    /// The order is in a state that forbids the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A `request_id` was reused for a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// A concurrent call with the same `request_id` committed first; the
    /// caller answers from what it stored.
    #[error("a concurrent call with the same request_id won")]
    RequestRace,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

impl From<PageError> for Error {
    fn from(error: PageError) -> Self {
        Self::InvalidArgument(error.to_string())
    }
}

impl From<db::PoolError> for Error {
    fn from(error: db::PoolError) -> Self {
        Self::Db(db::pool_error(error))
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(message) => Status::invalid_argument(message),
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::AlreadyExists(message) => Status::already_exists(message),
            Error::RequestRace => Status::aborted(error.to_string()),
            Error::Db(error) => mall_platform::grpc::database_status(&error),
        }
    }
}
