//! `PlaceOrder`'s write: the order, its request id and its `OrderCreated`
//! in one statement, so one round trip and one commit (a single statement
//! is its own transaction). The request id goes first: when a call with the
//! same id is already stored (or commits first while this one waits on
//! it), nothing else is written and no row comes back; the caller then
//! answers from the stored id. The order's id was drawn ahead
//! ([`crate::ids`]), so the event's payload, which carries it, is encoded
//! before the statement runs.

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bytea, Nullable, Text, Untyped, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use platform_service::cloudevents::Trace;
use platform_service::outbox::{Outbox, Outgoing};
use uuid::Uuid;

use crate::api::OrderRow;
use crate::domain::{self, OrderStatus, Wanted};
use crate::requests::{Method, RequestKey};

/// The statement, in the pieces its 18 parameters go between: each
/// parameter appears once (in `args`), so the text is the same on every
/// call and the connection prepares it once. (The benchmark's pgbench
/// baseline runs the same text.)
pub const PIECES: [&str; 19] = [
    "WITH args AS (SELECT ",
    "::int8 AS id, ",
    "::int8 AS customer_id, ",
    "::int8 AS product_id, ",
    "::text AS product_name, ",
    "::int8 AS qty, ",
    "::text AS address, ",
    "::text AS status, ",
    "::text AS caller, ",
    "::text AS request_id, ",
    "::text AS method, ",
    "::text AS fingerprint, ",
    "::uuid AS event_id, ",
    "::text AS topic, ",
    "::text AS event_type, ",
    "::text AS source, ",
    "::bytea AS payload, ",
    "::text AS traceparent, ",
    "::text AS tracestate
), remembered AS (
    INSERT INTO request_ids (caller, request_id, method, fingerprint, order_id)
    SELECT caller, request_id, method, fingerprint, id FROM args WHERE request_id IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING order_id
), placed AS (
    INSERT INTO orders (id, customer_id, product_id, product_name, qty, address, status)
    SELECT id, customer_id, product_id, product_name, qty, address, status FROM args
     WHERE request_id IS NULL OR EXISTS (SELECT FROM remembered)
    RETURNING id, customer_id, product_id, product_name, qty, address, status, reason
), queued AS (
    INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload,
                        traceparent, tracestate)
    SELECT a.event_id, a.topic, p.id::text, a.event_type, a.source, p.id::text, a.payload,
           a.traceparent, a.tracestate
      FROM placed p, args a
)
SELECT id, customer_id, product_id, product_name, qty, address, status, reason FROM placed",
];

/// One call's parameters, in the order of [`PIECES`].
struct Statement<'a> {
    id: i64,
    customer_id: i64,
    product_id: i64,
    product_name: &'a str,
    qty: i64,
    address: &'a str,
    status: OrderStatus,
    caller: Option<&'a str>,
    request_id: Option<&'a str>,
    method: Option<Method>,
    fingerprint: Option<&'a str>,
    event_id: Uuid,
    topic: &'a str,
    event_type: &'a str,
    source: &'a str,
    payload: &'a [u8],
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl QueryId for Statement<'_> {
    type QueryId = Statement<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for Statement<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Statement<'_> {}

impl QueryFragment<Pg> for Statement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let [
            p0,
            p1,
            p2,
            p3,
            p4,
            p5,
            p6,
            p7,
            p8,
            p9,
            p10,
            p11,
            p12,
            p13,
            p14,
            p15,
            p16,
            p17,
            p18,
        ] = PIECES;
        out.push_sql(p0);
        out.push_bind_param::<BigInt, _>(&self.id)?;
        out.push_sql(p1);
        out.push_bind_param::<BigInt, _>(&self.customer_id)?;
        out.push_sql(p2);
        out.push_bind_param::<BigInt, _>(&self.product_id)?;
        out.push_sql(p3);
        out.push_bind_param::<Text, _>(&self.product_name)?;
        out.push_sql(p4);
        out.push_bind_param::<BigInt, _>(&self.qty)?;
        out.push_sql(p5);
        out.push_bind_param::<Text, _>(&self.address)?;
        out.push_sql(p6);
        out.push_bind_param::<Text, _>(&self.status)?;
        out.push_sql(p7);
        out.push_bind_param::<Nullable<Text>, _>(&self.caller)?;
        out.push_sql(p8);
        out.push_bind_param::<Nullable<Text>, _>(&self.request_id)?;
        out.push_sql(p9);
        out.push_bind_param::<Nullable<Text>, _>(&self.method)?;
        out.push_sql(p10);
        out.push_bind_param::<Nullable<Text>, _>(&self.fingerprint)?;
        out.push_sql(p11);
        out.push_bind_param::<SqlUuid, _>(&self.event_id)?;
        out.push_sql(p12);
        out.push_bind_param::<Text, _>(&self.topic)?;
        out.push_sql(p13);
        out.push_bind_param::<Text, _>(&self.event_type)?;
        out.push_sql(p14);
        out.push_bind_param::<Text, _>(&self.source)?;
        out.push_sql(p15);
        out.push_bind_param::<Bytea, _>(&self.payload)?;
        out.push_sql(p16);
        out.push_bind_param::<Nullable<Text>, _>(&self.traceparent)?;
        out.push_sql(p17);
        out.push_bind_param::<Nullable<Text>, _>(&self.tracestate)?;
        out.push_sql(p18);
        Ok(())
    }
}

/// What placing came to.
pub enum Placed {
    /// The order, as stored.
    Order(OrderRow),
    /// Nothing was written: this request id was taken, by an earlier call
    /// or by a concurrent one that committed first.
    Taken(RequestKey),
}

/// Places order `id` as `wanted`, remembering `key` if any, and queues its
/// `OrderCreated` through `outbox` with `trace`.
pub async fn place(
    conn: &mut AsyncPgConnection,
    id: i64,
    wanted: &Wanted,
    key: Option<RequestKey>,
    outbox: &Outbox,
    trace: Trace<'_>,
) -> diesel::QueryResult<Placed> {
    let stored = key.as_ref();
    let created = Outgoing::of(&domain::place(id, wanted));
    let statement = Statement {
        id,
        customer_id: wanted.customer_id,
        product_id: wanted.product_id,
        product_name: &wanted.product_name,
        qty: wanted.qty,
        address: &wanted.address,
        status: domain::PLACED,
        caller: stored.map(|key| key.caller.as_str()),
        request_id: stored.map(|key| key.id.as_str()),
        method: stored.map(|key| key.method),
        fingerprint: stored.map(|key| key.fingerprint.as_str()),
        event_id: Uuid::new_v4(),
        topic: outbox.topic(),
        event_type: &created.event_type,
        source: outbox.source(),
        payload: &created.payload,
        traceparent: trace.traceparent,
        tracestate: trace.traceparent.and(trace.tracestate),
    };
    let rows: Vec<OrderRow> = statement.load(conn).await?;
    match (rows.into_iter().next(), key) {
        (Some(row), _) => Ok(Placed::Order(row)),
        (None, Some(key)) => Ok(Placed::Taken(key)),
        // Without a request id the order is always inserted.
        (None, None) => Err(diesel::result::Error::NotFound),
    }
}
