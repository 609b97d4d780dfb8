//! One `PlaceOrder` yields one trace with spans from all three services and
//! the relays, in the saga's parent order, exported over OTLP to a small
//! receiver running in this test. Its own test binary: the tracer provider
//! is process-wide.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Duration;

use mall_e2e::kafka::read_topic;
use mall_e2e::mall::{PARTITIONS, SETTLE_DEADLINE};
use mall_e2e::{spawn_mall, wait_for};
use mall_proto::order::v1::{OrderStatus, PlaceOrderRequest};
use mall_saga::Service;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_stream::wrappers::TcpListenerStream;

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    scope: String,
    name: String,
    state: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
}

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        for resource in request.into_inner().resource_spans {
            for scoped in resource.scope_spans {
                let scope = scoped.scope.map(|s| s.name).unwrap_or_default();
                for span in scoped.spans {
                    spans.push(Got {
                        scope: scope.clone(),
                        name: span.name,
                        state: span.trace_state,
                        trace: span.trace_id,
                        id: span.span_id,
                        parent: span.parent_span_id,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The span of `trace` named `name` whose parent is `parent`.
fn child<'a>(spans: &'a [Got], parent: &Got, name: &str) -> Option<&'a Got> {
    spans
        .iter()
        .find(|s| s.name == name && s.parent == parent.id && s.trace == parent.trace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_place_order_is_one_trace_across_services_and_relays() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let traces = platform_service::traces::install(&format!("http://{addr}"))
        .expect("the exporter installs");

    let mall = spawn_mall().await;
    let tv = mall.product("TV", 5).await;
    let order = mall.place(&tv, 1, "Seoul").await;
    assert_eq!(mall.settled(order.id).await.status(), OrderStatus::Approved);
    mall.quiesce().await;

    // The chain of the happy path, each span the parent of the next.
    let chain = [
        ("order", "mall.order.v1.OrderService/PlaceOrder"),
        ("outbox-relay", "publish mall.order.v1.OrderCreated"),
        ("delivery", "consume mall.order.v1.OrderCreated"),
        ("outbox-relay", "publish mall.delivery.v1.DeliveryStarted"),
        ("inventory", "consume mall.delivery.v1.DeliveryStarted"),
        ("outbox-relay", "publish mall.inventory.v1.StockDecreased"),
        ("order", "consume mall.inventory.v1.StockDecreased"),
        ("outbox-relay", "publish mall.order.v1.OrderApproved"),
    ];
    // The batch exporter sends every few seconds; wait until it has.
    let found = wait_for("the whole saga's spans", SETTLE_DEADLINE, || {
        let spans = receiver
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        async move {
            let root = spans
                .iter()
                .find(|s| s.name == chain[0].1 && s.parent.is_empty())?;
            let mut linked = vec![root.clone()];
            for (_, name) in &chain[1..] {
                let next = child(&spans, linked.last()?, name)?.clone();
                linked.push(next);
            }
            Some((linked, spans))
        }
    })
    .await;
    let (linked, spans) = found;
    for ((scope, name), span) in chain.iter().zip(&linked) {
        assert_eq!(&span.scope, scope, "{name} comes from {scope}");
    }
    // Every relay hop also shows the wait in the outbox, beside the publish.
    for (index, (_, name)) in chain.iter().enumerate() {
        if name.starts_with("publish") {
            let producer = &linked[index - 1];
            assert!(
                child(&spans, producer, "outbox.wait").is_some(),
                "an outbox.wait span under {}",
                producer.name
            );
        }
    }
    let trace = &linked[0].trace;
    let in_trace: Vec<&Got> = spans.iter().filter(|s| &s.trace == trace).collect();
    let scopes: HashSet<&str> = in_trace.iter().map(|s| s.scope.as_str()).collect();
    for scope in ["order", "delivery", "inventory", "outbox-relay"] {
        assert!(scopes.contains(scope), "{scope} in {scopes:?}");
    }
    let ids: HashMap<&[u8], &Got> = in_trace.iter().map(|s| (s.id.as_slice(), *s)).collect();
    for span in &in_trace {
        assert!(
            span.parent.is_empty() || ids.contains_key(span.parent.as_slice()),
            "{} has its parent in the trace",
            span.name
        );
    }

    // A caller's own trace context is continued, and its tracestate travels
    // through the outbox and the topics with it.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(PlaceOrderRequest {
        customer_id: 7,
        product_id: tv.id,
        product_name: "TV".into(),
        qty: 1,
        address: "Seoul".into(),
        request_id: String::new(),
    });
    let metadata = request.metadata_mut();
    metadata.insert(
        "traceparent",
        format!("00-{caller_trace}-00f067aa0ba902b7-01")
            .parse()
            .expect("header"),
    );
    metadata.insert("tracestate", "vendor=abc".parse().expect("header"));
    let second = mall
        .order
        .clone()
        .place_order(request)
        .await
        .expect("placed")
        .into_inner();
    assert_eq!(
        mall.settled(second.id).await.status(),
        OrderStatus::Approved
    );
    mall.quiesce().await;
    let started = read_topic(
        &mall.brokers,
        &mall.topics.events_of(Service::Delivery),
        PARTITIONS,
        2,
        Duration::from_secs(30),
    )
    .await
    .into_iter()
    .find(|r| r.key_str() == second.id.to_string())
    .expect("the second order's DeliveryStarted");
    assert_eq!(started.header("tracestate"), Some("vendor=abc"));
    assert!(
        started
            .header("traceparent")
            .is_some_and(|p| p.contains(caller_trace)),
        "{:?}",
        started.header("traceparent")
    );
    let caller_id = hex(caller_trace);
    wait_for("the caller's trace to arrive", SETTLE_DEADLINE, || {
        let spans = receiver
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let caller_id = caller_id.clone();
        async move {
            spans
                .iter()
                .any(|s| {
                    s.trace == caller_id
                        && s.name == "consume mall.delivery.v1.DeliveryStarted"
                        && s.state == "vendor=abc"
                })
                .then_some(())
        }
    })
    .await;
    mall.stop().await;
    // Shutting the exporter down blocks; not on a runtime worker.
    tokio::task::spawn_blocking(move || drop(traces))
        .await
        .expect("exporter shut down");
}
