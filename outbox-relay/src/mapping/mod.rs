//! Which columns of an outbox table make a Kafka record: the declared
//! mapping, its presets, and the relay's own bookkeeping columns.
//!
//! A mapping is plain data, checked once (every name a plain SQL
//! identifier, every topic and header name one Kafka accepts), so the SQL
//! built from it ([`sql`], every name quoted) and the records built from its
//! rows never meet an unchecked name. The `mall` preset is the mall's own layout and headers,
//! byte for byte; `debezium` is Debezium's default outbox layout and routing.

pub mod args;
pub mod names;
pub mod sql;
pub mod topic;

use platform_core::cloudevents as ce;

pub use names::{Qualified, TableName, identifier};
pub use topic::Topic;

/// A named starting point for a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The mall's outbox: its columns, CloudEvents headers, its migrations.
    Mall,
    /// Debezium's default outbox layout (`id`, `aggregatetype`,
    /// `aggregateid`, `type`, `payload`) and its default routing.
    Debezium,
}

/// Who made the columns the relay keeps its own state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bookkeeping {
    /// The table was made for the relay (the mall's migrations): `id`,
    /// `created_at`, `published_at`, `parked_at`, `parked_reason` and the
    /// `head` and the `outbox_order_per_key` trigger.
    Own,
    /// `outbox-relay prepare` added them to a table the relay does not own:
    /// the ordering column (`relay_seq` unless named otherwise),
    /// `relay_created_at`, `relay_published_at`, `relay_parked_at`,
    /// `relay_parked_reason`, `relay_head` and the `relay_order` trigger.
    Added,
}

impl Bookkeeping {
    /// When the row was written (for the backlog's age and the latency).
    pub fn created(self) -> &'static str {
        match self {
            Self::Own => "created_at",
            Self::Added => "relay_created_at",
        }
    }

    /// When the broker acknowledged it (mark mode).
    pub fn published(self) -> &'static str {
        match self {
            Self::Own => "published_at",
            Self::Added => "relay_published_at",
        }
    }

    /// When it was parked.
    pub fn parked(self) -> &'static str {
        match self {
            Self::Own => "parked_at",
            Self::Added => "relay_parked_at",
        }
    }

    /// Why it was parked.
    pub fn parked_reason(self) -> &'static str {
        match self {
            Self::Own => "parked_reason",
            Self::Added => "relay_parked_reason",
        }
    }

    /// Whether the row is its key's first waiting one (set by the ordering
    /// trigger, and by the relay when the row ahead is settled): the fetch
    /// walks these only, so the rows behind a busy or parked key stay out of
    /// its path.
    pub fn head(self) -> &'static str {
        match self {
            Self::Own => "head",
            Self::Added => "relay_head",
        }
    }

    /// The trigger that draws the ordering column (under the per-key lock
    /// for the mall's own; before it for a prepared table's, whose
    /// [`Self::keys_trigger`] takes the locks).
    pub fn order_trigger(self) -> &'static str {
        match self {
            Self::Own => "outbox_order_per_key",
            Self::Added => "relay_order",
        }
    }

    /// The statement trigger that takes the per-key locks of a statement's
    /// rows in one order, when it is not the ordering trigger's job (the
    /// mall's own trigger locks each row's key itself).
    pub fn keys_trigger(self) -> Option<&'static str> {
        match self {
            Self::Own => None,
            Self::Added => Some("relay_order_keys"),
        }
    }

    /// Every trigger the relay's order rests on.
    pub fn triggers(self) -> Vec<&'static str> {
        let mut triggers = vec![self.order_trigger()];
        triggers.extend(self.keys_trigger());
        triggers
    }

    /// Every bookkeeping column but the ordering one (the mapping's).
    pub fn columns(self) -> [&'static str; 5] {
        [
            self.created(),
            self.published(),
            self.parked(),
            self.parked_reason(),
            self.head(),
        ]
    }
}

/// Where a header's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// The same text on every record.
    Static(String),
    /// A column's text (the header is left out when it is NULL).
    Column(String),
    /// The mapped event id.
    EventId,
    /// The mapped type (left out when none is mapped).
    Type,
    /// The mapped time, RFC 3339 in UTC with microseconds.
    Time,
}

/// One header of every record, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Its name on the record.
    pub name: String,
    /// Its value.
    pub value: HeaderValue,
}

impl Header {
    fn new(name: &str, value: HeaderValue) -> Self {
        Self {
            name: name.to_owned(),
            value,
        }
    }
}

/// The W3C trace context columns: a record carries `traceparent` when its
/// row has one, and `tracestate` only beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceColumns {
    /// The `traceparent` column.
    pub parent: String,
    /// The `tracestate` column, if any.
    pub state: Option<String>,
}

/// How rows of one table become records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Which preset it started from (named in messages).
    pub preset: Preset,
    /// Where the relay's own columns came from.
    pub bookkeeping: Bookkeeping,
    /// The ordering column: drawn under the per-key lock, so for one key its
    /// order is commit order. It is also the row's handle.
    pub order: String,
    /// The event id column (unique per event, stable across re-sends).
    pub event_id: String,
    /// The record key column (NULL gives a record without a key).
    pub key: String,
    /// The topic.
    pub topic: Topic,
    /// The event type column, if any (headers, spans, the parked list).
    pub event_type: Option<String>,
    /// The record value column: a `bytea` is sent byte for byte, any other
    /// type as its text (JSON unchanged); NULL sends a tombstone.
    pub payload: String,
    /// The event time column; by default the row's creation time.
    pub time: Option<String>,
    /// The trace context columns, if any.
    pub trace: Option<TraceColumns>,
    /// The headers of every record, in order.
    pub headers: Vec<Header>,
}

impl Mapping {
    /// The mapping `preset` names, before any override.
    pub fn preset(preset: Preset) -> Self {
        match preset {
            Preset::Mall => Self::mall(),
            Preset::Debezium => Self::debezium(),
        }
    }

    /// The mall's outbox, its records exactly as the mall's consumers read
    /// them (CloudEvents binary mode, protobuf values).
    fn mall() -> Self {
        Self {
            preset: Preset::Mall,
            bookkeeping: Bookkeeping::Own,
            order: "id".to_owned(),
            event_id: "event_id".to_owned(),
            key: "msg_key".to_owned(),
            topic: Topic::Column("topic".to_owned()),
            event_type: Some("event_type".to_owned()),
            payload: "payload".to_owned(),
            time: None,
            trace: Some(TraceColumns {
                parent: "traceparent".to_owned(),
                state: Some("tracestate".to_owned()),
            }),
            headers: vec![
                Header::new(
                    ce::SPECVERSION,
                    HeaderValue::Static(ce::SPEC_VERSION.to_owned()),
                ),
                Header::new(ce::ID, HeaderValue::EventId),
                Header::new(ce::SOURCE, HeaderValue::Column("source".to_owned())),
                Header::new(ce::TYPE, HeaderValue::Type),
                Header::new(ce::TIME, HeaderValue::Time),
                Header::new(ce::SUBJECT, HeaderValue::Column("subject".to_owned())),
                Header::new(
                    ce::CONTENT_TYPE,
                    HeaderValue::Static(ce::PROTOBUF_CONTENT_TYPE.to_owned()),
                ),
            ],
        }
    }

    /// Debezium's defaults: topic `outbox.event.<aggregatetype>`, key
    /// `aggregateid`, value `payload`, the event id in an `id` header.
    fn debezium() -> Self {
        Self {
            preset: Preset::Debezium,
            bookkeeping: Bookkeeping::Added,
            order: "relay_seq".to_owned(),
            event_id: "id".to_owned(),
            key: "aggregateid".to_owned(),
            topic: Topic::template("outbox.event.${aggregatetype}", None)
                .unwrap_or_else(|_| unreachable!("the preset's template is valid")),
            event_type: Some("type".to_owned()),
            payload: "payload".to_owned(),
            time: None,
            trace: None,
            headers: vec![Header::new("id", HeaderValue::EventId)],
        }
    }

    /// The relay's own columns: ordering, created, published, parked, and
    /// the parked reason.
    pub fn relay_columns(&self) -> (&str, &str, &str, &str, &str) {
        let book = self.bookkeeping;
        (
            &self.order,
            book.created(),
            book.published(),
            book.parked(),
            book.parked_reason(),
        )
    }

    /// The relay's own columns as [`Self::relay_columns`] names them, each
    /// quoted for SQL.
    pub fn quoted_relay_columns(&self) -> [String; 5] {
        let (order, created, published, parked, reason) = self.relay_columns();
        [order, created, published, parked, reason].map(names::quote)
    }

    /// The event time column: the mapped one, or the row's creation time.
    pub fn time_column(&self) -> &str {
        self.time
            .as_deref()
            .unwrap_or_else(|| self.bookkeeping.created())
    }

    /// Every column the mapping reads, bookkeeping included, each once.
    pub fn columns(&self) -> Vec<&str> {
        let mut columns: Vec<&str> = vec![self.order.as_str()];
        columns.extend(self.bookkeeping.columns());
        columns.extend([
            self.event_id.as_str(),
            self.key.as_str(),
            self.payload.as_str(),
        ]);
        columns.extend(self.topic.columns());
        columns.extend(self.event_type.as_deref());
        columns.extend(self.time.as_deref());
        if let Some(trace) = &self.trace {
            columns.push(&trace.parent);
            columns.extend(trace.state.as_deref());
        }
        columns.extend(self.header_columns());
        let mut seen = std::collections::HashSet::new();
        columns.retain(|column| seen.insert(*column));
        columns
    }

    /// The columns headers are read from, in header order.
    pub fn header_columns(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter_map(|header| match &header.value {
                HeaderValue::Column(column) => Some(column.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mall_preset_writes_the_mall_headers_in_their_order() {
        let names: Vec<String> = Mapping::preset(Preset::Mall)
            .headers
            .into_iter()
            .map(|header| header.name)
            .collect();
        assert_eq!(
            names,
            [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_time",
                "ce_subject",
                "content-type"
            ]
        );
    }

    #[test]
    fn every_column_is_named_once() {
        let mall = Mapping::preset(Preset::Mall);
        let columns = mall.columns();
        for column in [
            "id",
            "event_id",
            "topic",
            "msg_key",
            "event_type",
            "source",
            "subject",
            "payload",
            "traceparent",
            "tracestate",
            "created_at",
            "published_at",
            "parked_at",
            "parked_reason",
            "head",
        ] {
            assert_eq!(
                columns.iter().filter(|c| **c == column).count(),
                1,
                "{column}"
            );
        }
        let debezium = Mapping::preset(Preset::Debezium);
        let debezium = debezium.columns();
        for column in [
            "id",
            "aggregatetype",
            "aggregateid",
            "type",
            "payload",
            "relay_seq",
            "relay_head",
        ] {
            assert!(debezium.contains(&column), "{column}");
        }
    }
}
