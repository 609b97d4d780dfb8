//! Limits, so one bad client cannot take a service down: a cap on the calls
//! handled at once, beyond which calls are shed at once with
//! `RESOURCE_EXHAUSTED` instead of queueing without end; health and
//! reflection have a small cap of their own, so neither can starve the
//! other; and a deadline on every response stream.
//!
//! A call holds its place until its response has ended (a stream included).
//! The request size, the per-connection stream limit, the request timeout,
//! HTTP/2 keepalive and the connection age are tonic's own settings, and the
//! cap on connections is [`crate::grpc::connections`]'s, all applied in
//! [`crate::grpc::serve`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower::{Layer, Service};

/// Largest request message a service decodes: every message of the API is
/// far smaller (names and addresses are capped well below it).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest request health and reflection decode: theirs are a few names.
pub const INFRASTRUCTURE_MAX_REQUEST_BYTES: usize = 4 * 1024;
/// Health and reflection calls handled at once: an orchestrator's probes
/// need a handful, and a flood of them cannot take the API's places.
pub const INFRASTRUCTURE_CONCURRENCY: usize = 32;
/// How often HTTP/2 pings an idle connection, and how long it waits for
/// the answer before closing it: a peer that vanished is noticed.
pub const HTTP2_KEEPALIVE: (Duration, Duration) =
    (Duration::from_secs(30), Duration::from_secs(10));

/// How a server limits its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls handled at once, over all connections; more are shed.
    pub concurrency: usize,
    /// HTTP/2 streams one connection may have open.
    pub streams_per_connection: u32,
    /// Longest a call may take; a shorter `grpc-timeout` from the client wins.
    pub timeout: Duration,
    /// Longest a response stream may last (health `Watch`, reflection).
    pub stream_deadline: Duration,
    /// Connections open at once; more wait in the backlog.
    pub max_connections: usize,
    /// Age after which a connection is asked to go (`GOAWAY`), so clients
    /// spread over replicas and no connection lives for ever.
    pub connection_age: Duration,
}

/// Paths with places of their own.
fn infrastructure(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// The shedding layer.
#[derive(Debug, Clone)]
pub struct Shed {
    calls: Arc<Semaphore>,
    infrastructure: Arc<Semaphore>,
    limit: usize,
    stream_deadline: Duration,
}

impl Shed {
    /// Sheds application calls beyond `limit` at once, health and
    /// reflection beyond [`INFRASTRUCTURE_CONCURRENCY`], and ends every
    /// response stream after `stream_deadline`.
    pub fn new(limit: usize, stream_deadline: Duration) -> Self {
        Self {
            calls: Arc::new(Semaphore::new(limit)),
            infrastructure: Arc::new(Semaphore::new(INFRASTRUCTURE_CONCURRENCY)),
            limit,
            stream_deadline,
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Shedding<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<Bounded<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (places, limit) = if infrastructure(request.uri().path()) {
            (&self.shed.infrastructure, INFRASTRUCTURE_CONCURRENCY)
        } else {
            (&self.shed.calls, self.shed.limit)
        };
        let Ok(permit) = Arc::clone(places).try_acquire_owned() else {
            let status = tonic::Status::resource_exhausted(format!(
                "the server is handling its limit of {limit} such calls at once; retry with backoff"
            ));
            let response = status
                .into_http::<ResBody>()
                .map(|body| Bounded::new(body, None, self.shed.stream_deadline));
            return Box::pin(std::future::ready(Ok(response)));
        };
        let deadline = self.shed.stream_deadline;
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| Bounded::new(body, Some(permit), deadline)))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its call's place until it ends, and ends
    /// with `DEADLINE_EXCEEDED` if it is still going at its deadline.
    pub struct Bounded<B> {
        #[pin]
        inner: B,
        place: Option<OwnedSemaphorePermit>,
        deadline: Pin<Box<Sleep>>,
        ended: bool,
    }
}

impl<B> Bounded<B> {
    fn new(inner: B, place: Option<OwnedSemaphorePermit>, deadline: Duration) -> Self {
        Self {
            inner,
            place,
            deadline: Box::pin(tokio::time::sleep(deadline)),
            ended: false,
        }
    }
}

/// The trailers that end a stream at its deadline.
fn deadline_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "grpc-status",
        HeaderValue::from(tonic::Code::DeadlineExceeded as i32),
    );
    trailers.insert(
        "grpc-message",
        HeaderValue::from_static("the stream reached the server's deadline; open a new one"),
    );
    trailers
}

impl<B: Body> Body for Bounded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        let polled = this.inner.poll_frame(cx);
        match polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                *this.ended = true;
                this.place.take();
                polled
            }
            Poll::Ready(Some(Ok(_))) => polled,
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    *this.ended = true;
                    this.place.take();
                    Poll::Ready(Some(Ok(Frame::trailers(deadline_trailers()))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_reflection_have_places_of_their_own() {
        assert!(infrastructure("/grpc.health.v1.Health/Check"));
        assert!(infrastructure(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!infrastructure("/shop.v1.Orders/Place"));
    }

    /// A body that never sends anything.
    struct Silent;

    impl Body for Silent {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_at_its_deadline_and_gives_its_place_back() {
        use http_body_util::BodyExt;
        let places = Arc::new(Semaphore::new(1));
        let place = Arc::clone(&places).try_acquire_owned().expect("a place");
        let mut body = Bounded::new(Silent, Some(place), Duration::from_secs(600));
        assert_eq!(places.available_permits(), 0);
        let frame = body.frame().await.expect("a frame").expect("no error");
        let trailers = frame.into_trailers().expect("trailers");
        assert_eq!(trailers["grpc-status"], "4");
        assert!(body.frame().await.is_none());
        assert_eq!(places.available_permits(), 1, "the place is given back");
    }
}
