//! The one error type of every gRPC handler, and its status codes.
//!
//! Handlers return `Result<_, ApiError>`; `?` turns database, pool and paging
//! errors into it, and tonic gets the matching [`Status`] through one
//! `From<ApiError> for Status`. Database failures are classified once (see
//! `grpc::database_status`): a passing one is `UNAVAILABLE`, worth a retry.

use tonic::Status;

use crate::grpc::paging::PageError;
use crate::store::db;

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// What the request names does not exist; the message says what.
    #[error("{0}")]
    NotFound(String),
    /// The target is in a state that forbids the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// An idempotency key was reused for a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller's credentials do not allow this (another customer's order).
    #[error("{0}")]
    PermissionDenied(String),
    /// A concurrent call conflicted; retrying is safe.
    #[error("{0}")]
    Aborted(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

impl From<PageError> for ApiError {
    fn from(error: PageError) -> Self {
        Self::InvalidArgument(error.to_string())
    }
}

impl From<db::PoolError> for ApiError {
    fn from(error: db::PoolError) -> Self {
        Self::Db(db::pool_error(error))
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(message) => Status::invalid_argument(message),
            ApiError::NotFound(message) => Status::not_found(message),
            ApiError::FailedPrecondition(message) => Status::failed_precondition(message),
            ApiError::AlreadyExists(message) => Status::already_exists(message),
            ApiError::Aborted(message) => Status::aborted(message),
            ApiError::PermissionDenied(message) => Status::permission_denied(message),
            ApiError::Db(error) => crate::grpc::database_status(&error),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn each_kind_has_its_status_code() {
        let code = |e: ApiError| Status::from(e).code();
        assert_eq!(
            code(ApiError::InvalidArgument("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(code(ApiError::NotFound("x".into())), Code::NotFound);
        assert_eq!(
            code(ApiError::FailedPrecondition("x".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(ApiError::PermissionDenied("x".into())),
            Code::PermissionDenied
        );
        assert_eq!(
            code(ApiError::AlreadyExists("x".into())),
            Code::AlreadyExists
        );
        assert_eq!(code(ApiError::Aborted("x".into())), Code::Aborted);
        assert_eq!(
            code(ApiError::Db(diesel::result::Error::NotFound)),
            Code::Unavailable
        );
    }
}
