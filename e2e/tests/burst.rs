//! A burst with heavy reads never wedges the saga: orders placed open-loop
//! while clients poll every pending order as fast as they can, which is what
//! used to cost consumers their group sessions. Every order settles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mall_e2e::spawn_mall;
use mall_proto::order::v1::{GetOrderRequest, OrderStatus};
use tokio::sync::Mutex;

const ORDERS: usize = 1_000;
const RATE_PER_SEC: u64 = 100;
const READERS: usize = 4;

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

    let mut ticker = tokio::time::interval(Duration::from_millis(1_000 / RATE_PER_SEC));
    let mut placing = Vec::with_capacity(ORDERS);
    for _ in 0..ORDERS {
        ticker.tick().await;
        let (mall_order, pending, product) = (mall.order.clone(), Arc::clone(&pending), tv.clone());
        placing.push(tokio::spawn(async move {
            let mut client = mall_order;
            let order = client
                .place_order(mall_proto::order::v1::PlaceOrderRequest {
                    customer_id: 7,
                    product_id: product.id,
                    product_name: product.product_name.clone(),
                    qty: 1,
                    address: "Seoul".into(),
                    request_id: uuid::Uuid::new_v4().to_string(),
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
    mall.quiesce().await;
    assert_eq!(mall.dead_lettered(), 0);
    mall.assert_invariants(&[(tv.id, 1_000_000)]).await;
    mall.stop().await;
}
