//! The relay under producer faults: a send that fails past every retry is
//! never overtaken by a later row of its key, and both such a timeout and a
//! fatal producer error make the leader step down and replace its producer
//! while a standby leads. Its own test binary, since failpoints are
//! process-wide.

use std::time::Duration;

use mall_e2e::mall::{brokers, relay_config};
use mall_e2e::outbox::{insert_row, outbox_database, payloads_per_key};
use mall_e2e::{postgres, wait_for};
use outbox_relay::{Relay, RelayStats};
use tokio_util::sync::CancellationToken;

const KEYS: usize = 10;
const PER_KEY: usize = 20;
const LIMIT: Duration = Duration::from_secs(120);

async fn fill(url: &str, topic: &str) {
    let client = postgres::connect(url).await;
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            insert_row(&client, topic, &format!("k{key}"), &seq.to_string()).await;
        }
    }
}

fn published(all: &[std::sync::Arc<RelayStats>]) -> u64 {
    all.iter().map(|s| s.published.get()).sum()
}

/// Every key's payloads on the topic, exactly `0..PER_KEY` once each.
async fn assert_strict_order(topic: &str) {
    let per_key = payloads_per_key(topic, KEYS * PER_KEY).await;
    assert_eq!(per_key.len(), KEYS, "every key arrived");
    let expected: Vec<String> = (0..PER_KEY).map(|n| n.to_string()).collect();
    for (key, payloads) in &per_key {
        assert_eq!(payloads, &expected, "key {key}: strictly in order, once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sends_and_a_fatal_producer_keep_strict_order() {
    let (url, topic) = outbox_database("faults").await;
    fill(&url, &topic).await;
    // Sends fail past every retry and are never written: two in the first
    // batch, two in the second; after the second the producer reports a
    // fatal error.
    fail::cfg("relay::send-fails", "2*return->7*off->2*return").expect("failpoint");
    fail::cfg("relay::producer-fatal", "1*off->1*return").expect("failpoint");

    let mut config = relay_config(&url, &brokers());
    // Larger than the number of keys, so a batch could hold several rows of one key.
    config.batch_size = 25;
    let shutdown = CancellationToken::new();
    let mut all = Vec::new();
    for _ in 0..2 {
        let relay = Relay::new(config.clone()).expect("relay");
        all.push(relay.stats());
        tokio::spawn(relay.run(shutdown.child_token()));
    }
    wait_for("every row to be published", LIMIT, || async {
        (published(&all) >= (KEYS * PER_KEY) as u64).then_some(())
    })
    .await;
    let unpublished = postgres::count(
        &url,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
    )
    .await;
    assert_eq!(unpublished, 0);
    assert_strict_order(&topic).await;
    let rebuilt: u64 = all.iter().map(|s| s.producer_rebuilt.get()).sum();
    assert_eq!(
        rebuilt, 2,
        "the producer was replaced after the batch whose sends timed out, and after the fatal error"
    );
    let elected: u64 = all.iter().map(|s| s.elected.get()).sum();
    assert!(
        elected >= 2,
        "the leader stepped down and leadership was taken again ({elected})"
    );
    shutdown.cancel();
}
