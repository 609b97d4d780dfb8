//! `spawn_mall()`: three services and three relays in-process, per test.

use std::sync::Arc;
use std::time::Duration;

use mall_proto::delivery::v1::delivery_service_client::DeliveryServiceClient;
use mall_proto::delivery::v1::{Delivery, GetDeliveryRequest, ListDeliveriesRequest};
use mall_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use mall_proto::inventory::v1::{
    CreateInventoryRequest, GetInventoryRequest, Inventory, ListInventoriesRequest,
};
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_proto::order::v1::{
    GetOrderRequest, ListOrdersRequest, Order, OrderStatus, PlaceOrderRequest,
};
use mall_saga::{Service, Topics};
use outbox_relay::{RelayConfig, RelayStats};
use platform_service::app::Running;
use platform_service::config::ServiceArgs;
use platform_service::consumer::Stats;
use platform_service::metrics::IntCounter;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{postgres, unique_name};
pub use mall_testkit::settings::{PARTITIONS, brokers};
use mall_testkit::{clients, oracle, quiet, settings};
use std::collections::HashMap;

/// How long a test waits for the saga to settle before it fails.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

/// One service with its database and relay, and any extra replicas of both.
pub struct Node {
    /// Which service.
    pub service: Service,
    /// Its database URL.
    pub database_url: String,
    /// The gRPC address of the first replica.
    pub addr: std::net::SocketAddr,
    /// Consumer counters of every replica.
    pub all_stats: Vec<Arc<Stats>>,
    /// Counters of every relay.
    pub all_relays: Vec<Arc<RelayStats>>,
    /// The metrics endpoint of every service replica and relay of the node.
    pub metrics: Vec<std::net::SocketAddr>,
}

impl Node {
    /// One consumer counter, summed over replicas.
    pub fn total(&self, counter: impl Fn(&Stats) -> &IntCounter) -> u64 {
        self.all_stats
            .iter()
            .map(|stats| counter(stats).get())
            .sum()
    }

    /// Rows the node's relays published, summed over replicas.
    pub fn published(&self) -> u64 {
        self.all_relays.iter().map(|r| r.published.get()).sum()
    }
}

async fn start_service(
    service: Service,
    args: &ServiceArgs,
    shutdown: CancellationToken,
) -> Running {
    match service {
        Service::Order => order_service::start(args, shutdown).await,
        Service::Delivery => delivery_service::start(args, shutdown).await,
        Service::Inventory => inventory_service::start(args, shutdown).await,
    }
    .unwrap_or_else(|e| panic!("{} service failed to start: {e}", service.name()))
}

/// A running mall.
pub struct Mall {
    /// Broker list.
    pub brokers: String,
    /// Topic names of this mall.
    pub topics: Topics,
    /// Order client.
    pub order: OrderServiceClient<Channel>,
    /// Delivery client.
    pub delivery: DeliveryServiceClient<Channel>,
    /// Inventory client.
    pub inventory: InventoryServiceClient<Channel>,
    /// Order node.
    pub order_node: Node,
    /// Delivery node.
    pub delivery_node: Node,
    /// Inventory node.
    pub inventory_node: Node,
    shutdown: CancellationToken,
    running: Vec<Running>,
    databases: Vec<postgres::TestDatabase>,
}

/// Builds the service arguments a test uses: the binary's own defaults
/// (as clap parses them, so a new setting needs no change here) under the
/// test kit's flags (their database and broker, port 0, metrics, smaller
/// pools and the test topics).
pub fn service_args(database_url: &str, brokers: &str, prefix: &str) -> ServiceArgs {
    ServiceArgs::try_from_flags(settings::service_flags(database_url, brokers, prefix))
        .unwrap_or_else(|e| panic!("the test kit's service flags parse: {e}"))
}

/// Relay settings a test uses: the relay's defaults under the test kit's
/// flags.
pub fn relay_config(database_url: &str, brokers: &str) -> RelayConfig {
    <RelayConfig as clap::Parser>::try_parse_from(settings::relay_flags(database_url, brokers))
        .unwrap_or_else(|e| panic!("the test kit's relay flags parse: {e}"))
}

/// What `grpc.health.v1.Health/Check` says about `service` (`""` for the
/// whole server) at `addr`.
pub async fn health(addr: std::net::SocketAddr, service: &str) -> ServingStatus {
    let answer = HealthClient::new(clients::connect(addr).await)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap_or_else(|e| panic!("health check of {addr} failed: {e}"))
        .into_inner();
    answer.status()
}

/// Places one order (one TV to Seoul) on a lone order service at `addr`,
/// for tests that run the service without a whole mall.
pub async fn place_at(addr: std::net::SocketAddr) -> Order {
    OrderServiceClient::new(clients::connect(addr).await)
        .place_order(PlaceOrderRequest {
            customer_id: 1,
            product_id: 1,
            product_name: "TV".into(),
            qty: 1,
            address: "Seoul".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("placing an order at {addr} failed: {e}"))
        .into_inner()
}

/// Starts a relay task for `database_url`, with its metrics served on a
/// port of its own (returned), as the binary does with `METRICS_ADDR`.
pub async fn spawn_relay(
    database_url: &str,
    brokers: &str,
    shutdown: CancellationToken,
) -> (Arc<RelayStats>, std::net::SocketAddr) {
    spawn_relay_with(relay_config(database_url, brokers), shutdown).await
}

/// [`spawn_relay`] with a configuration of the test's own, started as the
/// binary starts it (`outbox_relay::start`), its metrics and health served
/// on a port of its own.
pub async fn spawn_relay_with(
    mut config: RelayConfig,
    shutdown: CancellationToken,
) -> (Arc<RelayStats>, std::net::SocketAddr) {
    config.observability.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let running = outbox_relay::start(config, shutdown)
        .await
        .unwrap_or_else(|e| panic!("relay: {e}"));
    let addr = running.metrics_addr.expect("relay metrics address");
    let stats = Arc::clone(&running.stats);
    tokio::spawn(running.wait());
    (stats, addr)
}

/// Starts a fresh mall: three databases, a topic prefix, three services and three relays.
pub async fn spawn_mall() -> Mall {
    spawn_mall_with(|_| {}).await
}

/// [`spawn_mall`] with every service's arguments adjusted by `tune`.
pub async fn spawn_mall_with(tune: impl Fn(&mut ServiceArgs)) -> Mall {
    spawn_mall_on(brokers(), tune).await
}

/// [`spawn_mall_with`] on a broker list of the test's own (a cluster it
/// started) instead of the suite's broker.
pub async fn spawn_mall_on(brokers: String, tune: impl Fn(&mut ServiceArgs)) -> Mall {
    platform_service::telemetry::init();
    let prefix = unique_name("t");
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    let mut nodes = Vec::new();
    let mut databases = Vec::new();
    for service in Service::ALL {
        let database = postgres::create_database(&format!("{prefix}_{}", service.name())).await;
        let database_url = database.url().to_owned();
        databases.push(database);
        let mut args = service_args(&database_url, &brokers, &prefix);
        tune(&mut args);
        let started = start_service(service, &args, shutdown.child_token()).await;
        let (relay, relay_metrics) =
            spawn_relay(&database_url, &brokers, shutdown.child_token()).await;
        nodes.push(Node {
            service,
            database_url,
            addr: started.grpc_addr,
            all_stats: vec![Arc::clone(&started.stats)],
            all_relays: vec![relay],
            metrics: started
                .metrics_addr
                .into_iter()
                .chain([relay_metrics])
                .collect(),
        });
        running.push(started);
    }
    let inventory_node = nodes.pop().expect("inventory");
    let delivery_node = nodes.pop().expect("delivery");
    let order_node = nodes.pop().expect("order");
    let channel = |node: &Node| clients::lazy(node.addr);
    Mall {
        topics: Topics::new(&prefix),
        order: OrderServiceClient::new(channel(&order_node)),
        delivery: DeliveryServiceClient::new(channel(&delivery_node)),
        inventory: InventoryServiceClient::new(channel(&inventory_node)),
        brokers,
        order_node,
        delivery_node,
        inventory_node,
        shutdown,
        running,
        databases,
    }
}

impl Mall {
    /// Starts one more replica of every service and every relay, in the same
    /// consumer groups and on the same databases, so partitions are shared
    /// and one relay per database stands by.
    pub async fn add_replicas(&mut self) {
        for service in Service::ALL {
            self.add_replica(service).await;
        }
    }

    /// Starts one more replica of `service` and of its relay.
    pub async fn add_replica(&mut self, service: Service) {
        let prefix = self.topics.prefix().to_owned();
        let database_url = self.node_mut(service).database_url.clone();
        let args = service_args(&database_url, &self.brokers, &prefix);
        let started = start_service(service, &args, self.shutdown.child_token()).await;
        let node = self.node_mut(service);
        node.all_stats.push(Arc::clone(&started.stats));
        node.metrics.extend(started.metrics_addr);
        self.running.push(started);
        self.add_relay(service).await;
    }

    /// Starts one more relay on `service`'s database.
    pub async fn add_relay(&mut self, service: Service) {
        let token = self.shutdown.child_token();
        let brokers = self.brokers.clone();
        let database_url = self.node_mut(service).database_url.clone();
        let (relay, addr) = spawn_relay(&database_url, &brokers, token).await;
        let node = self.node_mut(service);
        node.all_relays.push(relay);
        node.metrics.push(addr);
    }

    fn node_mut(&mut self, service: Service) -> &mut Node {
        match service {
            Service::Order => &mut self.order_node,
            Service::Delivery => &mut self.delivery_node,
            Service::Inventory => &mut self.inventory_node,
        }
    }

    /// Every order, paging through `ListOrders`.
    pub async fn all_orders(&self) -> Vec<Order> {
        oracle::all_orders(&self.apis())
            .await
            .unwrap_or_else(|e| panic!("list orders: {e}"))
    }

    /// Clients of the three services, as the oracle reads them.
    pub fn apis(&self) -> oracle::Apis {
        oracle::Apis {
            order: self.order.clone(),
            delivery: self.delivery.clone(),
            inventory: self.inventory.clone(),
        }
    }

    /// Checks the invariants of docs/saga.md through the public APIs (the
    /// test kit's one oracle, which the fault run uses too), for products
    /// created with the given `(id, initial stock)`, and that every outbox
    /// is empty.
    pub async fn assert_invariants(&self, products: &[(i64, i64)]) {
        let apis = self.apis();
        let initial: HashMap<i64, i64> = products.iter().copied().collect();
        let mut findings = oracle::Findings::default();
        oracle::public_invariants(&apis, &initial, None, &mut findings)
            .await
            .unwrap_or_else(|e| panic!("reading the mall through its APIs: {e}"));
        assert!(findings.passed(), "invariants broken: {findings:#?}");
        for node in [&self.order_node, &self.delivery_node, &self.inventory_node] {
            assert_eq!(
                crate::outbox::unpublished(&node.database_url).await,
                0,
                "unpublished rows left"
            );
        }
    }

    /// Creates a product with `stock`.
    pub async fn product(&self, name: &str, stock: i64) -> Inventory {
        self.inventory
            .clone()
            .create_inventory(CreateInventoryRequest {
                product_name: name.into(),
                stock,
            })
            .await
            .expect("create inventory")
            .into_inner()
    }

    /// Places an order for `qty` of `product` to `address`.
    pub async fn place(&self, product: &Inventory, qty: i64, address: &str) -> Order {
        self.order
            .clone()
            .place_order(PlaceOrderRequest {
                customer_id: 7,
                product_id: product.id,
                product_name: product.product_name.clone(),
                qty,
                address: address.into(),
                request_id: String::new(),
            })
            .await
            .expect("place order")
            .into_inner()
    }

    /// Current order.
    pub async fn get_order(&self, id: i64) -> Order {
        self.order
            .clone()
            .get_order(GetOrderRequest { id })
            .await
            .expect("get order")
            .into_inner()
    }

    /// Current stock of a product.
    pub async fn stock(&self, product_id: i64) -> i64 {
        self.inventory
            .clone()
            .get_inventory(GetInventoryRequest { id: product_id })
            .await
            .expect("get inventory")
            .into_inner()
            .stock
    }

    /// The delivery of an order, if any.
    pub async fn delivery(&self, order_id: i64) -> Option<Delivery> {
        match self
            .delivery
            .clone()
            .get_delivery(GetDeliveryRequest { order_id })
            .await
        {
            Ok(response) => Some(response.into_inner()),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => panic!("get delivery failed: {status}"),
        }
    }

    /// Waits until the order leaves PENDING.
    pub async fn settled(&self, id: i64) -> Order {
        self.eventually(&format!("order {id} to settle"), || async move {
            let order = self.get_order(id).await;
            (order.status() != OrderStatus::Pending).then_some(order)
        })
        .await
    }

    /// Polls `check` until it yields a value or the settle deadline passes.
    pub async fn eventually<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        crate::wait_for(what, SETTLE_DEADLINE, check).await
    }

    /// Records dead-lettered by every consumer of the mall.
    pub fn dead_lettered(&self) -> u64 {
        [&self.order_node, &self.delivery_node, &self.inventory_node]
            .iter()
            .map(|node| node.total(|s| &s.dead_lettered))
            .sum()
    }

    /// Everything an outside client can see, for before/after comparisons.
    pub async fn snapshot(&self) -> String {
        let orders = self
            .order
            .clone()
            .list_orders(ListOrdersRequest::default())
            .await
            .expect("list orders")
            .into_inner();
        let deliveries = self
            .delivery
            .clone()
            .list_deliveries(ListDeliveriesRequest::default())
            .await
            .expect("list deliveries")
            .into_inner();
        let inventories = self
            .inventory
            .clone()
            .list_inventories(ListInventoriesRequest::default())
            .await
            .expect("list inventories")
            .into_inner();
        let mut outbox_rows = Vec::new();
        for node in [&self.order_node, &self.delivery_node, &self.inventory_node] {
            outbox_rows
                .push(postgres::count(&node.database_url, "SELECT count(*) FROM outbox").await);
        }
        format!("{orders:?}\n{deliveries:?}\n{inventories:?}\noutbox rows {outbox_rows:?}")
    }

    /// Waits until the mall is quiet, judged from the broker and the
    /// databases alone: with the event topics' ends read first (each
    /// partition read to the high watermark its fetch reports), every
    /// consumer group has committed exactly those offsets, every outbox is
    /// empty, and the ends have not moved since. In that order, an event
    /// written by the last records handled is either still in an outbox or
    /// published past the first ends.
    pub async fn quiesce(&self) {
        let started = std::time::Instant::now();
        loop {
            let why = match self.not_quiet().await {
                None => return,
                Some(why) => why,
            };
            assert!(
                started.elapsed() < SETTLE_DEADLINE,
                "gave up waiting for the mall to be quiet: {why}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Why the mall is not quiet yet (the test kit's one rule, see
    /// [`Mall::quiesce`]), or `None`.
    async fn not_quiet(&self) -> Option<String> {
        let events = self.topics.events();
        let mut look = quiet::Look {
            ends: crate::kafka::ends(&self.brokers, &events, PARTITIONS).await,
            ..quiet::Look::default()
        };
        for (group, topics) in self.topics.groups() {
            match crate::kafka::committed(&self.brokers, &group, &topics, PARTITIONS).await {
                Ok(committed) => look.committed.push((group, committed)),
                Err(error) => return Some(format!("offsets of {group} not readable: {error}")),
            }
        }
        for node in [&self.order_node, &self.delivery_node, &self.inventory_node] {
            let unpublished = crate::outbox::unpublished(&node.database_url).await;
            look.unpublished
                .push((node.service.name().to_owned(), unpublished));
        }
        look.ends_after = crate::kafka::ends(&self.brokers, &events, PARTITIONS).await;
        quiet::not_quiet(&look)
    }

    /// Stops everything and waits for it, then drops the databases. A test
    /// that leaves unpublished outbox rows behind fails here: the relays get
    /// the settle deadline to publish them first.
    pub async fn stop(self) {
        let failures = self.finish().await;
        assert!(failures.is_empty(), "services failed: {failures:?}");
    }

    /// Like [`Mall::stop`], but returns how every service replica that
    /// failed (a task that ended on its own) failed, for tests that make
    /// one fail.
    pub async fn finish(self) -> Vec<String> {
        let nodes = [&self.order_node, &self.delivery_node, &self.inventory_node];
        crate::wait_for(
            "every outbox to be published before stopping",
            SETTLE_DEADLINE,
            || async {
                for node in nodes {
                    if crate::outbox::unpublished(&node.database_url).await != 0 {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        self.shutdown.cancel();
        let mut failures = Vec::new();
        for running in self.running {
            if let Err(error) = running.wait().await {
                failures.push(error.to_string());
            }
        }
        drop(self.databases);
        failures
    }
}
