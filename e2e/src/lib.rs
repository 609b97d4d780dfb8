//! Test harness: a whole mall per test, on real PostgreSQL and a real broker.
//!
//! Like zero-to-production's `spawn_app()`, every test gets its own
//! databases, its own topic prefix and consumer groups, and servers on port
//! 0, so tests run in parallel without seeing each other. The infrastructure
//! comes from `scripts/test.sh` through `MALL_TEST_POSTGRES_URL` and
//! `MALL_TEST_KAFKA_BROKERS`; without it every test fails loudly.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

pub mod kafka;
pub mod mall;
pub mod outbox;
pub mod postgres;
pub mod scrape;

pub use mall::{Mall, spawn_mall, spawn_mall_with};

/// Reads a required variable, failing the test with instructions if missing.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the test suite with scripts/test.sh, which starts PostgreSQL and Apache Kafka and sets it")
    })
}

/// Polls `check` until it yields a value, failing the test with `what` once
/// `deadline` has passed. A liveness bound, not a speed check.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs an outside tool (grpcurl, Python) to completion: whether it
/// succeeded, and what it printed on stdout and stderr together.
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A short random name, for databases, topic prefixes and groups.
pub fn unique_name(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{:012x}", n & 0xffff_ffff_ffff)
}
