//! Topic names, client configuration and topic creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

pub use platform_envelope::names::TopicNames;

/// Prefix of the environment variables that set any librdkafka property:
/// `KAFKA_PROPERTY_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`
/// (the rest of the name, lower-cased, with `_` turned into `.`).
pub const PROPERTY_PREFIX: &str = "KAFKA_PROPERTY_";

/// The librdkafka property an environment variable name stands for, if it
/// has the [`PROPERTY_PREFIX`].
pub fn property_name(variable: &str) -> Option<String> {
    let rest = variable.strip_prefix(PROPERTY_PREFIX)?;
    (!rest.is_empty()).then(|| rest.to_ascii_lowercase().replace('_', "."))
}

/// Every `KAFKA_PROPERTY_*` variable of the environment, as (property, value).
pub fn env_properties() -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = std::env::vars()
        .filter_map(|(name, value)| property_name(&name).map(|property| (property, value)))
        .collect();
    found.sort();
    found
}

/// Base client configuration shared by producers, consumers and admin clients,
/// with the `KAFKA_PROPERTY_*` overrides applied.
///
/// `KAFKA_DEBUG` (librdkafka's `debug` property, e.g. `cgrp,fetch`) turns on
/// librdkafka's debug contexts; they log at DEBUG under the `librdkafka` target.
pub fn client_config(brokers: &str) -> ClientConfig {
    configured(brokers, &[], &[], &[])
}

/// A client configuration in layers: our `defaults` (tunable), then the
/// operator's `KAFKA_PROPERTY_*` overrides and any `overrides` given in code,
/// then the `essentials` the delivery guarantees rest on (manual offset
/// store, idempotence, acks=all), which no override may change; an attempt is
/// logged and ignored.
pub fn configured(
    brokers: &str,
    defaults: &[(&str, &str)],
    overrides: &[(String, String)],
    essentials: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "2000");
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    if let Ok(contexts) = std::env::var("KAFKA_DEBUG")
        && !contexts.trim().is_empty()
    {
        config.set("debug", contexts.trim());
    }
    for (key, value) in env_properties().iter().chain(overrides) {
        config.set(key, value);
    }
    for (key, value) in essentials {
        if config.get(key).is_some_and(|set| set != *value) {
            tracing::warn!(
                property = key,
                required = value,
                "A KAFKA_PROPERTY_ override would break the delivery guarantees; ignored."
            );
        }
        config.set(*key, *value);
    }
    config
}

/// An idempotent producer (`enable.idempotence`, `acks=all`) with the
/// platform's settings, for dead letters and tools that re-send records.
pub fn idempotent_producer(brokers: &str) -> Result<FutureProducer<LogContext>, KafkaError> {
    configured(
        brokers,
        &[],
        &[],
        &[("enable.idempotence", "true"), ("acks", "all")],
    )
    .create_with_context(LogContext)
}

/// The client context of every Kafka client here: librdkafka's logs and
/// errors go to tracing with structured fields, and a lost broker
/// connection, which librdkafka retries on its own, is a warning rather than
/// an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogContext;

fn is_connection_trouble(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
        )
    )
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", facility, "{message}");
            }
            // FAIL is librdkafka reporting a dropped connection it will retry.
            RDKafkaLogLevel::Error if facility != "FAIL" => {
                tracing::error!(target: "librdkafka", facility, "{message}");
            }
            // CONFWARN: a property that does not apply to this kind of
            // client (KAFKA_PROPERTY_* reach every client) or is marked
            // experimental (enable.gapless.guarantee); nothing to act on.
            RDKafkaLogLevel::Warning if facility == "CONFWARN" => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if is_connection_trouble(error.rdkafka_error_code()) {
            tracing::warn!(target: "librdkafka", %error, reason, "Kafka connection trouble; librdkafka retries.");
        } else {
            tracing::error!(target: "librdkafka", %error, reason, "Kafka client error.");
        }
    }
}

impl ConsumerContext for LogContext {}

/// Errors creating topics.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client could not be built or a request (creating or
    /// describing topics) failed as a whole.
    #[error("a topic request to {brokers} failed: {source}")]
    Admin {
        /// Brokers asked.
        brokers: String,
        /// Cause.
        source: KafkaError,
    },
    /// The broker refused to create one topic.
    #[error("broker refused to create topic {topic}: {code}")]
    Refused {
        /// Topic name.
        topic: String,
        /// Broker error code.
        code: RDKafkaErrorCode,
    },
    /// No answer within the time the caller allows (the broker down or
    /// unreachable, or refusing the credentials: librdkafka then keeps
    /// trying until its own request timeout, a minute).
    #[error(
        "no answer from {brokers} within {after:?}: is the broker up and reachable, \
         and are the Kafka credentials (KAFKA_SASL_*, KAFKA_SSL_*) right?"
    )]
    NoAnswer {
        /// Brokers asked.
        brokers: String,
        /// How long the caller waited.
        after: Duration,
    },
    /// The broker does not know a topic yet: on Apache Kafka a topic just
    /// created reaches every broker's metadata a moment later, so asking
    /// again shortly is right.
    #[error("the broker does not know topic {topic} yet ({code}); asking again")]
    NotYetKnown {
        /// Topic name.
        topic: String,
        /// Broker error code.
        code: RDKafkaErrorCode,
    },
}

impl TopicError {
    /// Turns a client error of a request to `brokers` into [`TopicError::Admin`].
    pub fn admin(brokers: &str) -> impl Fn(KafkaError) -> Self + '_ {
        move |source| Self::Admin {
            brokers: brokers.to_owned(),
            source,
        }
    }
}

/// An admin client for `brokers`, with the platform's settings.
pub fn admin_client(brokers: &str) -> Result<AdminClient<LogContext>, TopicError> {
    client_config(brokers)
        .create_with_context(LogContext)
        .map_err(TopicError::admin(brokers))
}

/// How long a topic keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The broker's default.
    BrokerDefault,
    /// `retention.ms` of this long.
    For(Duration),
    /// `retention.ms=-1`: kept until deleted.
    Forever,
}

impl Retention {
    fn retention_ms(self) -> Option<String> {
        match self {
            Self::BrokerDefault => None,
            Self::For(duration) => Some(duration.as_millis().to_string()),
            Self::Forever => Some("-1".to_owned()),
        }
    }
}

/// Creates the topics that do not exist yet.
///
/// Some Kafka-compatible brokers never auto-create topics, so every service
/// creates what it produces to and consumes from before it starts.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[String],
    partitions: i32,
    replication: i32,
    retention: Retention,
    min_insync_replicas: Option<i32>,
) -> Result<(), TopicError> {
    let admin = admin_client(brokers)?;
    let retention_ms = retention.retention_ms();
    let min_insync = min_insync_replicas.map(|n| n.to_string());
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| {
            let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
            if let Some(ms) = &retention_ms {
                topic = topic.set("retention.ms", ms);
            }
            if let Some(n) = &min_insync {
                topic = topic.set("min.insync.replicas", n);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(TopicError::admin(brokers))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Refused { topic, code }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let names = TopicNames::new("shop.");
        assert_eq!(names.events("order"), "shop.order.events");
        assert_eq!(names.dead_letters("delivery"), "shop.delivery.dlq");
        assert_eq!(names.group("inventory"), "shop.inventory");
    }

    #[test]
    fn property_variables_map_to_librdkafka_names() {
        assert_eq!(
            property_name("KAFKA_PROPERTY_SASL_MECHANISM").as_deref(),
            Some("sasl.mechanism")
        );
        assert_eq!(
            property_name("KAFKA_PROPERTY_MAX_POLL_INTERVAL_MS").as_deref(),
            Some("max.poll.interval.ms")
        );
        assert_eq!(property_name("KAFKA_PROPERTY_"), None);
        assert_eq!(property_name("KAFKA_BROKERS"), None);
    }

    #[test]
    fn retention_forever_is_minus_one() {
        assert_eq!(Retention::Forever.retention_ms().as_deref(), Some("-1"));
        assert_eq!(
            Retention::For(Duration::from_secs(2))
                .retention_ms()
                .as_deref(),
            Some("2000")
        );
        assert_eq!(Retention::BrokerDefault.retention_ms(), None);
    }
}
