//! The invariants only the wire and the sidecar tables can show, checked
//! once the mall is quiet: lost events, inbox rows, poison, outbox. Those of
//! the public gRPC APIs are the test kit's oracle (`mall_testkit::oracle`),
//! which the e2e tests share.

use std::collections::{HashMap, HashSet};

use platform_core::cloudevents::{ID, TYPE};
use platform_core::dead_letter::ERROR_HEADER;

use crate::inject::{POISON_HEADER, PoisonSent};
use crate::tap::Tap;
pub use mall_testkit::oracle::{Apis, Findings};

/// Event types each service's consumer acts on, by the topic they come from.
/// Whether `service` acts on `event_type` (from the saga's one declaration).
fn handles(service: &str, event_type: &str) -> bool {
    mall_saga::Service::named(service).is_some_and(|s| s.handles().iter().any(|t| t == event_type))
}

async fn query(url: &str, sql: &str) -> anyhow::Result<Vec<tokio_postgres::Row>> {
    Ok(crate::infra::connect(url).await?.query(sql, &[]).await?)
}

/// What only the wire and the sidecar tables show: every outbox row reached
/// its topic, every event a consumer acts on has exactly its inbox row, and
/// poison (and only poison) reached the dead-letter topics.
pub async fn wire_invariants(
    tap: &Tap,
    prefix: &str,
    database_urls: &[(&'static str, String)],
    poison: &[PoisonSent],
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let topics = mall_saga::Topics::new(prefix);
    let events: Vec<_> = topics
        .events()
        .iter()
        .flat_map(|t| tap.records(t))
        .filter(|r| r.header(POISON_HEADER).is_none())
        .collect();
    let on_wire: HashSet<&str> = events.iter().filter_map(|r| r.header(ID)).collect();
    for (service, url) in database_urls {
        let outbox = query(url, "SELECT event_id::text FROM outbox").await?;
        for row in outbox {
            let id: String = row.get(0);
            if !on_wire.contains(id.as_str()) {
                findings.lost += 1;
                findings.violation(format!(
                    "{service} outbox event {id} never reached its topic"
                ));
            }
        }
        let inbox: HashMap<(i64, String), String> = query(
            url,
            "SELECT order_id, event_type, event_id::text FROM inbox",
        )
        .await?
        .into_iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
        let consumed: HashSet<String> = mall_saga::Topics::new(prefix)
            .groups()
            .into_iter()
            .find(|(group, _)| group.ends_with(&format!(".{service}")))
            .map(|(_, topics)| topics.into_iter().collect())
            .unwrap_or_default();
        let mut checked = HashSet::new();
        for record in events.iter().filter(|r| consumed.contains(&r.topic)) {
            let (Some(ce_type), Some(ce_id)) = (record.header(TYPE), record.header(ID)) else {
                continue;
            };
            if !handles(service, ce_type) || !checked.insert(ce_id) {
                continue;
            }
            let Ok(order_id) = record.key_str().parse::<i64>() else {
                continue;
            };
            match inbox.get(&(order_id, ce_type.to_owned())) {
                None => {
                    findings.lost += 1;
                    findings.violation(format!("{service} never applied {ce_type} {ce_id} of order {order_id}"));
                }
                Some(applied) if applied != ce_id => findings.violation(format!(
                    "{service} applied another {ce_type} ({applied}) for order {order_id} than the one published ({ce_id})"
                )),
                Some(_) => {}
            }
        }
    }
    // Poison: each message must be in the DLQ of every group that decodes
    // it, and nothing else may be there.
    let mut found: HashSet<(String, String)> = HashSet::new();
    for service in mall_saga::Service::ALL {
        for record in tap.records(&topics.dead_letters_of(service)) {
            findings.dead_letter_records += 1;
            match record.header(POISON_HEADER) {
                Some(id) => {
                    found.insert((id.to_owned(), service.name().to_owned()));
                }
                None => {
                    findings.real_dead_lettered += 1;
                    findings.violation(format!(
                        "a real event went to {}: {:?} ({:?})",
                        record.topic,
                        record.header(TYPE),
                        record.header(ERROR_HEADER)
                    ));
                }
            }
        }
    }
    let groups = mall_saga::Topics::new(prefix).groups();
    for sent in poison {
        for (group, group_topics) in &groups {
            let service = group.rsplit('.').next().unwrap_or_default();
            let reads = group_topics.contains(&sent.topic);
            let decodes = match &sent.ce_type {
                Some(t) if t.starts_with("mall.chaos") => true,
                Some(t) => handles(service, t),
                None => true,
            };
            if reads && decodes {
                findings.dead_letter_expected += 1;
                if found.contains(&(sent.id.clone(), service.to_owned())) {
                    findings.dead_lettered += 1;
                } else {
                    findings.lost += 1;
                    findings.violation(format!(
                        "poison {} on {} never reached the {service} dead-letter topic",
                        sent.id, sent.topic
                    ));
                }
            }
        }
    }
    Ok(())
}
