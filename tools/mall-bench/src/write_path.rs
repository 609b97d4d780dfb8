//! P1: the write path. `PlaceOrder` through gRPC with 16 clients, against
//! `pgbench` running the statement the handler runs (order, request id and
//! outbox row in one) with as many clients on the same database.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::fleet::{Fleet, Scope};
use crate::load;

/// `PlaceOrder`'s statement for pgbench, with what the benchmark's calls
/// send (no request id, no trace) as its parameters: a random order id
/// where the handler draws one ahead from the sequence (one round trip per
/// 64 orders), and `OrderCreated`'s payload fixed. With `published`, the
/// outbox row is written marked published (P11: the relay only polls).
pub fn place_order_sql(published: bool) -> String {
    let values = [
        ":id",
        ":cid",
        "1",
        "'TV'",
        "1",
        "'Seoul'",
        "'PENDING'",
        "NULL",
        "NULL",
        "NULL",
        "NULL",
        "gen_random_uuid()",
        "'bench.order.events'",
        "'mall.order.v1.OrderCreated'",
        "'/mall/order'",
        "'\\x080110011801220254562801320553656f756c'",
        "NULL",
        "NULL",
    ];
    let [pieces @ .., last] = order_service::PLACE_ORDER_STATEMENT;
    let mut sql =
        "\\set cid random(1, 1000)\n\\set id random(1000000000, 9000000000000000000)\n".to_owned();
    for (piece, value) in pieces.iter().zip(values) {
        sql.push_str(piece);
        sql.push_str(value);
    }
    sql.push_str(last);
    sql.push_str(";\n");
    if published {
        sql = sql
            .replace(
                "traceparent, tracestate)",
                "traceparent, tracestate, published_at)",
            )
            .replace(
                "a.traceparent, a.tracestate\n",
                "a.traceparent, a.tracestate, now()\n",
            );
    }
    sql
}

/// P1's two rates, calls per second.
pub struct WritePath {
    /// `PlaceOrder` calls/s.
    pub ours: f64,
    /// Calls the figure rests on.
    pub calls: u64,
    /// pgbench transactions/s.
    pub pgbench: f64,
}

/// Runs both sides for `duration` each with `clients` clients.
pub async fn measure(
    bin_dir: &Path,
    logs: &Path,
    pgbench: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<WritePath> {
    let fleet = Fleet::start(bin_dir, logs, Scope::OrderOnly).await?;
    let connections: Vec<_> = (0..clients).map(|_| fleet.order_client()).collect();
    // Warm up: connections, prepared statements, the pool.
    load::closed_loop(&connections, 1, Duration::from_millis(500)).await;
    let run = load::closed_loop(&connections, 1, duration).await;
    if run.failed > 0 {
        bail!("{} PlaceOrder calls failed during P1", run.failed);
    }
    let baseline = run_pgbench(
        pgbench,
        &fleet.urls[0],
        &logs.join("place-order.sql"),
        &place_order_sql(false),
        clients,
        duration,
    )?;
    Ok(WritePath {
        ours: run.rate(),
        calls: run.accepted.len() as u64,
        pgbench: baseline,
    })
}

/// pgbench's transactions/s running `sql` (written to `script`) on `url`
/// with `clients` clients for `duration`.
pub fn run_pgbench(
    pgbench: &str,
    url: &str,
    script: &Path,
    sql: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    std::fs::write(script, sql)?;
    let output = std::process::Command::new(pgbench)
        .args([
            "--no-vacuum",
            "--protocol=prepared",
            &format!("--client={clients}"),
            "--jobs=2",
            &format!("--time={}", duration.as_secs().max(1)),
            &format!("--file={}", script.display()),
            url,
        ])
        .output()
        .with_context(|| format!("running {pgbench}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    tps(&text).with_context(|| format!("no tps in pgbench's output: {text}"))
}

/// The `tps = N (without initial connection time)` figure of pgbench.
fn tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find(|line| line.starts_with("tps = "))
        .and_then(|line| line.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_tps() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 3.1 ms\n\
                   initial connection time = 12.3 ms\ntps = 5123.456789 (without initial connection time)\n";
        assert_eq!(tps(out), Some(5123.456789));
        assert_eq!(tps("nothing"), None);
    }
}

#[cfg(test)]
mod statement_tests {
    use super::place_order_sql;

    #[test]
    fn pgbench_runs_the_handlers_statement_with_every_parameter_filled() {
        let sql = place_order_sql(false);
        assert!(sql.contains("WITH args AS (SELECT :id::int8 AS id, :cid::int8 AS customer_id"));
        assert!(sql.trim_end().ends_with("FROM placed;"), "{sql}");
        let published = place_order_sql(true);
        assert!(
            published.contains("tracestate, published_at)"),
            "{published}"
        );
        assert!(published.contains("a.tracestate, now()"), "{published}");
    }
}
