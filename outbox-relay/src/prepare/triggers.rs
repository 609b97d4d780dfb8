//! The two trigger functions `prepare` installs on a table, as SQL: the
//! row trigger that numbers each row and guesses whether it is its key's
//! head, and the statement trigger that then takes the statement's key
//! locks, once per key and in one order, and corrects the numbers and
//! heads a concurrent writer made wrong (docs/relay.md, "Per-key order").
//!
//! Why two: a row trigger sees one row at a time, so a lock it takes is
//! taken in the statement's row order, and two multi-row statements
//! writing the same keys in opposite orders deadlock. The statement
//! trigger sees every row the statement inserted (its transition table)
//! and locks their keys sorted by lock id. The numbers were drawn before
//! the lock, so under the lock it checks, for each key, whether a row of
//! the key committed meanwhile with a later number (then it draws its rows
//! again, after that one) and whether the first waiting row of the key is
//! its own (its head). Under `READ COMMITTED` each check sees every commit
//! made before the lock was granted; under `REPEATABLE READ` or
//! `SERIALIZABLE` the snapshot is older than the lock, so it always draws
//! again. Both functions are `SECURITY DEFINER`, owned by the table's
//! owner, with `search_path` pinned, so a writer needs no right on the
//! sequence and its `search_path` changes nothing.

use crate::mapping::names::{literal, quote};
use crate::mapping::sql::{ORDER_LOCK_CLASS, first_waiting};
use crate::mapping::{Mapping, Qualified};

/// The transition table's name inside the statement trigger.
const NEW_ROWS: &str = "relay_new_rows";

/// The SQL of both triggers for one table, mapping and sequence, with
/// every name quoted.
pub struct Ordering<'a> {
    table: &'a Qualified,
    mapping: &'a Mapping,
    t: String,
    key: String,
    order: String,
    head: String,
    published: String,
    next: String,
}

impl<'a> Ordering<'a> {
    /// The triggers of `table` read through `mapping`, numbering from
    /// `sequence`.
    pub fn new(table: &'a Qualified, mapping: &'a Mapping, sequence: &Qualified) -> Self {
        let (order, _, published, _, _) = mapping.relay_columns();
        Self {
            table,
            mapping,
            t: table.sql(),
            key: quote(&mapping.key),
            order: quote(order),
            head: quote(mapping.bookkeeping.head()),
            published: quote(published),
            next: format!(
                "pg_catalog.nextval({}::pg_catalog.regclass)",
                literal(&sequence.sql())
            ),
        }
    }

    /// `CREATE FUNCTION` for the row trigger: draws the row's number and
    /// guesses its head (no waiting row of its key is visible). It takes no
    /// lock; the statement trigger checks both under the key's lock.
    pub fn row_function(&self, function: &Qualified) -> String {
        let Self {
            order,
            head,
            key,
            next,
            ..
        } = self;
        let first = first_waiting(self.table, self.mapping, "w", &format!("NEW.{key}::text"));
        format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql \
             SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$\n\
             BEGIN\n    \
                 NEW.{order} := {next};\n    \
                 NEW.{head} := NEW.{key} IS NULL OR ({first}) IS NULL;\n    \
                 RETURN NEW;\n\
             END\n$$",
            function = function.sql(),
        )
    }

    /// `CREATE FUNCTION` for the statement trigger (see the module's doc).
    pub fn keys_function(&self, function: &Qualified) -> String {
        let Self {
            t,
            key,
            order,
            head,
            published,
            next,
            ..
        } = self;
        let first = first_waiting(self.table, self.mapping, "w", "_key");
        // The rows after our first, in the key's order: one of them that is
        // not ours was committed after ours were drawn. With one row a single
        // probe; with n rows, n rows after the first hold a foreign one if any
        // exists (at most n - 1 of them are ours).
        let after = |limit: &str| {
            format!(
                "SELECT w.{key}::text AS k, w.{order} AS o FROM {t} w \
                 WHERE (w.{key}::text, w.{order}) > (_key, _lo) AND w.{published} IS NULL \
                 ORDER BY w.{key}::text, w.{order} LIMIT {limit}"
            )
        };
        format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql \
             SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$\n\
    #variable_conflict use_variable\n\
    DECLARE\n    \
        _key text; _ours bigint[]; _lo bigint; _guess boolean; _locked boolean;\n    \
        _later boolean; _first bigint; _drawn bigint;\n\
    BEGIN\n    \
        -- One row per key, sorted by lock id; each key's lock is taken as its\n    \
        -- row is read, in that order, before anything below looks.\n    \
        FOR _key, _ours, _lo, _guess, _locked IN\n        \
            SELECT s.k, s.ours, s.lo, s.guess,\n               \
                   pg_catalog.pg_advisory_xact_lock({ORDER_LOCK_CLASS}, s.h) IS NULL\n          \
              FROM (SELECT n.{key}::text AS k, pg_catalog.hashtext(n.{key}::text) AS h,\n                       \
                           pg_catalog.array_agg(n.{order}) AS ours, pg_catalog.min(n.{order}) AS lo,\n                       \
                           pg_catalog.bool_or(n.{head}) AS guess\n                  \
                      FROM {NEW_ROWS} n WHERE n.{key} IS NOT NULL GROUP BY 1, 2 ORDER BY 2, 1) s\n    \
        LOOP\n        \
            IF pg_catalog.cardinality(_ours) = 1 THEN\n            \
                SELECT (SELECT a.k = _key FROM ({after_one}) a), ({first}) INTO _later, _first;\n        \
            ELSE\n            \
                SELECT EXISTS (SELECT FROM ({after_n}) a WHERE a.k = _key AND a.o <> ALL (_ours)), ({first})\n              \
                  INTO _later, _first;\n        \
            END IF;\n        \
            IF _later OR pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN\n            \
                SELECT pg_catalog.array_agg(o ORDER BY o) INTO _ours FROM pg_catalog.unnest(_ours) o;\n            \
                FOR i IN 1 .. pg_catalog.cardinality(_ours) LOOP\n                \
                    _drawn := {next};\n                \
                    UPDATE {t} u SET {order} = _drawn, {head} = false WHERE u.{order} = _ours[i];\n                \
                    _ours[i] := _drawn;\n            \
                END LOOP;\n            \
                _lo := _ours[1];\n            \
                _guess := false;\n            \
                _first := ({first});\n        \
            END IF;\n        \
            IF (_first = _lo) IS DISTINCT FROM _guess THEN\n            \
                UPDATE {t} u SET {head} = COALESCE(_first = _lo, true) WHERE u.{order} = _lo;\n        \
            END IF;\n    \
        END LOOP;\n    \
        RETURN NULL;\n\
    END\n$$",
            function = function.sql(),
            after_one = after("1"),
            after_n = after("pg_catalog.cardinality(_ours)"),
        )
    }

    /// `CREATE TRIGGER` for the statement trigger named `trigger`.
    pub fn keys_trigger(&self, trigger: &str, function: &Qualified) -> String {
        format!(
            "CREATE OR REPLACE TRIGGER {} AFTER INSERT ON {} REFERENCING NEW TABLE AS {NEW_ROWS} \
             FOR EACH STATEMENT EXECUTE FUNCTION {}()",
            quote(trigger),
            self.t,
            function.sql()
        )
    }
}
