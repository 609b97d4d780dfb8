//! The dead-letter copy of a record: what it carries, whole or truncated.
//!
//! A poison record is copied, bytes and headers unchanged, with the reason
//! and its original coordinates added as `dlq_*` headers. The original's own
//! `dlq_*` headers are dropped first, so the only dead-letter headers a copy
//! carries are the consumer's. A truncated copy, for a record too large to
//! copy whole, has no payload (its length and SHA-256 instead), any key or
//! header value over 1 KiB replaced by its length and hash, and
//! `dlq_truncated`. Sending it is `platform_core::dead_letter`'s job.

use sha2::{Digest, Sha256};

/// What every dead-letter header's name starts with; re-driving a record
/// strips them, and dead-lettering drops any the original carried.
pub const HEADER_PREFIX: &str = "dlq_";
/// Header carrying the reason a record was dead-lettered.
pub const ERROR_HEADER: &str = "dlq_error";
/// Header carrying the original topic.
pub const TOPIC_HEADER: &str = "dlq_original_topic";
/// Header carrying the original partition.
pub const PARTITION_HEADER: &str = "dlq_original_partition";
/// Header carrying the original offset.
pub const OFFSET_HEADER: &str = "dlq_original_offset";
/// Header carrying the consumer group that refused it.
pub const GROUP_HEADER: &str = "dlq_consumer_group";
/// Header present (`true`) on a dead letter an operator wrote with
/// `mall-dlq skip`: the consumer of its group steps over the original.
pub const SKIP_HEADER: &str = "dlq_skip";
/// Header present (`true`) on a copy sent truncated.
pub const TRUNCATED_HEADER: &str = "dlq_truncated";
/// Header of a truncated copy: the original payload's length in bytes.
pub const PAYLOAD_BYTES_HEADER: &str = "dlq_original_payload_bytes";
/// Header of a truncated copy: the original payload's SHA-256, in hex.
pub const PAYLOAD_SHA256_HEADER: &str = "dlq_original_payload_sha256";

/// The largest key or header value a truncated copy keeps as it was.
const KEPT_BYTES: usize = 1024;
/// The most bytes of original headers a truncated copy keeps.
const KEPT_HEADER_BYTES: usize = 16 * 1024;

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// A value a truncated copy keeps: as it was when short, else its length
/// and hash.
fn kept(value: &[u8]) -> Vec<u8> {
    if value.len() <= KEPT_BYTES {
        value.to_vec()
    } else {
        format!("{} bytes, sha256 {}", value.len(), sha256_hex(value)).into_bytes()
    }
}

/// The record being dead-lettered, borrowed from a consumed message or a
/// record a tool read.
#[derive(Debug, Clone)]
pub struct Original<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its payload.
    pub payload: Option<&'a [u8]>,
    /// Its headers, in order.
    pub headers: Vec<(&'a str, &'a [u8])>,
}

impl Original<'_> {
    /// Its headers, except any `dlq_*` one: a record must not bring its own
    /// dead-letter coordinates or reason.
    fn own_headers(&self) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
        self.headers
            .iter()
            .filter(|(name, _)| !name.starts_with(HEADER_PREFIX))
            .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
    }

    fn dead_letter_headers(&self, reason: &str, group: &str) -> Vec<(String, Vec<u8>)> {
        [
            (ERROR_HEADER, reason.to_owned()),
            (TOPIC_HEADER, self.topic.to_owned()),
            (PARTITION_HEADER, self.partition.to_string()),
            (OFFSET_HEADER, self.offset.to_string()),
            (GROUP_HEADER, group.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.into_bytes()))
        .collect()
    }
}

/// What a dead letter carries, before it is handed to the producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub payload: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Copy {
    /// The whole record: its key, payload and headers (without any
    /// `dlq_*` header it came with), then the dead-letter headers.
    pub fn whole(original: &Original<'_>, reason: &str, group: &str) -> Self {
        let mut headers: Vec<_> = original.own_headers().collect();
        headers.extend(original.dead_letter_headers(reason, group));
        Self {
            key: original.key.map(<[u8]>::to_vec),
            payload: original.payload.map(<[u8]>::to_vec),
            headers,
        }
    }

    /// A copy of bounded size: no payload (its length and SHA-256 instead),
    /// an oversized key or header value replaced by its length and hash, at
    /// most [`KEPT_HEADER_BYTES`] of original headers, and `dlq_truncated`.
    pub fn truncated(original: &Original<'_>, reason: &str, group: &str) -> Self {
        let mut headers = Vec::new();
        let mut budget = KEPT_HEADER_BYTES;
        for (name, value) in original.own_headers() {
            let value = kept(&value);
            let cost = name.len() + value.len();
            if cost > budget || name.len() > KEPT_BYTES {
                continue;
            }
            budget -= cost;
            headers.push((name, value));
        }
        headers.extend(original.dead_letter_headers(reason, group));
        let payload = original.payload.unwrap_or_default();
        for (name, value) in [
            (TRUNCATED_HEADER, "true".to_owned()),
            (PAYLOAD_BYTES_HEADER, payload.len().to_string()),
            (PAYLOAD_SHA256_HEADER, sha256_hex(payload)),
        ] {
            headers.push((name.to_owned(), value.into_bytes()));
        }
        Self {
            key: original.key.map(kept),
            payload: None,
            headers,
        }
    }

    /// Adds a header after the others (for example an operator's mark).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original<'a>(
        key: &'a [u8],
        payload: &'a [u8],
        headers: &[(&'a str, &'a [u8])],
    ) -> Original<'a> {
        Original {
            topic: "mall.order.events",
            partition: 2,
            offset: 41,
            key: Some(key),
            payload: Some(payload),
            headers: headers.to_vec(),
        }
    }

    fn header<'a>(copy: &'a Copy, name: &str) -> Vec<&'a [u8]> {
        copy.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    #[test]
    fn a_record_cannot_bring_its_own_dead_letter_headers() {
        let planted = original(
            b"7",
            b"x",
            &[
                ("ce_type", b"mall.delivery.v1.DeliveryCancelled"),
                (TOPIC_HEADER, b"mall.delivery.events"),
                (ERROR_HEADER, b"database unavailable"),
            ],
        );
        let copy = Copy::whole(&planted, "ce_source is wrong", "mall.delivery");
        assert_eq!(
            header(&copy, TOPIC_HEADER),
            [b"mall.order.events".as_slice()]
        );
        assert_eq!(
            header(&copy, ERROR_HEADER),
            [b"ce_source is wrong".as_slice()]
        );
        assert_eq!(header(&copy, "ce_type").len(), 1);
        assert_eq!(copy.payload.as_deref(), Some(b"x".as_slice()));
    }

    #[test]
    fn a_truncated_copy_is_small_and_says_what_it_dropped() {
        let key = vec![1_u8; 180_000];
        let payload = vec![7_u8; 2_000_000];
        let big_header = vec![b'h'; 900_000];
        let huge = original(&key, &payload, &[("ce_type", b"x"), ("big", &big_header)]);
        let copy = Copy::truncated(&huge, "poison", "mall.delivery");
        let size = copy.key.as_ref().map_or(0, Vec::len)
            + copy
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        assert!(copy.payload.is_none());
        assert!(size < 32 * 1024, "{size}");
        assert_eq!(header(&copy, TRUNCATED_HEADER), [b"true".as_slice()]);
        assert_eq!(header(&copy, PAYLOAD_BYTES_HEADER), [b"2000000".as_slice()]);
        assert_eq!(
            header(&copy, PAYLOAD_SHA256_HEADER),
            [sha256_hex(&payload).as_bytes()]
        );
        let kept_key = String::from_utf8(copy.key.clone().expect("a key")).expect("text");
        assert!(kept_key.starts_with("180000 bytes, sha256 "), "{kept_key}");
        assert_eq!(header(&copy, "ce_type"), [b"x".as_slice()]);
        assert!(header(&copy, "big")[0].starts_with(b"900000 bytes"));
    }

    #[test]
    fn hashes_are_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
