//! A tower layer that makes a server span for every gRPC call, a child of
//! the caller's `traceparent` (and `tracestate`) or the root of a new trace
//! when the caller sent none, and hands the span's own `traceparent` on to
//! the handler in place of the caller's, so what the handler writes to the
//! outbox continues this trace. With tracing off (see `traces`) the request
//! passes unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use tower::{Layer, Service};

use crate::cloudevents as ce;
use crate::grpc_metrics::{DeclaredPaths, UNKNOWN};
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
        let parent = traces::extract(
            header(&request, ce::TRACEPARENT).filter(|v| ce::valid_traceparent(v)),
            header(&request, ce::TRACESTATE),
        );
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
        if let Some(value) =
            traces::traceparent_of(&context).and_then(|own| HeaderValue::from_str(&own).ok())
        {
            request.headers_mut().insert(ce::TRACEPARENT, value);
        }
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
