//! `mall-chaos`: a Jepsen-style fault-injection run of the whole mall.
//!
//! It starts its own PostgreSQL and Tansu (durable sqlite storage), two
//! replicas of every service and of every relay as real processes, creates
//! a catalogue and places orders like many customers would. Meanwhile it
//! injects faults at random moments: SIGKILLs of every replica, PostgreSQL
//! crash-restarts, broker `kill -9`s, replays of topic ranges, duplicate and
//! out-of-order copies of orders' events, and poison. Then it waits until
//! the mall is quiet, checks every invariant from outside and prints one
//! figure block. It exits 1 if an invariant broke and 2 if the run itself
//! failed. Every random choice comes from `--seed`.
#![allow(clippy::print_stdout)]

mod check;
mod config;
mod counts;
mod faults;
mod fleet;
mod infra;
mod inject;
mod load;
mod ops;
mod quiet;
mod report;
mod tap;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use mall_proto::delivery::v1::delivery_service_client::DeliveryServiceClient;
use mall_proto::inventory::v1::CreateInventoryRequest;
use mall_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_saga::Topics;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use config::Args;
use fleet::{Fleet, FleetSettings, SERVICES};
use infra::{Postgres, Tansu, free_port};

/// Topic prefix of the run.
const PREFIX: &str = "chaos";

#[tokio::main]
async fn main() -> ExitCode {
    platform_core::telemetry::init();
    let args = Args::parse();
    let postgres: Arc<OnceLock<Arc<Postgres>>> = Arc::default();
    let result = tokio::select! {
        result = run(&args, Arc::clone(&postgres)) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(postgres) = postgres.get()
        && let Err(error) = postgres.stop().await
    {
        tracing::warn!(%error, "PostgreSQL did not stop cleanly.");
    }
    // The copied binaries (about 100 MB) go with the run.
    let _ = std::fs::remove_dir_all(shared_bin_dir());
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "The fault-injection run could not finish."
            );
            ExitCode::from(2)
        }
    }
}

fn database(service: &str) -> String {
    format!("mall_{service}")
}

/// Whether this process runs as root (the owner of `/proc/self`).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Where [`shared_binaries`] puts the replicas' binaries for this run.
fn shared_bin_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mall-chaos-bin-{}", std::process::id()))
}

/// Copies the replicas' binaries into a temporary directory readable and
/// executable by every uid: replicas under their own uids cannot enter a
/// checkout under, say, /root. `main` removes it when the run ends.
fn shared_binaries(from: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = shared_bin_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    for name in [
        "order-service",
        "delivery-service",
        "inventory-service",
        "outbox-relay",
    ] {
        let to = dir.join(name);
        std::fs::copy(from.join(name), &to)
            .with_context(|| format!("copying {name} to {}", dir.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
    }
    tracing::info!(dir = %dir.display(), "Replica binaries copied where every uid can run them.");
    Ok(dir)
}

async fn run(args: &Args, postgres_slot: Arc<OnceLock<Arc<Postgres>>>) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    tracing::info!(seed, orders = args.orders, "Fault-injection run starting.");
    let work_dir = std::path::absolute(&args.work_dir)?;
    // A fresh run: earlier logs, broker data and database go.
    for old in ["logs", "tansu"] {
        let _ = std::fs::remove_dir_all(work_dir.join(old));
    }
    let log_dir = work_dir.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary has no directory")?
            .to_owned(),
    };

    let pg_dir = std::path::absolute(args.pg_dir())?;
    let _ = std::fs::remove_dir_all(pg_dir.join("data"));
    std::fs::create_dir_all(&pg_dir)?;
    let postgres = Arc::new(Postgres::new(
        args.pg_bin.clone(),
        pg_dir,
        args.pg_user.clone(),
        free_port()?,
    ));
    postgres.start().await?;
    let _ = postgres_slot.set(Arc::clone(&postgres));
    let admin = infra::connect(&postgres.url("postgres")).await?;
    for service in SERVICES {
        admin
            .batch_execute(&format!("CREATE DATABASE {}", database(service)))
            .await?;
    }
    let mut tansu = Tansu::new(args.tansu.clone(), work_dir.join("tansu"), free_port()?);
    tansu.start().await?;
    tansu.add_missing_indexes(&args.tansu_indexes).await?;
    let brokers = tansu.brokers();
    tracing::info!(postgres_port = postgres.port, %brokers, logs = %log_dir.display(), "Infrastructure is up.");

    let database_url = |service: &str| postgres.url(&database(service));
    // As root, every replica runs under a uid of its own so a partition can
    // drop exactly its packets; the binaries then go where any uid reads them.
    let own_uids = is_root();
    let bin_dir = if own_uids {
        shared_binaries(&bin_dir)?
    } else {
        tracing::warn!("Not root: replicas share one uid, so no partitions are injected.");
        bin_dir
    };
    let fleet = Arc::new(Fleet::new(&FleetSettings {
        bin_dir: &bin_dir,
        log_dir: &log_dir,
        database_url: &database_url,
        brokers: brokers.clone(),
        prefix: PREFIX,
        partitions: args.partitions,
        own_uids,
        short_message_timeout: !args.no_long_broker_outages,
    })?);
    fleet.start_all().await?;
    tracing::info!(
        replicas = fleet.names.len(),
        "Every service and relay replica is up."
    );

    let topics = Topics::new(PREFIX);
    let event_topics = topics.events();
    let tap = tap::Tap::start(&brokers, &topics.all(), args.partitions)?;
    let ports = &fleet.ports;
    let channel = |service: &str| -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(format!("http://127.0.0.1:{}", ports[service][0]))?.connect_lazy())
    };
    let apis = check::Apis {
        order: OrderServiceClient::new(channel("order")?),
        delivery: DeliveryServiceClient::new(channel("delivery")?),
        inventory: InventoryServiceClient::new(channel("inventory")?),
    };

    // A catalogue that runs short: stock for about half the demand.
    let per_product = (args.orders as f64 * 0.98 * 3.0) / args.products.max(1) as f64;
    let mut catalogue = Vec::new();
    let mut initial_stock = HashMap::new();
    for n in 0..args.products.max(1) {
        let stock = (per_product * rng.random_range(0.3..0.8)).round() as i64;
        let product = apis
            .inventory
            .clone()
            .create_inventory(CreateInventoryRequest {
                product_name: format!("Product {n}"),
                stock,
            })
            .await?
            .into_inner();
        initial_stock.insert(product.id, stock);
        catalogue.push((product.id, product.product_name));
    }

    let planned = load::plan(&mut rng, args.orders, &catalogue);
    let span = Duration::from_secs_f64(args.orders as f64 / f64::from(args.rate.max(1)));
    let fault_plan = faults::plan(
        &mut rng,
        &fleet,
        args.kills_per_replica,
        args.rounds,
        span,
        faults::Options {
            partitions: own_uids,
            long_broker_outages: !args.no_long_broker_outages,
        },
    );
    let injector = Arc::new(inject::Injector::new(&brokers, tap.clone(), event_topics)?);
    let targets = Arc::new(faults::Targets {
        fleet: Arc::clone(&fleet),
        postgres: Arc::clone(&postgres),
        tansu: Arc::new(Mutex::new(tansu)),
        injector: Arc::clone(&injector),
        admin_url: postgres.url("postgres"),
        databases: SERVICES
            .iter()
            .map(|s| (database(s), database_url(s)))
            .collect(),
    });
    let broker_restarts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let supervisor = {
        let (fleet, tansu, restarts) = (
            Arc::clone(&fleet),
            Arc::clone(&targets.tansu),
            Arc::clone(&broker_restarts),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                fleet.supervise().await;
                // A broker whose storage died is restarted, as an
                // orchestrator's liveness probe would (see `Tansu::wedged`).
                if let Ok(mut tansu) = tansu.try_lock()
                    && tansu.wedged()
                {
                    tracing::warn!("Tansu's storage panicked; restarting the broker.");
                    restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let restarted = async {
                        tansu.kill().await?;
                        tansu.start().await
                    };
                    if let Err(error) = restarted.await {
                        tracing::error!(%error, "Broker restart failed; trying again.");
                    }
                }
            }
        })
    };
    tracing::info!(
        faults = fault_plan.len(),
        span_secs = span.as_secs(),
        "Load and faults starting."
    );
    let started = Instant::now();
    let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (outcome, tally) = tokio::join!(
        load::run(
            &ports["order"],
            planned,
            args.rate,
            args.clients,
            Arc::clone(&progress),
        ),
        faults::inject(fault_plan, Arc::clone(&targets), progress, args.orders),
    );
    let outcome = outcome?;
    let load_time = started.elapsed();
    tracing::info!(
        placed = outcome.placed.len(),
        "Load and faults done; waiting for quiet."
    );

    let urls: Vec<(&'static str, String)> =
        SERVICES.iter().map(|s| (*s, database_url(s))).collect();
    let plain_urls: Vec<String> = urls.iter().map(|(_, u)| u.clone()).collect();
    let time_to_quiet = quiet::wait(
        &brokers,
        PREFIX,
        args.partitions,
        &plain_urls,
        &tap,
        Duration::from_secs(args.quiet_timeout_secs),
    )
    .await;
    supervisor.abort();
    let blind = tap.blind_spots();
    if !blind.is_empty() {
        anyhow::bail!(
            "the observer lost sight of records, so this run cannot be judged \
             (a failure of the run, not of the mall): {blind:?}"
        );
    }

    let mut findings = check::Findings::default();
    check::public_invariants(&apis, &initial_stock, &outcome, &mut findings).await?;
    let poison = injector.poison_sent.lock().await.clone();
    check::wire_invariants(&tap, PREFIX, &urls, &poison, &mut findings).await?;

    fleet.scrape_all().await;
    let counted = fleet.totals().await;
    let figures = report::Figures {
        seed,
        orders_requested: args.orders,
        outcome: &outcome,
        tally: &tally,
        findings: &findings,
        counted,
        unexpected_exits: fleet
            .unexpected_exits
            .load(std::sync::atomic::Ordering::Relaxed),
        broker_restarts: broker_restarts.load(std::sync::atomic::Ordering::Relaxed),
        load_time,
        time_to_quiet,
    };
    for violation in findings.violations.iter().take(20) {
        println!("violation: {violation}");
    }
    for failure in &tally.failures {
        println!("fault not injected: {failure}");
    }
    println!("{}", figures.render());
    println!("logs: {}", log_dir.display());
    fleet.kill_all().await;
    targets.tansu.lock().await.kill().await?;
    Ok(figures.passed())
}
