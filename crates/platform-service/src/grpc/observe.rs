//! One tower layer that observes every gRPC call, so no handler has to: it
//! counts the call by method and status code, times it, and makes its
//! server span (a child of the caller's `traceparent` and `tracestate`, or
//! the root of a new trace), handing the span's trace context to the handler
//! as a [`CallTrace`] in the request's extensions, so what the handler
//! writes to the outbox continues this trace. With tracing off (see
//! `traces`) the handler gets the caller's valid context as it came.
//!
//! The status is read once, for both: a failed unary call has it in the
//! response headers (trailers-only); a successful one ends with
//! `grpc-status` in the trailers, so the body is watched until they pass,
//! and the span lasts until then. A call whose body is dropped before its
//! trailers (the client went away) counts as `Cancelled`.
//!
//! Label values and span names come only from the paths the server
//! declares ([`DeclaredPaths`]): its own methods, health and reflection.
//! Every other path, which any caller may send without credentials, is
//! counted (and named) `unknown`, so no caller can add a series.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use tower::{Layer, Service};

use platform_core::metrics::{self, HistogramVec, IntCounterVec, Registry};
use platform_core::traces;
use platform_envelope::cloudevents as ce;

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

/// The trace context a call's handler continues: its server span's
/// `traceparent` (the caller's, with tracing off) and the caller's
/// `tracestate`, each only if valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallTrace {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl CallTrace {
    /// The context of `request`'s call; none when no layer set one.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_default()
    }

    /// The context as the outbox stores it.
    pub fn as_trace(&self) -> ce::Trace<'_> {
        ce::Trace {
            traceparent: self.traceparent.as_deref(),
            tracestate: self.tracestate.as_deref(),
        }
    }
}

fn header<'a, B>(request: &'a Request<B>, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The layer; cheap to clone (the metrics are shared).
#[derive(Debug, Clone)]
pub struct GrpcObserve {
    component: &'static str,
    handled: IntCounterVec,
    latency: HistogramVec,
    declared: DeclaredPaths,
}

impl GrpcObserve {
    /// Creates the metrics and exports them through `registry`; spans are
    /// made by `component`'s tracer; a call to a path not in `declared`
    /// counts, and its span is named, `unknown`.
    pub fn new(component: &'static str, registry: &Registry, declared: DeclaredPaths) -> Self {
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
            component,
            handled,
            latency,
            declared,
        }
    }
}

impl<S> Layer<S> for GrpcObserve {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed {
            inner,
            observe: self.clone(),
        }
    }
}

/// A service wrapped by [`GrpcObserve`].
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    observe: GrpcObserve,
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

/// Records one call once, when its status is known: its metrics and the end
/// of its span.
#[derive(Debug)]
struct Call {
    observe: GrpcObserve,
    path: String,
    started: Instant,
    span: opentelemetry::Context,
}

impl Call {
    fn finish(self, code: tonic::Code) {
        let (service, method) = self.observe.declared.labels(&self.path);
        self.observe
            .handled
            .with_label_values(&[service, method, &format!("{code:?}")])
            .inc();
        self.observe
            .latency
            .with_label_values(&[service, method])
            .observe(self.started.elapsed().as_secs_f64());
        let span = self.span.span();
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
        if code != tonic::Code::Ok {
            span.set_status(Status::error(format!("{code:?}")));
        }
        span.end();
    }
}

impl<S> Observed<S> {
    /// Starts the call's span and hands its trace context to the handler.
    fn start<B>(&self, request: &mut Request<B>) -> Call {
        let caller_parent = header(request, ce::TRACEPARENT)
            .filter(|v| ce::valid_traceparent(v))
            .map(str::to_owned);
        let caller_state = header(request, ce::TRACESTATE)
            .filter(|v| ce::valid_tracestate(v))
            .map(str::to_owned);
        let parent = traces::extract(caller_parent.as_deref(), caller_state.as_deref());
        let path = request.uri().path();
        let (service, method) = self.observe.declared.labels(path);
        let declared = service != UNKNOWN;
        let name = if declared {
            format!("{service}/{method}")
        } else {
            UNKNOWN.to_owned()
        };
        let tracer = traces::tracer(self.observe.component);
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
            ])
            .start_with_context(&tracer, &parent);
        let span = parent.with_span(span);
        let traceparent = traces::traceparent_of(&span).or(caller_parent);
        let tracestate = caller_state.filter(|_| traceparent.is_some());
        // Only a declared path is kept (and looked up again at the end).
        let path = if declared {
            path.to_owned()
        } else {
            String::new()
        };
        request.extensions_mut().insert(CallTrace {
            traceparent,
            tracestate,
        });
        Call {
            observe: self.observe.clone(),
            path,
            started: Instant::now(),
            span,
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observed<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    ResBody: Body,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let call = self.start(&mut request);
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = match future.await {
                Ok(response) => response,
                Err(error) => {
                    call.finish(tonic::Code::Internal);
                    return Err(error);
                }
            };
            let pending = match status_of(response.headers()) {
                Some(code) => {
                    call.finish(code);
                    None
                }
                None => Some(call),
            };
            Ok(response.map(|inner| ObservedBody { inner, pending }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the trailers pass.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        pending: Option<Call>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().pending.take() {
                call.finish(tonic::Code::Cancelled);
            }
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
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
