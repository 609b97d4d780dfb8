//! docs/configuration.md cannot drift from the binaries: every flag of the
//! services and of the relay (as clap declares it) has its row there, with
//! its variable and its default, and every row names a flag that exists.
//! Needs no infrastructure.

use clap::CommandFactory;
use outbox_relay::RelayConfig;
use platform_service::config::ServiceArgs;

/// One row of a table: variables, flags, the default cell.
struct Row {
    variables: Vec<String>,
    flags: Vec<String>,
    default: String,
}

/// The rows of the table under the bold heading `heading`.
fn table(heading: &str) -> Vec<Row> {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let start = page
        .find(&format!("**{heading}**"))
        .unwrap_or_else(|| panic!("no **{heading}** in docs/configuration.md"));
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    page[start..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            Row {
                variables: ticked(cells[1]),
                flags: ticked(cells[2]),
                default: cells[3].to_owned(),
            }
        })
        .collect()
}

/// Checks `command`'s arguments against the rows of `heading`.
fn check(command: &clap::Command, heading: &str) {
    let rows = table(heading);
    let mut problems = Vec::new();
    for argument in command.get_arguments() {
        let (Some(long), Some(env)) = (argument.get_long(), argument.get_env()) else {
            continue;
        };
        let (flag, variable) = (format!("--{long}"), env.to_string_lossy().into_owned());
        let Some(row) = rows.iter().find(|row| row.flags.contains(&flag)) else {
            problems.push(format!("{flag} has no row"));
            continue;
        };
        if !row.variables.contains(&variable) {
            problems.push(format!(
                "{flag} reads {variable}, its row says {:?}",
                row.variables
            ));
        }
        if let Some(default) = argument.get_default_values().first() {
            let default = default.to_string_lossy();
            let documented = default.is_empty() || row.default.contains(&format!("`{default}`"));
            if !documented {
                problems.push(format!(
                    "{flag} defaults to {default}, its row says {}",
                    row.default
                ));
            }
        }
    }
    for row in &rows {
        for flag in &row.flags {
            let known = command.get_arguments().any(|a| {
                a.get_long()
                    .is_some_and(|long| format!("--{long}") == *flag)
            });
            if !known {
                problems.push(format!("the row of {flag} names no flag of the binary"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md, {heading}:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_services_table_matches_their_flags() {
    #[derive(clap::Parser)]
    struct Service {
        #[command(flatten)]
        args: ServiceArgs,
    }
    check(
        &Service::command(),
        "order-service, delivery-service, inventory-service",
    );
}

#[test]
fn the_relay_table_matches_its_flags() {
    check(&RelayConfig::command(), "outbox-relay");
}
