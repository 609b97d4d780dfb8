//! One outbox row as the relay sends it, and how a fetched row becomes
//! one: every value read on its own, so a row that cannot be read is
//! parked with the reason instead of failing the whole fetch.

use platform_core::echo::echo;
use tokio_postgres::types::{FromSql, Type};

use crate::mapping::Mapping;
use crate::mapping::sql::{at, headers};
use crate::mapping::topic::problem;

/// One outbox row, ready to publish.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Its ordering column: commit order per key, and its handle.
    pub id: i64,
    /// Destination topic, or why the row cannot be sent at all (no topic,
    /// a value that cannot be read): such a row is parked with the reason.
    pub topic: Result<String, String>,
    /// Record key (none when the key column is NULL).
    pub key: Option<String>,
    /// Its event type (empty when none is mapped), for spans.
    pub event_type: String,
    /// Record value (none: a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers, in the mapping's order, trace context aside.
    pub headers: Vec<(String, String)>,
    /// W3C trace context, if any.
    pub traceparent: Option<String>,
    /// W3C `tracestate`, kept beside the `traceparent`.
    pub tracestate: Option<String>,
    /// Its creation time in seconds since the Unix epoch, for the latency.
    pub created: f64,
}

impl OutboxRow {
    /// The topic's name for logs and spans (empty when it has none).
    pub fn topic_name(&self) -> &str {
        self.topic.as_deref().unwrap_or_default()
    }
}

/// One fetched row as a record to send. Only its ordering column must
/// be readable (the start-up check made sure it is a bigint): a row
/// whose other values cannot be read (a NULL event id or time, text
/// that is not UTF-8) comes back unsendable, with the reason, to be
/// parked while every other row flows.
pub fn decode(
    mapping: &Mapping,
    row: &tokio_postgres::Row,
) -> Result<OutboxRow, tokio_postgres::Error> {
    let id = row.try_get(at::ORDER)?;
    Ok(read(mapping, id, row).unwrap_or_else(|why| OutboxRow {
        id,
        topic: Err(why),
        // Its key, even when it is not UTF-8 (read lossily: the same bytes
        // always give the same text), so the later rows of its key still
        // wait behind it.
        key: row
            .try_get::<_, Option<Raw>>(at::KEY)
            .ok()
            .flatten()
            .map(|Raw(bytes)| String::from_utf8_lossy(&bytes).into_owned()),
        event_type: String::new(),
        payload: None,
        headers: Vec::new(),
        traceparent: None,
        tracestate: None,
        created: row.try_get(at::CREATED).ok().flatten().unwrap_or(0.0),
    }))
}

/// A value's bytes as the server sent them, whatever its type.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Reads every value of row `id`, or says which one cannot be read.
fn read(mapping: &Mapping, id: i64, row: &tokio_postgres::Row) -> Result<OutboxRow, String> {
    let unreadable = |what: &str, error: tokio_postgres::Error| {
        format!(
            "its {what} cannot be read: {}",
            platform_core::pg::chain(&error)
        )
    };
    let needed = |index: usize, what: &str, column: &str| {
        row.try_get::<_, Option<String>>(index)
            .map_err(|error| unreadable(what, error))?
            .ok_or_else(|| format!("its {what} column {column} is NULL"))
    };
    let event_id = needed(at::EVENT_ID, "event id", &mapping.event_id)?;
    let time = needed(at::TIME, "time", mapping.time_column())?;
    let event_type: Option<String> = row
        .try_get(at::TYPE)
        .map_err(|error| unreadable("type", error))?;
    let columns = (at::FIXED..row.len())
        .map(|index| row.try_get(index))
        .collect::<Result<Vec<Option<String>>, _>>()
        .map_err(|error| unreadable("header column", error))?;
    let headers = headers(mapping, &event_id, event_type.as_deref(), &time, &columns);
    let topic: Option<String> = row
        .try_get(at::TOPIC)
        .map_err(|error| unreadable("topic", error))?;
    let topic = match topic {
        None => Err("its topic column is NULL and no default topic is set".to_owned()),
        Some(name) => match problem(&name) {
            Some(problem) => Err(format!("topic {}: {problem}", echo(&name, 80))),
            None => Ok(name),
        },
    };
    let created: Option<f64> = row
        .try_get(at::CREATED)
        .map_err(|error| unreadable("creation time", error))?;
    Ok(OutboxRow {
        id,
        topic,
        key: row
            .try_get(at::KEY)
            .map_err(|error| unreadable("key", error))?,
        event_type: event_type.unwrap_or_default(),
        payload: row
            .try_get(at::PAYLOAD)
            .map_err(|error| unreadable("payload", error))?,
        headers,
        traceparent: row
            .try_get(at::TRACEPARENT)
            .map_err(|error| unreadable("traceparent", error))?,
        tracestate: row
            .try_get(at::TRACESTATE)
            .map_err(|error| unreadable("tracestate", error))?,
        created: created.ok_or_else(|| "its creation time is NULL".to_owned())?,
    })
}
