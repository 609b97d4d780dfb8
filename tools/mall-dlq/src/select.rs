//! Which dead letters a command applies to: pure filters over the headers
//! the consumer wrote when it dead-lettered a record.

use platform_core::dead_letter::{ERROR_HEADER, OFFSET_HEADER, PARTITION_HEADER, TOPIC_HEADER};
use platform_core::record::CapturedRecord;

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
        let reason = record.header(ERROR_HEADER).unwrap_or_default();
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

/// The original coordinates of a dead letter, if its headers have them.
pub fn origin(record: &CapturedRecord) -> Option<Origin> {
    Some(Origin {
        topic: record.header(TOPIC_HEADER)?.to_owned(),
        partition: record.header(PARTITION_HEADER)?.parse().ok()?,
        offset: record.header(OFFSET_HEADER)?.parse().ok()?,
    })
}

/// The record as it must go back to its topic: the dead-letter headers
/// removed, a `dlq_redriven_from` header naming the dead letter added.
pub fn for_redrive(record: &CapturedRecord) -> CapturedRecord {
    let mut headers: Vec<(String, Vec<u8>)> = record
        .headers
        .iter()
        .filter(|(name, _)| !name.starts_with(platform_core::dead_letter::HEADER_PREFIX))
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

/// Header a re-driven record carries: `<dlq topic>/<partition>/<offset>`.
pub const REDRIVEN_FROM_HEADER: &str = "dlq_redriven_from";

#[cfg(test)]
mod tests {
    use super::*;

    fn dead(offset: i64, key: &str, ce_type: &str, reason: &str) -> CapturedRecord {
        CapturedRecord {
            topic: "mall.delivery.dlq".into(),
            partition: 1,
            offset,
            key: Some(key.as_bytes().to_vec()),
            payload: Some(vec![1, 2]),
            headers: vec![
                (
                    platform_core::cloudevents::TYPE.into(),
                    ce_type.as_bytes().to_vec(),
                ),
                (ERROR_HEADER.into(), reason.as_bytes().to_vec()),
                (TOPIC_HEADER.into(), b"mall.order.events".to_vec()),
                (PARTITION_HEADER.into(), b"2".to_vec()),
                (OFFSET_HEADER.into(), b"41".to_vec()),
            ],
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
    fn a_redriven_record_loses_its_dead_letter_headers() {
        let record = dead(5, "42", "mall.order.v1.OrderCreated", "why");
        assert_eq!(
            origin(&record),
            Some(Origin {
                topic: "mall.order.events".into(),
                partition: 2,
                offset: 41
            })
        );
        let again = for_redrive(&record);
        assert_eq!(again.header("ce_type"), Some("mall.order.v1.OrderCreated"));
        assert_eq!(again.header(ERROR_HEADER), None);
        assert_eq!(
            again.header(REDRIVEN_FROM_HEADER),
            Some("mall.delivery.dlq/1/5")
        );
        assert_eq!((again.key, again.payload), (record.key, record.payload));
    }
}
