//! Making a table the relay does not own ready for it, once, without
//! touching the application's `INSERT`s; and the start-up check that a
//! table is ready.
//!
//! `prepare` adds, idempotently: an ordering column drawn from a sequence
//! by a `BEFORE INSERT` trigger under a transaction-scoped lock on the
//! row's key (so for one key, its order is commit order, whoever writes),
//! the creation time, the relay's published and parked columns, the
//! indexes its queries use, and a statement trigger that notifies the
//! relay's channel at commit.

use std::collections::HashSet;

use tokio_postgres::Client;

use crate::mapping::sql::Payload;
use crate::mapping::{Bookkeeping, Mapping};

/// The first key of the per-key ordering lock, shared with the mall's own
/// trigger (the two-int key space never meets the consumers' locks).
const ORDER_LOCK_CLASS: i32 = 1_869_767_794;

/// Why a table is not ready, or could not be looked at.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Something the mapping needs is missing.
    #[error("{0}")]
    NotReady(String),
    /// The catalogue could not be read.
    #[error("cannot inspect the outbox table: {0}")]
    Query(#[from] tokio_postgres::Error),
}

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
    pub fn of(mapping: &Mapping, columns: &HashSet<String>, triggers: &HashSet<String>) -> Self {
        let book = mapping.bookkeeping;
        Self {
            table: columns.is_empty(),
            columns: mapping
                .columns()
                .into_iter()
                .filter(|column| !columns.contains(*column))
                .map(str::to_owned)
                .collect(),
            triggers: [book.order_trigger(), book.notify_trigger()]
                .into_iter()
                .filter(|trigger| !triggers.contains(*trigger))
                .map(str::to_owned)
                .collect(),
        }
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

    /// The refusal, naming what is missing and what to do.
    pub fn sentence(&self, table: &str, mapping: &Mapping) -> String {
        let what = if self.table {
            format!("there is no table {table:?}")
        } else {
            let mut lacks = Vec::new();
            if !self.columns.is_empty() {
                lacks.push(format!("no column {}", self.columns.join(", ")));
            }
            if !self.triggers.is_empty() {
                lacks.push(format!("no trigger {}", self.triggers.join(", ")));
            }
            format!("table {table:?} has {}", lacks.join(" and "))
        };
        let fix = match mapping.bookkeeping {
            Bookkeeping::Added => {
                "run `outbox-relay prepare` with the same settings (`--dry-run` prints its SQL \
                 first), or name the table's own columns with the --map-* settings"
            }
            Bookkeeping::Own => {
                "the mall's migrations (migrations/shared) create this layout; for a table of \
                 another layout choose its preset (--preset) or name its columns (--map-*)"
            }
        };
        format!(
            "The outbox is not ready for the relay's {preset:?} mapping: {what}; {fix}.",
            preset = mapping.preset
        )
    }
}

/// Checks that `table` has what `mapping` needs; says how its payload is
/// read (by the column's type).
pub async fn check(client: &Client, table: &str, mapping: &Mapping) -> Result<Payload, CheckError> {
    let (payload, missing) = inspect(client, table, mapping).await?;
    if missing.is_empty() {
        Ok(payload)
    } else {
        Err(CheckError::NotReady(missing.sentence(table, mapping)))
    }
}

/// Refuses, before anything is changed, a table `prepare` cannot make
/// ready: one that lacks a column the mapping reads (a trigger naming a
/// missing key column would break the application's every `INSERT`).
pub async fn preparable(client: &Client, table: &str, mapping: &Mapping) -> Result<(), CheckError> {
    let (_, missing) = inspect(client, table, mapping).await?;
    let lacking = missing.beyond_prepare(mapping);
    let order = &mapping.order;
    if lacking.is_empty() && !missing.columns.contains(order) {
        let drawn: bool = client
            .query_one(
                "SELECT pg_get_serial_sequence($1, $2) IS NOT NULL",
                &[&table, &order],
            )
            .await?
            .try_get(0)?;
        if !drawn {
            return Err(CheckError::NotReady(format!(
                "Nothing was changed: the ordering column {order} of {table:?} exists, but no \
                 sequence owns it, and the ordering trigger draws from that sequence; name a new \
                 column with --map-order, which prepare then adds."
            )));
        }
    }
    if lacking.is_empty() {
        Ok(())
    } else {
        Err(CheckError::NotReady(format!(
            "Nothing was changed: {}",
            lacking.sentence(table, mapping)
        )))
    }
}

/// How the payload is read, and what the table lacks for `mapping`.
async fn inspect(
    client: &Client,
    table: &str,
    mapping: &Mapping,
) -> Result<(Payload, Missing), CheckError> {
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&table],
        )
        .await?;
    let mut payload = Payload::Text;
    let mut columns = HashSet::new();
    for row in &rows {
        let (name, kind): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if name == mapping.payload {
            payload = Payload::of(&kind);
        }
        columns.insert(name);
    }
    let triggers = client
        .query(
            "SELECT tgname::text FROM pg_trigger \
             WHERE tgrelid = to_regclass($1) AND NOT tgisinternal AND tgenabled <> 'D'",
            &[&table],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<HashSet<String>, _>>()?;
    Ok((payload, Missing::of(mapping, &columns, &triggers)))
}

/// Why `prepare` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The mapping's table is made whole by its own migrations.
    #[error(
        "the {0:?} preset's table is made by the mall's migrations (migrations/shared), not by \
         prepare; choose --preset debezium, or name your table's columns with --map-*"
    )]
    OwnLayout(crate::mapping::Preset),
}

/// The statements that prepare `table` for `mapping`, each idempotent, in
/// order; they run in one transaction.
pub fn statements(
    table: &str,
    channel: &str,
    mapping: &Mapping,
) -> Result<Vec<String>, PrepareError> {
    let book = mapping.bookkeeping;
    if book == Bookkeeping::Own {
        return Err(PrepareError::OwnLayout(mapping.preset));
    }
    let key = &mapping.key;
    let (order, created, published, parked, reason) = mapping.relay_columns();
    let sequence = format!("{table}_{order}");
    Ok(vec![
        // A new ordering column gets a sequence of its own; an existing one
        // keeps the sequence that owns it (checked by `preparable`).
        format!(
            "DO $$\n\
             BEGIN\n    \
                 IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{table}'::regclass \
                                AND attname = '{order}' AND NOT attisdropped) THEN\n        \
                     CREATE SEQUENCE IF NOT EXISTS {sequence};\n        \
                     ALTER TABLE {table} ADD COLUMN {order} bigint NOT NULL DEFAULT nextval('{sequence}');\n        \
                     ALTER SEQUENCE {sequence} OWNED BY {table}.{order};\n    \
                 END IF;\n\
             END\n$$"
        ),
        format!(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {created} timestamptz NOT NULL DEFAULT now()"
        ),
        format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {published} timestamptz"),
        format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {parked} timestamptz"),
        format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {reason} text"),
        format!(
            "CREATE OR REPLACE FUNCTION {trigger}_{table}() RETURNS trigger LANGUAGE plpgsql AS $$\n\
             BEGIN\n    \
                 PERFORM pg_advisory_xact_lock({ORDER_LOCK_CLASS}, hashtext(NEW.{key}::text));\n    \
                 NEW.{order} := nextval(pg_get_serial_sequence('{table}', '{order}'));\n    \
                 RETURN NEW;\n\
             END\n$$",
            trigger = book.order_trigger()
        ),
        format!(
            "CREATE OR REPLACE TRIGGER {trigger} BEFORE INSERT ON {table} \
             FOR EACH ROW EXECUTE FUNCTION {trigger}_{table}()",
            trigger = book.order_trigger()
        ),
        format!(
            "CREATE OR REPLACE FUNCTION {trigger}_{table}() RETURNS trigger LANGUAGE plpgsql AS $$\n\
             BEGIN\n    \
                 PERFORM pg_notify('{channel}', '');\n    \
                 RETURN NULL;\n\
             END\n$$",
            trigger = book.notify_trigger()
        ),
        format!(
            "CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT ON {table} \
             FOR EACH STATEMENT EXECUTE FUNCTION {trigger}_{table}()",
            trigger = book.notify_trigger()
        ),
        format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_{order}_key ON {table} ({order})"),
        format!(
            "CREATE INDEX IF NOT EXISTS {table}_relay_unpublished ON {table} ({order}) \
             WHERE {published} IS NULL"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {table}_{published} ON {table} ({published}) \
             WHERE {published} IS NOT NULL"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {table}_relay_parked_keys ON {table} ({key}) \
             WHERE {parked} IS NOT NULL"
        ),
    ])
}

/// Runs `statements` in one transaction.
pub async fn run(client: &mut Client, statements: &[String]) -> Result<(), tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    for statement in statements {
        transaction.batch_execute(statement).await?;
    }
    transaction.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Preset;

    fn set(names: &[&str]) -> HashSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_debezium_table_before_prepare_lacks_the_relay_columns_and_triggers() {
        let mapping = Mapping::preset(Preset::Debezium);
        let missing = Missing::of(
            &mapping,
            &set(&["id", "aggregatetype", "aggregateid", "type", "payload"]),
            &set(&[]),
        );
        assert_eq!(
            missing.columns,
            [
                "relay_seq",
                "relay_created_at",
                "relay_published_at",
                "relay_parked_at",
                "relay_parked_reason"
            ]
        );
        assert_eq!(missing.triggers, ["relay_order", "relay_notify"]);
        let sentence = missing.sentence("outboxevent", &mapping);
        assert!(sentence.contains("no column relay_seq"), "{sentence}");
        assert!(sentence.contains("outbox-relay prepare"), "{sentence}");
        assert!(
            missing.beyond_prepare(&mapping).is_empty(),
            "prepare adds all that"
        );
        let mut wrong_key = mapping.clone();
        wrong_key.key = "tenant".to_owned();
        let lacking = Missing::of(
            &wrong_key,
            &set(&["id", "aggregatetype", "aggregateid", "type", "payload"]),
            &set(&[]),
        )
        .beyond_prepare(&wrong_key);
        assert_eq!(lacking.columns, ["tenant"]);
        let none = Missing::of(&mapping, &set(&[]), &set(&[]));
        assert!(
            none.sentence("outboxevent", &mapping)
                .contains("there is no table")
        );
    }

    #[test]
    fn prepare_is_idempotent_sql_and_refuses_the_mall_layout() {
        let sql =
            statements("outboxevent", "outbox", &Mapping::preset(Preset::Debezium)).expect("sql");
        for statement in &sql {
            assert!(
                statement.contains("IF NOT EXISTS")
                    || statement.contains("OR REPLACE")
                    || statement.starts_with("DO $$"),
                "not idempotent: {statement}"
            );
        }
        assert!(
            sql.iter()
                .any(|s| s.contains("hashtext(NEW.aggregateid::text)"))
        );
        assert!(sql.iter().any(|s| s.contains("pg_notify('outbox', '')")));
        assert!(statements("outbox", "outbox", &Mapping::preset(Preset::Mall)).is_err());
    }
}
