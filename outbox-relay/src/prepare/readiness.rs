//! Whether a table, as the catalogue describes it, is ready for a mapping:
//! the start-up check's verdict, a pure function of the facts. A relay is
//! refused when anything its order rests on is missing or differs: a
//! column, a trigger that does not fire, a trigger that locks another key
//! or numbers another column, a sequence that hands out numbers out of
//! commit order, or a column type the relay cannot read.

use std::collections::HashSet;

use super::catalog::{TableFacts, Trigger, tgtype};
use super::record::Record;
use crate::mapping::sql::Payload;
use crate::mapping::{Bookkeeping, Mapping};

/// What a table lacks for a mapping.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// The table itself.
    pub table: bool,
    /// Columns, in the mapping's order.
    pub columns: Vec<String>,
    /// Triggers.
    pub triggers: Vec<String>,
}

impl Missing {
    /// What `mapping` needs of a table with `columns` and `triggers`.
    pub fn of(mapping: &Mapping, columns: &HashSet<&str>, triggers: &HashSet<&str>) -> Self {
        let book = mapping.bookkeeping;
        Self {
            table: columns.is_empty(),
            columns: mapping
                .columns()
                .into_iter()
                .filter(|column| !columns.contains(column))
                .map(str::to_owned)
                .collect(),
            triggers: book
                .triggers()
                .into_iter()
                .filter(|trigger| !triggers.contains(trigger))
                .map(str::to_owned)
                .collect(),
        }
    }

    /// What `mapping` needs of the table `facts` describe (all of it, when
    /// there is no table).
    pub fn in_facts(mapping: &Mapping, facts: Option<&TableFacts>) -> Self {
        let columns = facts
            .map(|facts| facts.columns.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let triggers = facts
            .map(|facts| facts.triggers.keys().map(String::as_str).collect())
            .unwrap_or_default();
        Self::of(mapping, &columns, &triggers)
    }

    /// What `prepare` cannot add: the table, and the mapping's own columns
    /// (not the relay's bookkeeping columns or triggers).
    pub fn beyond_prepare(&self, mapping: &Mapping) -> Self {
        let mut own = mapping.bookkeeping.columns().to_vec();
        own.push(&mapping.order);
        Self {
            table: self.table,
            columns: self
                .columns
                .iter()
                .filter(|column| !own.contains(&column.as_str()))
                .cloned()
                .collect(),
            triggers: Vec::new(),
        }
    }

    /// Nothing is missing.
    pub fn is_empty(&self) -> bool {
        !self.table && self.columns.is_empty() && self.triggers.is_empty()
    }

    /// What is missing, as a clause.
    pub fn what(&self, table: &str) -> String {
        if self.table {
            return format!("there is no table {table:?}");
        }
        let mut lacks = Vec::new();
        if !self.columns.is_empty() {
            lacks.push(format!("no column {}", self.columns.join(", ")));
        }
        if !self.triggers.is_empty() {
            lacks.push(format!("no trigger {}", self.triggers.join(", ")));
        }
        format!("table {table:?} has {}", lacks.join(" and "))
    }

    /// The refusal, naming what is missing and what to do.
    pub fn sentence(&self, table: &str, mapping: &Mapping) -> String {
        not_ready(mapping, &format!("{}; {}", self.what(table), fix(mapping)))
    }
}

/// What to do about a table that is not ready, by who made its layout.
fn fix(mapping: &Mapping) -> &'static str {
    match mapping.bookkeeping {
        Bookkeeping::Added => {
            "run `outbox-relay prepare` with the same settings (`--dry-run` prints its SQL \
             first), or name the table's own columns with the --map-* settings"
        }
        Bookkeeping::Own => {
            "the mall's migrations (migrations/shared) create this layout; for a table of \
             another layout choose its preset (--preset) or name its columns (--map-*)"
        }
    }
}

/// The refusal's opening, naming the mapping.
fn not_ready(mapping: &Mapping, why: &str) -> String {
    format!(
        "The outbox is not ready for the relay's {preset:?} mapping: {why}.",
        preset = mapping.preset
    )
}

/// The time types the relay renders as RFC 3339.
const TIME_TYPES: [&str; 2] = ["timestamp with time zone", "timestamp without time zone"];

/// A column whose type the relay cannot read, with what it reads instead.
pub fn unreadable_type(mapping: &Mapping, facts: &TableFacts) -> Option<String> {
    let order = &mapping.order;
    if let Some(kind) = facts.columns.get(order)
        && kind != "bigint"
    {
        return Some(format!(
            "its ordering column {order} is {kind}, and the relay's ordering column is a bigint"
        ));
    }
    let time = mapping.time_column();
    if let Some(kind) = facts.columns.get(time)
        && !TIME_TYPES.contains(&kind.as_str())
    {
        return Some(format!(
            "its time column {time} is {kind}, and the relay reads a timestamp there \
             (timestamptz or timestamp)"
        ));
    }
    None
}

/// The start-up check: how the payload is read when the table described by
/// `facts` is ready for `mapping`, or the sentence saying what is not.
pub fn judge(
    mapping: &Mapping,
    facts: Option<&TableFacts>,
    table: &str,
) -> Result<Payload, String> {
    let missing = Missing::in_facts(mapping, facts);
    let Some(facts) = facts.filter(|_| missing.is_empty()) else {
        return Err(missing.sentence(table, mapping));
    };
    let table = facts.table.to_string();
    if let Some(problem) = unreadable_type(mapping, facts) {
        return Err(not_ready(mapping, &format!("table {table:?}: {problem}")));
    }
    let book = mapping.bookkeeping;
    let order_trigger = &facts.triggers[book.order_trigger()];
    let row = (
        tgtype::ROW | tgtype::BEFORE | tgtype::INSERT,
        "a BEFORE INSERT FOR EACH ROW",
    );
    fires(mapping, &table, book.order_trigger(), order_trigger, row)?;
    if let Some(name) = book.keys_trigger() {
        let statement = (tgtype::INSERT, "an AFTER INSERT FOR EACH STATEMENT");
        fires(mapping, &table, name, &facts.triggers[name], statement)?;
    }
    match book {
        Bookkeeping::Own => {
            own_trigger(mapping)?;
            if let Some(problem) = sequence_problem(mapping, facts, None) {
                return Err(not_ready(mapping, &problem));
            }
        }
        Bookkeeping::Added => added_trigger(mapping, facts, order_trigger)?,
    }
    let payload = &facts.columns[&mapping.payload];
    Ok(Payload::of(payload))
}

/// Refuses a trigger that does not fire for the application's sessions or
/// is not of the `kind` (its `tgtype` bits, in words) the order rests on.
fn fires(
    mapping: &Mapping,
    table: &str,
    name: &str,
    trigger: &Trigger,
    (kind, words): (i16, &str),
) -> Result<(), String> {
    if let Some(problem) = silent(name, trigger) {
        return Err(not_ready(
            mapping,
            &format!(
                "{problem}; run `ALTER TABLE {table} ENABLE TRIGGER {name}` or \
                 `outbox-relay prepare` again"
            ),
        ));
    }
    let bits = tgtype::ROW | tgtype::BEFORE | tgtype::INSERT;
    if trigger.kind & bits != kind {
        return Err(not_ready(
            mapping,
            &format!(
                "trigger {name} on {table} is not {words} trigger; {}",
                fix(mapping)
            ),
        ));
    }
    Ok(())
}

/// Why a trigger does not fire for the application's sessions, if so.
fn silent(name: &str, trigger: &Trigger) -> Option<String> {
    match trigger.enabled {
        'O' | 'A' => None,
        'R' => Some(format!(
            "trigger {name} fires only for replication sessions (ENABLE REPLICA TRIGGER), so \
             the application's rows would not get it"
        )),
        _ => Some(format!("trigger {name} is disabled")),
    }
}

/// The mall's migrations lock `msg_key` and number `id`: a mapping that
/// names other columns is not what their trigger orders.
fn own_trigger(mapping: &Mapping) -> Result<(), String> {
    if mapping.key == "msg_key" && mapping.order == "id" {
        return Ok(());
    }
    Err(not_ready(
        mapping,
        &format!(
            "the mall's trigger {} locks msg_key and numbers id, but this relay maps key {} \
             and ordering column {}; use the preset's columns",
            mapping.bookkeeping.order_trigger(),
            mapping.key,
            mapping.order
        ),
    ))
}

/// The ordering trigger `prepare` made must implement this mapping, and
/// draw from a sequence that keeps commit order.
fn added_trigger(mapping: &Mapping, facts: &TableFacts, trigger: &Trigger) -> Result<(), String> {
    let name = mapping.bookkeeping.order_trigger();
    let table = facts.table.to_string();
    let Some(record) = trigger.comment.as_deref().and_then(Record::parse) else {
        return Err(not_ready(
            mapping,
            &format!(
                "trigger {name} on {table} carries no record of the key and ordering column it \
                 implements (an older outbox-relay prepared it, or its comment was changed); run \
                 `outbox-relay prepare` again with the relay's settings"
            ),
        ));
    };
    if record.key != mapping.key || record.order != mapping.order {
        return Err(not_ready(
            mapping,
            &format!(
                "trigger {name} on {table} locks key column {} and numbers column {}, but this \
                 relay maps key {} and ordering column {}; start it with --map-key {} --map-order \
                 {}, or run `outbox-relay prepare` with the new mapping first",
                record.key, record.order, mapping.key, mapping.order, record.key, record.order
            ),
        ));
    }
    sequence_problem(mapping, facts, Some(&record))
        .map_or(Ok(()), |problem| Err(not_ready(mapping, &problem)))
}

/// What is wrong with the sequence the ordering column is drawn from, if
/// anything: none owns the column, it is not the one recorded, or its
/// `CACHE` or `INCREMENT` breaks the order.
pub fn sequence_problem(
    mapping: &Mapping,
    facts: &TableFacts,
    record: Option<&Record>,
) -> Option<String> {
    let order = &mapping.order;
    let table = &facts.table;
    let Some(sequence) = &facts.order_sequence else {
        return Some(format!(
            "no sequence owns the ordering column {order} of {table}; run `outbox-relay prepare` \
             again"
        ));
    };
    if let Some(record) = record
        && record.sequence != sequence.name.to_string()
    {
        return Some(format!(
            "the ordering column {order} of {table} is owned by sequence {}, but its trigger \
             draws from {}; run `outbox-relay prepare` again",
            sequence.name, record.sequence
        ));
    }
    if sequence.cache > 1 {
        return Some(format!(
            "sequence {} has CACHE {}: each session hands out numbers from its own cache, so a \
             later commit can get a smaller number; run `ALTER SEQUENCE {} CACHE 1`",
            sequence.name,
            sequence.cache,
            sequence.name.sql()
        ));
    }
    if sequence.increment < 1 {
        return Some(format!(
            "sequence {} has INCREMENT {}: the relay sends in rising order; run `ALTER SEQUENCE \
             {} INCREMENT 1`",
            sequence.name,
            sequence.increment,
            sequence.name.sql()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Preset;
    use crate::prepare::catalog::fixtures::{debezium, prepared};

    fn judged(facts: &TableFacts, mapping: &Mapping) -> Result<Payload, String> {
        judge(mapping, Some(facts), "shop.outboxevent")
    }

    #[test]
    fn a_debezium_table_before_prepare_lacks_the_relay_columns_and_triggers() {
        let mapping = Mapping::preset(Preset::Debezium);
        let missing = Missing::in_facts(&mapping, Some(&debezium()));
        assert_eq!(
            missing.columns,
            [
                "relay_seq",
                "relay_created_at",
                "relay_published_at",
                "relay_parked_at",
                "relay_parked_reason",
                "relay_head"
            ]
        );
        assert_eq!(missing.triggers, ["relay_order", "relay_order_keys"]);
        let sentence = judged(&debezium(), &mapping).expect_err("not ready");
        assert!(sentence.contains("no column relay_seq"), "{sentence}");
        assert!(sentence.contains("outbox-relay prepare"), "{sentence}");
        assert!(
            missing.beyond_prepare(&mapping).is_empty(),
            "prepare adds all that"
        );
        let none = judge(&mapping, None, "outboxevent").expect_err("no table");
        assert!(none.contains("there is no table"), "{none}");
    }

    #[test]
    fn a_prepared_table_is_ready_for_its_own_mapping_only() {
        let mapping = Mapping::preset(Preset::Debezium);
        assert_eq!(judged(&prepared(), &mapping), Ok(Payload::Bytes));

        let mut other_key = mapping.clone();
        other_key.key = "type".to_owned();
        let why = judged(&prepared(), &other_key).expect_err("another key");
        assert!(why.contains("locks key column aggregateid"), "{why}");
        assert!(why.contains("--map-key aggregateid"), "{why}");
    }

    #[test]
    fn triggers_that_do_not_fire_or_record_nothing_are_refused() {
        let mapping = Mapping::preset(Preset::Debezium);
        for (enabled, says) in [('D', "is disabled"), ('R', "only for replication sessions")] {
            let mut facts = prepared();
            if let Some(trigger) = facts.triggers.get_mut("relay_order") {
                trigger.enabled = enabled;
            }
            let why = judged(&facts, &mapping).expect_err("silent trigger");
            assert!(why.contains(says), "{why}");
            assert!(why.contains("ENABLE TRIGGER relay_order"), "{why}");
        }
        for (enabled, kind, says) in [
            ('D', tgtype::INSERT, "relay_order_keys is disabled"),
            (
                'O',
                tgtype::ROW | tgtype::INSERT,
                "not an AFTER INSERT FOR EACH STATEMENT",
            ),
        ] {
            let mut facts = prepared();
            if let Some(trigger) = facts.triggers.get_mut("relay_order_keys") {
                (trigger.enabled, trigger.kind) = (enabled, kind);
            }
            let why = judged(&facts, &mapping).expect_err("keys not locked in one order");
            assert!(why.contains(says), "{why}");
        }
        let mut dropped = prepared();
        dropped.triggers.remove("relay_order_keys");
        let why = judged(&dropped, &mapping).expect_err("an older prepare's table");
        assert!(why.contains("no trigger relay_order_keys"), "{why}");
        let mut unrecorded = prepared();
        if let Some(trigger) = unrecorded.triggers.get_mut("relay_order") {
            trigger.comment = None;
        }
        let why = judged(&unrecorded, &mapping).expect_err("no record");
        assert!(why.contains("carries no record"), "{why}");
    }

    #[test]
    fn a_sequence_that_breaks_commit_order_or_an_unreadable_column_is_refused() {
        let mapping = Mapping::preset(Preset::Debezium);
        let mut cached = prepared();
        if let Some(sequence) = cached.order_sequence.as_mut() {
            sequence.cache = 50;
        }
        let why = judged(&cached, &mapping).expect_err("cached");
        assert!(why.contains("CACHE 50"), "{why}");
        let mut narrow = prepared();
        narrow
            .columns
            .insert("relay_seq".to_owned(), "integer".to_owned());
        let why = judged(&narrow, &mapping).expect_err("int4");
        assert!(why.contains("is integer"), "{why}");
    }

    #[test]
    fn the_mall_layout_is_ordered_by_msg_key_and_id_only() {
        let mut mall = Mapping::preset(Preset::Mall);
        assert!(own_trigger(&mall).is_ok());
        mall.key = "subject".to_owned();
        let why = own_trigger(&mall).expect_err("another key");
        assert!(why.contains("locks msg_key"), "{why}");
    }
}
