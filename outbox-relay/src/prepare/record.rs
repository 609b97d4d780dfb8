//! What the ordering trigger implements, written by `prepare` on the
//! trigger itself (`COMMENT ON TRIGGER`) and read by the start-up check, so
//! a relay whose mapping differs from the trigger's is refused instead of
//! publishing in an order nothing enforces.

use serde::{Deserialize, Serialize};

/// The comment's first word, so an operator reading it knows who wrote it.
const PREFIX: &str = "outbox-relay ordering: ";

/// The table, key, ordering column and sequence one ordering trigger
/// implements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The table, `schema.name`, when it was prepared.
    pub table: String,
    /// The column whose value is locked before a number is drawn.
    pub key: String,
    /// The column the number is written to.
    pub order: String,
    /// The sequence it is drawn from, `schema.name`.
    pub sequence: String,
}

impl Record {
    /// The trigger's comment.
    pub fn comment(&self) -> String {
        let json = serde_json::to_string(self)
            .unwrap_or_else(|_| unreachable!("four strings always serialise"));
        format!("{PREFIX}{json}")
    }

    /// The record in a trigger's comment, if it holds one.
    pub fn parse(comment: &str) -> Option<Self> {
        serde_json::from_str(comment.strip_prefix(PREFIX)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let record = Record {
            table: "shop.outboxevent".to_owned(),
            key: "aggregateid".to_owned(),
            order: "relay_seq".to_owned(),
            sequence: "shop.outboxevent_relay_seq".to_owned(),
        };
        let comment = record.comment();
        assert!(comment.starts_with("outbox-relay ordering: {"), "{comment}");
        assert_eq!(Record::parse(&comment), Some(record));
        assert_eq!(Record::parse("written by hand"), None);
        assert_eq!(Record::parse("outbox-relay ordering: {\"key\":1}"), None);
    }
}
