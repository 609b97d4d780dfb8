//! Reading a metrics endpoint as Prometheus would: over HTTP, checked by
//! `promtool`, one sample at a time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` at `addr` over HTTP/1.0: the status code, the head and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot reach {addr}: {e}"));
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response from {addr}: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line from {addr}: {head}"));
    (status, head.to_owned(), body.to_owned())
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

/// One sample: metric name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_total`, `_count`, … as exposed).
    pub name: String,
    /// Label pairs.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Every sample of an exposition in the text format.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        labels.insert(
            key.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        );
        rest = &after[end + 1..];
    }
    labels
}

/// The value of the one sample named `name` whose labels include `labels`;
/// 0 when there is none (a counter not yet touched), and a failure when
/// several match.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<Sample> = samples(text)
        .into_iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        found.len() <= 1,
        "several samples match {name} {labels:?}: {found:?}"
    );
    found.first().map_or(0.0, |s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_and_without_labels() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"b\"} 3\nb 2.5\n";
        assert_eq!(value(text, "a_total", &[("x", "1")]), 3.0);
        assert_eq!(value(text, "b", &[]), 2.5);
        assert_eq!(value(text, "a_total", &[("x", "2")]), 0.0);
    }
}
