//! The topic of a record: a column, or a template over columns such as
//! Debezium's `outbox.event.${aggregatetype}`, with a default topic for a
//! row whose template column is NULL.

use super::identifier;
use super::names::quote;

/// One piece of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text written as it is (only characters a topic name may hold).
    Text(String),
    /// A column's value.
    Column(String),
}

/// Where a record's topic comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// A column holding the whole topic name.
    Column(String),
    /// A template over columns, and the topic for rows where one of them is
    /// NULL (without one such a row is parked, with the reason).
    Template {
        /// The pieces, in order.
        parts: Vec<Part>,
        /// The topic when a column is NULL.
        default: Option<String>,
    },
}

impl Topic {
    /// Parses `text`: literal topic characters and `${column}` placeholders.
    pub fn template(text: &str, default: Option<&str>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find("${") {
                Some(0) => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("topic template {text:?}: a `${{` is not closed"))?;
                    let column = identifier(&rest[2..end])
                        .map_err(|why| format!("topic template {text:?}: {why}"))?;
                    parts.push(Part::Column(column));
                    rest = &rest[end + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let literal = &rest[..end];
                    if let Some(bad) = literal.chars().find(|c| !topic_char(*c)) {
                        return Err(format!(
                            "topic template {text:?}: {bad:?} cannot be part of a Kafka topic name"
                        ));
                    }
                    parts.push(Part::Text(literal.to_owned()));
                    rest = &rest[end..];
                }
            }
        }
        if !parts.iter().any(|part| matches!(part, Part::Column(_))) {
            return Err(format!(
                "topic template {text:?} names no column; write it as `${{column}}`"
            ));
        }
        if let Some(default) = default
            && let Some(problem) = problem(default)
        {
            return Err(format!("default topic {default:?}: {problem}"));
        }
        Ok(Self::Template {
            parts,
            default: default.map(str::to_owned),
        })
    }

    /// The columns it reads.
    pub fn columns(&self) -> Vec<&str> {
        match self {
            Self::Column(column) => vec![column.as_str()],
            Self::Template { parts, .. } => parts
                .iter()
                .filter_map(|part| match part {
                    Part::Column(column) => Some(column.as_str()),
                    Part::Text(_) => None,
                })
                .collect(),
        }
    }

    /// The SQL expression that renders it for a row (NULL when a column is
    /// NULL and there is no default). Safe to splice: columns are plain
    /// identifiers and texts hold topic characters only, never a quote.
    pub fn sql(&self) -> String {
        match self {
            Self::Column(column) => format!("{}::text", quote(column)),
            Self::Template { parts, default } => {
                let rendered = parts
                    .iter()
                    .map(|part| match part {
                        Part::Text(text) => format!("'{text}'"),
                        Part::Column(column) => format!("{}::text", quote(column)),
                    })
                    .collect::<Vec<_>>()
                    .join(" || ");
                match default {
                    Some(default) => format!("COALESCE({rendered}, '{default}')"),
                    None => format!("({rendered})"),
                }
            }
        }
    }
}

/// Whether `c` may appear in a Kafka topic name.
fn topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// What is wrong with `name` as a Kafka topic name, if anything (the
/// broker's own rule: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`).
pub fn problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("a topic name cannot be empty".to_owned())
    } else if name.len() > 249 {
        Some(format!(
            "a topic name has at most 249 characters, this one {}",
            name.len()
        ))
    } else if name == "." || name == ".." {
        Some(format!("{name:?} cannot be a topic name"))
    } else {
        name.chars().find(|c| !topic_char(*c)).map(|bad| {
            format!("{bad:?} cannot be part of a Kafka topic name (only letters, digits, '.', '_' and '-')")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debezium_routing_renders_in_sql() {
        let topic = Topic::template("outbox.event.${aggregatetype}", None).expect("valid");
        assert_eq!(topic.columns(), ["aggregatetype"]);
        assert_eq!(topic.sql(), "('outbox.event.' || \"aggregatetype\"::text)");
        let defaulted =
            Topic::template("${kind}-${region}.events", Some("events.unrouted")).expect("valid");
        assert_eq!(
            defaulted.sql(),
            "COALESCE(\"kind\"::text || '-' || \"region\"::text || '.events', 'events.unrouted')"
        );
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (template, why) in [
            ("outbox.${aggregatetype", "not closed"),
            ("outbox.${Aggregate}", "identifier"),
            ("out'box.${t}", "cannot be part"),
            ("outbox.events", "names no column"),
        ] {
            let refused = Topic::template(template, None).expect_err(template);
            assert!(refused.contains(why), "{template}: {refused}");
        }
        assert!(Topic::template("x.${t}", Some("bad topic")).is_err());
    }

    #[test]
    fn topic_names_follow_the_broker_rule() {
        assert_eq!(problem("outbox.event.order"), None);
        assert!(problem("").is_some());
        assert!(problem("..").is_some());
        assert!(problem("a b").is_some());
        assert!(problem(&"x".repeat(250)).is_some());
    }
}
