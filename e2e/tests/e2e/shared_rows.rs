//! Runs that share rows never deadlock. The inventory consumer applies a
//! partition's waiting records in one transaction; records of one run
//! reserve stock of several products, and runs of other partitions want
//! the same products in another order. Each run locks its products in
//! ascending id order before applying any record
//! (`EventHandler::lock_shared_rows`), so no run waits for another in a
//! cycle: a deadlock would cost the run a second and a retry, which the
//! consumer counts (`db_retries`).

use futures::StreamExt;
use mall_e2e::spawn_mall;
use mall_proto::order::v1::OrderStatus;
use platform_service::consumer::Stats;

/// Orders in the burst, spread over the products.
const ORDERS: i64 = 600;
const PRODUCTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_reserving_many_products_in_any_order_never_deadlock() {
    let mall = spawn_mall().await;
    let mut products = Vec::new();
    for n in 0..PRODUCTS {
        products.push(mall.product(&format!("P{n}"), 1_000_000).await);
    }
    // All at once, so every partition's consumer has long runs mixing the
    // products in orders of their own.
    let ids: Vec<i64> = futures::stream::iter(0..ORDERS as usize)
        .map(|n| {
            let (mall, product) = (&mall, &products[(n * 7 + n / PRODUCTS) % PRODUCTS]);
            async move { mall.place(product, 1, "Seoul").await.id }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for id in &ids {
        assert_eq!(mall.settled(*id).await.status(), OrderStatus::Approved);
    }
    let retries = mall.inventory_node.total(|stats: &Stats| &stats.db_retries);
    assert_eq!(
        retries, 0,
        "the inventory consumer retried {retries} runs (deadlocks between runs)"
    );
    let taken: i64 = {
        let mut taken = 0;
        for product in &products {
            taken += 1_000_000 - mall.stock(product.id).await;
        }
        taken
    };
    assert_eq!(taken, ORDERS);
    mall.assert_invariants(
        &products
            .iter()
            .map(|p| (p.id, 1_000_000))
            .collect::<Vec<_>>(),
    )
    .await;
    mall.stop().await;
}
