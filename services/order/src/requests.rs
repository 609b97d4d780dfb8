//! Idempotent calls at the edge (AIP-155 `request_id`).
//!
//! A client that lost the answer to `PlaceOrder` (its replica died, the
//! network dropped) cannot know whether the order exists. With a
//! `request_id` it simply retries: the id is stored in the same transaction
//! as the order, so a retry finds it and gets the same order back, and
//! nothing new is created or emitted. The same id with a different request
//! is refused, since answering it with someone else's order would be wrong.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::request_ids;
use platform_service::error::ApiError as Error;
use platform_service::text_enum;

/// Longest `request_id` accepted.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

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
    /// The client's id.
    pub id: String,
    /// Which call.
    pub method: Method,
    /// The request's validated fields.
    pub fingerprint: String,
}

/// Checks a `request_id`; an empty one means the call is not idempotent.
pub fn parse(raw: &str, method: Method, fingerprint: String) -> Result<Option<RequestKey>, Error> {
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
    if stored.method == key.method && stored.fingerprint == key.fingerprint {
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
pub async fn find(conn: &mut AsyncPgConnection, key: &RequestKey) -> QueryResult<Option<Stored>> {
    request_ids::table
        .find(&key.id)
        .select(Stored::as_select())
        .first(conn)
        .await
        .optional()
}

/// Stores `key` for `order_id` inside the caller's transaction; `false` if
/// a concurrent call with the same id got there first (the caller then
/// rolls back and answers from what that call stored).
pub async fn store(
    conn: &mut AsyncPgConnection,
    key: &RequestKey,
    order_id: i64,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(request_ids::table)
        .values((
            request_ids::request_id.eq(&key.id),
            request_ids::method.eq(key.method),
            request_ids::fingerprint.eq(&key.fingerprint),
            request_ids::order_id.eq(order_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: Method, fingerprint: &str) -> RequestKey {
        RequestKey {
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
        assert_eq!(parse("", Method::Place, String::new()).ok(), Some(None));
        assert!(parse("a b", Method::Place, String::new()).is_err());
        assert!(parse("é", Method::Place, String::new()).is_err());
        assert!(parse(&"x".repeat(129), Method::Place, String::new()).is_err());
        let ok = parse(
            "8c1d7f0e-0b7e-4b43-9d55-2f0c1f0e6a11",
            Method::Cancel,
            "5".into(),
        );
        assert!(matches!(
            ok,
            Ok(Some(RequestKey {
                method: Method::Cancel,
                ..
            }))
        ));
    }

    #[test]
    fn a_retry_gets_the_same_order() {
        let result = replay(&stored(Method::Place, "f"), &key(Method::Place, "f"));
        assert_eq!(result.ok(), Some(7));
    }

    #[test]
    fn a_different_request_with_the_id_is_refused() {
        let other_fields = replay(&stored(Method::Place, "f"), &key(Method::Place, "g"));
        assert!(matches!(other_fields, Err(Error::AlreadyExists(_))));
        let other_method = replay(&stored(Method::Place, "f"), &key(Method::Cancel, "f"));
        assert!(matches!(other_method, Err(Error::AlreadyExists(_))));
    }
}
