//! The broker phase of start-up: every service's event and dead-letter
//! topics exist (created with the configured partitions, replication and
//! retention), and the topics this service consumes are kept as the inbox
//! needs (see [`crate::boot::durability`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::AppError;
use super::patience::patiently;
use crate::boot::config::{KafkaSettings, ServiceArgs};
use crate::boot::durability;
use platform_core::kafka::{self, Retention, TopicError};
use platform_core::topic_facts;
use platform_envelope::wiring::Wiring;

/// Creates what is missing of the application's topics, then checks how the
/// broker really keeps the ones `wiring` reads; returns their names.
pub(super) async fn provision(
    wiring: &Wiring,
    settings: &KafkaSettings,
    args: &ServiceArgs,
    shutdown: &CancellationToken,
) -> Result<Vec<String>, AppError> {
    let patience = args.startup_timeout;
    let names = &settings.names;
    let of = |name: fn(&kafka::TopicNames, &str) -> String, services: &[&str]| -> Vec<String> {
        services.iter().map(|s| name(names, s)).collect()
    };
    let events = of(kafka::TopicNames::events, wiring.all_services);
    let dead_letters = of(kafka::TopicNames::dead_letters, wiring.all_services);
    let dead_letter_retention = settings
        .dead_letter_retention
        .map_or(Retention::Forever, Retention::For);
    let ensure = async |topics: &[String], retention: Retention| {
        kafka::ensure_topics(
            &settings.brokers,
            topics,
            settings.partitions,
            settings.replication,
            retention,
            settings.min_insync_replicas,
        )
        .await
    };
    let brokers = settings.brokers.as_str();
    patiently("create the topics", patience, shutdown, || {
        within(brokers, patience, async {
            ensure(&events, Retention::For(settings.retention)).await?;
            ensure(&dead_letters, dead_letter_retention).await
        })
    })
    .await?;
    let consumed = of(kafka::TopicNames::events, wiring.reads);
    let described = patiently("describe the topics", patience, shutdown, || {
        within(brokers, patience, topic_facts::describe(brokers, &consumed))
    })
    .await?;
    durability::enforce(&described, args.inbox_retention, settings.replication)?;
    Ok(consumed)
}

/// One broker request, cut at the start-up patience: a broker that never
/// answers (down, or refusing the credentials, which librdkafka retries
/// until its own request timeout of a minute) cannot hold start-up past
/// `STARTUP_TIMEOUT_SECS`.
async fn within<T>(
    brokers: &str,
    patience: Duration,
    request: impl Future<Output = Result<T, TopicError>>,
) -> Result<T, TopicError> {
    tokio::time::timeout(patience, request)
        .await
        .unwrap_or_else(|_| {
            Err(TopicError::NoAnswer {
                brokers: brokers.to_owned(),
                after: patience,
            })
        })
}
