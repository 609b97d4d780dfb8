//! A tower layer that makes a server span for every gRPC call, a child of
//! the caller's `traceparent` (and `tracestate`) or the root of a new trace
//! when the caller sent none, and hands the span's own trace context to the
//! handler as a [`CallTrace`] in the request's extensions, so what the
//! handler writes to the outbox continues this trace. With tracing off (see
//! `traces`) the handler gets the caller's valid context as it came.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use tower::{Layer, Service};

use crate::cloudevents as ce;
use crate::grpc::call_metrics::{DeclaredPaths, UNKNOWN};
use crate::traces;

/// The layer, for one component (the tracer's name).
#[derive(Debug, Clone)]
pub struct GrpcTracing {
    component: &'static str,
    declared: DeclaredPaths,
}

impl GrpcTracing {
    /// Spans named after `component`'s tracer; a call to a path not in
    /// `declared` makes a span named `unknown`.
    pub fn new(component: &'static str, declared: DeclaredPaths) -> Self {
        Self {
            component,
            declared,
        }
    }
}

impl<S> Layer<S> for GrpcTracing {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced {
            inner,
            component: self.component,
            declared: self.declared.clone(),
        }
    }
}

/// A service behind [`GrpcTracing`].
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    component: &'static str,
    declared: DeclaredPaths,
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Traced<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let caller_parent = header(&request, ce::TRACEPARENT)
            .filter(|v| ce::valid_traceparent(v))
            .map(str::to_owned);
        let caller_state = header(&request, ce::TRACESTATE)
            .filter(|v| ce::valid_tracestate(v))
            .map(str::to_owned);
        let parent = traces::extract(caller_parent.as_deref(), caller_state.as_deref());
        let (service, method) = self.declared.labels(request.uri().path());
        let name = if service == UNKNOWN {
            UNKNOWN.to_owned()
        } else {
            format!("{service}/{method}")
        };
        let tracer = traces::tracer(self.component);
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
            ])
            .start_with_context(&tracer, &parent);
        let context = parent.with_span(span);
        let traceparent = traces::traceparent_of(&context).or(caller_parent);
        let tracestate = caller_state.filter(|_| traceparent.is_some());
        request.extensions_mut().insert(CallTrace {
            traceparent,
            tracestate,
        });
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            let span = context.span();
            if let Ok(response) = &response {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()));
                span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
                if code != tonic::Code::Ok {
                    span.set_status(Status::error(format!("{code:?}")));
                }
            }
            span.end();
            response
        })
    }
}
