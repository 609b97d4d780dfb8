//! P4, P5 and P7: the whole saga, `PlaceOrder` accepted → order `APPROVED`,
//! on the mall run as processes. Nothing reads the mall during a run: the
//! approval time is the order row's `updated_at`, read once the run settled
//! (one count query every 100 ms meanwhile is the only read load).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use mall_testkit::postgres;
use tokio_postgres::Client;

use crate::fleet::{Fleet, Scope};
use crate::hist::Latencies;
use crate::load::{self, Accepted};

/// Stock of each product; every order takes one unit of one of them.
const STOCK: i64 = 1_000_000_000;

/// A whole mall with a catalogue of products, warmed up by one settled
/// order.
pub struct Saga {
    fleet: Fleet,
    cutoff: Duration,
    orders: Client,
    inventory: Client,
    products: Vec<i64>,
    clients: Vec<
        mall_proto::order::v1::order_service_client::OrderServiceClient<tonic::transport::Channel>,
    >,
}

/// P4 at one rate.
pub struct LatencyRun {
    /// Offered orders/s.
    pub rate: f64,
    /// Accepted → APPROVED.
    pub saga: Latencies,
    /// `PlaceOrder` call latency.
    pub calls: Latencies,
    /// Orders still pending at the cut-off; their latency counts as the
    /// time they had waited by then, so the percentiles are lower bounds.
    pub pending: i64,
}

/// How a consumer group changes during [`Saga::latency_across`].
pub enum Change {
    /// One more delivery replica joins.
    Join,
    /// The named replica leaves.
    Leave(String),
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
    /// Orders still pending at the cut-off (the step is then not sustained
    /// and stock was not checked).
    pub pending: i64,
}

/// What a saga run is given: how long to wait for orders at most, and how
/// many products orders are spread over.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Bounds every wait for orders to settle.
    pub cutoff: Duration,
    /// Products in the catalogue (order `n` takes product `n % products`).
    /// One product makes every reservation wait for the same row lock.
    pub products: usize,
}

impl Saga {
    /// Starts the mall and settles a first order through it.
    pub async fn start(bin_dir: &Path, logs: &Path, shape: Shape) -> anyhow::Result<Self> {
        Self::start_with(bin_dir, logs, shape, &[]).await
    }

    /// [`Saga::start`] with more environment for every service.
    pub async fn start_with(
        bin_dir: &Path,
        logs: &Path,
        shape: Shape,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        let brokers = mall_testkit::settings::brokers();
        Self::start_on(bin_dir, logs, shape, &brokers, extra).await
    }

    /// [`Saga::start_with`] on the brokers `brokers` (P5c's cluster).
    pub async fn start_on(
        bin_dir: &Path,
        logs: &Path,
        shape: Shape,
        brokers: &str,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        let fleet = Fleet::start_on(bin_dir, logs, Scope::WholeMall, brokers, extra).await?;
        let mut products = Vec::new();
        for _ in 0..shape.products.max(1) {
            products.push(fleet.product(STOCK).await?);
        }
        let orders = postgres::connect(&fleet.urls[0]).await;
        let inventory = postgres::connect(&fleet.urls[2]).await;
        let clients = (0..4).map(|_| fleet.order_client()).collect();
        let saga = Self {
            fleet,
            cutoff: shape.cutoff,
            orders,
            inventory,
            products,
            clients,
        };
        let first = load::place_one(&saga.clients[0], saga.products[0]).await?;
        let pending = saga
            .pending_after(&[first], Duration::from_secs(180))
            .await?;
        if pending > 0 {
            bail!("the first order did not settle within 180 s; see the process logs");
        }
        Ok(saga)
    }

    /// P4: offers `rate` orders/s for `duration`; every order's saga latency.
    pub async fn latency(&mut self, rate: f64, duration: Duration) -> anyhow::Result<LatencyRun> {
        let run = load::open_loop(&self.clients, &self.products, rate, duration).await;
        self.settle(rate, run).await
    }

    /// P4 while a consumer group changes: a third of the way into the
    /// offer, one more delivery replica joins (`join`), or the one that
    /// joined last leaves (SIGTERM); its name when it joined.
    pub async fn latency_across(
        &mut self,
        rate: f64,
        duration: Duration,
        change: Change,
    ) -> anyhow::Result<(LatencyRun, Option<String>)> {
        let fleet = &mut self.fleet;
        let (run, changed) = tokio::join!(
            load::open_loop(&self.clients, &self.products, rate, duration),
            async {
                tokio::time::sleep(duration / 3).await;
                match change {
                    Change::Join => fleet.add_replica(1).await.map(Some),
                    Change::Leave(name) => fleet.stop(&name).await.map(|()| None),
                }
            }
        );
        let changed = changed?;
        Ok((self.settle(rate, run).await?, changed))
    }

    async fn settle(&mut self, rate: f64, run: load::Outcome) -> anyhow::Result<LatencyRun> {
        if run.failed > 0 {
            bail!("{} PlaceOrder calls failed at {rate} orders/s", run.failed);
        }
        let pending = self.pending_after(&run.accepted, self.cutoff).await?;
        let mut saga = Latencies::new();
        let approved = self.approved_at(&run.accepted).await?;
        let now = load::now_epoch();
        for accepted in &run.accepted {
            match approved.get(&accepted.id) {
                Some(at) => saga.record_secs(at - accepted.at),
                None => saga.record_secs(now - accepted.at),
            }
        }
        Ok(LatencyRun {
            rate,
            saga,
            calls: run.calls,
            pending,
        })
    }

    /// P5, one step: offers `rate` orders/s for `duration`. Sustained when
    /// every call was accepted at ≥ 95 % of the offered rate and the last
    /// order settled within a tenth of the step (plus one second) after the
    /// offer ended, i.e. no backlog built up.
    pub async fn step(&mut self, rate: f64, duration: Duration) -> anyhow::Result<Step> {
        let run = load::open_loop(&self.clients, &self.products, rate, duration).await;
        let offer_ended = Instant::now();
        let allowed = duration / 10 + Duration::from_secs(1);
        let kept_up = self.pending_after(&run.accepted, allowed).await? == 0;
        let pending = if kept_up {
            0
        } else {
            self.pending_after(&run.accepted, self.cutoff).await?
        };
        let drained_secs = offer_ended.elapsed().as_secs_f64();
        if pending == 0 {
            self.check_stock().await?;
        }
        self.fleet.check_alive()?;
        let expected = rate * duration.as_secs_f64();
        Ok(Step {
            offered: rate,
            accepted: run.accepted.len(),
            drained_secs,
            sustained: kept_up
                && run.failed == 0
                && run.accepted.len() as f64 >= 0.95 * expected
                && run.rate() >= 0.95 * rate,
            pending,
        })
    }

    /// Peak memory of every process so far, MiB.
    pub fn peak_rss_mib(&self) -> Vec<(String, f64)> {
        self.fleet.peak_rss_mib()
    }

    /// Waits until none of `accepted` is pending, or `within` passed: how
    /// many still are. Every settled one must be APPROVED (stock is ample).
    async fn pending_after(&self, accepted: &[Accepted], within: Duration) -> anyhow::Result<i64> {
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
            if pending == 0 || started.elapsed() > within {
                return Ok(pending);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// When each approved order of `accepted` was approved, epoch seconds.
    async fn approved_at(&self, accepted: &[Accepted]) -> anyhow::Result<HashMap<i64, f64>> {
        let ids: Vec<i64> = accepted.iter().map(|a| a.id).collect();
        let rows = self
            .orders
            .query(
                "SELECT id, extract(epoch FROM updated_at)::float8 FROM orders \
                 WHERE id = ANY($1) AND status = 'APPROVED'",
                &[&ids],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(Into::into)
    }

    /// Stock exact: what is left of the catalogue is its start less every
    /// approved order.
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
            .query_one(
                "SELECT COALESCE(sum(stock), 0)::bigint FROM inventories WHERE id = ANY($1)",
                &[&self.products],
            )
            .await?
            .try_get(0)?;
        let start = STOCK * i64::try_from(self.products.len())?;
        if stock != start - approved {
            bail!(
                "stock is {stock}, but {start} less {approved} approved is {}",
                start - approved
            );
        }
        Ok(())
    }
}
