//! Two replicas of every service and every relay: consumer groups share the
//! partitions, one relay per database stands by, and the invariants hold.

use mall_e2e::spawn_mall;
use mall_proto::order::v1::CancelOrderRequest;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_of_everything_keep_the_invariants() {
    let mut mall = spawn_mall().await;
    mall.add_replicas().await;
    let tv = mall.product("TV", 400).await;
    let radio = mall.product("RADIO", 6).await;

    // Keep placing small orders until every replica's consumer got a share of
    // the partitions, so the rest runs across a settled group of two.
    let all_consuming = || {
        [&mall.order_node, &mall.delivery_node, &mall.inventory_node]
            .iter()
            .flat_map(|node| node.all_stats.iter())
            .all(|stats| stats.applied.get() > 0)
    };
    mall.eventually("both replicas of every service to consume", || async {
        if all_consuming() {
            return Some(());
        }
        mall.place(&tv, 1, "Seoul").await;
        None
    })
    .await;

    let mut ids = Vec::new();
    for n in 0..40_i64 {
        let product = if n % 2 == 0 { &tv } else { &radio };
        let address = if n % 9 == 4 { "" } else { "Seoul" };
        ids.push(mall.place(product, 1 + n % 3, address).await.id);
    }
    // Customers cancel some orders at whatever point of the saga they are.
    for id in ids.iter().step_by(4) {
        match mall
            .order
            .clone()
            .cancel_order(CancelOrderRequest {
                id: *id,
                request_id: String::new(),
            })
            .await
        {
            Ok(_) => {}
            Err(status) if status.code() == Code::FailedPrecondition => {}
            Err(status) => panic!("cancel {id} failed: {status}"),
        }
    }
    for id in &ids {
        mall.settled(*id).await;
    }
    mall.quiesce().await;
    mall.assert_invariants(&[(tv.id, 400), (radio.id, 6)]).await;

    mall.stop().await;
}
