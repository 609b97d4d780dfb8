//! One-time tracing set-up, so every binary logs the same way.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global tracing subscriber.
///
/// `RUST_LOG` picks the levels (default `info`), and `LOG_FORMAT=json` switches
/// to one JSON object per line for log shippers. Calling it twice is harmless,
/// which lets tests start several services in one process.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,h2=warn,tower=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let ansi = std::io::stdout().is_terminal();
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
