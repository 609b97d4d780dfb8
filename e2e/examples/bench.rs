//! Throughput figures for the relay and the whole saga, on real PostgreSQL
//! and a real broker. Run it with `scripts/bench.sh`; it prints figures and
//! asserts nothing about speed.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mall_e2e::mall::{brokers, relay_config};
use mall_e2e::{postgres, spawn_mall};
use mall_proto::order::v1::OrderStatus;
use outbox_relay::Relay;
use tokio_util::sync::CancellationToken;

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Rows per second the relay publishes from a pre-filled outbox.
async fn relay(rows: u64, batch_size: i64) {
    let (url, topic) = mall_e2e::outbox::outbox_database("bench").await;
    postgres::connect(&url)
        .await
        .execute(
            "INSERT INTO outbox (event_id, topic, msg_key, event_type, source, subject, payload) \
             SELECT gen_random_uuid(), $1, (i % 1000)::text, 'bench.Event', '/bench', (i % 1000)::text, \
                    convert_to(repeat('x', 100), 'UTF8') \
             FROM generate_series(1, $2::bigint) AS i",
            &[&topic, &(rows as i64)],
        )
        .await
        .unwrap();
    let mut config = relay_config(&url, &brokers());
    config.batch_size = batch_size;
    let relay = Relay::new(config).unwrap();
    let stats = relay.stats();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    tokio::spawn(relay.run(shutdown.child_token()));
    while stats.published.get() < rows {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    println!(
        "relay   batch {batch_size:>4}: {rows:>6} rows in {secs:>6.2} s = {:>8.0} rows/s",
        rows as f64 / secs
    );
}

/// Orders per second through the whole saga, placed by concurrent clients.
async fn saga(orders: u64, clients: u64) {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 1_000_000).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, tv) = (mall.order.clone(), tv.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..orders / clients {
                let request = mall_proto::order::v1::PlaceOrderRequest {
                    customer_id: 1,
                    product_id: tv.id,
                    product_name: tv.product_name.clone(),
                    qty: 1,
                    address: "Seoul".into(),
                    request_id: String::new(),
                };
                client.clone().place_order(request).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let placed_secs = started.elapsed().as_secs_f64();
    let placed = (orders / clients) * clients;
    loop {
        let settled = mall
            .all_orders()
            .await
            .iter()
            .filter(|o| o.status() != OrderStatus::Pending)
            .count() as u64;
        if settled == placed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "saga    {clients:>2} clients: {placed:>6} orders placed in {placed_secs:>6.2} s, all approved after {secs:>6.2} s = {:>6.0} orders/s end to end",
        placed as f64 / secs
    );
    mall.stop().await;
}

#[tokio::main]
async fn main() {
    let rows = number("BENCH_RELAY_ROWS", 20_000);
    let orders = number("BENCH_ORDERS", 1_000);
    println!("12st Mall benchmark (figures only; nothing is asserted)");
    relay(rows / 20, 1).await;
    relay(rows, 100).await;
    relay(rows, 500).await;
    saga(orders, 1).await;
    saga(orders, 16).await;
}
