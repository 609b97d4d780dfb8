//! Idempotent calls at the edge (AIP-155 `request_id`).
//!
//! A client that lost the answer to `PlaceOrder` (its replica died, the
//! network dropped) cannot know whether the order exists. With a
//! `request_id` it simply retries: the id is stored in the same transaction
//! as the order, so a retry finds it and gets the same order back, and
//! nothing new is created or emitted. The same id with a different request
//! is refused, since answering it with someone else's order would be wrong.
//!
//! Ids belong to their caller (the authenticated subject; none without
//! authentication), so one caller's id never meets another's. What is kept
//! of the request is a SHA-256 of its canonical encoding, never its fields.
//! Ids expire after `REQUEST_ID_RETENTION_SECS` (AIP-155 allows it; a
//! janitor deletes them), and a call that changes nothing stores none.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};

use crate::schema::request_ids;
use platform_service::error::ApiError as Error;
use platform_service::retention::Expiring;
use platform_service::text_enum;

/// Longest `request_id` accepted.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// The janitor's view of the table: rows expire by `created_at`.
pub const EXPIRING: Expiring = Expiring {
    table: "request_ids",
    column: "created_at",
};

/// What a stored fingerprint from before fingerprints were hashed reads:
/// such a row matches any request of its method.
const LEGACY: &str = "legacy";

text_enum! {
    /// The call a request id belongs to; stored as its gRPC method name.
    pub enum Method {
        /// `PlaceOrder`.
        Place => "PlaceOrder",
        /// `CancelOrder`.
        Cancel => "CancelOrder",
    }
}

/// A validated request id with what it must match on a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// Whose id it is: the authenticated subject, or "" without one.
    pub caller: String,
    /// The client's id.
    pub id: String,
    /// Which call.
    pub method: Method,
    /// The SHA-256 (hex) of the request's canonical encoding.
    pub fingerprint: String,
}

/// The SHA-256, in hex, of a canonical encoding of `fields`: each field's
/// length (8 bytes, big-endian) then its bytes, so no two different lists
/// of fields encode alike, and nothing depends on how a compiler prints.
pub fn fingerprint(fields: &[&[u8]]) -> String {
    use std::fmt::Write;
    let mut hash = Sha256::new();
    for field in fields {
        hash.update((field.len() as u64).to_be_bytes());
        hash.update(field);
    }
    hash.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// Checks a `request_id`; an empty one means the call is not idempotent.
pub fn parse(
    raw: &str,
    caller: &str,
    method: Method,
    fingerprint: String,
) -> Result<Option<RequestKey>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    let visible = raw.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !visible || raw.len() > MAX_REQUEST_ID_CHARS {
        return Err(Error::InvalidArgument(format!(
            "request_id must be 1 to {MAX_REQUEST_ID_CHARS} visible ASCII characters \
             (a UUID is best); got {} bytes",
            raw.len()
        )));
    }
    Ok(Some(RequestKey {
        caller: caller.to_owned(),
        id: raw.to_owned(),
        method,
        fingerprint,
    }))
}

/// A request id as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = request_ids)]
pub struct Stored {
    method: Method,
    fingerprint: String,
    order_id: i64,
}

/// What a stored id means for a new call with it: the order to answer with,
/// or why the call is refused.
pub fn replay(stored: &Stored, key: &RequestKey) -> Result<i64, Error> {
    let same = stored.fingerprint == key.fingerprint || stored.fingerprint == LEGACY;
    if stored.method == key.method && same {
        Ok(stored.order_id)
    } else {
        Err(Error::AlreadyExists(format!(
            "request_id {:?} was already used by a different {} request (order {}); \
             use a new request_id for a new request",
            key.id, stored.method, stored.order_id
        )))
    }
}

/// The stored entry for `key`, if any.
async fn find(conn: &mut AsyncPgConnection, key: &RequestKey) -> QueryResult<Option<Stored>> {
    request_ids::table
        .find((&key.caller, &key.id))
        .select(Stored::as_select())
        .first(conn)
        .await
        .optional()
}

/// What a call does about its request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<R> {
    /// The id was seen: answer with this order, as it is now.
    Answer(i64),
    /// Go on (before the work, with this key to remember; after it, with
    /// what the work gave).
    Go(R),
}

/// The step before the work: a call whose id was seen before is answered
/// from it (or refused, if the id came with a different request).
pub async fn before(
    conn: &mut AsyncPgConnection,
    key: Option<RequestKey>,
) -> Result<Step<Option<RequestKey>>, Error> {
    let Some(key) = key else {
        return Ok(Step::Go(None));
    };
    match find(conn, &key).await? {
        Some(stored) => {
            let order_id = replay(&stored, &key)?;
            tracing::info!(order_id, request_id = %key.id, "Retried call answered from its request_id.");
            Ok(Step::Answer(order_id))
        }
        None => Ok(Step::Go(Some(key))),
    }
}

/// The order a taken `key` stands for, once the call that took it has
/// committed (or why this call is refused).
pub async fn replayed(conn: &mut AsyncPgConnection, key: &RequestKey) -> Result<i64, Error> {
    let stored = find(conn, key).await?.ok_or_else(lost_race)?;
    let order_id = replay(&stored, key)?;
    tracing::info!(order_id, request_id = %key.id, "Retried call answered from its request_id.");
    Ok(order_id)
}

/// Inside the work's transaction: remembers `key` for `order_id`. A
/// concurrent call with the same id that got there first makes this fail
/// with the error [`after`] turns into that call's answer.
pub async fn remember(
    conn: &mut AsyncPgConnection,
    key: Option<&RequestKey>,
    order_id: i64,
) -> Result<(), Error> {
    let Some(key) = key else {
        return Ok(());
    };
    let inserted = diesel::insert_into(request_ids::table)
        .values((
            request_ids::caller.eq(&key.caller),
            request_ids::request_id.eq(&key.id),
            request_ids::method.eq(key.method),
            request_ids::fingerprint.eq(&key.fingerprint),
            request_ids::order_id.eq(order_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        Ok(())
    } else {
        Err(lost_race())
    }
}

/// The step after the work: what it gave, or, when a concurrent call with
/// the same id committed first (and this one rolled back), that call's
/// order.
pub async fn after<R>(
    conn: &mut AsyncPgConnection,
    key: Option<&RequestKey>,
    done: Result<R, Error>,
) -> Result<Step<R>, Error> {
    match (done, key) {
        (Ok(value), _) => Ok(Step::Go(value)),
        (Err(Error::Aborted(_)), Some(key)) => match find(conn, key).await? {
            Some(stored) => Ok(Step::Answer(replay(&stored, key)?)),
            None => Err(lost_race()),
        },
        (Err(error), _) => Err(error),
    }
}

/// A concurrent call with the same `request_id` committed first.
fn lost_race() -> Error {
    Error::Aborted("a concurrent call with the same request_id won; retry".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: Method, fingerprint: &str) -> RequestKey {
        RequestKey {
            caller: String::new(),
            id: "r-1".to_owned(),
            method,
            fingerprint: fingerprint.to_owned(),
        }
    }

    fn stored(method: Method, fingerprint: &str) -> Stored {
        Stored {
            method,
            fingerprint: fingerprint.to_owned(),
            order_id: 7,
        }
    }

    #[test]
    fn empty_means_not_idempotent_and_bad_ids_are_refused() {
        assert_eq!(parse("", "", Method::Place, String::new()).ok(), Some(None));
        assert!(parse("a b", "", Method::Place, String::new()).is_err());
        assert!(parse("é", "", Method::Place, String::new()).is_err());
        assert!(parse(&"x".repeat(129), "", Method::Place, String::new()).is_err());
        let ok = parse(
            "8c1d7f0e-0b7e-4b43-9d55-2f0c1f0e6a11",
            "ann",
            Method::Cancel,
            "5".into(),
        );
        assert!(matches!(
            ok,
            Ok(Some(RequestKey {
                method: Method::Cancel,
                ref caller,
                ..
            })) if caller == "ann"
        ));
    }

    #[test]
    fn a_retry_gets_the_same_order() {
        let result = replay(&stored(Method::Place, "f"), &key(Method::Place, "f"));
        assert_eq!(result.ok(), Some(7));
        let legacy = replay(&stored(Method::Place, LEGACY), &key(Method::Place, "g"));
        assert_eq!(legacy.ok(), Some(7));
    }

    #[test]
    fn a_different_request_with_the_id_is_refused() {
        let other_fields = replay(&stored(Method::Place, "f"), &key(Method::Place, "g"));
        assert!(matches!(other_fields, Err(Error::AlreadyExists(_))));
        let other_method = replay(&stored(Method::Place, "f"), &key(Method::Cancel, "f"));
        assert!(matches!(other_method, Err(Error::AlreadyExists(_))));
    }

    #[test]
    fn fingerprints_are_hashes_of_an_unambiguous_encoding() {
        let one = fingerprint(&[b"ab", b"c"]);
        assert_eq!(one.len(), 64);
        assert_ne!(one, fingerprint(&[b"a", b"bc"]), "field borders count");
        assert_eq!(one, fingerprint(&[b"ab", b"c"]));
        assert!(!fingerprint(&[b"Seoul"]).contains("Seoul"));
    }
}
