//! P1: the write path. `PlaceOrder` through gRPC with 16 clients, against
//! `pgbench` running the same transaction the handler runs (order insert and
//! outbox insert) with as many clients on the same database.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::fleet::{Fleet, Scope};
use crate::load;

/// The handler's transaction (order insert `RETURNING`, outbox insert), for pgbench.
pub const PLACE_ORDER_SQL: &str = "\\set cid random(1, 1000)
BEGIN;
INSERT INTO orders (customer_id, product_id, product_name, qty, address, status) \
VALUES (:cid, 1, 'TV', 1, 'Seoul', 'PENDING') \
RETURNING id, customer_id, product_id, product_name, qty, address, status, reason, created_at, updated_at;
INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload, traceparent, tracestate) \
VALUES (gen_random_uuid(), 'bench.order.events', currval('orders_id_seq')::text, 'mall.order.v1.OrderCreated', \
'/mall/order', currval('orders_id_seq')::text, '\\x080110011801220254562801320553656f756c'::bytea, NULL, NULL);
END;
";

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
        PLACE_ORDER_SQL,
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
