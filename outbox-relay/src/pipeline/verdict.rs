//! What a batch's outcome means for the next one, decided from the outcome
//! alone: go on, retry after a pause, pace the tries of rows that can never
//! go, or replace the producer.

use platform_core::kafka_refusal;
use rdkafka::error::KafkaError;

use crate::publisher::{self, BatchOutcome};

/// What to do after a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every row answered as it should: go on at once (and end a refusal).
    Go,
    /// Some sends failed: pause, then retry them; a refusal names the
    /// relay's principal and what it lacks.
    Retry {
        /// The ACL refusal, if that is why.
        refusal: Option<String>,
        /// What failed, for the log.
        error: String,
    },
    /// Only rows that can never go came back: pace the tries that count
    /// towards parking them instead of spinning.
    Pace,
    /// The producer can send nothing more: step down and replace it.
    ReplaceProducer(String),
}

/// The verdict on `outcome`, `fatal` being the producer's fatal error if
/// it raised one.
pub fn after(outcome: &BatchOutcome, fatal: Option<String>) -> Verdict {
    let Some(error) = &outcome.first_error else {
        return if !outcome.unsendable.is_empty() && outcome.publishable.is_empty() {
            Verdict::Pace
        } else {
            Verdict::Go
        };
    };
    if let Some(fatal) = fatal {
        return Verdict::ReplaceProducer(fatal);
    }
    // A send that timed out past every retry leaves the idempotent producer
    // to bump its epoch when the broker returns, which some brokers
    // mishandle (Tansu 0.6 panicked). A fresh producer gets a fresh id
    // instead, and the next batch starts again at the oldest unmarked row.
    if publisher::timed_out(error) {
        return Verdict::ReplaceProducer(format!("a send timed out past every retry: {error}"));
    }
    Verdict::Retry {
        refusal: refusal(error, outcome.first_failed_topic.as_deref()),
        error: error.to_string(),
    }
}

/// The sentence for an authorisation error of a send to `topic`, naming
/// the relay's principal (from `KAFKA_PROPERTY_*`), if `error` is one.
fn refusal(error: &KafkaError, topic: Option<&str>) -> Option<String> {
    let code = error.rdkafka_error_code()?;
    let resource = kafka_refusal::refused(code)?;
    let operation = match resource {
        kafka_refusal::Resource::Cluster => "IdempotentWrite",
        _ => "Write",
    };
    Some(kafka_refusal::sentence(
        &kafka_refusal::principal(&platform_core::kafka::env_properties()),
        operation,
        resource,
        topic.unwrap_or("?"),
        code,
    ))
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    fn failed(code: RDKafkaErrorCode) -> BatchOutcome {
        BatchOutcome {
            failed: 1,
            first_error: Some(KafkaError::MessageProduction(code)),
            first_failed_topic: Some("t".to_owned()),
            ..BatchOutcome::default()
        }
    }

    #[test]
    fn each_outcome_has_its_verdict() {
        let fine = BatchOutcome {
            publishable: vec![1],
            ..BatchOutcome::default()
        };
        assert_eq!(after(&fine, None), Verdict::Go);
        let only_unsendable = BatchOutcome {
            unsendable: vec![(1, "no topic".to_owned())],
            ..BatchOutcome::default()
        };
        assert_eq!(after(&only_unsendable, None), Verdict::Pace);
        assert!(matches!(
            after(&failed(RDKafkaErrorCode::MessageTimedOut), None),
            Verdict::ReplaceProducer(why) if why.contains("timed out")
        ));
        assert_eq!(
            after(
                &failed(RDKafkaErrorCode::NotEnoughReplicas),
                Some("fatal".to_owned())
            ),
            Verdict::ReplaceProducer("fatal".to_owned())
        );
        assert!(matches!(
            after(&failed(RDKafkaErrorCode::NotEnoughReplicas), None),
            Verdict::Retry { refusal: None, .. }
        ));
        assert!(matches!(
            after(&failed(RDKafkaErrorCode::TopicAuthorizationFailed), None),
            Verdict::Retry { refusal: Some(why), .. } if why.contains("Write")
        ));
    }
}
