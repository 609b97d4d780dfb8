//! The relay's statements for one table and mapping, built once per
//! session. Every name spliced in was checked to be a plain identifier and
//! is quoted besides (so `user` is the column, not `current_user`); the
//! table is named with its schema; every topic text holds topic characters
//! only.

use super::names::{Qualified, quote};
use super::{HeaderValue, Mapping};

/// How the payload column is read, by its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// `bytea`: the bytes as stored (protobuf, Avro).
    Bytes,
    /// Anything else (`jsonb`, `json`, `text`, …): its text, in UTF-8.
    Text,
}

impl Payload {
    /// The kind for a column of `data_type` (as `information_schema` says).
    pub fn of(data_type: &str) -> Self {
        if data_type == "bytea" {
            Self::Bytes
        } else {
            Self::Text
        }
    }
}

/// Positions in a fetched row; header columns follow [`FIXED`].
pub mod at {
    /// The ordering column (the row's handle).
    pub const ORDER: usize = 0;
    /// The event id, as text.
    pub const EVENT_ID: usize = 1;
    /// The key, as text (NULL: no key).
    pub const KEY: usize = 2;
    /// The rendered topic (NULL: none).
    pub const TOPIC: usize = 3;
    /// The type (NULL when none is mapped).
    pub const TYPE: usize = 4;
    /// The value's bytes (NULL: a tombstone).
    pub const PAYLOAD: usize = 5;
    /// The event time, RFC 3339.
    pub const TIME: usize = 6;
    /// The creation time, seconds since the epoch.
    pub const CREATED: usize = 7;
    /// `traceparent`.
    pub const TRACEPARENT: usize = 8;
    /// `tracestate`.
    pub const TRACESTATE: usize = 9;
    /// Where the header columns start, one per column header in order.
    pub const FIXED: usize = 10;
}

/// The first key of the per-key ordering lock, shared by the mall's own
/// trigger, the trigger `prepare` installs and the relay's settle (the
/// two-int key space never meets the consumers' locks).
pub const ORDER_LOCK_CLASS: i32 = 1_869_767_794;

/// Every statement the relay runs on one table.
#[derive(Debug, Clone)]
pub struct Statements {
    /// The oldest heads of their keys (docs/relay.md, "Fair to every key"):
    /// waiting rows the trigger or the sweep marked as their key's first,
    /// not parked, none in flight (`$2`, their handles), and each its key's
    /// first waiting row indeed (a guard, one probe of the `(key, order)`
    /// index per row: a head is only ever wrong in the other direction);
    /// `$1` is the limit. Walks the partial index of heads, so a key's later
    /// rows and a parked key's rows are never in its path, however many.
    pub fetch: String,
    /// The rows `$1` (handles the settle found next in line for their keys),
    /// those still waiting, not parked and still their key's first.
    pub fetch_next: String,
    /// Marks acknowledged rows (`$1` their handles).
    pub mark: String,
    /// Deletes acknowledged rows (`$1` their handles).
    pub delete: String,
    /// Takes, without waiting, the ordering lock of each key of `$1` and
    /// returns the keys it holds: a writer holding one is inserting a row of
    /// that key right now, and its trigger decides that row's head itself.
    pub lock_keys: String,
    /// The first waiting row of each key of `$1` (handles, NULLs left
    /// out): the next in line once the settled rows were marked or deleted.
    /// Run after the keys' locks were taken, so its snapshot sees every row
    /// a writer of those keys committed.
    pub next_of_keys: String,
    /// Makes every key's first waiting row its head where none is: rows
    /// that existed before the column did, rows behind a head deleted by
    /// hand, rows a writer inserted under REPEATABLE READ while the row
    /// ahead was being settled. One index probe per waiting key.
    pub sweep: String,
    /// Parks row `$1` with reason `$2`.
    pub park: String,
    /// Waiting rows, the oldest one's age, parked rows.
    pub backlog: String,
    /// Deletes rows published more than `$1` seconds ago, `$2` at most.
    pub purge: String,
    /// Every parked row, oldest first.
    pub parked: String,
    /// Unparks rows (`$1` handles, or NULL for all).
    pub unpark: String,
}

impl Statements {
    /// The statements for `table` (as the catalogue found it) read through
    /// `mapping`; every name is quoted.
    pub fn new(table: &Qualified, mapping: &Mapping, payload: Payload) -> Self {
        let [order, created, published, parked, reason] = mapping.quoted_relay_columns();
        let head = quote(mapping.bookkeeping.head());
        let key = quote(&mapping.key);
        let t = table.sql();
        let text = |column: Option<&str>| match column {
            Some(column) => format!("{}::text", quote(column)),
            None => "NULL::text".to_owned(),
        };
        let value = match payload {
            Payload::Bytes => quote(&mapping.payload),
            Payload::Text => format!("convert_to({}::text, 'UTF8')", quote(&mapping.payload)),
        };
        let trace = mapping.trace.as_ref();
        let mut select = vec![
            order.clone(),
            text(Some(&mapping.event_id)),
            format!("{key}::text"),
            mapping.topic.sql(),
            text(mapping.event_type.as_deref()),
            value.clone(),
            format!(
                "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                quote(mapping.time_column())
            ),
            format!("extract(epoch FROM {created})::float8"),
            text(trace.map(|trace| trace.parent.as_str())),
            text(trace.and_then(|trace| trace.state.as_deref())),
        ];
        select.extend(
            mapping
                .header_columns()
                .into_iter()
                .map(|column| text(Some(column))),
        );
        let waiting = format!("{published} IS NULL");
        // The first waiting row of the key `of` (text), or NULL.
        let first_waiting = |of: &str| first_waiting(table, mapping, "p", of);
        Self {
            fetch: format!(
                "SELECT {select} FROM {t} o WHERE {head} AND {waiting} AND {parked} IS NULL \
                 AND NOT (o.{order} = ANY($2::int8[])) \
                 AND (o.{key} IS NULL OR o.{order} = ({first_of_key})) \
                 ORDER BY {order} LIMIT $1",
                first_of_key = first_waiting(&format!("o.{key}::text")),
                select = select.join(", ")
            ),
            fetch_next: format!(
                "SELECT {select} FROM {t} o WHERE o.{order} = ANY($1::int8[]) AND {waiting} \
                 AND {parked} IS NULL AND (o.{key} IS NULL OR o.{order} = ({first_of_key}))",
                first_of_key = first_waiting(&format!("o.{key}::text")),
                select = select.join(", ")
            ),
            mark: format!(
                "UPDATE {t} SET {published} = now() WHERE {order} = ANY($1) AND {waiting}"
            ),
            delete: format!("DELETE FROM {t} WHERE {order} = ANY($1) AND {waiting}"),
            lock_keys: format!(
                "SELECT k FROM unnest($1::text[]) k \
                 WHERE pg_try_advisory_xact_lock({ORDER_LOCK_CLASS}, hashtext(k))"
            ),
            next_of_keys: format!(
                "SELECT n.first FROM (SELECT ({first_of_key}) AS first FROM unnest($1::text[]) k) n \
                 WHERE n.first IS NOT NULL",
                first_of_key = first_waiting("k")
            ),
            sweep: sweep(table, mapping),
            park: format!(
                "UPDATE {t} SET {parked} = now(), {reason} = $2 \
                 WHERE {order} = $1 AND {waiting} AND {parked} IS NULL"
            ),
            backlog: format!(
                "SELECT count(*) FILTER (WHERE {parked} IS NULL), \
                 COALESCE(extract(epoch FROM now() - min({created}) FILTER (WHERE {parked} IS NULL))::float8, 0), \
                 count(*) FILTER (WHERE {parked} IS NOT NULL) \
                 FROM {t} WHERE {waiting}"
            ),
            purge: format!(
                "DELETE FROM {t} WHERE {order} IN (SELECT {order} FROM {t} \
                 WHERE {published} < now() - make_interval(secs => $1) LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
            parked: format!(
                "SELECT {order}, COALESCE({key}::text, ''), COALESCE({topic}, ''), \
                 COALESCE({kind}, ''), COALESCE(octet_length({value}), 0)::int8, \
                 to_char({parked} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                 COALESCE({reason}, '') \
                 FROM {t} WHERE {parked} IS NOT NULL AND {waiting} ORDER BY {order}",
                topic = mapping.topic.sql(),
                kind = text(mapping.event_type.as_deref()),
            ),
            // A parked row was its key's first waiting row when it was
            // fetched, and still is: back in line, it is the key's head.
            unpark: format!(
                "UPDATE {t} SET {parked} = NULL, {reason} = NULL, {head} = true \
                 WHERE {parked} IS NOT NULL AND {waiting} AND ($1::int8[] IS NULL OR {order} = ANY($1))"
            ),
        }
    }
}

/// The lowest bound of an ordering column, for [`first_waiting`].
const LEAST_ORDER: &str = "'-9223372036854775808'::int8";

/// A query for the ordering handle of key `of`'s first waiting row, or
/// NULL when none waits (`alias` names the table inside it). It walks the
/// `(key::text, order)` index from `(of, least)` and takes the first entry,
/// which is `of`'s if `of` has one: a row comparison only that index
/// answers in order, whatever the statistics say. (An equality on the key
/// with `ORDER BY key, order` was planned as a walk of the primary key from
/// the start whenever the statistics held one key: 100,000 rows for each
/// cold key behind a hot one.)
pub fn first_waiting(table: &Qualified, mapping: &Mapping, alias: &str, of: &str) -> String {
    let (order, _, published, _, _) = mapping.relay_columns();
    let [order, published, key] = [order, published, mapping.key.as_str()].map(quote);
    format!(
        "SELECT CASE WHEN {alias}.{key}::text = {of} THEN {alias}.{order} END FROM {t} {alias} \
         WHERE ({alias}.{key}::text, {alias}.{order}) >= ({of}, {LEAST_ORDER}) \
         AND {alias}.{published} IS NULL ORDER BY {alias}.{key}::text, {alias}.{order} LIMIT 1",
        t = table.sql()
    )
}

/// The statement that makes every key's first waiting row its head where
/// none is (and every waiting row without a key a head): it walks the
/// waiting rows' `(key, order)` index one key at a time, so its cost grows
/// with the number of waiting keys, not with the rows behind them, and it
/// skips a row another session has locked (the leader settling it) rather
/// than wait, so the leader never waits for it either. A row that was its
/// key's first waiting one stays so until it is published, so what it read
/// still holds when it writes. Shared by the relay's sweep and by `prepare`
/// (rows already in a table).
pub fn sweep(table: &Qualified, mapping: &Mapping) -> String {
    let (order, _, published, _, _) = mapping.relay_columns();
    let [order, published, head, key] = [
        order,
        published,
        mapping.bookkeeping.head(),
        mapping.key.as_str(),
    ]
    .map(quote);
    let t = table.sql();
    let first = |after: &str| {
        format!(
            "SELECT {key}::text AS k, {order} AS o, {head} AS h FROM {t} \
             WHERE {published} IS NULL AND {key}::text {after} ORDER BY {key}::text, {order} LIMIT 1"
        )
    };
    format!(
        "WITH RECURSIVE firsts AS (({first_key}) UNION ALL \
         SELECT n.k, n.o, n.h FROM firsts f, LATERAL ({next}) n), \
         due AS (SELECT d.{order} FROM {t} d WHERE d.{order} IN \
         (SELECT o FROM firsts WHERE NOT h UNION ALL \
         SELECT {order} FROM {t} WHERE {key}::text IS NULL AND {published} IS NULL AND NOT {head}) \
         AND NOT d.{head} AND d.{published} IS NULL FOR UPDATE SKIP LOCKED) \
         UPDATE {t} SET {head} = true WHERE {order} IN (SELECT {order} FROM due)",
        first_key = first("IS NOT NULL"),
        next = first("> f.k"),
    )
}

/// The header values of one fetched row, in header order: `(name, value)`,
/// a header whose value is NULL left out.
pub fn headers(
    mapping: &Mapping,
    event_id: &str,
    event_type: Option<&str>,
    time: &str,
    columns: &[Option<String>],
) -> Vec<(String, String)> {
    let mut columns = columns.iter();
    mapping
        .headers
        .iter()
        .filter_map(|header| {
            let value = match &header.value {
                HeaderValue::Static(value) => Some(value.clone()),
                HeaderValue::Column(_) => columns.next().cloned().flatten(),
                HeaderValue::EventId => Some(event_id.to_owned()),
                HeaderValue::Type => event_type.map(str::to_owned),
                HeaderValue::Time => Some(time.to_owned()),
            };
            value.map(|value| (header.name.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Preset;

    #[test]
    fn the_mall_fetch_walks_the_heads_of_keys() {
        let statements = Statements::new(
            &Qualified::new("public", "outbox"),
            &Mapping::preset(Preset::Mall),
            Payload::Bytes,
        );
        let unquoted = statements.fetch.replace('"', "");
        assert_eq!(
            unquoted,
            "SELECT id, event_id::text, msg_key::text, topic::text, event_type::text, payload, \
             to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DDTHH24:MI:SS.USZ'), \
             extract(epoch FROM created_at)::float8, traceparent::text, tracestate::text, \
             source::text, subject::text \
             FROM public.outbox o WHERE head AND published_at IS NULL AND parked_at IS NULL \
             AND NOT (o.id = ANY($2::int8[])) \
             AND (o.msg_key IS NULL OR o.id = (SELECT CASE WHEN p.msg_key::text = o.msg_key::text \
             THEN p.id END FROM public.outbox p \
             WHERE (p.msg_key::text, p.id) >= (o.msg_key::text, '-9223372036854775808'::int8) \
             AND p.published_at IS NULL ORDER BY p.msg_key::text, p.id LIMIT 1)) \
             ORDER BY id LIMIT $1"
        );
        assert_eq!(
            statements.mark,
            "UPDATE \"public\".\"outbox\" SET \"published_at\" = now() \
             WHERE \"id\" = ANY($1) AND \"published_at\" IS NULL"
        );
    }

    #[test]
    fn debezium_reads_its_columns_and_the_added_ones() {
        let statements = Statements::new(
            &Qualified::new("shop", "outboxevent"),
            &Mapping::preset(Preset::Debezium),
            Payload::Text,
        );
        let fetch = statements.fetch.replace('"', "");
        for part in [
            "SELECT relay_seq, id::text, aggregateid::text, ('outbox.event.' || aggregatetype::text), type::text, \
             convert_to(payload::text, 'UTF8')",
            "FROM shop.outboxevent o WHERE relay_head AND relay_published_at IS NULL AND relay_parked_at IS NULL",
            "ORDER BY relay_seq LIMIT $1",
        ] {
            assert!(fetch.contains(part), "{part}\n{fetch}");
        }
        assert_eq!(
            statements.delete.replace('"', ""),
            "DELETE FROM shop.outboxevent WHERE relay_seq = ANY($1) AND relay_published_at IS NULL"
        );
    }

    #[test]
    fn a_column_named_like_a_keyword_is_read_as_the_column() {
        let mut mapping = Mapping::preset(Preset::Debezium);
        mapping.key = "user".to_owned();
        let statements = Statements::new(
            &Qualified::new("public", "outboxevent"),
            &mapping,
            Payload::Bytes,
        );
        assert!(
            statements.fetch.contains("\"user\"::text"),
            "{}",
            statements.fetch
        );
        assert!(
            !statements.fetch.contains(" user::text"),
            "{}",
            statements.fetch
        );
    }

    #[test]
    fn headers_follow_the_mapping_and_skip_nulls() {
        let mall = Mapping::preset(Preset::Mall);
        let headers = headers(
            &mall,
            "e1",
            Some("t"),
            "2026-01-01T00:00:00.000000Z",
            &[Some("order-service".into()), None],
        );
        let names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_time",
                "content-type"
            ]
        );
        assert_eq!(headers[1].1, "e1");
        assert_eq!(headers[2].1, "order-service");
    }
}
