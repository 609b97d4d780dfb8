//! Which topics the broker has. A send to a topic that does not exist waits
//! for it to appear (librdkafka's `topic.metadata.propagation.max.ms`, 30 s)
//! before it fails, holding up its whole batch, five times before the row is
//! parked. So the first time a batch names a topic the relay asks the
//! broker once; a topic it positively says does not exist is refused at
//! once (its rows counted towards parking), and one it has is remembered.
//! When the broker cannot answer, rows are sent as before.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use platform_core::kafka::LogContext;
use rdkafka::producer::{FutureProducer, Producer as _};
use rdkafka::types::RDKafkaRespErr;

/// How long one metadata request may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The topics known to exist.
#[derive(Default)]
pub struct KnownTopics {
    exist: Mutex<HashSet<String>>,
}

impl KnownTopics {
    /// Of `topics`, those the broker says do not exist.
    pub async fn missing<'a>(
        &self,
        producer: &FutureProducer<LogContext>,
        topics: impl Iterator<Item = &'a str>,
    ) -> HashSet<String> {
        let unknown: Vec<String> = {
            let exist = self
                .exist
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            topics
                .filter(|topic| !exist.contains(*topic))
                .map(str::to_owned)
                .collect::<HashSet<_>>()
                .into_iter()
                .collect()
        };
        let mut missing = HashSet::new();
        for topic in unknown {
            let asker = producer.clone();
            let name = topic.clone();
            let answer = tokio::task::spawn_blocking(move || {
                asker
                    .client()
                    .fetch_metadata(Some(&name), ASK_TIMEOUT)
                    .map(|metadata| {
                        metadata
                            .topics()
                            .iter()
                            .find(|t| t.name() == name)
                            .map(|t| t.error())
                    })
            })
            .await;
            match answer {
                Ok(Ok(Some(None))) => {
                    self.exist
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(topic);
                }
                Ok(Ok(Some(Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)))) => {
                    missing.insert(topic);
                }
                // No answer, or another error: send as before.
                _ => {}
            }
        }
        missing
    }
}
