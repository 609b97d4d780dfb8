//! The CloudEvents Kafka binding (binary mode) as the platform uses it.
//!
//! Every event travels as its protobuf encoding in the record value; the
//! CloudEvents attributes travel as `ce_*` headers, and the record key is the
//! id of the entity the event belongs to, in decimal, equal to `ce_subject`.
//! This module owns those names and the parsing of an incoming record into
//! an [`Envelope`]; it knows no event type.

use uuid::Uuid;

use crate::echo::{echo, echo_bytes};

/// `ce_specversion` header.
pub const SPECVERSION: &str = "ce_specversion";
/// `ce_id` header: a UUID, unique per event, stable across re-publishing.
pub const ID: &str = "ce_id";
/// `ce_source` header.
pub const SOURCE: &str = "ce_source";
/// `ce_type` header: the protobuf full name of the event message.
pub const TYPE: &str = "ce_type";
/// `ce_time` header (RFC 3339).
pub const TIME: &str = "ce_time";
/// `ce_subject` header: the entity id, equal to the record key.
pub const SUBJECT: &str = "ce_subject";
/// `content-type` header.
pub const CONTENT_TYPE: &str = "content-type";
/// W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace context header carried beside `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// A trace context as the outbox stores it and records carry it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trace<'a> {
    /// W3C `traceparent`, if valid.
    pub traceparent: Option<&'a str>,
    /// W3C `tracestate`, kept only beside a `traceparent`.
    pub tracestate: Option<&'a str>,
}

/// Whether `value` can be carried as a W3C `tracestate`: at most 512
/// printable ASCII characters (the list's own syntax is the vendors').
pub fn valid_tracestate(value: &str) -> bool {
    !value.is_empty() && value.len() <= 512 && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}
/// The CloudEvents version spoken.
pub const SPEC_VERSION: &str = "1.0";
/// Content type of every event value.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/protobuf";

/// Where a record was read from, kept for the inbox and dead-lettering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A validated incoming event, before its payload is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The entity the event belongs to (record key and `ce_subject`); the
    /// inbox is keyed by it and the event type.
    pub key: i64,
    /// `ce_type`, the protobuf full name.
    pub event_type: String,
    /// `ce_id`.
    pub event_id: Uuid,
    /// `ce_source`: who wrote it (consumers accept only a topic's owner).
    pub source: String,
    /// `traceparent`, when the producer had a trace.
    pub traceparent: Option<String>,
    /// `tracestate`, kept beside a `traceparent`.
    pub tracestate: Option<String>,
    /// The protobuf-encoded event.
    pub payload: Vec<u8>,
    /// Where it was read.
    pub coordinates: Coordinates,
}

/// Why a record cannot be processed; such a record is dead-lettered.
///
/// The reason travels in a header of the dead-letter copy and in log lines,
/// so it is at most [`Poison::MAX_BYTES`] long whatever it quotes.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Poison(pub String);

impl Poison {
    /// The longest reason kept, in bytes (plus an ellipsis).
    pub const MAX_BYTES: usize = 1024;

    /// Builds a poison verdict from any message, cut to [`Poison::MAX_BYTES`].
    pub fn new(message: impl Into<String>) -> Self {
        Self(crate::echo::clip_bytes(message.into(), Self::MAX_BYTES))
    }
}

/// How many characters of a record's own content a reason quotes.
const QUOTE: usize = 64;

/// The longest `ce_type` or `ce_source` accepted, in bytes: far above any
/// real one, and a bound on what a record can make a consumer keep and log.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;

fn text<'a>(name: &str, value: Option<&'a [u8]>) -> Result<&'a str, Poison> {
    let value = value.ok_or_else(|| Poison::new(format!("missing header {name}")))?;
    if value.len() > MAX_ATTRIBUTE_BYTES {
        return Err(Poison::new(format!(
            "header {name} is {} bytes long, more than {MAX_ATTRIBUTE_BYTES}: {}",
            value.len(),
            echo_bytes(value, QUOTE)
        )));
    }
    std::str::from_utf8(value).map_err(|_| {
        Poison::new(format!(
            "header {name} is not UTF-8: {}",
            echo_bytes(value, QUOTE)
        ))
    })
}

/// A quoted echo of a record's own text, for a reason.
fn quoted(text: &str) -> String {
    format!("\"{}\"", echo(text, QUOTE))
}

impl Envelope {
    /// Validates a record's key and headers.
    ///
    /// `header` looks a header up by name. The key must be a positive decimal
    /// id equal to `ce_subject`, `ce_id` a UUID, `ce_type` and `ce_source`
    /// present.
    pub fn parse<'a>(
        key: Option<&[u8]>,
        header: impl Fn(&str) -> Option<&'a [u8]>,
        payload: Option<&[u8]>,
        coordinates: Coordinates,
    ) -> Result<Self, Poison> {
        let key = text("key", key)?;
        let key_id: i64 = key.parse().ok().filter(|id: &i64| *id > 0).ok_or_else(|| {
            Poison::new(format!("record key {} is not a positive id", quoted(key)))
        })?;
        let subject = text(SUBJECT, header(SUBJECT))?;
        if subject != key {
            return Err(Poison::new(format!(
                "{SUBJECT} {} differs from the record key {}",
                quoted(subject),
                quoted(key)
            )));
        }
        let version = text(SPECVERSION, header(SPECVERSION))?;
        if version != SPEC_VERSION {
            return Err(Poison::new(format!(
                "unsupported {SPECVERSION} {}",
                quoted(version)
            )));
        }
        let id = text(ID, header(ID))?;
        let event_id = Uuid::parse_str(id)
            .map_err(|_| Poison::new(format!("{ID} {} is not a UUID", quoted(id))))?;
        let event_type = text(TYPE, header(TYPE))?;
        if event_type.is_empty() {
            return Err(Poison::new(format!("{TYPE} is empty")));
        }
        let source = text(SOURCE, header(SOURCE))?;
        // An invalid trace context is dropped (as W3C asks), never carried on.
        let traceparent = header(TRACEPARENT)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| valid_traceparent(v))
            .map(str::to_owned);
        let tracestate = header(TRACESTATE)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| traceparent.is_some() && valid_tracestate(v))
            .map(str::to_owned);
        Ok(Self {
            key: key_id,
            event_type: event_type.to_owned(),
            event_id,
            source: source.to_owned(),
            traceparent,
            tracestate,
            payload: payload.unwrap_or_default().to_vec(),
            coordinates,
        })
    }

    /// Whether this record carries an `M` (by `ce_type`).
    pub fn is<M: prost::Name>(&self) -> bool {
        self.event_type == M::full_name()
    }

    /// Decodes the payload as `M` and checks, with `key_of`, that the event
    /// names the entity of the record key; anything else is poison.
    pub fn decode<M>(&self, key_of: impl FnOnce(&M) -> i64) -> Result<M, Poison>
    where
        M: prost::Message + Default,
    {
        let event = M::decode(self.payload.as_slice()).map_err(|e| {
            Poison::new(format!(
                "payload is not a valid {}: {}",
                self.event_type,
                echo(&e.to_string(), 200)
            ))
        })?;
        let named = key_of(&event);
        if named != self.key {
            return Err(Poison::new(format!(
                "payload names {named}, but the record key is {}",
                self.key
            )));
        }
        Ok(event)
    }

    /// The verdict for a type a handler does not act on: a type the
    /// application knows (`known`) is skipped (`Ok(None)`), anything else is
    /// poison.
    pub fn unhandled<T>(&self, known: impl FnOnce(&str) -> bool) -> Result<Option<T>, Poison> {
        if known(&self.event_type) {
            Ok(None)
        } else {
            Err(Poison::new(format!(
                "unknown event type {}",
                quoted(&self.event_type)
            )))
        }
    }
}

/// Whether `value` is a W3C `traceparent` this code can carry on:
/// `version-traceid-parentid-flags` in lowercase hex (2-32-16-2), version not
/// `ff`, neither id all zeros. Anything else is dropped rather than stored.
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |part: &str| part.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if hex(version, 2) && *version != "ff" && hex(trace, 32) && nonzero(trace)
            && hex(parent, 16) && nonzero(parent) && hex(flags, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coords() -> Coordinates {
        Coordinates {
            topic: "t".into(),
            partition: 0,
            offset: 7,
        }
    }

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a [u8]> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        }
    }

    const ID_VALUE: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    #[test]
    fn parses_a_well_formed_record() {
        let pairs = [
            (SPECVERSION, "1.0"),
            (ID, ID_VALUE),
            (TYPE, "shop.v1.ItemAdded"),
            (SOURCE, "/shop/cart"),
            (SUBJECT, "42"),
        ];
        let env =
            Envelope::parse(Some(b"42"), headers(&pairs), Some(b"x"), coords()).expect("valid");
        assert_eq!(env.key, 42);
        assert_eq!(env.event_type, "shop.v1.ItemAdded");
        assert_eq!(env.payload, b"x");
        assert_eq!(env.source, "/shop/cart");
        assert!(env.unhandled::<()>(|t| t == "shop.v1.ItemAdded").is_ok());
        assert!(env.unhandled::<()>(|_| false).is_err());
    }

    /// A stand-in event with the entity id in field 1.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Named {
        #[prost(int64, tag = "1")]
        id: i64,
    }

    #[test]
    fn events_must_match_their_key() {
        use prost::Message;
        let pairs = [
            (SPECVERSION, "1.0"),
            (ID, ID_VALUE),
            (TYPE, "shop.v1.Named"),
            (SOURCE, "/shop/cart"),
            (SUBJECT, "42"),
        ];
        let env = |bytes: &[u8]| {
            Envelope::parse(Some(b"42"), headers(&pairs), Some(bytes), coords()).expect("valid")
        };
        let payload = |id| Named { id }.encode_to_vec();
        let ok = env(&payload(42)).decode(|e: &Named| e.id);
        assert_eq!(ok.map(|e| e.id), Ok(42));
        assert!(env(&payload(7)).decode(|e: &Named| e.id).is_err());
        assert!(env(b"\xff\xff").decode(|e: &Named| e.id).is_err());
    }

    #[test]
    fn refuses_bad_keys_and_headers() {
        let good = [
            (SPECVERSION, "1.0"),
            (ID, ID_VALUE),
            (TYPE, "x"),
            (SOURCE, "/shop/cart"),
            (SUBJECT, "42"),
        ];
        assert!(Envelope::parse(Some(b"42"), headers(&good), None, coords()).is_ok());
        assert!(Envelope::parse(None, headers(&good), None, coords()).is_err());
        assert!(Envelope::parse(Some(b"-1"), headers(&good), None, coords()).is_err());
        assert!(Envelope::parse(Some(b"41"), headers(&good), None, coords()).is_err());
        let bad_id = [
            (SPECVERSION, "1.0"),
            (ID, "nope"),
            (TYPE, "x"),
            (SOURCE, "/shop/cart"),
            (SUBJECT, "42"),
        ];
        assert!(Envelope::parse(Some(b"42"), headers(&bad_id), None, coords()).is_err());
        let no_type = [
            (SPECVERSION, "1.0"),
            (ID, ID_VALUE),
            (SOURCE, "/shop/cart"),
            (SUBJECT, "42"),
        ];
        assert!(Envelope::parse(Some(b"42"), headers(&no_type), None, coords()).is_err());
        let no_source = [
            (SPECVERSION, "1.0"),
            (ID, ID_VALUE),
            (TYPE, "x"),
            (SUBJECT, "42"),
        ];
        assert!(Envelope::parse(Some(b"42"), headers(&no_source), None, coords()).is_err());
    }

    #[test]
    fn reasons_quote_little_and_escape_what_they_quote() {
        let flood = "\u{1}".repeat(180_000);
        let pairs = [(SUBJECT, "42")];
        let refused = Envelope::parse(Some(flood.as_bytes()), headers(&pairs), None, coords())
            .expect_err("refused");
        assert!(
            refused.0.len() <= Poison::MAX_BYTES + 3,
            "{}",
            refused.0.len()
        );
        assert!(!refused.0.contains('\u{1}'), "{}", refused.0);
        let escape = [
            (SPECVERSION, "1.0"),
            (ID, ID_VALUE),
            (TYPE, "\u{1b}[2Jfake"),
            (SOURCE, "/shop/cart"),
            (SUBJECT, "42"),
        ];
        let env = Envelope::parse(Some(b"42"), headers(&escape), None, coords()).expect("parses");
        let refused = env.unhandled::<()>(|_| false).expect_err("unknown");
        assert!(refused.0.contains("\\u{1b}[2Jfake"), "{}", refused.0);
        let long_type = "t".repeat(MAX_ATTRIBUTE_BYTES + 1);
        let too_long = [
            (SPECVERSION, "1.0"),
            (ID, ID_VALUE),
            (TYPE, long_type.as_str()),
            (SOURCE, "/shop/cart"),
            (SUBJECT, "42"),
        ];
        assert!(Envelope::parse(Some(b"42"), headers(&too_long), None, coords()).is_err());
        assert!(Poison::new("x".repeat(1_000_000)).0.len() <= Poison::MAX_BYTES + 3);
    }

    #[test]
    fn only_well_formed_trace_contexts_are_valid() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
        }
    }
}
