//! A relay's `GET /health` says whether it leads or stands by (200), and
//! that it is broken (503) once it has been reconnecting to its database for
//! longer than the threshold; it recovers when the database returns.

use mall_e2e::mall::{relay_config, spawn_relay_with};
use mall_e2e::scrape::get;
use mall_e2e::{postgres, spawn_mall};
use mall_proto::order::v1::OrderStatus;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_health_follows_its_role_and_its_database() {
    let mall = spawn_mall().await;
    let database = mall.order_node.database_url.clone();
    let extra = CancellationToken::new();
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        let mut config = relay_config(&database, &mall.brokers);
        config.observability.health_unavailable_after = Duration::from_secs(2);
        let (_, addr) = spawn_relay_with(config, extra.child_token()).await;
        endpoints.push(addr);
    }
    // The mall's own relay leads already, so both extra replicas stand by.
    let says = |wanted: &'static str, code: u16| {
        let endpoints = endpoints.clone();
        async move {
            for addr in endpoints {
                let (status, _, body) = get(addr, "/health").await;
                if status != code || !body.starts_with(wanted) {
                    return None;
                }
            }
            Some(())
        }
    };
    mall.eventually("both extra relays to stand by", || says("standby", 200))
        .await;

    postgres::set_reachable(&database, false).await;
    mall.eventually("both extra relays to report broken", || says("broken", 503))
        .await;
    let (_, _, body) = get(endpoints[0], "/health").await;
    assert!(body.contains("database session lost"), "{body}");

    postgres::set_reachable(&database, true).await;
    mall.eventually("the extra relays to recover", || async {
        let mut healthy = 0;
        for addr in &endpoints {
            let (status, _, body) = get(*addr, "/health").await;
            if status == 200 && (body.starts_with("leader") || body == "standby") {
                healthy += 1;
            }
        }
        (healthy == endpoints.len()).then_some(())
    })
    .await;
    // Some relay leads again: an order goes all the way through.
    let tv = mall.product("TV", 5).await;
    let order = mall.place(&tv, 1, "Seoul").await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    mall.quiesce().await;
    extra.cancel();
    mall.stop().await;
}
