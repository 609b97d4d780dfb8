//! What PostgreSQL's catalogue says of an outbox table: the I/O half of
//! `prepare` and of the start-up check. Everything is read by the table's
//! identity (its OID), once, and judged by the pure functions beside this
//! file.

use std::collections::HashMap;

use tokio_postgres::GenericClient;

use crate::mapping::{Qualified, TableName};

/// PostgreSQL's `pg_trigger.tgtype` bits.
pub mod tgtype {
    /// Fires once per row (else once per statement).
    pub const ROW: i16 = 1;
    /// Fires before the change (else after it).
    pub const BEFORE: i16 = 2;
    /// Fires on `INSERT`.
    pub const INSERT: i16 = 4;
}

/// One trigger of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// `pg_trigger.tgenabled`: `O` fires for ordinary sessions, `A` always,
    /// `R` only for replication sessions, `D` never.
    pub enabled: char,
    /// `pg_trigger.tgtype` (see [`tgtype`]).
    pub kind: i16,
    /// `COMMENT ON TRIGGER`, where `prepare` records what it implements.
    pub comment: Option<String>,
}

/// A sequence, or a relation where `prepare` would create one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// Where it is.
    pub name: Qualified,
    /// `CACHE`: above 1, sessions hand out numbers out of commit order.
    pub cache: i64,
    /// `INCREMENT`: below 1, numbers fall.
    pub increment: i64,
    /// The column of the outbox table that owns it, if one does.
    pub owned_by: Option<String>,
}

/// An outbox table as the catalogue describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFacts {
    /// The table, with the schema it was found in.
    pub table: Qualified,
    /// Its owner (who `prepare`'s objects belong to).
    pub owner: String,
    /// Who is asking (`current_user`).
    pub current_user: String,
    /// Its columns: name to type (`format_type`).
    pub columns: HashMap<String, String>,
    /// Its own triggers, by name.
    pub triggers: HashMap<String, Trigger>,
    /// The sequence that owns the ordering column, if any.
    pub order_sequence: Option<Sequence>,
    /// Whatever has the name `prepare` gives a new ordering sequence.
    pub named_sequence: Option<Sequence>,
}

/// The name `prepare` gives the sequence of ordering column `order`.
pub fn sequence_name(table: &Qualified, order: &str) -> Qualified {
    table.sibling(&format!("{}_{order}", table.name))
}

/// Reads what the catalogue holds of `table`, for the ordering column
/// `order`; `None` when there is no such table.
pub async fn inspect(
    client: &impl GenericClient,
    table: &TableName,
    order: &str,
) -> Result<Option<TableFacts>, tokio_postgres::Error> {
    let Some(found) = client
        .query_opt(
            "SELECT c.oid, n.nspname::text, c.relname::text, pg_get_userbyid(c.relowner)::text, \
                    current_user::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')",
            &[&table.sql()],
        )
        .await?
    else {
        return Ok(None);
    };
    let oid: u32 = found.try_get(0)?;
    let qualified = Qualified::new(
        &found.try_get::<_, String>(1)?,
        &found.try_get::<_, String>(2)?,
    );
    let columns = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&oid],
        )
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<HashMap<String, String>, tokio_postgres::Error>>()?;
    let triggers = client
        .query(
            "SELECT tgname::text, tgenabled::text, tgtype, obj_description(oid, 'pg_trigger') \
             FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal",
            &[&oid],
        )
        .await?
        .iter()
        .map(|row| {
            let enabled: String = row.try_get(1)?;
            Ok((
                row.try_get(0)?,
                Trigger {
                    enabled: enabled.chars().next().unwrap_or('D'),
                    kind: row.try_get(2)?,
                    comment: row.try_get(3)?,
                },
            ))
        })
        .collect::<Result<HashMap<String, Trigger>, tokio_postgres::Error>>()?;
    let owning: Option<u32> = client
        .query_opt(
            "SELECT d.objid FROM pg_depend d JOIN pg_attribute a \
               ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
               AND d.refobjid = $1 AND a.attname = $2 AND d.deptype IN ('a', 'i') LIMIT 1",
            &[&oid, &order],
        )
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    let named: Option<u32> = client
        .query_one(
            "SELECT to_regclass($1)::oid",
            &[&sequence_name(&qualified, order).sql()],
        )
        .await?
        .try_get(0)?;
    let order_sequence = describe(client, oid, owning).await?;
    let named_sequence = describe(client, oid, named).await?;
    Ok(Some(TableFacts {
        table: qualified,
        owner: found.try_get(3)?,
        current_user: found.try_get(4)?,
        columns,
        triggers,
        order_sequence,
        named_sequence,
    }))
}

/// The relation `relation` (if any), as a sequence if it is one, with the
/// column of `table` that owns it.
async fn describe(
    client: &impl GenericClient,
    table: u32,
    relation: Option<u32>,
) -> Result<Option<Sequence>, tokio_postgres::Error> {
    let Some(relation) = relation else {
        return Ok(None);
    };
    let row = client
        .query_one(
            "SELECT n.nspname::text, c.relname::text, \
                    COALESCE(s.seqcache, 0), COALESCE(s.seqincrement, 0), \
                    (SELECT a.attname::text FROM pg_depend d JOIN pg_attribute a \
                       ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                     WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid \
                       AND d.refobjid = $1 AND d.deptype IN ('a', 'i') LIMIT 1) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_sequence s ON s.seqrelid = c.oid WHERE c.oid = $2",
            &[&table, &relation],
        )
        .await?;
    Ok(Some(Sequence {
        name: Qualified::new(&row.try_get::<_, String>(0)?, &row.try_get::<_, String>(1)?),
        cache: row.try_get(2)?,
        increment: row.try_get(3)?,
        owned_by: row.try_get(4)?,
    }))
}

/// Tables as the catalogue would describe them, for the pure functions'
/// tests.
#[cfg(test)]
pub mod fixtures {
    use super::*;
    use crate::prepare::record::Record;

    /// Debezium's table in schema `shop`, before `prepare`, owned by the
    /// one asking.
    pub fn debezium() -> TableFacts {
        TableFacts {
            table: Qualified::new("shop", "outboxevent"),
            owner: "shop_owner".to_owned(),
            current_user: "shop_owner".to_owned(),
            columns: [
                ("id", "uuid"),
                ("aggregatetype", "character varying(255)"),
                ("aggregateid", "character varying(255)"),
                ("type", "character varying(255)"),
                ("payload", "bytea"),
            ]
            .into_iter()
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect(),
            triggers: HashMap::new(),
            order_sequence: None,
            named_sequence: None,
        }
    }

    /// The same table after `prepare` with the debezium preset.
    pub fn prepared() -> TableFacts {
        let mut facts = debezium();
        for (name, kind) in [
            ("relay_seq", "bigint"),
            ("relay_created_at", "timestamp with time zone"),
            ("relay_published_at", "timestamp with time zone"),
            ("relay_parked_at", "timestamp with time zone"),
            ("relay_parked_reason", "text"),
            ("relay_head", "boolean"),
        ] {
            facts.columns.insert(name.to_owned(), kind.to_owned());
        }
        let sequence = Sequence {
            name: Qualified::new("shop", "outboxevent_relay_seq"),
            cache: 1,
            increment: 1,
            owned_by: Some("relay_seq".to_owned()),
        };
        facts.order_sequence = Some(sequence.clone());
        facts.named_sequence = Some(sequence);
        let record = Record {
            table: "shop.outboxevent".to_owned(),
            key: "aggregateid".to_owned(),
            order: "relay_seq".to_owned(),
            sequence: "shop.outboxevent_relay_seq".to_owned(),
        };
        facts.triggers.insert(
            "relay_order".to_owned(),
            Trigger {
                enabled: 'O',
                kind: tgtype::ROW | tgtype::BEFORE | tgtype::INSERT,
                comment: Some(record.comment()),
            },
        );
        facts.triggers.insert(
            "relay_order_keys".to_owned(),
            Trigger {
                enabled: 'O',
                kind: tgtype::INSERT,
                comment: None,
            },
        );
        facts
    }
}
