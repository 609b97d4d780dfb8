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
use outbox_relay::{Relay, RelayConfig, RelayStats};
use platform_service::app::Running;
use platform_service::config::{KafkaArgs, ServiceArgs};
use platform_service::consumer::Stats;
use platform_service::metrics::{self, IntCounter, Registry};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{postgres, required_env, unique_name};

/// Partitions of every test topic.
pub const PARTITIONS: i32 = 3;
/// How long a test waits for the saga to settle before it fails.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

/// One service with its database and relay, and any extra replicas of both.
pub struct Node {
    /// Short service name.
    pub service: &'static str,
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

async fn start_service(service: &str, args: &ServiceArgs, shutdown: CancellationToken) -> Running {
    match service {
        "order" => order_service::start(args, shutdown).await,
        "delivery" => delivery_service::start(args, shutdown).await,
        _ => inventory_service::start(args, shutdown).await,
    }
    .unwrap_or_else(|e| panic!("{service} service failed to start: {e}"))
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
/// (as clap parses them, so a new setting needs no change here), then what
/// tests set: their database and broker, port 0, metrics, a smaller pool
/// and the test topics.
pub fn service_args(database_url: &str, brokers: &str, prefix: &str) -> ServiceArgs {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        args: ServiceArgs,
    }
    let mut args =
        <Defaults as clap::Parser>::try_parse_from(["service", "--database-url", database_url])
            .expect("the defaults parse")
            .args;
    args.grpc_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    args.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    args.db_pool_size = 4;
    args.db_consumer_pool_size = 4;
    args.kafka = KafkaArgs {
        brokers: brokers.to_owned(),
        topic_prefix: prefix.to_owned(),
        topic_partitions: PARTITIONS,
        topic_replication: 1,
        topic_min_insync_replicas: None,
        topic_retention_secs: 7 * 86_400,
        dead_letter_retention_secs: 0,
        // Off, as against any Apache Kafka (see `KafkaArgs`).
        stall_rejoin_secs: 0,
        self_heal_secs: 60,
        group_id: None,
        consumer_properties: Vec::new(),
        group_protocol: group_protocol(),
    };
    args
}

/// The consumer group protocol of the tests' services: `classic` unless
/// `MALL_TEST_GROUP_PROTOCOL=consumer` (KIP-848) says otherwise, so the
/// whole suite can run on either.
pub fn group_protocol() -> platform_service::consumer::GroupProtocol {
    use clap::ValueEnum;
    std::env::var("MALL_TEST_GROUP_PROTOCOL")
        .ok()
        .map(|name| {
            platform_service::consumer::GroupProtocol::from_str(&name, true)
                .unwrap_or_else(|e| panic!("MALL_TEST_GROUP_PROTOCOL={name}: {e}"))
        })
        .unwrap_or_default()
}

/// Relay settings a test uses.
pub fn relay_config(database_url: &str, brokers: &str) -> RelayConfig {
    RelayConfig {
        database_url: database_url.into(),
        brokers: brokers.to_owned(),
        table: "outbox".into(),
        channel: "outbox".into(),
        batch_size: 500,
        poll_interval_ms: 500,
        standby_retry_ms: 200,
        retention_secs: 3600,
        purge_interval_secs: 30,
        lock_id: 0,
        metrics_addr: None,
        health_unavailable_after_secs: 10,
        lock_timeout_ms: 5_000,
        statement_timeout_ms: 30_000,
        stall_after_secs: 90,
        park_after_failures: 5,
    }
}

/// What `grpc.health.v1.Health/Check` says about `service` (`""` for the
/// whole server) at `addr`.
pub async fn health(addr: std::net::SocketAddr, service: &str) -> ServingStatus {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach {addr}: {e}"));
    let answer = HealthClient::new(channel)
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
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach the order service at {addr}: {e}"));
    OrderServiceClient::new(channel)
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

/// [`spawn_relay`] with a configuration of the test's own; the endpoint
/// also answers `GET /health`.
pub async fn spawn_relay_with(
    config: RelayConfig,
    shutdown: CancellationToken,
) -> (Arc<RelayStats>, std::net::SocketAddr) {
    let relay = Relay::new(config).expect("relay");
    let stats = relay.stats();
    let registry = Registry::new();
    stats.register(&registry);
    let health = relay.health();
    let check: metrics::HealthCheck = Arc::new(move || health.check());
    let listener = metrics::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind relay metrics");
    let addr = listener.local_addr().expect("relay metrics address");
    tokio::spawn(metrics::serve(
        listener,
        registry,
        Some(check),
        shutdown.clone(),
    ));
    tokio::spawn(relay.run(shutdown));
    (stats, addr)
}

/// The broker list from the environment.
pub fn brokers() -> String {
    required_env("MALL_TEST_KAFKA_BROKERS")
}

/// Starts a fresh mall: three databases, a topic prefix, three services and three relays.
pub async fn spawn_mall() -> Mall {
    spawn_mall_with(|_| {}).await
}

/// [`spawn_mall`] with every service's arguments adjusted by `tune`.
pub async fn spawn_mall_with(tune: impl Fn(&mut ServiceArgs)) -> Mall {
    platform_service::telemetry::init();
    let brokers = brokers();
    let prefix = unique_name("t");
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    let mut nodes = Vec::new();
    let mut databases = Vec::new();
    for service in Service::NAMES {
        let database = postgres::create_database(&format!("{prefix}_{service}")).await;
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
    let channel = |node: &Node| {
        Channel::from_shared(format!("http://{}", node.addr))
            .expect("uri")
            .connect_lazy()
    };
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
        for service in Service::NAMES {
            self.add_replica(service).await;
        }
    }

    /// Starts one more replica of `service` and of its relay.
    pub async fn add_replica(&mut self, service: &str) {
        let prefix = self.topics.prefix().to_owned();
        let (database_url, name) = {
            let node = self.node_mut(service);
            (node.database_url.clone(), node.service)
        };
        let args = service_args(&database_url, &self.brokers, &prefix);
        let started = start_service(name, &args, self.shutdown.child_token()).await;
        let node = self.node_mut(service);
        node.all_stats.push(Arc::clone(&started.stats));
        node.metrics.extend(started.metrics_addr);
        self.running.push(started);
        self.add_relay(service).await;
    }

    /// Starts one more relay on `service`'s database.
    pub async fn add_relay(&mut self, service: &str) {
        let token = self.shutdown.child_token();
        let brokers = self.brokers.clone();
        let database_url = self.node_mut(service).database_url.clone();
        let (relay, addr) = spawn_relay(&database_url, &brokers, token).await;
        let node = self.node_mut(service);
        node.all_relays.push(relay);
        node.metrics.push(addr);
    }

    fn node_mut(&mut self, service: &str) -> &mut Node {
        match service {
            "order" => &mut self.order_node,
            "delivery" => &mut self.delivery_node,
            "inventory" => &mut self.inventory_node,
            other => panic!("no service called {other}"),
        }
    }

    /// Every order, paging through `ListOrders`.
    pub async fn all_orders(&self) -> Vec<Order> {
        let mut orders = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .order
                .clone()
                .list_orders(ListOrdersRequest {
                    page_size: 0,
                    page_token,
                })
                .await
                .expect("list orders")
                .into_inner();
            orders.extend(page.orders);
            if page.next_page_token.is_empty() {
                return orders;
            }
            page_token = page.next_page_token;
        }
    }

    /// Checks the invariants of docs/saga.md through the public APIs, for products
    /// created with the given `(id, initial stock)`.
    pub async fn assert_invariants(&self, products: &[(i64, i64)]) {
        let orders = self.all_orders().await;
        for order in &orders {
            assert_ne!(
                order.status(),
                OrderStatus::Pending,
                "order {} stuck: {order:?}",
                order.id
            );
            let started = self
                .delivery(order.id)
                .await
                .is_some_and(|d| d.status() == mall_proto::delivery::v1::DeliveryStatus::Started);
            assert_eq!(
                order.status() == OrderStatus::Approved,
                started,
                "APPROVED iff delivery STARTED, order {order:?}"
            );
        }
        for &(product_id, initial) in products {
            let approved: i64 = orders
                .iter()
                .filter(|o| o.product_id == product_id && o.status() == OrderStatus::Approved)
                .map(|o| o.qty)
                .sum();
            let stock = self.stock(product_id).await;
            assert!(stock >= 0, "stock of {product_id} is negative");
            assert_eq!(stock, initial - approved, "stock of product {product_id}");
        }
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

    /// Why the mall is not quiet yet (see [`Mall::quiesce`]), or `None`.
    async fn not_quiet(&self) -> Option<String> {
        let events = self.topics.events();
        let ends = crate::kafka::ends(&self.brokers, &events, PARTITIONS).await;
        for (group, topics) in self.topics.groups() {
            let committed =
                match crate::kafka::committed(&self.brokers, &group, &topics, PARTITIONS).await {
                    Ok(committed) => committed,
                    Err(error) => return Some(format!("offsets of {group} not readable: {error}")),
                };
            for (at, offset) in &committed {
                if ends.get(at) != Some(offset) {
                    return Some(format!(
                        "{group} committed {offset} on {at:?}, which ends at {:?}",
                        ends.get(at)
                    ));
                }
            }
        }
        for node in [&self.order_node, &self.delivery_node, &self.inventory_node] {
            let unpublished = crate::outbox::unpublished(&node.database_url).await;
            if unpublished != 0 {
                return Some(format!(
                    "{} has {unpublished} unpublished outbox rows",
                    node.service
                ));
            }
        }
        let now = crate::kafka::ends(&self.brokers, &events, PARTITIONS).await;
        (now != ends).then(|| "records were published meanwhile".into())
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
