//! A partitioned relay loses its leader lock within a bounded time.
//!
//! The relay leads over a connection to 127.0.0.2; then the kernel drops
//! every packet of that connection (nftables), as a real network partition
//! does. A user-space proxy would not do: it keeps both TCP sessions alive.
//! The server must notice the dead peer through the session's keepalives
//! and TCP user timeout, end the session and so free the advisory lock, and
//! the standby on 127.0.0.1 must lead within `DEAD_PEER_BOUND` (plus its own
//! retry interval). PostgreSQL's defaults would take about two hours.
//! Needs root and `nft` (scripts/test.sh installs nftables).

use std::time::Duration;

use mall_e2e::mall::{brokers, relay_config};
use mall_e2e::outbox::{insert_row, outbox_database};
use mall_e2e::{postgres, unique_name, wait_for};
use mall_testkit::nft;
use outbox_relay::Relay;
use platform_service::pg::DEAD_PEER_BOUND;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);

/// Drops PostgreSQL traffic to and from one loopback address, until the
/// returned cut is dropped (healed even when the test fails).
fn black_hole(address: &str, port: u16) -> nft::Cut {
    let port = port.to_string();
    let rules = [
        vec!["ip", "daddr", address, "tcp", "dport", &port, "drop"],
        vec!["ip", "saddr", address, "tcp", "sport", &port, "drop"],
    ];
    nft::Cut::add(&unique_name("mall_partition_"), &rules)
        .unwrap_or_else(|e| panic!("cannot partition {address}:{port}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_loses_its_lock_within_the_bound() {
    let (url, topic) = outbox_database("partition").await;
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port in the test database URL");
    let far_url = url.replacen("127.0.0.1", "127.0.0.2", 1);
    assert_ne!(far_url, url.url(), "the test database URL names 127.0.0.1");
    let writer = postgres::connect(&url).await;

    let shutdown = CancellationToken::new();
    let mut config = relay_config(&far_url, &brokers());
    config.standby_retry = Duration::from_millis(500);
    let far = Relay::new(config.clone()).expect("relay on 127.0.0.2");
    let far_stats = far.stats();
    tokio::spawn(far.run(shutdown.child_token()));
    wait_for("the relay on 127.0.0.2 to lead", LIMIT, || async {
        (far_stats.elected.get() > 0).then_some(())
    })
    .await;
    config.database.database_url = url.url().into();
    let near = Relay::new(config).expect("relay on 127.0.0.1");
    let near_stats = near.stats();
    tokio::spawn(near.run(shutdown.child_token()));
    insert_row(&writer, &topic, "1", "before").await;
    wait_for("the leader to publish", LIMIT, || async {
        (far_stats.published.get() >= 1).then_some(())
    })
    .await;
    assert_eq!(near_stats.elected.get(), 0, "the other one stands by");

    let hole = black_hole("127.0.0.2", port);
    insert_row(&writer, &topic, "1", "during").await;
    // The bound: the server ends the dead session (DEAD_PEER_BOUND), then the
    // standby's next try takes the lock.
    let bound = DEAD_PEER_BOUND + Duration::from_secs(2);
    wait_for("the standby to lead within the bound", bound, || async {
        (near_stats.elected.get() > 0).then_some(())
    })
    .await;
    wait_for("the new leader to publish", LIMIT, || async {
        (near_stats.published.get() >= 1).then_some(())
    })
    .await;
    drop(hole);
    let unpublished = postgres::count(
        &url,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
    )
    .await;
    assert_eq!(unpublished, 0, "nothing waits once the standby leads");
    shutdown.cancel();
}
