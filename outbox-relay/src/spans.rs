//! The relay's part of a saga's trace: for every row with a trace context,
//! an `outbox.wait` span from the row's commit (`created_at`) to the moment
//! the relay picked it up, and a producer span for the publish, from then to
//! the broker's acknowledgement. The record carries the publish span's
//! `traceparent`, so the consumer's span is its child. With tracing off
//! nothing changes.

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use platform_core::traces;

use crate::store::OutboxRow;

/// The tracer's name.
const COMPONENT: &str = "outbox-relay";

/// Starts the spans of a fetched batch and points each row's `traceparent`
/// at its publish span; returns the publish spans' contexts, by row.
pub fn start(rows: &mut [OutboxRow], table: &str) -> Vec<Option<Context>> {
    let tracer = traces::tracer(COMPONENT);
    rows.iter_mut()
        .map(|row| {
            let parent = traces::extract(row.traceparent.as_deref(), row.tracestate.as_deref());
            if !parent.span().span_context().is_valid() {
                return None;
            }
            let attributes = || {
                [
                    KeyValue::new("messaging.system", "kafka"),
                    KeyValue::new("messaging.destination.name", row.topic_name().to_owned()),
                    KeyValue::new("outbox.table", table.to_owned()),
                    KeyValue::new("outbox.id", row.id),
                ]
            };
            let committed = UNIX_EPOCH + Duration::from_secs_f64(row.created.max(0.0));
            let mut wait = tracer
                .span_builder("outbox.wait")
                .with_start_time(committed)
                .with_attributes(attributes())
                .start_with_context(&tracer, &parent);
            wait.end();
            let publish = tracer
                .span_builder(format!("publish {}", row.event_type))
                .with_kind(SpanKind::Producer)
                .with_attributes(attributes())
                .start_with_context(&tracer, &parent);
            let context = parent.with_span(publish);
            row.traceparent = traces::traceparent_of(&context).or(row.traceparent.take());
            Some(context)
        })
        .collect()
}

/// Ends the publish spans: acknowledged rows succeeded, the others failed
/// (they are sent again in a later batch, with spans of their own).
pub fn end(rows: &[OutboxRow], spans: Vec<Option<Context>>, acknowledged: &[i64]) {
    let acknowledged: HashSet<i64> = acknowledged.iter().copied().collect();
    for (row, context) in rows.iter().zip(spans) {
        let Some(context) = context else { continue };
        let span = context.span();
        if !acknowledged.contains(&row.id) {
            span.set_status(Status::error("not acknowledged by the broker"));
        }
        span.end();
    }
}
