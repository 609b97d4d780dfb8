//! Every service and relay serves Prometheus metrics that `promtool`
//! accepts, and the numbers move as the mall works: orders placed, a topic
//! replayed, poison sent, all read back over HTTP.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mall_e2e::kafka::{Record, inject, producer, read_topic};
use mall_e2e::mall::{Node, PARTITIONS};
use mall_e2e::scrape::{promtool_check, samples, scrape, value};
use mall_e2e::spawn_mall;
use mall_proto::order::v1::{OrderStatus, PlaceOrderRequest};
use mall_saga::Service;
use platform_service::cloudevents as ce;

const ORDERS: usize = 4;

/// The service replica's endpoint (the first) and the relay's (the last).
fn endpoints(node: &Node) -> (SocketAddr, SocketAddr) {
    (node.metrics[0], node.metrics[node.metrics.len() - 1])
}

fn records_of(text: &str, outcome: &str) -> f64 {
    value(
        text,
        "inbox_consumer_records_total",
        &[("outcome", outcome)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_and_count_what_happened() {
    let mall = spawn_mall().await;
    let tv = mall.product("TV", 100).await;
    let mut placed = Vec::new();
    for _ in 0..ORDERS {
        placed.push(mall.place(&tv, 1, "Seoul").await);
    }
    for order in &placed {
        assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    }
    // One refused call, to see a status code other than OK.
    let refused = mall
        .order
        .clone()
        .place_order(PlaceOrderRequest {
            product_id: tv.id,
            product_name: "TV".into(),
            qty: 0,
            address: "Seoul".into(),
            ..Default::default()
        })
        .await
        .expect_err("qty 0 is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    mall.quiesce().await;

    // Every endpoint of every node passes promtool, format and lint.
    for node in [&mall.order_node, &mall.delivery_node, &mall.inventory_node] {
        assert_eq!(node.metrics.len(), 2, "a service and a relay endpoint");
        for addr in &node.metrics {
            let text = scrape(*addr).await;
            promtool_check(&text, &format!("{} at {addr}", node.service.name())).await;
        }
    }

    // gRPC, by method and code; the saga, by outcome.
    let (order_metrics, order_relay) = endpoints(&mall.order_node);
    let text = scrape(order_metrics).await;
    let place = |code| {
        value(
            &text,
            "grpc_server_handled_total",
            &[("grpc_method", "PlaceOrder"), ("grpc_code", code)],
        )
    };
    assert_eq!(place("Ok"), ORDERS as f64, "{text}");
    assert_eq!(place("InvalidArgument"), 1.0, "{text}");
    assert!(
        value(
            &text,
            "grpc_server_handling_seconds_count",
            &[("grpc_method", "PlaceOrder")]
        ) >= (ORDERS + 1) as f64
    );
    assert_eq!(
        value(
            &text,
            "saga_duration_seconds_count",
            &[("outcome", "approved")]
        ),
        ORDERS as f64
    );

    // The relay published every record on the order topic, leads, and its
    // backlog drains to nothing.
    let order_topic = mall.topics.order_events();
    let on_topic = read_topic(
        &mall.brokers,
        &order_topic,
        PARTITIONS,
        1,
        Duration::from_secs(20),
    )
    .await;
    let relay_text = scrape(order_relay).await;
    assert_eq!(
        value(&relay_text, "outbox_relay_published_rows_total", &[]),
        on_topic.len() as f64,
        "{relay_text}"
    );
    assert_eq!(
        value(
            &relay_text,
            "outbox_relay_publish_latency_seconds_count",
            &[]
        ),
        on_topic.len() as f64
    );
    assert_eq!(value(&relay_text, "outbox_relay_leader", &[]), 1.0);
    mall.eventually("the order relay to count an empty backlog", || async {
        let text = scrape(order_relay).await;
        let empty = value(&text, "outbox_unpublished_rows", &[("table", "outbox")]) == 0.0
            && value(
                &text,
                "outbox_oldest_unpublished_age_seconds",
                &[("table", "outbox")],
            ) == 0.0;
        empty.then_some(())
    })
    .await;

    // The delivery consumer: what it applied and skipped follows from the
    // topic and the declared wiring; its lag reaches 0 on every partition
    // whose lag librdkafka knows (one that never held a record has none).
    let (delivery_metrics, _) = endpoints(&mall.delivery_node);
    let handles = Service::Delivery.handles();
    let acted_on = |records: &[Record]| {
        records
            .iter()
            .filter(|r| {
                r.header(ce::TYPE)
                    .is_some_and(|t| handles.iter().any(|h| h == t))
            })
            .count() as f64
    };
    let applied = acted_on(&on_topic);
    let skipped = on_topic.len() as f64 - applied;
    let before = scrape(delivery_metrics).await;
    assert_eq!(records_of(&before, "applied"), applied, "{before}");
    assert_eq!(records_of(&before, "ignored"), skipped, "{before}");
    assert_eq!(records_of(&before, "duplicate"), 0.0);
    mall.eventually("the delivery consumer to report no lag", || async {
        let text = scrape(delivery_metrics).await;
        let lags: Vec<f64> = samples(&text)
            .into_iter()
            .filter(|s| s.name == "inbox_consumer_lag")
            .map(|s| s.value)
            .collect();
        (!lags.is_empty() && lags.iter().all(|lag| *lag == 0.0)).then_some(())
    })
    .await;

    // Replay the whole order topic: every copy of an applied type is a
    // duplicate, nothing is applied again.
    let producer = producer(&mall.brokers);
    for record in &on_topic {
        inject(&producer, &order_topic, record).await;
    }
    // And one record that is not an event at all.
    let poison = Record {
        topic: String::new(),
        partition: 0,
        offset: 0,
        key: Some(b"900101".to_vec()),
        payload: Some(b"\xff\x00garbage".to_vec()),
        headers: Vec::new(),
    };
    inject(&producer, &order_topic, &poison).await;
    mall.quiesce().await;
    let after = scrape(delivery_metrics).await;
    assert_eq!(
        records_of(&after, "applied"),
        applied,
        "nothing applied twice"
    );
    assert!(
        records_of(&after, "duplicate") >= applied && applied > 0.0,
        "{applied} replayed copies rejected: {after}"
    );
    assert_eq!(records_of(&after, "dead_lettered"), 1.0, "{after}");

    // The dashboard and the alert rules only name metrics that exist.
    let mut exported = BTreeSet::new();
    for node in [&mall.order_node, &mall.delivery_node, &mall.inventory_node] {
        for addr in &node.metrics {
            exported.extend(samples(&scrape(*addr).await).into_iter().map(|s| s.name));
        }
    }
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dashboard = std::fs::read_to_string(deploy.join("grafana/dashboards/mall.json"))
        .expect("the dashboard");
    let rules = std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).expect("the rules");
    let named = metric_names(&dashboard)
        .into_iter()
        .chain(metric_names(&rules))
        .collect::<BTreeSet<_>>();
    assert!(named.len() >= 10, "{named:?}");
    let unknown: Vec<_> = named.difference(&exported).collect();
    assert!(unknown.is_empty(), "named but never exported: {unknown:?}");
    mall.stop().await;
}

/// Every metric of ours an expression names (our prefixes only).
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| {
            ["outbox_", "inbox_", "grpc_server_", "saga_"]
                .iter()
                .any(|prefix| word.starts_with(prefix))
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_prometheus_configuration_and_alert_rules_are_valid() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/prometheus.yml");
    let binary = std::env::var("MALL_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let output = tokio::process::Command::new(&binary)
        .arg("check")
        .arg("config")
        .arg(&config)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}; scripts/test.sh installs it"));
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("1 rule files found"), "{said}");
}
