//! A tower layer that counts every gRPC call by method and status code and
//! times it, so no handler has to.
//!
//! Label values come only from the paths the server declares
//! ([`DeclaredPaths`]): its own methods, health and reflection. Every other
//! path, which any caller may send without credentials, is counted under
//! `unknown`, so no caller can add a series.
//!
//! The status of a failed unary call is in the response headers
//! (trailers-only); a successful one ends with `grpc-status` in the
//! trailers, so the body is watched until they pass. A call whose body is
//! dropped before its trailers (the client went away) counts as
//! `Cancelled`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use tower::{Layer, Service};

use crate::metrics::{self, HistogramVec, IntCounterVec, Registry};

/// Services every server offers besides its own, and their methods.
pub const INFRASTRUCTURE_PATHS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The label an undeclared path is counted under.
pub const UNKNOWN: &str = "unknown";

/// The gRPC paths a server declares (`/package.Service/Method`), each with
/// its service and method names: the only label values metrics and spans
/// take from a request.
#[derive(Debug, Clone)]
pub struct DeclaredPaths(Arc<HashMap<String, (String, String)>>);

impl DeclaredPaths {
    /// `paths` (the server's own methods) and the [`INFRASTRUCTURE_PATHS`].
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        Self(Arc::new(
            paths
                .into_iter()
                .chain(INFRASTRUCTURE_PATHS)
                .map(|path| (path.to_owned(), split_path(path)))
                .collect(),
        ))
    }

    /// The service and method names of `path`, or [`UNKNOWN`] for both.
    pub fn labels(&self, path: &str) -> (&str, &str) {
        self.0
            .get(path)
            .map_or((UNKNOWN, UNKNOWN), |(service, method)| (service, method))
    }
}

/// The layer; cheap to clone (the metrics are shared).
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    handled: IntCounterVec,
    latency: HistogramVec,
    declared: DeclaredPaths,
}

impl GrpcMetrics {
    /// Creates the metrics and exports them through `registry`; calls to a
    /// path not in `declared` count as `unknown`.
    pub fn new(registry: &Registry, declared: DeclaredPaths) -> Self {
        let handled = metrics::counter_vec(
            "grpc_server_handled_total",
            "gRPC calls completed by the server, by service, method and status code.",
            &["grpc_service", "grpc_method", "grpc_code"],
        );
        let latency = metrics::latency_vec(
            "grpc_server_handling_seconds",
            "Time from a gRPC call's arrival to its last byte, by service and method.",
            &["grpc_service", "grpc_method"],
        );
        metrics::register(registry, &handled);
        metrics::register(registry, &latency);
        Self {
            handled,
            latency,
            declared,
        }
    }
}

impl<S> Layer<S> for GrpcMetrics {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            metrics: self.clone(),
        }
    }
}

/// A service wrapped by [`GrpcMetrics`].
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: GrpcMetrics,
}

/// `/package.Service/Method` split into its two names.
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    (service.to_owned(), method.to_owned())
}

/// The status code in `grpc-status`, if the map has one.
fn status_of(map: &HeaderMap) -> Option<tonic::Code> {
    map.get("grpc-status")
        .map(|value| tonic::Code::from_bytes(value.as_bytes()))
}

/// Records one call once, when its status is known.
#[derive(Debug)]
struct Call {
    metrics: GrpcMetrics,
    path: String,
    started: Instant,
}

impl Call {
    fn finish(self, code: tonic::Code) {
        let code = format!("{code:?}");
        let (service, method) = self.metrics.declared.labels(&self.path);
        self.metrics
            .handled
            .with_label_values(&[service, method, &code])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[service, method])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Metered<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    ResBody: Body,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let declared = self.metrics.declared.labels(request.uri().path()) != (UNKNOWN, UNKNOWN);
        let call = Call {
            metrics: self.metrics.clone(),
            // Only a declared path is kept (and looked up again at the end).
            path: if declared {
                request.uri().path().to_owned()
            } else {
                String::new()
            },
            started: Instant::now(),
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let pending = match status_of(response.headers()) {
                Some(code) => {
                    call.finish(code);
                    None
                }
                None => Some(call),
            };
            Ok(response.map(|inner| MeteredBody { inner, pending }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the trailers pass.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        pending: Option<Call>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().pending.take() {
                call.finish(tonic::Code::Cancelled);
            }
        }
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of)
                    && let Some(call) = this.pending.take()
                {
                    call.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.pending.take() {
                    call.finish(tonic::Code::Internal);
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: gRPC says that is OK only if the
                // status came in the headers, which was handled already.
                if let Some(call) = this.pending.take() {
                    call.finish(tonic::Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/shop.v1.Orders/Place"),
            ("shop.v1.Orders".to_owned(), "Place".to_owned())
        );
        assert_eq!(split_path("/"), (String::new(), String::new()));
    }

    #[test]
    fn only_declared_paths_give_label_values() {
        let declared = DeclaredPaths::new(["/shop.v1.Orders/Place"]);
        assert_eq!(
            declared.labels("/shop.v1.Orders/Place"),
            ("shop.v1.Orders", "Place")
        );
        assert_eq!(
            declared.labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        let random = format!("/x{}/m", "a".repeat(4000));
        assert_eq!(declared.labels(&random), (UNKNOWN, UNKNOWN));
        assert_eq!(declared.labels("/shop.v1.Orders/Other"), (UNKNOWN, UNKNOWN));
    }

    #[test]
    fn the_status_comes_from_grpc_status() {
        let mut map = HeaderMap::new();
        assert_eq!(status_of(&map), None);
        map.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(status_of(&map), Some(tonic::Code::NotFound));
    }
}
