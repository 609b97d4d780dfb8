//! The mapping as flags and environment variables: a preset, then any
//! column, topic and header it names differently.

use super::{Header, HeaderValue, Mapping, Preset, Topic, TraceColumns, identifier};

/// The mapping's settings; every one also reads an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct MappingArgs {
    /// The layout to start from: `mall` (the mall's outbox and CloudEvents
    /// headers) or `debezium` (Debezium's default outbox layout and routing).
    #[arg(long, env = "RELAY_PRESET", value_enum, default_value = "mall")]
    pub preset: Preset,

    /// The ordering column (`prepare` adds it, drawn under the per-key lock).
    #[arg(long = "map-order", env = "RELAY_MAP_ORDER", value_parser = identifier)]
    pub order: Option<String>,

    /// The event id column.
    #[arg(long = "map-event-id", env = "RELAY_MAP_EVENT_ID", value_parser = identifier)]
    pub event_id: Option<String>,

    /// The record key column.
    #[arg(long = "map-key", env = "RELAY_MAP_KEY", value_parser = identifier)]
    pub key: Option<String>,

    /// A column holding each record's topic.
    #[arg(long = "map-topic", env = "RELAY_MAP_TOPIC", value_parser = identifier,
          conflicts_with = "topic_template")]
    pub topic: Option<String>,

    /// A topic template over columns, e.g. `outbox.event.${aggregatetype}`.
    #[arg(long = "map-topic-template", env = "RELAY_MAP_TOPIC_TEMPLATE",
          value_parser = template)]
    pub topic_template: Option<String>,

    /// The topic of a row whose template column is NULL (without one such a
    /// row is parked).
    #[arg(long = "map-default-topic", env = "RELAY_MAP_DEFAULT_TOPIC",
          value_parser = topic_name)]
    pub default_topic: Option<String>,

    /// The event type column.
    #[arg(long = "map-type", env = "RELAY_MAP_TYPE", value_parser = identifier)]
    pub event_type: Option<String>,

    /// The record value column (`bytea`: bytes as stored; any other type: its text).
    #[arg(long = "map-payload", env = "RELAY_MAP_PAYLOAD", value_parser = identifier)]
    pub payload: Option<String>,

    /// The event time column (a timestamp); by default the row's creation time.
    #[arg(long = "map-time", env = "RELAY_MAP_TIME", value_parser = identifier)]
    pub time: Option<String>,

    /// The W3C `traceparent` column.
    #[arg(long = "map-traceparent", env = "RELAY_MAP_TRACEPARENT", value_parser = identifier)]
    pub traceparent: Option<String>,

    /// The W3C `tracestate` column, sent only beside a `traceparent`.
    #[arg(long = "map-tracestate", env = "RELAY_MAP_TRACESTATE", value_parser = identifier)]
    pub tracestate: Option<String>,

    /// Headers from columns, `name=column` (repeatable; comma-separated in
    /// the variable), after the preset's.
    #[arg(long = "header-column", env = "RELAY_HEADER_COLUMNS", value_delimiter = ',',
          value_parser = header_column)]
    pub header_columns: Vec<(String, String)>,

    /// Headers with the same value on every record, `name=value`
    /// (repeatable; comma-separated in the variable), after the preset's.
    #[arg(long = "static-header", env = "RELAY_STATIC_HEADERS", value_delimiter = ',',
          value_parser = static_header)]
    pub static_headers: Vec<(String, String)>,

    /// Leave out the preset's own headers (the mall's CloudEvents set,
    /// Debezium's `id`): only the declared ones are written.
    #[arg(long = "no-preset-headers", env = "RELAY_NO_PRESET_HEADERS")]
    pub no_preset_headers: bool,
}

impl MappingArgs {
    /// The preset with every override applied.
    pub fn mapping(&self) -> Mapping {
        let mut mapping = Mapping::preset(self.preset);
        let set = |slot: &mut String, value: &Option<String>| {
            if let Some(value) = value {
                value.clone_into(slot);
            }
        };
        set(&mut mapping.order, &self.order);
        set(&mut mapping.event_id, &self.event_id);
        set(&mut mapping.key, &self.key);
        set(&mut mapping.payload, &self.payload);
        if let Some(column) = &self.event_type {
            mapping.event_type = Some(column.clone());
        }
        if let Some(column) = &self.time {
            mapping.time = Some(column.clone());
        }
        if let Some(column) = &self.topic {
            mapping.topic = Topic::Column(column.clone());
        }
        if let Some(text) = &self.topic_template {
            mapping.topic =
                Topic::template(text, None).unwrap_or_else(|_| unreachable!("checked when parsed"));
        }
        if let (Topic::Template { default, .. }, Some(topic)) =
            (&mut mapping.topic, &self.default_topic)
        {
            *default = Some(topic.clone());
        }
        if let Some(parent) = &self.traceparent {
            mapping.trace = Some(TraceColumns {
                parent: parent.clone(),
                state: None,
            });
        }
        if let (Some(trace), Some(state)) = (&mut mapping.trace, &self.tracestate) {
            trace.state = Some(state.clone());
        }
        if self.no_preset_headers {
            mapping.headers.clear();
        }
        for (name, column) in &self.header_columns {
            mapping.headers.push(Header {
                name: name.clone(),
                value: HeaderValue::Column(column.clone()),
            });
        }
        for (name, value) in &self.static_headers {
            mapping.headers.push(Header {
                name: name.clone(),
                value: HeaderValue::Static(value.clone()),
            });
        }
        mapping
    }
}

fn template(text: &str) -> Result<String, String> {
    Topic::template(text, None).map(|_| text.to_owned())
}

fn topic_name(name: &str) -> Result<String, String> {
    match super::topic::problem(name) {
        Some(problem) => Err(problem),
        None => Ok(name.to_owned()),
    }
}

/// A header name: 1 to 255 printable ASCII characters, no `=` or `,`.
fn header_name(name: &str) -> Result<String, String> {
    let printable = name
        .bytes()
        .all(|b| (0x21..0x7f).contains(&b) && b != b'=' && b != b',');
    if !name.is_empty() && name.len() <= 255 && printable {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not a header name (1 to 255 printable ASCII characters, no '=' or ',')"
        ))
    }
}

fn split(pair: &str) -> Result<(&str, &str), String> {
    pair.split_once('=')
        .ok_or_else(|| format!("{pair:?} is not `name=value`"))
}

fn header_column(pair: &str) -> Result<(String, String), String> {
    let (name, column) = split(pair)?;
    Ok((header_name(name)?, identifier(column)?))
}

fn static_header(pair: &str) -> Result<(String, String), String> {
    let (name, value) = split(pair)?;
    if value.len() > 1024 || value.chars().any(char::is_control) {
        return Err(format!(
            "header {name:?}: a static value has at most 1024 characters and no control character"
        ));
    }
    Ok((header_name(name)?, value.to_owned()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::mapping::topic::Part;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mapping: MappingArgs,
    }

    fn parse(args: &[&str]) -> Result<Mapping, clap::Error> {
        let mut all = vec!["relay"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|cli| cli.mapping.mapping())
    }

    #[test]
    fn no_flag_is_the_mall_preset() {
        assert_eq!(parse(&[]).expect("parses"), Mapping::preset(Preset::Mall));
    }

    #[test]
    fn overrides_apply_over_the_preset() {
        let mapping = parse(&[
            "--preset=debezium",
            "--map-key=tenant_id",
            "--map-topic-template=${tenant}.${aggregatetype}",
            "--map-default-topic=outbox.unrouted",
            "--header-column=eventType=type",
            "--static-header=producer=billing",
        ])
        .expect("parses");
        assert_eq!(mapping.key, "tenant_id");
        assert_eq!(
            mapping.topic,
            Topic::Template {
                parts: vec![
                    Part::Column("tenant".into()),
                    Part::Text(".".into()),
                    Part::Column("aggregatetype".into())
                ],
                default: Some("outbox.unrouted".into()),
            }
        );
        let names: Vec<&str> = mapping.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["id", "eventType", "producer"]);
        let bare = parse(&["--preset=debezium", "--no-preset-headers"]).expect("parses");
        assert!(bare.headers.is_empty());
    }

    #[test]
    fn bad_names_are_refused_by_flag() {
        for (flag, named) in [
            ("--map-key=aggregate id", "--map-key"),
            ("--map-topic-template=outbox.${", "--map-topic-template"),
            ("--map-default-topic=no spaces", "--map-default-topic"),
            ("--header-column=a=B", "--header-column"),
            ("--header-column=novalue", "--header-column"),
            ("--static-header=x=a\nb", "--static-header"),
        ] {
            let refused = parse(&[flag]).expect_err(flag);
            assert!(refused.to_string().contains(named), "{flag}: {refused}");
        }
        assert!(parse(&["--map-topic=t", "--map-topic-template=x.${t}"]).is_err());
    }
}
