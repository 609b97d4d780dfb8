//! Reading a metrics endpoint as Prometheus would: over HTTP, checked by
//! `promtool`, one sample at a time.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use mall_testkit::scrape;
use tokio::io::AsyncWriteExt;

pub use mall_testkit::scrape::{Sample, samples};

/// `GET path` at `addr`: the status code, the head and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let response = scrape::get(addr, path, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("GET {path} at {addr} failed: {e}"));
    (response.status, response.head, response.body)
}

/// The body of `GET /metrics` at `addr`; fails the test on anything but 200.
pub async fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// Runs `promtool check metrics` on `text`; fails the test with promtool's
/// findings (format errors and lint problems alike) unless it is clean.
/// `MALL_PROMTOOL` names the binary (default `promtool`, which
/// `scripts/test.sh` installs).
pub async fn promtool_check(text: &str, what: &str) {
    let binary = std::env::var("MALL_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let mut child = tokio::process::Command::new(&binary)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {binary}: {e}; run the tests with scripts/test.sh, which installs it"
            )
        });
    let mut stdin = child.stdin.take().expect("promtool stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("feed promtool");
    drop(stdin);
    let output = child.wait_with_output().await.expect("promtool output");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && findings.trim().is_empty(),
        "promtool rejects the metrics of {what}:\n{findings}\n--- metrics ---\n{text}"
    );
}

/// The value of the one sample named `name` whose labels include `labels`;
/// 0 when there is none (a counter not yet touched), and a failure when
/// several match.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<Sample> = samples(text)
        .into_iter()
        .filter(|s| s.matches(name, labels))
        .collect();
    assert!(
        found.len() <= 1,
        "several samples match {name} {labels:?}: {found:?}"
    );
    found.first().map_or(0.0, |s| s.value)
}
