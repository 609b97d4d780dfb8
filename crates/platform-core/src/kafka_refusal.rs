//! Kafka's "not authorised" answers, said so an operator can act on them:
//! which principal was refused which operation on which resource, and how
//! to grant it. A refused process keeps retrying (the ACL may be added at
//! any moment) and reports itself unhealthy meanwhile.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::types::RDKafkaErrorCode;

/// The kind of resource an authorisation error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster (for example `IdempotentWrite`, `Create`).
    Cluster,
    /// A transactional id.
    TransactionalId,
}

impl Resource {
    /// How `kafka-acls` names it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Topic => "--topic",
            Self::Group => "--group",
            Self::Cluster => "--cluster",
            Self::TransactionalId => "--transactional-id",
        }
    }
}

/// The resource kind an error code refuses, when it is an authorisation
/// error.
pub fn refused(code: RDKafkaErrorCode) -> Option<Resource> {
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed => Some(Resource::Topic),
        RDKafkaErrorCode::GroupAuthorizationFailed => Some(Resource::Group),
        RDKafkaErrorCode::ClusterAuthorizationFailed => Some(Resource::Cluster),
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed => Some(Resource::TransactionalId),
        _ => None,
    }
}

/// The principal the broker sees, as far as the client properties tell:
/// `User:<sasl.username>` over SASL, the certificate's subject over SSL
/// (mapped by the broker's `ssl.principal.mapping.rules`), and
/// `User:ANONYMOUS` over PLAINTEXT.
pub fn principal(properties: &[(String, String)]) -> String {
    let get = |key: &str| {
        properties
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let protocol = get("security.protocol")
        .unwrap_or("plaintext")
        .to_ascii_lowercase();
    if protocol.starts_with("sasl") {
        return match get("sasl.username") {
            Some(user) => format!("User:{user}"),
            None => "the SASL principal".to_owned(),
        };
    }
    if protocol == "ssl" {
        return match get("ssl.certificate.location") {
            Some(path) => format!("the subject of the certificate {path}"),
            None => "the TLS client principal".to_owned(),
        };
    }
    "User:ANONYMOUS".to_owned()
}

/// One sentence for the log and the health check.
pub fn sentence(
    principal: &str,
    operation: &str,
    resource: Resource,
    name: &str,
    code: RDKafkaErrorCode,
) -> String {
    let shown = if resource == Resource::Cluster {
        "the cluster".to_owned()
    } else {
        format!("{} {name}", resource.flag().trim_start_matches("--"))
    };
    format!(
        "Kafka refused {principal} the {operation} operation on {shown} ({code:?}); grant it with \
         kafka-acls --add --allow-principal <principal> --operation {operation} {} {}",
        resource.flag(),
        if resource == Resource::Cluster {
            ""
        } else {
            name
        }
    )
    .trim_end()
    .to_owned()
}

/// The last refusal a process met, for its health check.
#[derive(Debug, Default)]
pub struct Refusals {
    last: Mutex<Option<(Instant, Instant, String)>>,
}

/// How often one refusal, repeated, is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);

impl Refusals {
    /// Notes `sentence` now; true when it should be logged (new, or last
    /// logged a minute ago).
    pub fn note(&self, sentence: String) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let log = match last.as_ref() {
            Some((_, logged, said)) => {
                *said != sentence || now.duration_since(*logged) >= LOG_EVERY
            }
            None => true,
        };
        let logged = match last.as_ref() {
            Some((_, logged, _)) if !log => *logged,
            _ => now,
        };
        *last = Some((now, logged, sentence));
        log
    }

    /// Forgets the last refusal (the broker accepts again); whether there
    /// was one.
    pub fn clear(&self) -> bool {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some()
    }

    /// The refusal met within `within` of `now`, if any.
    pub fn recent(&self, now: Instant, within: Duration) -> Option<String> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _, _)| now.saturating_duration_since(*at) <= within)
            .map(|(_, _, said)| said.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_authorisation_codes_are_refusals() {
        assert_eq!(
            refused(RDKafkaErrorCode::TopicAuthorizationFailed),
            Some(Resource::Topic)
        );
        assert_eq!(
            refused(RDKafkaErrorCode::GroupAuthorizationFailed),
            Some(Resource::Group)
        );
        assert_eq!(refused(RDKafkaErrorCode::MessageTimedOut), None);
        assert_eq!(refused(RDKafkaErrorCode::NotEnoughReplicas), None);
    }

    #[test]
    fn the_principal_follows_the_security_protocol() {
        let sasl = props(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "order-relay"),
        ]);
        assert_eq!(principal(&sasl), "User:order-relay");
        let tls = props(&[
            ("security.protocol", "SSL"),
            ("ssl.certificate.location", "/etc/c.pem"),
        ]);
        assert!(principal(&tls).contains("/etc/c.pem"));
        assert_eq!(principal(&[]), "User:ANONYMOUS");
    }

    #[test]
    fn the_sentence_names_principal_operation_and_resource() {
        let said = sentence(
            "User:x",
            "Write",
            Resource::Topic,
            "mall.order.events",
            RDKafkaErrorCode::TopicAuthorizationFailed,
        );
        assert!(said.contains("User:x"), "{said}");
        assert!(
            said.contains("Write operation on topic mall.order.events"),
            "{said}"
        );
        assert!(said.contains("--topic mall.order.events"), "{said}");
    }

    #[test]
    fn a_repeated_refusal_is_logged_once_a_minute_and_ages_out_of_health() {
        let refusals = Refusals::default();
        assert!(refusals.note("a".into()));
        assert!(!refusals.note("a".into()));
        assert!(refusals.note("b".into()));
        let now = Instant::now();
        assert_eq!(
            refusals.recent(now, Duration::from_secs(5)).as_deref(),
            Some("b")
        );
        assert_eq!(
            refusals.recent(now + Duration::from_secs(6), Duration::from_secs(5)),
            None
        );
    }
}
