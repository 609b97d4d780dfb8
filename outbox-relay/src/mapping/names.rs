//! SQL names: the checked column names a mapping holds, the table it reads
//! (optionally with its schema), and the quoting every statement the relay
//! builds applies to each of them.
//!
//! Names are checked *and* quoted: checked so a message can repeat them and
//! a dry run stays readable, quoted so a reserved word or a function-like
//! keyword (`user`, `current_date`) names the column, never something else.

use std::fmt;

/// Whether `value` is a plain lowercase SQL identifier: 1 to 63 of
/// `[a-z0-9_]`, not starting with a digit. Every column and the channel
/// name pass this check before any SQL is built from them.
pub fn identifier(value: &str) -> Result<String, String> {
    let mut chars = value.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && value.len() <= 63;
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a plain lowercase SQL identifier"))
    }
}

/// `name` as a quoted SQL identifier (`"name"`, inner quotes doubled), so
/// it names exactly that object whatever the word is.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a SQL string literal (inner quotes doubled).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The outbox table as configured: `table`, found through the session's
/// `search_path`, or `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// Its schema, when one was named.
    pub schema: Option<String>,
    /// The table's own name.
    pub name: String,
}

impl TableName {
    /// Parses `table` or `schema.table`, each part a plain identifier.
    pub fn parse(value: &str) -> Result<Self, String> {
        let refuse = |why: String| format!("{why} (write `table` or `schema.table`)");
        match value.split_once('.') {
            None => Ok(Self {
                schema: None,
                name: identifier(value).map_err(refuse)?,
            }),
            Some((schema, name)) => Ok(Self {
                schema: Some(identifier(schema).map_err(refuse)?),
                name: identifier(name).map_err(refuse)?,
            }),
        }
    }

    /// The name as PostgreSQL's `to_regclass` reads it: quoted, with the
    /// schema when one was named.
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.name)),
            None => quote(&self.name),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A relation as the catalogue found it: its schema and name, so every
/// statement names it whatever the `search_path` of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualified {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
}

impl Qualified {
    /// A relation `name` in `schema`.
    pub fn new(schema: &str, name: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Another relation in the same schema.
    pub fn sibling(&self, name: &str) -> Self {
        Self::new(&self.schema, name)
    }

    /// `"schema"."name"`.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }
}

impl fmt::Display for Qualified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(identifier("outbox").is_ok());
        assert!(identifier("outbox_2").is_ok());
        assert!(identifier("Outbox").is_err());
        assert!(identifier("outbox; drop table x").is_err());
        assert!(identifier("").is_err());
    }

    #[test]
    fn quoting_keeps_reserved_words_and_quotes_names() {
        assert_eq!(quote("user"), "\"user\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn a_table_may_name_its_schema() {
        let plain = TableName::parse("outboxevent").expect("plain");
        assert_eq!(plain.schema, None);
        assert_eq!(plain.sql(), "\"outboxevent\"");
        let qualified = TableName::parse("shop.outboxevent").expect("qualified");
        assert_eq!(qualified.schema.as_deref(), Some("shop"));
        assert_eq!(qualified.sql(), "\"shop\".\"outboxevent\"");
        assert_eq!(qualified.to_string(), "shop.outboxevent");
        for bad in ["a.b.c", "Shop.outbox", ".outbox", "shop.", "x;y"] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Qualified::new("My Schema", "t").sql(),
            "\"My Schema\".\"t\""
        );
    }
}
