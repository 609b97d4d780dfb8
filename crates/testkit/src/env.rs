//! What every test and tool of the kit needs from its surroundings: the
//! variables `scripts/test.sh` sets, a bounded wait, unique names, and
//! outside programs run to completion.

use std::time::{Duration, Instant};

/// Reads a required variable, failing with instructions if it is missing:
/// a test that cannot reach its infrastructure fails loudly.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the test suite with scripts/test.sh, which starts PostgreSQL and Apache Kafka and sets it")
    })
}

/// Polls `check` until it yields a value, failing with `what` once
/// `deadline` has passed. A liveness bound, not a speed check.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_keep_their_prefix_and_differ() {
        let (a, b) = (unique_name("t"), unique_name("t"));
        assert!(a.starts_with('t') && a.len() == 13, "{a}");
        assert_ne!(a, b);
    }
}
