//! The customers: many of them, placing and sometimes cancelling orders
//! against whichever order replica they reach, like real gRPC clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_proto::order::v1::{CancelOrderRequest, PlaceOrderRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A product id no inventory has: its orders must be rejected, not stuck.
pub const UNKNOWN_PRODUCT: i64 = 9_000_000_000;

/// One planned order, drawn from the seed before the run starts.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Customer.
    pub customer_id: i64,
    /// Product (maybe [`UNKNOWN_PRODUCT`]).
    pub product_id: i64,
    /// Its name.
    pub product_name: String,
    /// Quantity.
    pub qty: i64,
    /// Blank addresses make the delivery fail.
    pub address: String,
    /// Cancel this long after placing, if at all.
    pub cancel_after: Option<Duration>,
    /// The idempotency key every attempt of this order's calls carries, so a
    /// retry after an unknown outcome never creates a second order.
    pub request_id: String,
}

/// Draws the order mix: random customers, products and quantities, some
/// blank addresses, a few unknown products and some cancellations.
pub fn plan(rng: &mut StdRng, count: usize, products: &[(i64, String)]) -> Vec<Planned> {
    (0..count)
        .map(|_| {
            let (product_id, product_name) = if rng.random_bool(0.02) {
                (UNKNOWN_PRODUCT, "Ghost".to_owned())
            } else {
                products[rng.random_range(0..products.len())].clone()
            };
            Planned {
                customer_id: rng.random_range(1..=500),
                product_id,
                product_name,
                qty: rng.random_range(1..=5),
                address: if rng.random_bool(0.05) {
                    String::new()
                } else {
                    format!("{} Teheran-ro, Seoul", rng.random_range(1..=999))
                },
                cancel_after: rng
                    .random_bool(0.12)
                    .then(|| Duration::from_millis(rng.random_range(0..3_000))),
                request_id: format!("chaos-{:032x}", rng.random::<u128>()),
            }
        })
        .collect()
}

pub use mall_testkit::oracle::Outcome;

/// How a client retries a call that failed on the way: often (a replica
/// that is back should be found at once, and each attempt picks a replica
/// at random) and for about a minute, as the clients of the run always did.
fn client_retries() -> backon::ConstantBackoff {
    backon::ConstantBuilder::default()
        .with_delay(Duration::from_millis(200))
        .with_jitter()
        .with_max_times(300)
        .build()
}

/// Whether a failed call may be retried, and whether it may have taken effect.
fn classify(status: &Status) -> Option<bool> {
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
            let not_sent = status.message().contains("tcp connect error")
                || status.message().contains("Connection refused");
            Some(!not_sent)
        }
        _ => None,
    }
}

/// Places every planned order at up to `rate` per second from `clients` tasks,
/// counting finished placements in `progress`;
/// spreading calls over the order replicas and retrying on failures a
/// replica kill or a database restart causes.
pub async fn run(
    order_ports: &[u16],
    planned: Vec<Planned>,
    rate: u32,
    clients: usize,
    progress: Arc<AtomicUsize>,
) -> anyhow::Result<Outcome> {
    let stubs: Vec<OrderServiceClient<Channel>> = order_ports
        .iter()
        .map(|port| OrderServiceClient::new(mall_testkit::clients::lazy_on(*port)))
        .collect();
    let stubs = Arc::new(stubs);
    let planned = Arc::new(planned);
    let next = Arc::new(AtomicUsize::new(0));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let pace = Arc::new(Mutex::new(tokio::time::interval(
        Duration::from_secs(1) / rate.max(1),
    )));
    let mut tasks = tokio::task::JoinSet::new();
    let cancellations = Arc::new(Mutex::new(tokio::task::JoinSet::new()));
    for client in 0..clients {
        let (stubs, planned, next, outcome, pace, progress) = (
            Arc::clone(&stubs),
            Arc::clone(&planned),
            Arc::clone(&next),
            Arc::clone(&outcome),
            Arc::clone(&pace),
            Arc::clone(&progress),
        );
        let cancellations = Arc::clone(&cancellations);
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(client as u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(order) = planned.get(n) else { break };
                pace.lock().await.tick().await;
                let id = place(&stubs, order, &mut rng, &outcome).await;
                progress.fetch_add(1, Ordering::Relaxed);
                if let (Some(id), Some(delay)) = (id, order.cancel_after) {
                    let (stubs, outcome) = (Arc::clone(&stubs), Arc::clone(&outcome));
                    let request_id = format!("{}-cancel", order.request_id);
                    let cancelling = cancel(stubs, id, request_id, delay, outcome);
                    cancellations.lock().await.spawn(cancelling);
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    // The cancellations still waiting for their moment finish too.
    let mut cancellations = std::mem::take(&mut *cancellations.lock().await);
    while let Some(joined) = cancellations.join_next().await {
        joined?;
    }
    let mut outcome = outcome.lock().await;
    Ok(std::mem::take(&mut *outcome))
}

async fn place(
    stubs: &[OrderServiceClient<Channel>],
    order: &Planned,
    rng: &mut StdRng,
    outcome: &Mutex<Outcome>,
) -> Option<i64> {
    let mut delays = client_retries();
    loop {
        let mut stub = stubs[rng.random_range(0..stubs.len())].clone();
        let mut request = tonic::Request::new(PlaceOrderRequest {
            customer_id: order.customer_id,
            product_id: order.product_id,
            product_name: order.product_name.clone(),
            qty: order.qty,
            address: order.address.clone(),
            request_id: order.request_id.clone(),
        });
        request.set_timeout(Duration::from_secs(10));
        match stub.place_order(request).await {
            Ok(response) => {
                let placed = response.into_inner();
                outcome
                    .lock()
                    .await
                    .placed
                    .insert(placed.id, (placed.product_id, placed.qty));
                return Some(placed.id);
            }
            Err(status) => match (classify(&status), delays.next()) {
                (Some(maybe_applied), Some(delay)) => {
                    if maybe_applied {
                        outcome.lock().await.ambiguous += 1;
                    }
                    tokio::time::sleep(delay).await;
                }
                _ => {
                    outcome
                        .lock()
                        .await
                        .unexpected
                        .push(format!("PlaceOrder: {status}"));
                    return None;
                }
            },
        }
    }
}

async fn cancel(
    stubs: Arc<Vec<OrderServiceClient<Channel>>>,
    id: i64,
    request_id: String,
    delay: Duration,
    outcome: Arc<Mutex<Outcome>>,
) {
    tokio::time::sleep(delay).await;
    let mut delays = client_retries();
    for attempt in 0usize.. {
        let mut stub = stubs[attempt % stubs.len()].clone();
        let mut request = tonic::Request::new(CancelOrderRequest {
            id,
            request_id: request_id.clone(),
        });
        request.set_timeout(Duration::from_secs(10));
        match stub.cancel_order(request).await {
            Ok(_) => {
                outcome.lock().await.cancelled.push(id);
                return;
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                outcome.lock().await.cancel_refused += 1;
                return;
            }
            Err(status) if classify(&status).is_some() => match delays.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    let failed = format!("CancelOrder {id}: {status} (gave up retrying)");
                    outcome.lock().await.unexpected.push(failed);
                    return;
                }
            },
            Err(status) => {
                outcome
                    .lock()
                    .await
                    .unexpected
                    .push(format!("CancelOrder {id}: {status}"));
                return;
            }
        }
    }
}
