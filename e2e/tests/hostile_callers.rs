//! No caller can flood a service: calls to paths it never declared cannot
//! add metric series (so neither `/metrics` nor memory grows with them).

#![allow(clippy::print_stdout)]

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
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", mall.order_node.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
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
