//! Which dead letters a command applies to, and whether one may go back:
//! pure decisions over the headers the consumer wrote when it dead-lettered
//! a record (the last of each name: a consumer drops any `dlq_*` header a
//! record came with and appends its own) and over the record itself.

use std::collections::HashSet;

use mall_saga::{Service, Topics};
use platform_core::cloudevents::{Coordinates, Envelope};
use platform_core::dead_letter::{
    ERROR_HEADER, HEADER_PREFIX, OFFSET_HEADER, PARTITION_HEADER, SKIP_HEADER, TOPIC_HEADER,
    TRUNCATED_HEADER,
};
use platform_core::record::CapturedRecord;

/// Header a re-driven record carries: `<dlq topic>/<partition>/<offset>`.
/// Not a `dlq_*` header, so a consumer that dead-letters the record again
/// keeps it, and the copy is known as one that came back.
pub const REDRIVEN_FROM_HEADER: &str = "redriven_from";

/// A selection of dead letters; an empty selection takes every record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The reason (`dlq_error`) contains this text.
    pub reason: Option<String>,
    /// The CloudEvents type (`ce_type`) is exactly this.
    pub event_type: Option<String>,
    /// The record key (the order id) is exactly this.
    pub order: Option<String>,
    /// The dead letter sits in this partition of the DLQ.
    pub partition: Option<i32>,
    /// The dead letter's offset in the DLQ is at least this.
    pub from_offset: Option<i64>,
    /// The dead letter's offset in the DLQ is at most this.
    pub to_offset: Option<i64>,
}

impl Selection {
    /// Whether `record` (read from the DLQ) is selected.
    pub fn matches(&self, record: &CapturedRecord) -> bool {
        let reason = record.last_header(ERROR_HEADER).unwrap_or_default();
        self.reason
            .as_ref()
            .is_none_or(|r| reason.contains(r.as_str()))
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| record.header(platform_core::cloudevents::TYPE) == Some(t.as_str()))
            && self.order.as_ref().is_none_or(|o| record.key_str() == o)
            && self.partition.is_none_or(|p| record.partition == p)
            && self.from_offset.is_none_or(|o| record.offset >= o)
            && self.to_offset.is_none_or(|o| record.offset <= o)
    }
}

/// Where a dead letter came from, read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The topic it was consumed from.
    pub topic: String,
    /// Its partition there.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
}

/// The original coordinates of a dead letter, from the consumer's headers.
pub fn origin(record: &CapturedRecord) -> Option<Origin> {
    Some(Origin {
        topic: record.last_header(TOPIC_HEADER)?.to_owned(),
        partition: record.last_header(PARTITION_HEADER)?.parse().ok()?,
        offset: record.last_header(OFFSET_HEADER)?.parse().ok()?,
    })
}

/// What `redrive` does with a selected dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Send it back to this topic.
    Redrive(Origin),
    /// Leave it, for this reason.
    Keep(String),
}

/// Whether a dead letter of `service`'s group may go back, and where.
///
/// It goes back only to a topic the group consumes, only if it is neither
/// truncated nor an operator's skip mark, only once (`redriven` holds the
/// DLQ coordinates re-driven before; a record that came back from a
/// re-drive carries [`REDRIVEN_FROM_HEADER`]) unless `again`, and only if
/// the consumer would not refuse it again at once: the same checks of
/// envelope, source and event it runs before the database
/// ([`Service::screen`]).
pub fn plan(
    record: &CapturedRecord,
    service: Service,
    topics: &Topics,
    redriven: &HashSet<(i32, i64)>,
    again: bool,
) -> Plan {
    let Some(to) = origin(record) else {
        return Plan::Keep("it has no dlq_original_* headers".into());
    };
    if !topics.read_by(service).contains(&to.topic) {
        return Plan::Keep(format!(
            "{} is not a topic the {} group consumes",
            platform_core::echo::echo(&to.topic, 80),
            service.name()
        ));
    }
    if record.last_header(TRUNCATED_HEADER) == Some("true") {
        return Plan::Keep("it is a truncated copy: its payload is gone".into());
    }
    if record.last_header(SKIP_HEADER) == Some("true") {
        return Plan::Keep("it is an operator's skip mark".into());
    }
    if !again && redriven.contains(&(record.partition, record.offset)) {
        return Plan::Keep("it was re-driven already (--again sends it again)".into());
    }
    if !again && record.header(REDRIVEN_FROM_HEADER).is_some() {
        return Plan::Keep("it came back from a re-drive (--again sends it again)".into());
    }
    let coordinates = Coordinates {
        topic: to.topic.clone(),
        partition: to.partition,
        offset: to.offset,
    };
    let header = |name: &str| {
        record
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    };
    let screened = Envelope::parse(
        record.key.as_deref(),
        header,
        record.payload.as_deref(),
        coordinates,
    )
    .and_then(|envelope| service.screen(topics, &envelope));
    match screened {
        Ok(true) => Plan::Redrive(to),
        Ok(false) => Plan::Keep(format!("the {} service does not act on it", service.name())),
        Err(poison) => Plan::Keep(format!("it would be poison again: {poison}")),
    }
}

/// The record as it must go back to its topic: the dead-letter headers
/// removed, a [`REDRIVEN_FROM_HEADER`] naming the dead letter (replacing
/// one from an earlier re-drive).
pub fn for_redrive(record: &CapturedRecord) -> CapturedRecord {
    let mut headers: Vec<(String, Vec<u8>)> = record
        .headers
        .iter()
        .filter(|(name, _)| !name.starts_with(HEADER_PREFIX) && name != REDRIVEN_FROM_HEADER)
        .cloned()
        .collect();
    headers.push((
        REDRIVEN_FROM_HEADER.to_owned(),
        format!("{}/{}/{}", record.topic, record.partition, record.offset).into_bytes(),
    ));
    CapturedRecord {
        headers,
        ..record.clone()
    }
}

#[cfg(test)]
mod tests {
    use mall_proto::delivery::v1::DeliveryCancelled;
    use mall_proto::order::v1::OrderCancelled;
    use platform_core::cloudevents as ce;
    use platform_core::dead_letter::GROUP_HEADER;
    use prost::{Message, Name};

    use super::*;

    fn dead(offset: i64, key: &str, ce_type: &str, reason: &str) -> CapturedRecord {
        CapturedRecord {
            topic: "mall.delivery.dlq".into(),
            partition: 1,
            offset,
            key: Some(key.as_bytes().to_vec()),
            payload: Some(vec![1, 2]),
            headers: vec![
                (ce::TYPE.into(), ce_type.as_bytes().to_vec()),
                (ERROR_HEADER.into(), reason.as_bytes().to_vec()),
                (TOPIC_HEADER.into(), b"mall.order.events".to_vec()),
                (PARTITION_HEADER.into(), b"2".to_vec()),
                (OFFSET_HEADER.into(), b"41".to_vec()),
            ],
        }
    }

    /// A valid event as the order service writes it, dead-lettered by the
    /// delivery group.
    fn valid(offset: i64, order_id: i64) -> CapturedRecord {
        let key = order_id.to_string();
        let mut headers: Vec<(String, Vec<u8>)> = [
            (ce::SPECVERSION, ce::SPEC_VERSION.to_owned()),
            (ce::ID, "6f1a9a5e-2b1c-4a57-9c7c-1f2d3e4a5b6c".to_owned()),
            (ce::SOURCE, Service::Order.source().to_owned()),
            (ce::TYPE, OrderCancelled::full_name()),
            (ce::SUBJECT, key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect();
        headers.extend(
            [
                (ERROR_HEADER, "database refused it"),
                (TOPIC_HEADER, "mall.order.events"),
                (PARTITION_HEADER, "0"),
                (OFFSET_HEADER, "9"),
                (GROUP_HEADER, "mall.delivery"),
            ]
            .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec())),
        );
        CapturedRecord {
            topic: "mall.delivery.dlq".into(),
            partition: 0,
            offset,
            key: Some(key.into_bytes()),
            payload: Some(OrderCancelled { order_id }.encode_to_vec()),
            headers,
        }
    }

    #[test]
    fn filters_combine() {
        let record = dead(5, "42", "mall.order.v1.OrderCreated", "database refused");
        assert!(Selection::default().matches(&record));
        let by_reason = Selection {
            reason: Some("refused".into()),
            ..Selection::default()
        };
        assert!(by_reason.matches(&record));
        let wrong_type = Selection {
            event_type: Some("x".into()),
            ..Selection::default()
        };
        assert!(!wrong_type.matches(&record));
        let range = Selection {
            from_offset: Some(5),
            to_offset: Some(5),
            order: Some("42".into()),
            ..Selection::default()
        };
        assert!(range.matches(&record));
        let past = Selection {
            from_offset: Some(6),
            ..Selection::default()
        };
        assert!(!past.matches(&record));
        let other_partition = Selection {
            partition: Some(0),
            ..Selection::default()
        };
        assert!(!other_partition.matches(&record));
    }

    #[test]
    fn the_consumer_s_headers_win_over_planted_ones() {
        let mut planted = dead(5, "42", "x", "ce_source is wrong");
        planted
            .headers
            .insert(0, (TOPIC_HEADER.into(), b"mall.delivery.events".to_vec()));
        planted
            .headers
            .insert(0, (ERROR_HEADER.into(), b"database unavailable".to_vec()));
        assert_eq!(
            origin(&planted).map(|o| o.topic).as_deref(),
            Some("mall.order.events")
        );
        let by_reason = Selection {
            reason: Some("database".into()),
            ..Selection::default()
        };
        assert!(!by_reason.matches(&planted));
    }

    #[test]
    fn a_redriven_record_loses_its_dead_letter_headers() {
        let record = dead(5, "42", "mall.order.v1.OrderCreated", "why");
        let again = for_redrive(&for_redrive(&record));
        assert_eq!(again.header("ce_type"), Some("mall.order.v1.OrderCreated"));
        assert_eq!(again.header(ERROR_HEADER), None);
        let marks: Vec<_> = again
            .headers
            .iter()
            .filter(|(n, _)| n == REDRIVEN_FROM_HEADER)
            .collect();
        assert_eq!(marks.len(), 1);
        assert_eq!(
            again.header(REDRIVEN_FROM_HEADER),
            Some("mall.delivery.dlq/1/5")
        );
        assert_eq!((again.key, again.payload), (record.key, record.payload));
    }

    #[test]
    fn only_what_the_group_would_take_goes_back_and_only_once() {
        let topics = Topics::new("mall");
        let none = HashSet::new();
        let record = valid(7, 42);
        assert_eq!(
            plan(&record, Service::Delivery, &topics, &none, false),
            Plan::Redrive(Origin {
                topic: "mall.order.events".into(),
                partition: 0,
                offset: 9
            })
        );
        // Re-driven before: kept unless asked again.
        let done = HashSet::from([(0, 7)]);
        assert!(matches!(
            plan(&record, Service::Delivery, &topics, &done, false),
            Plan::Keep(_)
        ));
        assert!(matches!(
            plan(&record, Service::Delivery, &topics, &done, true),
            Plan::Redrive(_)
        ));
        let back = for_redrive(&record);
        assert!(matches!(
            plan(&back, Service::Delivery, &topics, &none, false),
            Plan::Keep(_)
        ));
        // Only to a topic the DLQ's group consumes.
        assert!(matches!(
            plan(&record, Service::Inventory, &topics, &none, true),
            Plan::Keep(_)
        ));
        // Nothing the consumer would refuse at once.
        assert!(matches!(
            plan(&dead(5, "42", "x", "bad"), Service::Delivery, &topics, &none, true),
            Plan::Keep(why) if why.contains("poison")
        ));
    }

    #[test]
    fn a_planted_record_cannot_be_steered_into_another_topic() {
        // The review's attack: a DeliveryCancelled written on the order
        // topic with planted dead-letter headers naming the delivery topic.
        let topics = Topics::new("mall");
        let mut forged = valid(3, 42);
        forged.payload = Some(
            DeliveryCancelled {
                order_id: 42,
                product_id: 1,
                qty: 1,
            }
            .encode_to_vec(),
        );
        for (name, value) in &mut forged.headers {
            match name.as_str() {
                ce::TYPE => *value = DeliveryCancelled::full_name().into_bytes(),
                ce::SOURCE => *value = Service::Delivery.source().as_bytes().to_vec(),
                _ => {}
            }
        }
        // What the attacker planted comes first; the consumer's last.
        forged
            .headers
            .insert(0, (TOPIC_HEADER.into(), b"mall.delivery.events".to_vec()));
        let none = HashSet::new();
        for service in Service::ALL {
            assert!(
                !matches!(plan(&forged, service, &topics, &none, true), Plan::Redrive(to) if to.topic == "mall.delivery.events"),
                "{service:?}"
            );
        }
    }
}
