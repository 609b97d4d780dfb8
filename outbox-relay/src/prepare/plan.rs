//! What `prepare` runs on a table, decided from the catalogue's facts and
//! the mapping alone (no I/O): the statements, or why it refuses before
//! changing anything.
//!
//! The ordering triggers ([`super::triggers`]) are written so that a
//! writer who could insert before `prepare` still can, whatever its
//! privileges and `search_path`: their functions are `SECURITY DEFINER`,
//! owned by the table's owner (so the writer needs no right on the
//! sequence), run with `search_path` pinned to `pg_catalog, pg_temp`, and
//! name the sequence with its schema. The ordering column has no default:
//! a row that did not pass the row trigger (triggers disabled, a
//! replication session) fails loudly on `NOT NULL` instead of being
//! numbered without the per-key lock.

use super::catalog::{TableFacts, sequence_name};
use super::readiness::{Missing, sequence_problem, unreadable_type};
use super::record::Record;
use super::triggers::Ordering;
use crate::mapping::names::{literal, quote};
use crate::mapping::sql::sweep;
use crate::mapping::{Bookkeeping, Mapping, Qualified};

/// The statement trigger older relays installed to be woken by `NOTIFY`.
const LEGACY_NOTIFY: &str = "relay_notify";

/// How the ordering column stands before `prepare`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OrderColumn {
    /// It does not exist: `prepare` adds it with a sequence of its own.
    New(Qualified),
    /// A previous `prepare` added it; it keeps its sequence.
    Ours(Qualified),
}

/// Decides how the ordering column stands, or refuses (nothing changed).
fn order_column(mapping: &Mapping, facts: &TableFacts) -> Result<OrderColumn, String> {
    let order = &mapping.order;
    let table = &facts.table;
    let record = facts
        .triggers
        .get(mapping.bookkeeping.order_trigger())
        .and_then(|trigger| trigger.comment.as_deref())
        .and_then(Record::parse);
    if let Some(record) = &record
        && record.order != *order
    {
        return Err(format!(
            "{table} was prepared with the ordering column {}; a second one would number rows \
             twice: name it with --map-order {}",
            record.order, record.order
        ));
    }
    if !facts.columns.contains_key(order) {
        let sequence = sequence_name(table, order);
        if let Some(existing) = &facts.named_sequence {
            return Err(format!(
                "a relation named {} already exists, and prepare makes the ordering column's \
                 sequence of its own, with CACHE 1 (a shared or cached sequence hands out numbers \
                 out of commit order): drop or rename it, or name another new column with \
                 --map-order",
                existing.name
            ));
        }
        return Ok(OrderColumn::New(sequence));
    }
    // An existing column is ours only when a previous prepare made it: its
    // sequence is the recorded one, or (tables an older relay prepared)
    // carries the name prepare gives it.
    let made_here = facts.order_sequence.as_ref().filter(|sequence| {
        record.as_ref().map_or_else(
            || sequence.name == sequence_name(table, order),
            |record| record.sequence == sequence.name.to_string(),
        )
    });
    let Some(sequence) = made_here else {
        return Err(format!(
            "the ordering column {order} already exists in {table}, and prepare did not make \
             it: the trigger would overwrite the values the application gives it, and its \
             numbers must come from a sequence of the relay's own with CACHE 1; name a new \
             column with --map-order (prepare adds it)"
        ));
    };
    if let Some(problem) = sequence_problem(mapping, facts, None) {
        return Err(problem);
    }
    Ok(OrderColumn::Ours(sequence.name.clone()))
}

/// Refuses, before anything is changed, a table `prepare` cannot make
/// ready: no such table, a column the mapping reads missing (a trigger
/// naming a missing key column would break every `INSERT`), a column type
/// the relay cannot read, or an ordering column or sequence it cannot
/// vouch for.
fn refusal(
    mapping: &Mapping,
    facts: Option<&TableFacts>,
    table: &str,
) -> Result<OrderColumn, String> {
    let lacking = Missing::in_facts(mapping, facts).beyond_prepare(mapping);
    let Some(facts) = facts.filter(|_| lacking.is_empty()) else {
        return Err(format!("Nothing was changed: {}.", lacking.what(table)));
    };
    if let Some(problem) = unreadable_type(mapping, facts) {
        return Err(format!("Nothing was changed: {}: {problem}.", facts.table));
    }
    order_column(mapping, facts).map_err(|why| format!("Nothing was changed: {why}."))
}

/// The statements that prepare the table `facts` describe for `mapping`,
/// in order, to run in one transaction; or why nothing may be changed.
/// Running them again later gives the statements for the table as it then
/// is (nothing is created twice).
pub fn statements(
    mapping: &Mapping,
    facts: Option<&TableFacts>,
    table: &str,
) -> Result<Vec<String>, String> {
    if mapping.bookkeeping == Bookkeeping::Own {
        return Err(format!(
            "the {:?} preset's table is made by the mall's migrations (migrations/shared), not by \
             prepare; choose --preset debezium, or name your table's columns with --map-*",
            mapping.preset
        ));
    }
    let column = refusal(mapping, facts, table)?;
    let facts = facts.unwrap_or_else(|| unreachable!("refusal found the table"));
    let book = mapping.bookkeeping;
    let [order, created, published, parked, reason] = mapping.quoted_relay_columns();
    let key = quote(&mapping.key);
    let head = quote(book.head());
    let owner = quote(&facts.owner);
    let hand_over = facts.owner != facts.current_user;
    let t = facts.table.sql();
    let name = &facts.table.name;
    let mut sql = Vec::new();
    let sequence = match column {
        OrderColumn::New(sequence) => {
            let s = sequence.sql();
            sql.push(format!("CREATE SEQUENCE {s} AS bigint INCREMENT 1 CACHE 1"));
            if hand_over {
                sql.push(format!("ALTER SEQUENCE {s} OWNER TO {owner}"));
            }
            // The default numbers the rows already there (in their physical
            // order), then goes: only the trigger draws from now on.
            sql.push(format!(
                "ALTER TABLE {t} ADD COLUMN {order} bigint NOT NULL DEFAULT nextval({})",
                literal(&s)
            ));
            sql.push(format!("ALTER SEQUENCE {s} OWNED BY {t}.{order}"));
            sequence
        }
        OrderColumn::Ours(sequence) => sequence,
    };
    sql.push(format!("ALTER TABLE {t} ALTER COLUMN {order} DROP DEFAULT"));
    sql.extend([
        format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {created} timestamptz NOT NULL DEFAULT now()"
        ),
        format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {published} timestamptz"),
        format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {parked} timestamptz"),
        format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {reason} text"),
        format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {head} boolean NOT NULL DEFAULT false"),
    ]);
    let trigger = book.order_trigger();
    let function = facts.table.sibling(&format!("{trigger}_{name}"));
    let keys = book
        .keys_trigger()
        .unwrap_or_else(|| unreachable!("prepare adds bookkeeping"));
    let keys_function = facts.table.sibling(&format!("{keys}_{name}"));
    let ordering = Ordering::new(&facts.table, mapping, &sequence);
    sql.push(ordering.row_function(&function));
    sql.push(ordering.keys_function(&keys_function));
    for function in [&function, &keys_function] {
        let function = function.sql();
        if hand_over {
            sql.push(format!("ALTER FUNCTION {function}() OWNER TO {owner}"));
        }
        sql.push(format!("REVOKE ALL ON FUNCTION {function}() FROM PUBLIC"));
    }
    sql.push(format!(
        "CREATE OR REPLACE TRIGGER {trigger} BEFORE INSERT ON {t} \
         FOR EACH ROW EXECUTE FUNCTION {function}()",
        trigger = quote(trigger),
        function = function.sql(),
    ));
    sql.push(ordering.keys_trigger(keys, &keys_function));
    let record = Record {
        table: facts.table.to_string(),
        key: mapping.key.clone(),
        order: mapping.order.clone(),
        sequence: sequence.to_string(),
    };
    sql.push(format!(
        "COMMENT ON TRIGGER {} ON {t} IS {}",
        quote(trigger),
        literal(&record.comment())
    ));
    // A relay woken by NOTIFY made every writing transaction take a
    // database-wide turn at commit and broke PREPARE TRANSACTION: tables an
    // older relay prepared lose that trigger.
    sql.push(format!(
        "DROP TRIGGER IF EXISTS {} ON {t}",
        quote(LEGACY_NOTIFY)
    ));
    sql.push(format!(
        "DROP FUNCTION IF EXISTS {}()",
        facts
            .table
            .sibling(&format!("{LEGACY_NOTIFY}_{name}"))
            .sql()
    ));
    let index = |suffix: &str| quote(&format!("{name}_{suffix}"));
    sql.extend([
        format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {t} ({order})",
            index(&format!("{}_key", mapping.order))
        ),
        // Older relays walked this one; the two below replace it.
        format!("DROP INDEX IF EXISTS {}", facts.table.sibling(&format!("{name}_relay_unpublished")).sql()),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} (({key}::text), {order}) WHERE {published} IS NULL",
            index("relay_waiting_keys")
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} ({order}) \
             WHERE {head} AND {published} IS NULL AND {parked} IS NULL",
            index("relay_heads")
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} ({published}) WHERE {published} IS NOT NULL",
            index(book.published())
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} ({key}) WHERE {parked} IS NOT NULL",
            index("relay_parked_keys")
        ),
    ]);
    // The rows already waiting: each key's first becomes its head.
    sql.push(sweep(&facts.table, mapping));
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Preset;
    use crate::prepare::catalog::fixtures::{debezium, prepared};

    fn plan(facts: &TableFacts) -> Result<Vec<String>, String> {
        statements(
            &Mapping::preset(Preset::Debezium),
            Some(facts),
            "shop.outboxevent",
        )
    }

    #[test]
    fn a_fresh_table_gets_its_own_sequence_and_a_trigger_any_writer_can_fire() {
        let sql = plan(&debezium()).expect("prepared");
        let all = sql.join(";\n");
        for part in [
            "CREATE SEQUENCE \"shop\".\"outboxevent_relay_seq\" AS bigint INCREMENT 1 CACHE 1",
            "ALTER TABLE \"shop\".\"outboxevent\" ALTER COLUMN \"relay_seq\" DROP DEFAULT",
            "SECURITY DEFINER SET search_path = pg_catalog, pg_temp",
            "pg_catalog.hashtext(n.\"aggregateid\"::text)",
            "GROUP BY 1, 2 ORDER BY 2, 1",
            "pg_catalog.pg_advisory_xact_lock(1869767794, s.h) IS NULL",
            "CREATE OR REPLACE TRIGGER \"relay_order_keys\" AFTER INSERT ON \"shop\".\"outboxevent\" REFERENCING NEW TABLE AS relay_new_rows FOR EACH STATEMENT",
            "REVOKE ALL ON FUNCTION \"shop\".\"relay_order_keys_outboxevent\"() FROM PUBLIC",
            "NEW.\"relay_seq\" := pg_catalog.nextval('\"shop\".\"outboxevent_relay_seq\"'::pg_catalog.regclass)",
            "REVOKE ALL ON FUNCTION \"shop\".\"relay_order_outboxevent\"() FROM PUBLIC",
            "COMMENT ON TRIGGER \"relay_order\" ON \"shop\".\"outboxevent\" IS 'outbox-relay ordering: ",
            "DROP TRIGGER IF EXISTS \"relay_notify\" ON \"shop\".\"outboxevent\"",
            "NEW.\"relay_head\" := NEW.\"aggregateid\" IS NULL OR (SELECT CASE WHEN w.\"aggregateid\"::text = NEW.\"aggregateid\"::text",
            "ADD COLUMN IF NOT EXISTS \"relay_head\" boolean NOT NULL DEFAULT false",
            "WHERE \"relay_head\" AND \"relay_published_at\" IS NULL AND \"relay_parked_at\" IS NULL",
            "WITH RECURSIVE firsts",
        ] {
            assert!(all.contains(part), "{part}\n{all}");
        }
        assert!(!all.contains("IF NOT EXISTS \"shop\".\"outboxevent_relay_seq\""));
        let row = sql
            .iter()
            .find(|s| s.contains("FUNCTION \"shop\".\"relay_order_outboxevent\"() RETURNS"))
            .expect("the row trigger's function");
        assert!(
            !row.contains("advisory"),
            "the row trigger takes no lock: {row}"
        );
        assert!(
            !all.contains("OWNER TO"),
            "the owner prepares: nothing to hand over"
        );
        let mut by_superuser = debezium();
        by_superuser.current_user = "postgres".to_owned();
        let all = plan(&by_superuser).expect("prepared").join(";\n");
        assert!(
            all.contains(
                "ALTER SEQUENCE \"shop\".\"outboxevent_relay_seq\" OWNER TO \"shop_owner\""
            )
        );
        assert!(all.contains(
            "ALTER FUNCTION \"shop\".\"relay_order_outboxevent\"() OWNER TO \"shop_owner\""
        ));
    }

    #[test]
    fn preparing_again_keeps_the_column_and_its_sequence() {
        let sql = plan(&prepared()).expect("prepared again");
        assert!(!sql.iter().any(|s| s.contains("CREATE SEQUENCE")));
        assert!(!sql.iter().any(|s| s.contains("ADD COLUMN \"relay_seq\"")));
        assert!(
            sql.iter()
                .any(|s| s.contains("CREATE OR REPLACE TRIGGER \"relay_order\""))
        );
    }

    #[test]
    fn what_ordering_cannot_rest_on_is_refused_before_any_change() {
        let refused = |facts: TableFacts, mapping: Mapping, says: &str| {
            let why = statements(&mapping, Some(&facts), "shop.outboxevent").expect_err("refused");
            assert!(why.starts_with("Nothing was changed"), "{why}");
            assert!(why.contains(says), "{says}\n{why}");
        };
        let debezium_mapping = Mapping::preset(Preset::Debezium);

        let mut cached = prepared();
        if let Some(sequence) = cached.order_sequence.as_mut() {
            sequence.cache = 50;
        }
        refused(
            cached,
            debezium_mapping.clone(),
            "ALTER SEQUENCE \"shop\".\"outboxevent_relay_seq\" CACHE 1",
        );

        let mut squatted = debezium();
        squatted.named_sequence = prepared().named_sequence;
        refused(squatted, debezium_mapping.clone(), "already exists");

        let mut own_column = debezium();
        own_column
            .columns
            .insert("seq".to_owned(), "bigint".to_owned());
        let mut on_seq = debezium_mapping.clone();
        on_seq.order = "seq".to_owned();
        refused(own_column, on_seq.clone(), "prepare did not make it");

        refused(
            prepared(),
            on_seq,
            "prepared with the ordering column relay_seq",
        );

        let mut tenant = debezium_mapping.clone();
        tenant.key = "tenant".to_owned();
        refused(debezium(), tenant, "no column tenant");

        let mut text_time = debezium();
        text_time.columns.insert("at".to_owned(), "text".to_owned());
        let mut at = debezium_mapping.clone();
        at.time = Some("at".to_owned());
        refused(text_time, at, "its time column at is text");

        let why = statements(&debezium_mapping, None, "shop.outboxevent").expect_err("no table");
        assert!(why.contains("there is no table"), "{why}");
        assert!(statements(&Mapping::preset(Preset::Mall), Some(&debezium()), "outbox").is_err());
    }
}
