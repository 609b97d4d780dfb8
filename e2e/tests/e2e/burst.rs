//! A burst with heavy reads never wedges the saga: orders placed open-loop
//! while clients poll every pending order as fast as they can, which is what
//! used to cost consumers their group sessions. Every order settles.
//!
//! A call the order service sheds with UNAVAILABLE (its pool checkout timed
//! out while the machine was busy) is retried with the same request id, as
//! the API asks clients to; the retry is idempotent, so every order is still
//! placed exactly once, which the invariants check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use backon::Retryable;
use mall_e2e::spawn_mall;
use mall_proto::order::v1::{GetOrderRequest, OrderStatus, PlaceOrderRequest};
use platform_service::retry;
use tokio::sync::Mutex;
use tonic::Code;

const ORDERS: usize = 1_000;
const RATE_PER_SEC: u64 = 100;
const READERS: usize = 4;
/// How long one order may keep being shed before the test gives up.
const SHED_FOR_AT_MOST: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_with_heavy_reads_settles_every_order() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 1_000_000).await;
    let pending: Arc<Mutex<Vec<i64>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..READERS)
        .map(|n| {
            let (mut client, pending, done) =
                (mall.order.clone(), Arc::clone(&pending), Arc::clone(&done));
            tokio::spawn(async move {
                let mut reads = 0_u64;
                while !done.load(Ordering::Relaxed) {
                    let ids: Vec<i64> = pending
                        .lock()
                        .await
                        .iter()
                        .skip(n)
                        .step_by(READERS)
                        .copied()
                        .collect();
                    if ids.is_empty() {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    for id in ids {
                        let order = client.get_order(GetOrderRequest { id }).await;
                        reads += 1;
                        if order.is_ok_and(|o| o.into_inner().status() != OrderStatus::Pending) {
                            pending.lock().await.retain(|p| *p != id);
                        }
                    }
                }
                reads
            })
        })
        .collect();

    let shed = Arc::new(AtomicU64::new(0));
    let mut ticker = tokio::time::interval(Duration::from_millis(1_000 / RATE_PER_SEC));
    let mut placing = Vec::with_capacity(ORDERS);
    for _ in 0..ORDERS {
        ticker.tick().await;
        let (client, pending, shed) = (mall.order.clone(), Arc::clone(&pending), Arc::clone(&shed));
        let request = PlaceOrderRequest {
            customer_id: 7,
            product_id: tv.id,
            product_name: tv.product_name.clone(),
            qty: 1,
            address: "Seoul".into(),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        placing.push(tokio::spawn(async move {
            let order = (|| {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.place_order(request).await }
            })
            .retry(retry::for_at_most(SHED_FOR_AT_MOST))
            .when(|status| status.code() == Code::Unavailable)
            .notify(|_, _| {
                shed.fetch_add(1, Ordering::Relaxed);
            })
            .await
            .expect("place order")
            .into_inner();
            pending.lock().await.push(order.id);
            order.id
        }));
    }
    let mut ids = Vec::with_capacity(ORDERS);
    for task in placing {
        ids.push(task.await.expect("placed"));
    }
    for id in &ids {
        assert_eq!(mall.settled(*id).await.status(), OrderStatus::Approved);
    }
    done.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("reader");
    }
    assert!(reads > 0, "the readers really read");
    eprintln!(
        "{ORDERS} orders placed, {} calls shed with UNAVAILABLE and retried",
        shed.load(Ordering::Relaxed)
    );
    mall.quiesce().await;
    assert_eq!(mall.dead_lettered(), 0);
    mall.assert_invariants(&[(tv.id, 1_000_000)]).await;
    mall.stop().await;
}
