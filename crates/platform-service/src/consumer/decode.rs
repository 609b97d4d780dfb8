//! From a record to what to do with it, before the database: the envelope,
//! the topic owner's source, the handler's decoding, and a consumer span
//! that continues the producer's trace.

use std::collections::HashMap;

use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};

use super::handler::EventHandler;
use platform_envelope::cloudevents::{Coordinates, Envelope, Poison};
use platform_envelope::validate::clip;

/// Refuses a record whose `ce_source` is not the owner of its topic: only
/// the owner writes there, so anything else is an impostor or a mistake.
/// Topics without a known owner are not checked.
pub(super) fn check_origin(
    origins: &HashMap<String, String>,
    topic: &str,
    source: &str,
) -> Result<(), Poison> {
    match origins.get(topic) {
        Some(owner) if owner != source => Err(Poison::new(format!(
            "ce_source {:?} is not {owner:?}, the only writer of {topic}",
            clip(source, 100)
        ))),
        _ => Ok(()),
    }
}

/// The envelope and event of `message`: `Ok(None)` for an event the
/// service does not act on, poison for anything wrong with it.
pub(super) fn decode<H: EventHandler>(
    handler: &H,
    origins: &HashMap<String, String>,
    message: &OwnedMessage,
) -> Result<Option<(Envelope, H::Event)>, Poison> {
    let headers = message.headers();
    let lookup = |name: &str| {
        headers.and_then(|h| {
            h.iter()
                .find(|header| header.key == name)
                .and_then(|header| header.value)
        })
    };
    let coordinates = Coordinates {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    };
    let envelope = Envelope::parse(message.key(), lookup, message.payload(), coordinates)?;
    check_origin(origins, message.topic(), &envelope.source)?;
    Ok(handler.decode(&envelope)?.map(|event| (envelope, event)))
}

/// A consumer span for handling `envelope`, a child of the producer's
/// trace, and the span's own `traceparent` (the record's when tracing is
/// off), which what the handler writes to the outbox continues.
pub(super) fn traced(
    component: &'static str,
    envelope: &Envelope,
) -> (opentelemetry::Context, Option<String>) {
    use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};

    let parent = platform_core::traces::extract(
        envelope.traceparent.as_deref(),
        envelope.tracestate.as_deref(),
    );
    let tracer = platform_core::traces::tracer(component);
    let span = tracer
        .span_builder(format!("consume {}", envelope.event_type))
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            opentelemetry::KeyValue::new("messaging.system", "kafka"),
            opentelemetry::KeyValue::new(
                "messaging.destination.name",
                envelope.coordinates.topic.clone(),
            ),
            opentelemetry::KeyValue::new("messaging.kafka.message.key", envelope.key),
        ])
        .start_with_context(&tracer, &parent);
    let context = parent.with_span(span);
    let own =
        platform_core::traces::traceparent_of(&context).or_else(|| envelope.traceparent.clone());
    (context, own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_topic_owner_may_write_to_it() {
        let origins = HashMap::from([("app.a.events".to_owned(), "/app/a".to_owned())]);
        assert!(check_origin(&origins, "app.a.events", "/app/a").is_ok());
        let refused = check_origin(&origins, "app.a.events", "/app/b").expect_err("refused");
        assert!(
            refused.0.contains("/app/b") && refused.0.contains("/app/a"),
            "{refused}"
        );
        assert!(check_origin(&origins, "other", "/anyone").is_ok());
        let long = "x".repeat(10_000);
        let refused = check_origin(&origins, "app.a.events", &long).expect_err("refused");
        assert!(refused.0.len() < 300, "{}", refused.0.len());
    }
}
