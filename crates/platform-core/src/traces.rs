//! OpenTelemetry traces, one trace per saga: spans for each gRPC call, for
//! the time an event waits in the outbox, for the relay's publish and for
//! each consumer's handling, joined through the W3C `traceparent` the outbox
//! stores and the records carry.
//!
//! Nothing is exported unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! ([`install_from_env`]); the exporter then reads the standard
//! OpenTelemetry variables (`OTEL_EXPORTER_OTLP_*`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`). Without it the global tracer is a no-op,
//! its spans are invalid, and callers keep the trace context they were
//! given. Each component takes a tracer named after itself (the
//! instrumentation scope), so even components sharing a process are told
//! apart.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, global};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

use platform_envelope::cloudevents as ce;

pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::{Span, SpanKind, Status, Tracer};

/// The installed provider; flushes and shuts down when dropped.
pub struct TracesGuard(SdkTracerProvider);

impl Drop for TracesGuard {
    fn drop(&mut self) {
        if let Err(error) = self.0.shutdown() {
            tracing::warn!(%error, "Cannot shut the trace exporter down.");
        }
    }
}

/// Installs OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; must run
/// inside a Tokio runtime. `None`: tracing stays off.
pub fn install_from_env() -> Option<TracesGuard> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
    if endpoint.trim().is_empty() {
        return None;
    }
    install(&endpoint)
}

/// Installs OTLP/gRPC export to `endpoint` as the global tracer provider,
/// with W3C trace context propagation; must run inside a Tokio runtime.
pub fn install(endpoint: &str) -> Option<TracesGuard> {
    let exporter = match SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            tracing::error!(%error, endpoint, "Cannot build the OTLP exporter; traces are off.");
            return None;
        }
    };
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build();
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());
    tracing::info!(endpoint, "Exporting traces over OTLP.");
    Some(TracesGuard(provider))
}

/// The tracer of one component (`order`, `outbox-relay`, …).
pub fn tracer(component: &'static str) -> global::BoxedTracer {
    global::tracer_provider().tracer(component)
}

/// The context a `traceparent` (and `tracestate`) describe; the current
/// (empty) one when they are missing or invalid.
pub fn extract(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    let mut carrier = HashMap::new();
    if let Some(parent) = traceparent {
        carrier.insert(ce::TRACEPARENT.to_owned(), parent.to_owned());
    }
    if let Some(state) = tracestate {
        carrier.insert(ce::TRACESTATE.to_owned(), state.to_owned());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// The `traceparent` of `context`'s span, if it is a valid one (none when
/// tracing is off).
pub fn traceparent_of(context: &Context) -> Option<String> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(context, &mut carrier);
    carrier.remove(ce::TRACEPARENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_context_round_trips() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = extract(Some(parent), Some("vendor=x"));
        assert_eq!(traceparent_of(&context).as_deref(), Some(parent));
        assert_eq!(
            context.span().span_context().trace_state().header(),
            "vendor=x"
        );
        assert_eq!(traceparent_of(&extract(Some("garbage"), None)), None);
        assert_eq!(traceparent_of(&extract(None, None)), None);
    }
}
