//! Durability settings are checked, not assumed: at start-up the service
//! reads how the broker really keeps the topics it consumes and refuses to
//! run on one that could redeliver an event after its inbox row expired.
//!
//! The inbox rule (see [`crate::store::retention`]) holds only if a record leaves
//! its topic before its inbox row leaves the inbox, so a topic that keeps
//! records at least as long as the inbox retention, forever, or by
//! compaction (which keeps the last record of each key forever) is refused.
//! Fewer replicas than configured is only warned about: it weakens
//! availability, not the inbox's guarantee. Two broker settings are refused
//! because they break "no event lost" outright: `min.insync.replicas`
//! above the replication factor (no `acks=all` send to the topic can ever
//! succeed) and `unclean.leader.election.enable=true` (an out-of-sync
//! replica may become leader and drop acknowledged records).

use std::time::Duration;

use platform_core::topic_facts::TopicFacts;

/// A consumed topic breaks the inbox rule; the message names each.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DurabilityError(pub String);

/// What the check found about one topic.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Reasons to refuse to start.
    pub refusals: Vec<String>,
    /// Things an operator should know.
    pub warnings: Vec<String>,
}

/// Judges one topic against the inbox retention and the wanted replication.
pub fn judge(facts: &TopicFacts, inbox: Duration, replication: i32) -> Findings {
    let mut found = Findings::default();
    let topic = &facts.topic;
    let inbox_secs = inbox.as_secs();
    if let Some(policy) = &facts.cleanup_policy
        && policy.contains("compact")
    {
        found.refusals.push(format!(
            "topic {topic} is compacted (cleanup.policy={policy}): compaction keeps the last \
             record of each key forever, so it could be redelivered after its inbox row expired; \
             use cleanup.policy=delete"
        ));
    }
    match facts.retention_ms {
        Some(ms) if ms < 0 => found.refusals.push(format!(
            "topic {topic} keeps records forever (retention.ms={ms}), longer than the inbox \
             remembers them (INBOX_RETENTION_SECS={inbox_secs}): a late redelivery would be \
             applied twice; give it a retention.ms below {}",
            inbox.as_millis()
        )),
        Some(ms) if u128::try_from(ms).unwrap_or(u128::MAX) >= inbox.as_millis() => {
            found.refusals.push(format!(
                "topic {topic} keeps records for {ms} ms (retention.ms), not less than the inbox \
                 remembers them (INBOX_RETENTION_SECS={inbox_secs}): a late redelivery would be \
                 applied twice; lower retention.ms or raise INBOX_RETENTION_SECS"
            ));
        }
        Some(_) => {}
        None => found.warnings.push(format!(
            "the broker does not report retention.ms of topic {topic}; make sure it is below \
             INBOX_RETENTION_SECS={inbox_secs}"
        )),
    }
    if let (Some(min_insync), Some(replicas)) = (facts.min_insync_replicas, facts.replicas)
        && min_insync > i64::try_from(replicas).unwrap_or(i64::MAX)
    {
        found.refusals.push(format!(
            "topic {topic} demands min.insync.replicas={min_insync} but has partitions with only \
             {replicas} replica(s): no acks=all send to it can ever succeed; lower \
             min.insync.replicas or add replicas"
        ));
    }
    if facts.unclean_leader_election == Some(true) {
        found.refusals.push(format!(
            "topic {topic} allows unclean leader election (unclean.leader.election.enable=true): \
             a replica that is not in sync may become leader and lose acknowledged events; set \
             it to false"
        ));
    }
    if let Some(replicas) = facts.replicas
        && i64::try_from(replicas).unwrap_or(i64::MAX) < i64::from(replication)
    {
        found.warnings.push(format!(
            "topic {topic} has partitions with {replicas} replica(s), fewer than \
             KAFKA_TOPIC_REPLICATION={replication}"
        ));
    }
    found
}

/// Applies [`judge`] to every described topic (see
/// [`topic_facts::describe`]): warnings are logged, refusals returned
/// together.
pub fn enforce(
    described: &[TopicFacts],
    inbox: Duration,
    replication: i32,
) -> Result<(), DurabilityError> {
    let mut refusals = Vec::new();
    for facts in described {
        let found = judge(facts, inbox, replication);
        for warning in &found.warnings {
            tracing::warn!(topic = %facts.topic, "{warning}");
        }
        refusals.extend(found.refusals);
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(DurabilityError(refusals.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn facts(
        retention_ms: Option<i64>,
        policy: Option<&str>,
        replicas: Option<usize>,
    ) -> TopicFacts {
        TopicFacts {
            topic: "app.a.events".into(),
            retention_ms,
            cleanup_policy: policy.map(str::to_owned),
            replicas,
            min_insync_replicas: None,
            unclean_leader_election: None,
        }
    }

    #[test]
    fn a_topic_that_forgets_first_is_accepted() {
        let week_ms = 7 * 86_400_000;
        let found = judge(&facts(Some(week_ms), Some("delete"), Some(3)), DAY * 30, 3);
        assert_eq!(found, Findings::default());
    }

    #[test]
    fn keeping_records_as_long_as_the_inbox_or_forever_is_refused() {
        for retention in [Some(30 * 86_400_000), Some(60 * 86_400_000), Some(-1)] {
            let found = judge(&facts(retention, None, None), DAY * 30, 1);
            assert_eq!(found.refusals.len(), 1, "{retention:?}: {found:?}");
            assert!(found.refusals[0].contains("INBOX_RETENTION_SECS"));
        }
    }

    #[test]
    fn compaction_is_refused() {
        let found = judge(&facts(Some(1_000), Some("compact,delete"), None), DAY, 1);
        assert_eq!(found.refusals.len(), 1, "{found:?}");
        assert!(found.refusals[0].contains("compacted"));
    }

    #[test]
    fn min_insync_above_the_replicas_is_refused_and_equal_is_not() {
        let mut topic = facts(Some(1_000), None, Some(2));
        topic.min_insync_replicas = Some(3);
        let found = judge(&topic, DAY, 2);
        assert_eq!(found.refusals.len(), 1, "{found:?}");
        assert!(found.refusals[0].contains("min.insync.replicas=3"));
        assert!(found.refusals[0].contains("app.a.events"));
        topic.min_insync_replicas = Some(2);
        assert!(judge(&topic, DAY, 2).refusals.is_empty());
    }

    #[test]
    fn unclean_leader_election_is_refused() {
        let mut topic = facts(Some(1_000), None, Some(3));
        topic.unclean_leader_election = Some(true);
        let found = judge(&topic, DAY, 3);
        assert_eq!(found.refusals.len(), 1, "{found:?}");
        assert!(found.refusals[0].contains("unclean.leader.election.enable=true"));
        topic.unclean_leader_election = Some(false);
        assert!(judge(&topic, DAY, 3).refusals.is_empty());
    }

    #[test]
    fn unknown_retention_and_thin_replication_are_warnings() {
        let found = judge(&facts(None, None, Some(1)), DAY, 3);
        assert!(found.refusals.is_empty());
        assert_eq!(found.warnings.len(), 2, "{found:?}");
    }
}
