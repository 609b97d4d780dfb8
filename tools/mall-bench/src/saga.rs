//! P4, P5 and P7: the whole saga, `PlaceOrder` accepted → order `APPROVED`,
//! on the mall run as processes. Nothing reads the mall during a run: the
//! approval time is the order row's `updated_at`, read once the run settled
//! (one count query every 100 ms meanwhile is the only read load).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use mall_e2e::postgres;
use tokio_postgres::Client;

use crate::fleet::{Fleet, Scope};
use crate::hist::Latencies;
use crate::load::{self, Accepted};

/// Stock of the product every order takes one unit of.
const STOCK: i64 = 1_000_000_000;

/// A whole mall with a product, warmed up by one settled order.
pub struct Saga {
    fleet: Fleet,
    orders: Client,
    inventory: Client,
    product: i64,
    clients: Vec<mall_proto::order::v1::order_service_client::OrderServiceClient<tonic::transport::Channel>>,
}

/// P4 at one rate.
pub struct LatencyRun {
    /// Offered orders/s.
    pub rate: f64,
    /// Accepted → APPROVED.
    pub saga: Latencies,
    /// `PlaceOrder` call latency.
    pub calls: Latencies,
}

/// One step of P5.
pub struct Step {
    /// Offered orders/s.
    pub offered: f64,
    /// Orders accepted.
    pub accepted: usize,
    /// Seconds from the end of the offer until every order settled.
    pub drained_secs: f64,
    /// Whether the mall kept up (see [`Saga::step`]).
    pub sustained: bool,
}

impl Saga {
    /// Starts the mall and settles a first order through it.
    pub async fn start(bin_dir: &Path, logs: &Path) -> anyhow::Result<Self> {
        let fleet = Fleet::start(bin_dir, logs, Scope::WholeMall).await?;
        let product = fleet.product(STOCK).await?;
        let orders = postgres::connect(&fleet.urls[0]).await;
        let inventory = postgres::connect(&fleet.urls[2]).await;
        let clients = (0..4).map(|_| fleet.order_client()).collect();
        let saga = Self {
            fleet,
            orders,
            inventory,
            product,
            clients,
        };
        let first = load::place_one(&saga.clients[0], product).await?;
        saga.settle(&[first], Duration::from_secs(180)).await?;
        Ok(saga)
    }

    /// P4: offers `rate` orders/s for `duration`; every order's saga latency.
    pub async fn latency(&mut self, rate: f64, duration: Duration) -> anyhow::Result<LatencyRun> {
        let run = load::open_loop(&self.clients, self.product, rate, duration).await;
        if run.failed > 0 {
            bail!("{} PlaceOrder calls failed at {rate} orders/s", run.failed);
        }
        self.settle(&run.accepted, Duration::from_secs(300)).await?;
        let mut saga = Latencies::new();
        for (accepted, approved) in self.approved_at(&run.accepted).await? {
            saga.record_secs(approved - accepted);
        }
        Ok(LatencyRun {
            rate,
            saga,
            calls: run.calls,
        })
    }

    /// P5, one step: offers `rate` orders/s for `duration`. Sustained when
    /// every call was accepted at ≥ 95 % of the offered rate and the last
    /// order settled within a tenth of the step (plus one second) after the
    /// offer ended, i.e. no backlog built up.
    pub async fn step(&mut self, rate: f64, duration: Duration) -> anyhow::Result<Step> {
        let run = load::open_loop(&self.clients, self.product, rate, duration).await;
        let offer_ended = Instant::now();
        let allowed = duration / 10 + Duration::from_secs(1);
        let settled_in_time = self.settle(&run.accepted, allowed).await.is_ok();
        if !settled_in_time {
            self.settle(&run.accepted, Duration::from_secs(600)).await?;
        }
        let drained_secs = offer_ended.elapsed().as_secs_f64();
        self.check_stock().await?;
        self.fleet.check_alive()?;
        let expected = rate * duration.as_secs_f64();
        Ok(Step {
            offered: rate,
            accepted: run.accepted.len(),
            drained_secs,
            sustained: settled_in_time
                && run.failed == 0
                && run.accepted.len() as f64 >= 0.95 * expected
                && run.rate() >= 0.95 * rate,
        })
    }

    /// Peak memory of every process so far, MiB.
    pub fn peak_rss_mib(&self) -> Vec<(String, f64)> {
        self.fleet.peak_rss_mib()
    }

    /// Waits until none of `accepted` is pending; every one must be APPROVED
    /// (stock is ample). Errs past `within`.
    async fn settle(&self, accepted: &[Accepted], within: Duration) -> anyhow::Result<()> {
        let ids: Vec<i64> = accepted.iter().map(|a| a.id).collect();
        let started = Instant::now();
        loop {
            let row = self
                .orders
                .query_one(
                    "SELECT count(*) FILTER (WHERE status = 'PENDING'), \
                            count(*) FILTER (WHERE status NOT IN ('PENDING', 'APPROVED')) \
                     FROM orders WHERE id = ANY($1)",
                    &[&ids],
                )
                .await?;
            let (pending, other): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            if other > 0 {
                bail!("{other} orders were not approved although stock was ample");
            }
            if pending == 0 {
                return Ok(());
            }
            if started.elapsed() > within {
                bail!("{pending} orders still pending after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (accepted, approved) in epoch seconds for every order.
    async fn approved_at(&self, accepted: &[Accepted]) -> anyhow::Result<Vec<(f64, f64)>> {
        let ids: Vec<i64> = accepted.iter().map(|a| a.id).collect();
        let rows = self
            .orders
            .query(
                "SELECT id, extract(epoch FROM updated_at)::float8 FROM orders WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        let approved: std::collections::HashMap<i64, f64> = rows
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        Ok(accepted
            .iter()
            .filter_map(|a| approved.get(&a.id).map(|at| (a.at, *at)))
            .collect())
    }

    /// Stock exact: what is left is the start less every approved order.
    async fn check_stock(&self) -> anyhow::Result<()> {
        let approved: i64 = self
            .orders
            .query_one(
                "SELECT COALESCE(sum(qty), 0)::bigint FROM orders WHERE status = 'APPROVED'",
                &[],
            )
            .await?
            .try_get(0)?;
        let stock: i64 = self
            .inventory
            .query_one("SELECT stock FROM inventories WHERE id = $1", &[&self.product])
            .await?
            .try_get(0)?;
        if stock != STOCK - approved {
            bail!(
                "stock is {stock}, but {STOCK} less {approved} approved is {}",
                STOCK - approved
            );
        }
        Ok(())
    }
}
