//! Placing orders through gRPC: closed loop (N clients, each waiting for its
//! answer) and open loop (a fixed offered rate, whatever the answers do).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mall_proto::order::v1::PlaceOrderRequest;
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::hist::Latencies;

/// An accepted order: its id and when the client had the answer (seconds
/// since the Unix epoch, comparable with PostgreSQL's clock on this host).
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// Order id.
    pub id: i64,
    /// When `PlaceOrder` returned.
    pub at: f64,
}

/// What a load run did.
#[derive(Default)]
pub struct Outcome {
    /// Orders the service accepted.
    pub accepted: Vec<Accepted>,
    /// Calls that failed (any status).
    pub failed: u64,
    /// `PlaceOrder` call latencies.
    pub calls: Latencies,
    /// Wall time from the first call to the last answer.
    pub elapsed: Duration,
}

impl Outcome {
    /// Accepted calls per second.
    pub fn rate(&self) -> f64 {
        self.accepted.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn request(product_id: i64, n: u64) -> PlaceOrderRequest {
    PlaceOrderRequest {
        customer_id: i64::try_from(n % 1000).unwrap_or(0) + 1,
        product_id,
        product_name: "TV".into(),
        qty: 1,
        address: "Seoul".into(),
        request_id: String::new(),
    }
}

/// Now, in seconds since the Unix epoch.
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

async fn place(
    mut client: OrderServiceClient<Channel>,
    product_id: i64,
    n: u64,
    outcome: &Mutex<Outcome>,
) {
    let started = Instant::now();
    let answer = client.place_order(request(product_id, n)).await;
    let took = started.elapsed();
    let mut outcome = outcome.lock().await;
    match answer {
        Ok(order) => {
            outcome.calls.record(took);
            let at = now_epoch();
            outcome.accepted.push(Accepted {
                id: order.into_inner().id,
                at,
            });
        }
        Err(_) => outcome.failed += 1,
    }
}

/// `clients` concurrent clients, each on a connection of its own, placing
/// orders back to back for `duration`.
pub async fn closed_loop(
    clients: &[OrderServiceClient<Channel>],
    product_id: i64,
    duration: Duration,
) -> Outcome {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let (client, outcome) = (client.clone(), Arc::clone(&outcome));
        tasks.push(tokio::spawn(async move {
            let mut n = c as u64;
            while started.elapsed() < duration {
                place(client.clone(), product_id, n, &outcome).await;
                n += 1;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    finish(outcome, started).await
}

/// Offers `rate` orders per second for `duration`, round-robin over
/// `clients` and over `products` (order `n` takes `products[n % len]`), each call in a task of its own (open loop: a slow answer does
/// not slow the offer).
pub async fn open_loop(
    clients: &[OrderServiceClient<Channel>],
    products: &[i64],
    rate: f64,
    duration: Duration,
) -> Outcome {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let started = Instant::now();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let index = usize::try_from(n).unwrap_or(0);
        let client = clients[index % clients.len()].clone();
        let product_id = products[index % products.len()];
        let outcome = Arc::clone(&outcome);
        tasks.push(tokio::spawn(async move {
            place(client, product_id, n, &outcome).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    finish(outcome, started).await
}

async fn finish(outcome: Arc<Mutex<Outcome>>, started: Instant) -> Outcome {
    let mut outcome = std::mem::take(&mut *outcome.lock().await);
    outcome.elapsed = started.elapsed();
    outcome
}

/// Places one order; its acceptance.
pub async fn place_one(
    client: &OrderServiceClient<Channel>,
    product_id: i64,
) -> anyhow::Result<Accepted> {
    let order = client
        .clone()
        .place_order(request(product_id, 0))
        .await?
        .into_inner();
    Ok(Accepted {
        id: order.id,
        at: now_epoch(),
    })
}
