//! The mall as `scripts/run-mall.sh` runs it: each service and each relay a
//! process of its own (release binaries), so their memory can be read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use mall_proto::inventory::v1::CreateInventoryRequest;
use mall_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_saga::Service;
use mall_testkit::binaries::{Role, Wiring};
use mall_testkit::postgres::{self, TestDatabase};
use mall_testkit::process::{Process, ProcessSpec};
use tonic::transport::Channel;

/// What runs: every service, or only the order service (the write path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Three services and three relays.
    WholeMall,
    /// The order service alone, without its relay: nothing but the write path.
    OrderOnly,
}

struct Proc {
    name: String,
    process: Process,
}

/// A running mall of child processes; killed when dropped.
pub struct Fleet {
    procs: Vec<Proc>,
    /// gRPC address of each service, in [`Service::ALL`] order (only the
    /// order service's for [`Scope::OrderOnly`]).
    pub addrs: Vec<std::net::SocketAddr>,
    /// Database URL of each service, in the same order.
    pub urls: Vec<String>,
    /// Environment every service gets beside its wiring.
    extra: Vec<(&'static str, String)>,
    brokers: String,
    prefix: String,
    bin_dir: PathBuf,
    logs: PathBuf,
    _databases: Vec<TestDatabase>,
}

/// A port nobody listens on now, never handed out before (the test kit's).
fn free_port() -> anyhow::Result<u16> {
    Ok(mall_testkit::free_port()?)
}

impl Fleet {
    /// Starts fresh databases and processes and waits until every service
    /// serves gRPC.
    pub async fn start(bin_dir: &Path, logs: &Path, scope: Scope) -> anyhow::Result<Self> {
        Self::start_with(bin_dir, logs, scope, &[]).await
    }

    /// [`Fleet::start`] with more environment for every service.
    pub async fn start_with(
        bin_dir: &Path,
        logs: &Path,
        scope: Scope,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        Self::start_on(
            bin_dir,
            logs,
            scope,
            &mall_testkit::settings::brokers(),
            extra,
        )
        .await
    }

    /// [`Fleet::start_with`] on the brokers `brokers` (P5c's cluster).
    pub async fn start_on(
        bin_dir: &Path,
        logs: &Path,
        scope: Scope,
        brokers: &str,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        let brokers = brokers.to_owned();
        let prefix = mall_testkit::env::unique_name("b");
        let services: &[Service] = match scope {
            Scope::WholeMall => &Service::ALL,
            Scope::OrderOnly => &[Service::Order],
        };
        let mut fleet = Self {
            procs: Vec::new(),
            addrs: Vec::new(),
            urls: Vec::new(),
            extra: extra.to_vec(),
            brokers,
            prefix,
            bin_dir: bin_dir.to_owned(),
            logs: logs.to_owned(),
            _databases: Vec::new(),
        };
        for &service in services {
            let name = format!("{}_{}", fleet.prefix, service.name());
            let database = postgres::create_database(&name).await;
            fleet.urls.push(database.url().to_owned());
            fleet._databases.push(database);
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
            fleet.spawn(Role::Service(service), 0, Some(addr)).await?;
            fleet.addrs.push(addr);
        }
        for addr in &fleet.addrs {
            wait_for_port(*addr, Duration::from_secs(120)).await?;
        }
        if scope == Scope::WholeMall {
            for service in Service::ALL {
                fleet.spawn(Role::Relay(service), 0, None).await?;
            }
        }
        Ok(fleet)
    }

    /// Starts replica `n` of `role` (a service on `grpc`, with the extra
    /// environment the fleet was started with).
    async fn spawn(
        &mut self,
        role: Role,
        n: usize,
        grpc: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<()> {
        let index = Service::ALL
            .iter()
            .position(|s| *s == role.service())
            .unwrap_or_default();
        let wiring = Wiring {
            database_url: &self.urls[index],
            brokers: &self.brokers,
            prefix: &self.prefix,
        };
        let mut spec = ProcessSpec::mall(role, n, &self.bin_dir, &self.logs, wiring).set(
            "RUST_LOG",
            std::env::var("BENCH_SERVICE_LOG").unwrap_or_else(|_| "warn".to_owned()),
        );
        if let Some(addr) = grpc {
            spec = spec.set("GRPC_ADDR", addr);
            for (key, value) in &self.extra {
                spec = spec.set(key, value);
            }
        }
        let process = spec.spawn("benchmark").await?;
        self.procs.push(Proc {
            name: spec.name,
            process,
        });
        Ok(())
    }

    /// Starts one more replica of the service at `index` (its consumer joins
    /// the group) and waits until it serves; its process name.
    pub async fn add_replica(&mut self, index: usize) -> anyhow::Result<String> {
        let role = Role::Service(Service::ALL[index]);
        let n = self
            .procs
            .iter()
            .filter(|p| p.name.starts_with(&format!("{}-", role.program())))
            .count();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        self.spawn(role, n, Some(addr)).await?;
        wait_for_port(addr, Duration::from_secs(120)).await?;
        Ok(role.replica(n))
    }

    /// Stops the process `name` the way an orchestrator does (SIGTERM: its
    /// consumer leaves the group) and waits for it.
    pub async fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        let at = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .with_context(|| format!("no process {name}"))?;
        let mut proc = self.procs.remove(at);
        proc.process.stop().await?;
        Ok(())
    }

    /// A client of the order service on a connection of its own.
    pub fn order_client(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(channel(self.addrs[0]))
    }

    /// Creates a product with `stock` units; returns its id.
    pub async fn product(&self, stock: i64) -> anyhow::Result<i64> {
        let addr = *self
            .addrs
            .get(2)
            .context("the inventory service is not running")?;
        let created = InventoryServiceClient::new(channel(addr))
            .create_inventory(CreateInventoryRequest {
                product_name: "TV".into(),
                stock,
            })
            .await?
            .into_inner();
        Ok(created.id)
    }

    /// Peak resident memory of every process so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> Vec<(String, f64)> {
        self.procs
            .iter()
            .filter_map(|proc| Some((proc.name.clone(), proc.process.peak_rss_mib()?)))
            .collect()
    }

    /// Fails if any process exited (it would have been a crash).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for proc in &mut self.procs {
            if let Some(status) = proc.process.exited() {
                bail!("{} exited ({status}); see its log", proc.name);
            }
        }
        Ok(())
    }
}

/// A lazily connecting gRPC channel to `addr`.
pub fn channel(addr: std::net::SocketAddr) -> Channel {
    mall_testkit::clients::lazy(addr)
}

async fn wait_for_port(addr: std::net::SocketAddr, within: Duration) -> anyhow::Result<()> {
    if mall_testkit::wait_for_port(addr.port(), within).await {
        Ok(())
    } else {
        bail!("nothing listened on {addr} within {within:?}")
    }
}
