//! No caller can flood a service: calls to paths it never declared cannot
//! add metric series (so neither `/metrics` nor memory grows with them).

#![allow(clippy::print_stdout)]

use std::time::Duration;

use std::collections::BTreeSet;

use mall_e2e::scrape::scrape;
use mall_e2e::spawn_mall;
use tonic::codegen::http::uri::PathAndQuery;

/// This process's resident set, in KiB (the services run in it).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The `grpc_method` label values of the gRPC metrics in `text`.
fn methods(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| line.starts_with("grpc_server_"))
        .filter_map(|line| line.split("grpc_method=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_random_paths_add_no_metric_series() {
    let mall = spawn_mall().await;
    let metrics = mall.order_node.metrics[0];
    let channel = mall_testkit::clients::connect(mall.order_node.addr).await;
    let call = |path: String| {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready().await.expect("ready");
            let sent: Result<tonic::Response<()>, tonic::Status> = grpc
                .unary(
                    tonic::Request::new(()),
                    PathAndQuery::try_from(path).expect("a path"),
                    tonic_prost::ProstCodec::default(),
                )
                .await;
            sent.expect_err("no such method").code()
        }
    };
    // One round first, so every series an unknown call makes exists.
    let padding = "a".repeat(4_000);
    assert_eq!(
        call(format!("/x{padding}0/m0")).await,
        tonic::Code::Unimplemented
    );
    let before = scrape(metrics).await;
    let rss_before = rss_kib();
    for round in 0..100 {
        let calls = (0..30).map(|n| call(format!("/x{padding}{round}x{n}/m{round}x{n}")));
        for code in futures::future::join_all(calls).await {
            assert_eq!(code, tonic::Code::Unimplemented);
        }
    }
    let after = scrape(metrics).await;
    let grown_kib = rss_kib().saturating_sub(rss_before);
    println!(
        "3,000 calls to random 4 KB paths: /metrics {} -> {} bytes, RSS +{grown_kib} KiB",
        before.len(),
        after.len()
    );
    assert_eq!(methods(&after), methods(&before), "no new method label");
    assert!(methods(&after).contains("unknown"));
    assert!(!after.contains(&padding[..100]), "no path is echoed");
    assert!(
        after.len() < before.len() + 4_096,
        "/metrics stays the same size: {} -> {} bytes",
        before.len(),
        after.len()
    );
    // Without the fix the label values alone are 24 MB; with it the calls
    // leave nothing behind but what a tonic connection may keep around.
    assert!(grown_kib < 16 * 1024, "RSS grew {grown_kib} KiB");
    mall.stop().await;
}

/// A request body that announces a message of `announced` bytes and then
/// trickles zeros, slowly, for as long as the server reads.
fn trickle(announced: u32) -> tonic::body::Body {
    use http_body::Frame;
    let head = {
        let mut head = vec![0_u8];
        head.extend_from_slice(&announced.to_be_bytes());
        bytes::Bytes::from(head)
    };
    let frames = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::convert::Infallible>(Frame::data(head)) }),
        futures::stream::unfold((), |()| async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            Some((
                Ok(Frame::data(bytes::Bytes::from(vec![0_u8; 16 * 1024]))),
                (),
            ))
        }),
    );
    tonic::body::Body::new(http_body_util::StreamBody::new(frames))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_slow_large_health_calls_and_idle_connections_stay_bounded() {
    use futures::StreamExt as _;
    use tower::Service as _;

    let mall = mall_e2e::spawn_mall_with(|args| args.grpc_max_connections = 256).await;
    let addr = mall.order_node.addr;
    let rss_before = rss_kib();

    // 150 health calls announcing 4 MiB each, sent slowly: refused at
    // their first five bytes, so nothing is buffered.
    let channel = mall_testkit::clients::connect(addr).await;
    let calls = (0..150).map(|_| {
        let mut channel = channel.clone();
        async move {
            let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(trickle(4 * 1024 * 1024))
                .expect("request");
            let response = tower::ServiceExt::ready(&mut channel)
                .await
                .expect("ready")
                .call(request)
                .await
                .expect("an answer");
            let status = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match status {
                Some(code) => code,
                None => {
                    let trailers = http_body_util::BodyExt::collect(response.into_body())
                        .await
                        .expect("a body")
                        .trailers()
                        .and_then(|t| {
                            t.get("grpc-status")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        });
                    trailers.unwrap_or_default()
                }
            }
        }
    });
    let codes = futures::future::join_all(calls).await;
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    let exhausted = (tonic::Code::ResourceExhausted as i32).to_string();
    assert!(
        codes.iter().all(|c| *c == out_of_range || *c == exhausted),
        "each is refused (too large, or past health's own places): {codes:?}"
    );
    assert!(codes.contains(&out_of_range));

    // 1,000 connections that never say a word: at most 256 are admitted,
    // each closed 10 s after it connected; memory stays bounded, and a
    // normal call still gets through.
    let mut idle = Vec::new();
    for _ in 0..1_000 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let placed = tokio::spawn({
        let mut orders = mall.order.clone();
        async move {
            orders
                .get_order(mall_proto::order::v1::GetOrderRequest { id: 424_242 })
                .await
        }
    });
    let tv = mall.product("TV", 3).await;
    let order = mall.place(&tv, 1, "Seoul").await;
    assert_eq!(
        placed
            .await
            .expect("joined")
            .expect_err("no such order")
            .code(),
        tonic::Code::NotFound,
        "a normal call is answered during the flood"
    );
    assert_eq!(
        mall.settled(order.id).await.status(),
        mall_proto::order::v1::OrderStatus::Approved
    );
    // The idle ones the server admitted first are closed by it: past the
    // server's own HTTP/2 settings, each read ends.
    let closed = futures::stream::iter(idle.iter_mut().take(100))
        .filter_map(|stream| async move {
            use tokio::io::AsyncReadExt;
            let mut sent = Vec::new();
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                stream.read_to_end(&mut sent),
            )
            .await;
            read.is_ok().then_some(())
        })
        .count()
        .await;
    assert_eq!(closed, 100, "silent connections are closed by the server");
    let grown_kib = rss_kib().saturating_sub(rss_before);
    println!("slow 4 MiB health calls and 1,000 idle connections: RSS +{grown_kib} KiB");
    assert!(grown_kib < 64 * 1024, "RSS grew {grown_kib} KiB");
    drop(idle);
    mall.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_lock_under_heavy_api_load_leaves_health_serving() {
    use mall_proto::order::v1::{GetOrderRequest, ListOrdersRequest};
    use tonic_health::pb::health_check_response::ServingStatus;

    let mall = mall_e2e::spawn_mall_with(|args| {
        args.observability.health_unavailable_after = Duration::from_secs(2);
        args.db_pool_timeout = Duration::from_millis(1_000);
    })
    .await;
    let tv = mall.product("TV", 10).await;
    let order = mall.place(&tv, 1, "Seoul").await;
    mall.settled(order.id).await;
    // A long lock on orders (a migration, an analyst's session) ...
    let mut holder = mall_e2e::postgres::connect(&mall.order_node.database_url).await;
    let lock = holder.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    // ... and many callers reading orders: every API connection waits.
    let stop = tokio_util::sync::CancellationToken::new();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut callers = Vec::new();
    for n in 0..24 {
        let (mut orders, stop, refused) = (mall.order.clone(), stop.clone(), refused.clone());
        callers.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let answer = if n % 2 == 0 {
                    orders.get_order(GetOrderRequest { id: 1 }).await.map(drop)
                } else {
                    orders
                        .list_orders(ListOrdersRequest::default())
                        .await
                        .map(drop)
                };
                if let Err(status) = answer
                    && status.code() == tonic::Code::Unavailable
                {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    mall_e2e::wait_for(
        "the API pool to run dry",
        std::time::Duration::from_secs(60),
        || async { (refused.load(std::sync::atomic::Ordering::Relaxed) > 10).then_some(()) },
    )
    .await;
    // Three times the health threshold, checked every half second.
    let addr = mall.order_node.addr;
    for _ in 0..12 {
        assert_eq!(
            mall_e2e::mall::health(addr, "").await,
            ServingStatus::Serving,
            "PostgreSQL answers the probe on its own connection"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    stop.cancel();
    lock.rollback().await.expect("release");
    for caller in callers {
        caller.await.expect("caller");
    }
    assert_eq!(mall.get_order(order.id).await.id, order.id);
    mall.stop().await;
}
