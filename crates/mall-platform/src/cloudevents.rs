//! The CloudEvents Kafka binding (binary mode) as the mall uses it.
//!
//! Every event travels as its protobuf encoding in the record value; the
//! CloudEvents attributes travel as `ce_*` headers, and the record key is the
//! order id in decimal. This module owns those names and the parsing of an
//! incoming record into an [`Envelope`].

use mall_proto::SagaEvent;
use uuid::Uuid;

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
/// `ce_subject` header: the order id.
pub const SUBJECT: &str = "ce_subject";
/// `content-type` header.
pub const CONTENT_TYPE: &str = "content-type";
/// W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The CloudEvents version the mall speaks.
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
    /// The order the event belongs to (record key and `ce_subject`).
    pub order_id: i64,
    /// `ce_type`, the protobuf full name.
    pub event_type: String,
    /// `ce_id`.
    pub event_id: Uuid,
    /// `traceparent`, when the producer had a trace.
    pub traceparent: Option<String>,
    /// The protobuf-encoded event.
    pub payload: Vec<u8>,
    /// Where it was read.
    pub coordinates: Coordinates,
}

/// Why a record cannot be processed; such a record is dead-lettered.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Poison(pub String);

impl Poison {
    /// Builds a poison verdict from any message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

fn text<'a>(name: &str, value: Option<&'a [u8]>) -> Result<&'a str, Poison> {
    let value = value.ok_or_else(|| Poison::new(format!("missing header {name}")))?;
    std::str::from_utf8(value).map_err(|_| Poison::new(format!("header {name} is not UTF-8")))
}

impl Envelope {
    /// Validates a record's key and headers.
    ///
    /// `header` looks a header up by name. The key must be a positive decimal
    /// order id equal to `ce_subject`, `ce_id` a UUID and `ce_type` present.
    pub fn parse<'a>(
        key: Option<&[u8]>,
        header: impl Fn(&str) -> Option<&'a [u8]>,
        payload: Option<&[u8]>,
        coordinates: Coordinates,
    ) -> Result<Self, Poison> {
        let key = text("key", key)?;
        let order_id: i64 =
            key.parse().ok().filter(|id: &i64| *id > 0).ok_or_else(|| {
                Poison::new(format!("record key {key:?} is not a positive order id"))
            })?;
        let subject = text(SUBJECT, header(SUBJECT))?;
        if subject != key {
            return Err(Poison::new(format!(
                "{SUBJECT} {subject:?} differs from the record key {key:?}"
            )));
        }
        let version = text(SPECVERSION, header(SPECVERSION))?;
        if version != SPEC_VERSION {
            return Err(Poison::new(format!(
                "unsupported {SPECVERSION} {version:?}"
            )));
        }
        let id = text(ID, header(ID))?;
        let event_id =
            Uuid::parse_str(id).map_err(|_| Poison::new(format!("{ID} {id:?} is not a UUID")))?;
        let event_type = text(TYPE, header(TYPE))?;
        if event_type.is_empty() {
            return Err(Poison::new(format!("{TYPE} is empty")));
        }
        let traceparent = header(TRACEPARENT)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned);
        Ok(Self {
            order_id,
            event_type: event_type.to_owned(),
            event_id,
            traceparent,
            payload: payload.unwrap_or_default().to_vec(),
            coordinates,
        })
    }

    /// Whether this record carries an `M` (by `ce_type`).
    pub fn is<M: prost::Name>(&self) -> bool {
        self.event_type == M::full_name()
    }

    /// Decodes the payload as `M` and checks that its order id matches the
    /// record key; anything else is poison.
    pub fn event<M: SagaEvent>(&self) -> Result<M, Poison> {
        let event = M::decode(self.payload.as_slice())
            .map_err(|e| Poison::new(format!("payload is not a valid {}: {e}", self.event_type)))?;
        if event.order_id() != self.order_id {
            return Err(Poison::new(format!(
                "payload order_id {} differs from the record key {}",
                event.order_id(),
                self.order_id
            )));
        }
        Ok(event)
    }

    /// The verdict for a type a handler does not act on: a known saga event
    /// is skipped (`Ok(None)`), anything else is poison.
    pub fn unhandled<T>(&self) -> Result<Option<T>, Poison> {
        if mall_proto::is_saga_event(&self.event_type) {
            Ok(None)
        } else {
            Err(Poison::new(format!(
                "unknown event type {:?}",
                self.event_type
            )))
        }
    }
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
            (TYPE, "mall.order.v1.OrderCreated"),
            (SUBJECT, "42"),
        ];
        let env =
            Envelope::parse(Some(b"42"), headers(&pairs), Some(b"x"), coords()).expect("valid");
        assert_eq!(env.order_id, 42);
        assert_eq!(env.event_type, "mall.order.v1.OrderCreated");
        assert_eq!(env.payload, b"x");
        assert!(env.is::<mall_proto::order::v1::OrderCreated>());
        assert!(env.unhandled::<()>().is_ok());
    }

    #[test]
    fn events_must_match_their_key() {
        use prost::Message;
        let pairs = [
            (SPECVERSION, "1.0"),
            (ID, ID_VALUE),
            (TYPE, "mall.order.v1.OrderCancelled"),
            (SUBJECT, "42"),
        ];
        let payload = |order_id| mall_proto::order::v1::OrderCancelled { order_id }.encode_to_vec();
        let env = |bytes: &[u8]| {
            Envelope::parse(Some(b"42"), headers(&pairs), Some(bytes), coords()).expect("valid")
        };
        let ok: Result<mall_proto::order::v1::OrderCancelled, _> = env(&payload(42)).event();
        assert_eq!(ok.map(|e| e.order_id), Ok(42));
        let wrong: Result<mall_proto::order::v1::OrderCancelled, _> = env(&payload(7)).event();
        assert!(wrong.is_err());
        let garbage: Result<mall_proto::order::v1::OrderCancelled, _> = env(b"\xff\xff").event();
        assert!(garbage.is_err());
        let mut unknown = env(b"");
        unknown.event_type = "mall.order.v1.Nope".into();
        assert!(unknown.unhandled::<()>().is_err());
    }

    #[test]
    fn refuses_bad_keys_and_headers() {
        let good = [
            (SPECVERSION, "1.0"),
            (ID, ID_VALUE),
            (TYPE, "x"),
            (SUBJECT, "42"),
        ];
        assert!(Envelope::parse(None, headers(&good), None, coords()).is_err());
        assert!(Envelope::parse(Some(b"-1"), headers(&good), None, coords()).is_err());
        assert!(Envelope::parse(Some(b"41"), headers(&good), None, coords()).is_err());
        let bad_id = [
            (SPECVERSION, "1.0"),
            (ID, "nope"),
            (TYPE, "x"),
            (SUBJECT, "42"),
        ];
        assert!(Envelope::parse(Some(b"42"), headers(&bad_id), None, coords()).is_err());
        let no_type = [(SPECVERSION, "1.0"), (ID, ID_VALUE), (SUBJECT, "42")];
        assert!(Envelope::parse(Some(b"42"), headers(&no_type), None, coords()).is_err());
    }
}
