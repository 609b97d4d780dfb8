//! The Kafka edge as one function of an arbitrary record: what a consumer
//! runs on a record before the database (envelope parsing, the topic
//! owner's source, the event type tied to its topic, decoding, the
//! contract's value checks), and what it would dead-letter (the whole and
//! the truncated copy). The fuzzer (`fuzz/`, `scripts/fuzz.sh`) feeds it
//! bytes; the tests feed it the corpus the fuzzer found, as regressions.
//!
//! Besides "never panics", it checks what a hostile record must never
//! achieve: a reason longer than about 1 KiB, a reason holding a control
//! character, or a truncated dead letter that is not small.

use arbitrary::Arbitrary;
use mall_saga::{Service, Topics};
use platform_envelope::cloudevents::{Coordinates, Envelope, Poison};
use platform_envelope::dead_letter::{Copy, Original};

/// A text a record carries: one the mall would write (picked by index
/// from the valid values of its place), or anything at all.
#[derive(Debug, Clone, Arbitrary)]
pub enum Text {
    /// The valid value at this index (wrapping).
    Known(u8),
    /// Arbitrary bytes.
    Raw(Vec<u8>),
}

impl Text {
    fn bytes(&self, known: &[&str]) -> Vec<u8> {
        match self {
            Self::Known(index) => known[usize::from(*index) % known.len()].as_bytes().to_vec(),
            Self::Raw(bytes) => bytes.clone(),
        }
    }
}

/// The payload: a saga event built from arbitrary field values (the type
/// picked by index), or arbitrary bytes.
#[derive(Debug, Clone, Arbitrary)]
pub enum Payload {
    /// An event of the type at this index of the saga's types.
    Event {
        /// Which type.
        kind: u8,
        /// Whether its `order_id` is the record key's.
        same_order: bool,
        /// Its numbers, in field order.
        numbers: [i64; 5],
        /// Its texts, in field order.
        texts: [String; 2],
    },
    /// Arbitrary bytes.
    Raw(Vec<u8>),
}

/// One record as it could arrive on a topic of the mall, built to reach
/// every check: the CloudEvents headers may be valid or anything, the
/// payload a real event with any field values or anything.
#[derive(Debug, Arbitrary)]
pub struct Record {
    /// Which service reads it, and from which of its topics.
    pub reader: u8,
    /// Which topic, among those the reader reads (wrapping).
    pub topic: u8,
    /// The key: an order id, or anything.
    pub key: Result<u32, Vec<u8>>,
    /// `ce_specversion`.
    pub specversion: Option<Text>,
    /// `ce_id`.
    pub id: Option<Text>,
    /// `ce_source`.
    pub source: Option<Text>,
    /// `ce_type`.
    pub event_type: Option<Text>,
    /// `ce_subject`: the key's, or anything.
    pub subject: Option<Result<(), Vec<u8>>>,
    /// More headers (a `traceparent`, planted `dlq_*` ones, …).
    pub more: Vec<(String, Vec<u8>)>,
    /// The value.
    pub payload: Option<Payload>,
}

const SPECVERSIONS: [&str; 2] = ["1.0", "0.3"];
const IDS: [&str; 2] = ["6f1a9a5e-2b1c-4a57-9c7c-1f2d3e4a5b6c", "not-a-uuid"];
const SOURCES: [&str; 3] = ["/mall/order", "/mall/delivery", "/mall/inventory"];

/// The encoding of a saga event of the `kind`-th type, from `numbers` and
/// `texts` in field order (the first number is the order id).
fn event(kind: u8, numbers: [i64; 5], texts: &[String; 2]) -> (String, Vec<u8>) {
    use mall_proto::delivery::v1::{DeliveryCancelled, DeliveryFailed, DeliveryStarted};
    use mall_proto::inventory::v1::{StockDecreaseFailed, StockDecreased, StockIncreased};
    use mall_proto::order::v1::{OrderApproved, OrderCancelled, OrderCreated, OrderRejected};
    use prost::{Message, Name};
    let [a, b, c, d, e] = numbers;
    let [s, t] = texts.clone();
    fn of<M: Message + Name>(m: M) -> (String, Vec<u8>) {
        (M::full_name(), m.encode_to_vec())
    }
    match kind % 10 {
        0 => of(OrderCreated {
            order_id: a,
            customer_id: b,
            product_id: c,
            product_name: s,
            qty: d,
            address: t,
        }),
        1 => of(OrderApproved { order_id: a }),
        2 => of(OrderRejected {
            order_id: a,
            reason: s,
        }),
        3 => of(OrderCancelled { order_id: a }),
        4 => of(DeliveryStarted {
            order_id: a,
            product_id: b,
            qty: c,
            customer_id: d,
            address: s,
        }),
        5 => of(DeliveryFailed {
            order_id: a,
            reason: s,
        }),
        6 => of(DeliveryCancelled {
            order_id: a,
            product_id: b,
            qty: c,
        }),
        7 => of(StockDecreased {
            order_id: a,
            product_id: b,
            qty: c,
            remaining_stock: e,
        }),
        8 => of(StockDecreaseFailed {
            order_id: a,
            product_id: b,
            qty: c,
            reason: s,
        }),
        _ => of(StockIncreased {
            order_id: a,
            product_id: b,
            qty: c,
            remaining_stock: e,
        }),
    }
}

/// A record's key, headers and payload, as they travel.
pub type Parts = (Option<Vec<u8>>, Vec<(String, Vec<u8>)>, Option<Vec<u8>>);

impl Record {
    /// Its key, headers and payload, as they travel.
    pub fn parts(&self) -> Parts {
        let key = match &self.key {
            Ok(id) => id.to_string().into_bytes(),
            Err(raw) => raw.clone(),
        };
        let types: Vec<String> = mall_saga::EVENT_TYPES.clone();
        let known: Vec<&str> = types.iter().map(String::as_str).collect();
        let (payload, payload_type) = match &self.payload {
            Some(Payload::Event {
                kind,
                same_order,
                numbers,
                texts,
            }) => {
                let mut numbers = *numbers;
                if *same_order && let Ok(id) = &self.key {
                    numbers[0] = i64::from(*id);
                }
                let (name, bytes) = event(*kind, numbers, texts);
                (Some(bytes), Some(name))
            }
            Some(Payload::Raw(bytes)) => (Some(bytes.clone()), None),
            None => (None, None),
        };
        let mut headers = Vec::new();
        let mut put = |name: &str, value: Option<Vec<u8>>| {
            if let Some(value) = value {
                headers.push((name.to_owned(), value));
            }
        };
        put(
            "ce_specversion",
            self.specversion.as_ref().map(|t| t.bytes(&SPECVERSIONS)),
        );
        put("ce_id", self.id.as_ref().map(|t| t.bytes(&IDS)));
        put("ce_source", self.source.as_ref().map(|t| t.bytes(&SOURCES)));
        // A payload's own type unless the record says otherwise.
        let event_type = match (&self.event_type, payload_type) {
            (Some(Text::Known(index)), Some(name)) if index % 2 == 0 => Some(name.into_bytes()),
            (Some(text), _) => Some(text.bytes(&known)),
            (None, _) => None,
        };
        put("ce_type", event_type);
        put(
            "ce_subject",
            self.subject.as_ref().map(|s| match s {
                Ok(()) => key.clone(),
                Err(raw) => raw.clone(),
            }),
        );
        headers.extend(self.more.iter().cloned());
        (Some(key), headers, payload)
    }
}

/// The largest truncated dead letter (key and headers) a record can cause.
const SMALL: usize = 64 * 1024;

/// Runs the edge on `record`; panics if it breaks an invariant.
pub fn kafka_edge(record: &Record) {
    let (key, headers, payload) = record.parts();
    check(
        record.reader,
        record.topic,
        key.as_deref(),
        &headers,
        payload.as_deref(),
    );
}

/// The edge on the parts of a record, as a consumer of the `reader`-th
/// service reads it from the `topic`-th topic it reads.
pub fn check(
    reader: u8,
    topic: u8,
    key: Option<&[u8]>,
    headers: &[(String, Vec<u8>)],
    payload: Option<&[u8]>,
) {
    let topics = Topics::new("mall");
    let reader = Service::ALL[usize::from(reader) % Service::ALL.len()];
    let reads = topics.read_by(reader);
    let topic = &reads[usize::from(topic) % reads.len()];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    };
    let coordinates = Coordinates {
        topic: topic.clone(),
        partition: 0,
        offset: 0,
    };
    let parsed = Envelope::parse(key, header, payload, coordinates);
    let reason = match parsed.and_then(|envelope| reader.screen(&topics, &envelope)) {
        Ok(_) => return,
        Err(Poison(reason)) => reason,
    };
    assert!(
        reason.len() <= Poison::MAX_BYTES + 3,
        "a reason of {} bytes",
        reason.len()
    );
    assert!(
        !reason.chars().any(char::is_control),
        "a reason with a control character: {reason:?}"
    );
    let original = Original {
        topic,
        partition: 0,
        offset: 0,
        key,
        payload,
        headers: headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
            .collect(),
    };
    let whole = Copy::whole(&original, &reason, "mall.fuzz");
    assert!(
        !whole.headers[..whole.headers.len() - 5]
            .iter()
            .any(|(name, _)| name.starts_with("dlq_")),
        "a record's own dlq_* header reached its dead letter"
    );
    let truncated = Copy::truncated(&original, &reason, "mall.fuzz");
    let size = truncated.key.as_ref().map_or(0, Vec::len)
        + truncated
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>();
    assert!(size < SMALL, "a truncated dead letter of {size} bytes");
}

#[cfg(test)]
mod tests {
    use arbitrary::Unstructured;

    use super::*;

    /// Every input the fuzzer kept (`fuzz/corpus/kafka_edge`), run again.
    #[test]
    fn the_corpus_passes() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kafka_edge");
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus") {
            let path = entry.expect("an entry").path();
            let bytes = std::fs::read(&path).expect("an input");
            if let Ok(record) = Record::arbitrary_take_rest(Unstructured::new(&bytes)) {
                kafka_edge(&record);
                inputs += 1;
            }
        }
        assert!(inputs >= 10, "the corpus holds {inputs} usable inputs");
    }

    #[test]
    fn hostile_records_of_the_review_pass() {
        let headers = |pairs: &[(&str, &[u8])]| -> Vec<(String, Vec<u8>)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect()
        };
        check(
            1,
            0,
            Some(&[1; 180_000]),
            &headers(&[("ce_type", b"x")]),
            None,
        );
        check(
            1,
            0,
            Some(b"7"),
            &headers(&[
                ("ce_specversion", b"1.0"),
                ("ce_id", b"6f1a9a5e-2b1c-4a57-9c7c-1f2d3e4a5b6c"),
                ("ce_source", b"/mall/order"),
                ("ce_type", b"\x1b[2Jmall.order.v1.Nope"),
                ("ce_subject", b"7"),
                ("dlq_original_topic", b"mall.delivery.events"),
            ]),
            Some(&[0xff; 1_000_000]),
        );
    }

    #[test]
    fn structured_records_reach_the_event_checks() {
        // A valid OrderCreated with a NUL in its address, to delivery.
        let record = Record {
            reader: 1,
            topic: 0,
            key: Ok(42),
            specversion: Some(Text::Known(0)),
            id: Some(Text::Known(0)),
            source: Some(Text::Known(0)),
            event_type: Some(Text::Known(0)),
            subject: Some(Ok(())),
            more: Vec::new(),
            payload: Some(Payload::Event {
                kind: 0,
                same_order: true,
                numbers: [0, 1, 1, 1, 0],
                texts: ["TV".into(), "a\0b".into()],
            }),
        };
        let (key, headers, payload) = record.parts();
        let topics = Topics::new("mall");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
        };
        let envelope = Envelope::parse(
            key.as_deref(),
            header,
            payload.as_deref(),
            Coordinates {
                topic: "mall.order.events".into(),
                partition: 0,
                offset: 0,
            },
        )
        .expect("a valid envelope");
        let refused = Service::Delivery
            .screen(&topics, &envelope)
            .expect_err("poison");
        assert!(refused.0.contains("address"), "{refused}");
        kafka_edge(&record);
    }
}
