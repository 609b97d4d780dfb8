//! Limits, so one bad client cannot take a service down: a cap on the calls
//! handled at once, beyond which calls are shed at once with
//! `RESOURCE_EXHAUSTED` instead of queueing without end.
//!
//! Health checks are never shed: an orchestrator must still see a busy
//! replica as alive. The request size, the per-connection stream limit and
//! the request timeout are tonic's own settings, applied in
//! [`crate::grpc::serve`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

/// Largest request message a service decodes: every message of the API is
/// far smaller (names and addresses are capped well below it).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How a server limits its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls handled at once, over all connections; more are shed.
    pub concurrency: usize,
    /// HTTP/2 streams one connection may have open.
    pub streams_per_connection: u32,
    /// Longest a call may take; a shorter `grpc-timeout` from the client wins.
    pub timeout: Duration,
}

/// The shedding layer.
#[derive(Debug, Clone)]
pub struct Shed {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Shed {
    /// Sheds calls beyond `limit` at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> Layer<S> for Shed {
    type Service = Shedding<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shedding {
            inner,
            shed: self.clone(),
        }
    }
}

/// A service behind [`Shed`].
#[derive(Debug, Clone)]
pub struct Shedding<S> {
    inner: S,
    shed: Shed,
}

/// Calls that are never shed.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Shedding<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = Arc::clone(&self.shed.permits).try_acquire_owned() else {
            let status = tonic::Status::resource_exhausted(format!(
                "the server is handling its limit of {} calls at once; retry with backoff",
                self.shed.limit
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_is_exempt() {
        assert!(exempt("/grpc.health.v1.Health/Check"));
        assert!(!exempt("/shop.v1.Orders/Place"));
        assert!(!exempt(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }
}
