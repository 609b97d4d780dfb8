//! Two replicas of every service and every relay, as real processes that
//! faults SIGKILL and restart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mall_saga::Service;
use mall_testkit::binaries::{Role, Wiring};
use mall_testkit::process::{Process, ProcessSpec};
use mall_testkit::scrape;
use tokio::sync::Mutex;

use crate::counts::{Counts, Totals};
use crate::infra::{free_port, wait_for_port};

/// How long one scrape of a replica's metrics may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);

/// Replicas of each service and of each relay.
pub const REPLICAS: usize = 2;
/// `message.timeout.ms` of every producer of the fleet; broker outages are
/// drawn longer than this.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Log levels of the replicas: with `KAFKA_DEBUG` set (librdkafka debug
/// contexts, passed on to every replica), librdkafka's debug lines are kept.
fn service_log_filter() -> String {
    if std::env::var("KAFKA_DEBUG").is_ok_and(|v| !v.trim().is_empty()) {
        "info,librdkafka=debug,h2=warn,tower=warn".to_owned()
    } else {
        "info,rdkafka=warn,h2=warn,tower=warn".to_owned()
    }
}

/// First uid of the replicas: replica `i` runs as `FIRST_UID + i`, so a
/// partition can drop exactly its packets (`meta skuid` in nftables).
pub const FIRST_UID: u32 = 61_000;

/// One process of the fleet.
pub struct Replica {
    /// e.g. `order-service-1` or `delivery-relay-0`.
    pub name: String,
    /// What it runs.
    pub role: Role,
    /// The uid it runs as, when the run has the rights to switch (root).
    pub uid: Option<u32>,
    /// gRPC port of a service replica.
    pub port: Option<u16>,
    /// Port of its metrics endpoint.
    pub metrics_port: u16,
    /// What its metrics said, across incarnations.
    pub counts: Counts,
    spec: ProcessSpec,
    process: Option<Process>,
}

impl Replica {
    /// Starts the process and, for a service, waits until it serves gRPC.
    pub async fn start(&mut self, why: &str) -> anyhow::Result<()> {
        self.spec.uid = self.uid;
        self.process = Some(self.spec.spawn(why).await?);
        if let Some(port) = self.port {
            wait_for_port(port, &self.name, Duration::from_secs(180)).await?;
        }
        Ok(())
    }

    /// SIGKILL, and waits until the process is gone; what its metrics
    /// said just before is kept.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.scrape().await;
        if let Some(mut process) = self.process.take() {
            process.kill().await?;
            self.counts.incarnation_ended();
        }
        Ok(())
    }

    fn new(role: Role, spec: ProcessSpec, port: Option<u16>, metrics_port: u16) -> Self {
        Self {
            name: spec.name.clone(),
            role,
            spec,
            uid: None,
            port,
            metrics_port,
            counts: Counts::default(),
            process: None,
        }
    }

    /// Reads its metrics endpoint, if it answers (a process starting,
    /// partitioned or gone does not; its last values stand).
    pub async fn scrape(&mut self) {
        if self.process.is_none() {
            return;
        }
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
        if let Ok(response) = scrape::get(addr, "/metrics", SCRAPE_TIMEOUT).await
            && response.status == 200
        {
            self.counts.observe(&response.body);
        }
    }

    /// Whether the process exited without being killed by us.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.process.as_mut()?.exited()?;
        self.process = None;
        self.counts.incarnation_ended();
        Some(status.to_string())
    }
}

/// Every replica, each behind a lock that a fault holds from kill to restart.
pub struct Fleet {
    /// All replicas: services first, then relays.
    pub replicas: Vec<Arc<Mutex<Replica>>>,
    /// Names in the same order, readable without locking.
    pub names: Vec<String>,
    /// Roles in the same order.
    pub roles: Vec<Role>,
    /// Their uids, in the same order (`None` when not switched).
    pub uids: Vec<Option<u32>>,
    /// gRPC ports of the service replicas, per service.
    pub ports: HashMap<Service, Vec<u16>>,
    /// Replicas that exited on their own and were restarted by the supervisor.
    pub unexpected_exits: AtomicU64,
}

/// Settings every replica shares.
pub struct FleetSettings<'a> {
    /// Directory of the binaries.
    pub bin_dir: &'a Path,
    /// Directory for logs.
    pub log_dir: &'a Path,
    /// Database URL per service.
    pub database_url: &'a dyn Fn(Service) -> String,
    /// Bootstrap brokers.
    pub brokers: String,
    /// Topic prefix.
    pub prefix: &'a str,
    /// Partitions of every topic.
    pub partitions: i32,
    /// Replication factor of the topics the services create.
    pub replication: usize,
    /// Their `min.insync.replicas`.
    pub min_insync: usize,
    /// Whether replicas run under uids of their own (needs root).
    pub own_uids: bool,
    /// Whether producers time out after [`MESSAGE_TIMEOUT`] (for broker
    /// outages longer than that) rather than librdkafka's default.
    pub short_message_timeout: bool,
}

impl Fleet {
    /// Describes the fleet; nothing runs until [`Fleet::start_all`].
    pub fn new(settings: &FleetSettings<'_>) -> anyhow::Result<Self> {
        let mut replicas = Vec::new();
        let mut ports = HashMap::new();
        let spec = |role: Role, n: usize, metrics_port: u16| {
            let database_url = (settings.database_url)(role.service());
            let wiring = Wiring {
                database_url: &database_url,
                brokers: &settings.brokers,
                prefix: settings.prefix,
            };
            let spec = ProcessSpec::mall(role, n, settings.bin_dir, settings.log_dir, wiring)
                .set("RUST_LOG", service_log_filter())
                .set("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"));
            if settings.short_message_timeout {
                // Broker outages last longer than this, so sends really fail
                // past every retry.
                spec.set(
                    "KAFKA_PROPERTY_MESSAGE_TIMEOUT_MS",
                    MESSAGE_TIMEOUT.as_millis(),
                )
            } else {
                spec
            }
        };
        for service in Service::ALL {
            let mut service_ports = Vec::new();
            for n in 0..REPLICAS {
                let port = free_port()?;
                service_ports.push(port);
                let metrics_port = free_port()?;
                let role = Role::Service(service);
                let spec = spec(role, n, metrics_port)
                    .set("GRPC_ADDR", format!("127.0.0.1:{port}"))
                    .set("KAFKA_TOPIC_PARTITIONS", settings.partitions)
                    .set("KAFKA_TOPIC_REPLICATION", settings.replication)
                    .set("KAFKA_TOPIC_MIN_INSYNC_REPLICAS", settings.min_insync)
                    .set("DB_POOL_SIZE", 6)
                    .set("STARTUP_TIMEOUT_SECS", 300);
                replicas.push(Replica::new(role, spec, Some(port), metrics_port));
            }
            ports.insert(service, service_ports);
        }
        for service in Service::ALL {
            for n in 0..REPLICAS {
                let metrics_port = free_port()?;
                let role = Role::Relay(service);
                let spec = spec(role, n, metrics_port).set("RELAY_STANDBY_RETRY_MS", 500);
                replicas.push(Replica::new(role, spec, None, metrics_port));
            }
        }
        if settings.own_uids {
            for (i, replica) in replicas.iter_mut().enumerate() {
                replica.uid = Some(FIRST_UID + i as u32);
            }
        }
        for replica in &replicas {
            anyhow::ensure!(
                replica.spec.program.exists(),
                "{} is missing: build the workspace binaries first (scripts/chaos.sh does)",
                replica.spec.program.display()
            );
        }
        Ok(Self {
            names: replicas.iter().map(|r| r.name.clone()).collect(),
            roles: replicas.iter().map(|r| r.role).collect(),
            uids: replicas.iter().map(|r| r.uid).collect(),
            replicas: replicas
                .into_iter()
                .map(|r| Arc::new(Mutex::new(r)))
                .collect(),
            ports,
            unexpected_exits: AtomicU64::new(0),
        })
    }

    /// Starts every replica, services first so the topics exist.
    pub async fn start_all(&self) -> anyhow::Result<()> {
        for replica in &self.replicas {
            replica.lock().await.start("initial start").await?;
        }
        Ok(())
    }

    /// Restarts any replica that exited on its own, as an orchestrator would;
    /// replicas a fault is holding are skipped.
    pub async fn supervise(&self) {
        self.scrape_all().await;
        for replica in &self.replicas {
            let Ok(mut replica) = replica.try_lock() else {
                continue;
            };
            if let Some(status) = replica.exited() {
                self.unexpected_exits.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(replica = %replica.name, %status, "Replica exited on its own; restarting it.");
                if let Err(error) = replica.start("restarted by the supervisor").await {
                    tracing::error!(replica = %replica.name, %error, "Restart failed.");
                }
            }
        }
    }

    /// Reads every replica's metrics that is not held by a fault.
    pub async fn scrape_all(&self) {
        for replica in &self.replicas {
            if let Ok(mut replica) = replica.try_lock() {
                replica.scrape().await;
            }
        }
    }

    /// The figures summed over every replica and incarnation.
    pub async fn totals(&self) -> Totals {
        let mut all = Vec::new();
        for replica in &self.replicas {
            all.push(replica.lock().await.counts.totals());
        }
        all.into_iter().sum()
    }

    /// Kills every replica.
    pub async fn kill_all(&self) {
        for replica in &self.replicas {
            let _ = replica.lock().await.kill().await;
        }
    }
}
