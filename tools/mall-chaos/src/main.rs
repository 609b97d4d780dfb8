//! `mall-chaos`: a Jepsen-style fault-injection run of the whole mall.
//!
//! It starts its own PostgreSQL and Apache Kafka cluster (three KRaft nodes
//! by default, topics replicated three times), two
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
mod cluster;
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
use fleet::{Fleet, FleetSettings};
use infra::{Postgres, free_port};
use mall_saga::Service;
use mall_testkit::progress::Phase;
use mall_testkit::{Kafka, KafkaSpec};

/// Topic prefix of the run.
pub(crate) const PREFIX: &str = "chaos";

#[tokio::main]
async fn main() -> ExitCode {
    platform_core::telemetry::init();
    let args = Args::parse();
    let postgres: Arc<OnceLock<Arc<Postgres>>> = Arc::default();
    // Interrupted (Ctrl-C or SIGTERM), the run is dropped, and with it every
    // replica and Kafka node it started (they are killed on drop).
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let result = tokio::select! {
        result = run(&args, Arc::clone(&postgres)) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        () = terminate => Err(anyhow::anyhow!("terminated")),
    };
    if let Some(postgres) = postgres.get()
        && let Err(error) = postgres.stop().await
    {
        tracing::warn!(%error, "PostgreSQL did not stop cleanly.");
    }
    // The copied binaries (about 100 MB), jars and broker data go with the run.
    for what in ["bin", "kafka", "kafka-libs"] {
        let _ = std::fs::remove_dir_all(shared_dir(what));
    }
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

fn database(service: Service) -> String {
    format!("mall_{}", service.name())
}

/// Whether this process runs as root (the owner of `/proc/self`).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A temporary directory of this run's that every uid can enter.
fn shared_dir(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mall-chaos-{what}-{}", std::process::id()))
}

/// Copies the Kafka jars (`$MALL_KAFKA_LIBS`) where every uid reads them.
fn shared_kafka_libs() -> anyhow::Result<std::path::PathBuf> {
    let from = std::env::var_os(mall_testkit::kafka::LIBS_ENV)
        .map(std::path::PathBuf::from)
        .context("MALL_KAFKA_LIBS is not set (scripts/chaos.sh sets it)")?;
    let dir = shared_dir("kafka-libs");
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&from)? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, dir.join(name))?;
        }
    }
    Ok(dir)
}

/// Copies the replicas' binaries into a temporary directory readable and
/// executable by every uid: replicas under their own uids cannot enter a
/// checkout under, say, /root. `main` removes it when the run ends.
fn shared_binaries(from: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = shared_dir("bin");
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
    for old in ["logs", "kafka"] {
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

    let starting = Phase::start("Starting PostgreSQL, Apache Kafka and the fleet");
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
    for service in Service::ALL {
        admin
            .batch_execute(&format!("CREATE DATABASE {}", database(service)))
            .await?;
    }
    // As root, every replica and every Kafka node runs under a uid of its
    // own, so a partition or an isolation can drop exactly its packets.
    let own_uids = is_root();
    let mut spec = KafkaSpec::new(work_dir.join("kafka"), usize::from(args.kafka_nodes));
    if own_uids {
        // Their data, and the jars, where those uids can read them.
        spec.dir = shared_dir("kafka");
        spec.libs = Some(shared_kafka_libs()?);
        spec.uid_base = Some(fleet::FIRST_UID + 1_000);
    }
    spec.heap_mb = 384;
    // A follower that has not caught up for 6 s leaves the ISR (Kafka's
    // default is 30 s; leaders check every half of it): an isolated
    // broker's ISR shrink shows well within a fault's window.
    spec.properties = vec![("replica.lag.time.max.ms".into(), "6000".into())];
    let kafka = Kafka::start(spec).await?;
    let brokers = kafka.bootstrap();
    let (replication, min_insync) = mall_testkit::kafka::replication(kafka.len());
    tracing::info!(postgres_port = postgres.port, %brokers, logs = %log_dir.display(), "Infrastructure is up.");

    let database_url = |service: Service| postgres.url(&database(service));
    // Under their own uids, the replicas' binaries go where any uid reads them.
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
        replication,
        min_insync,
        own_uids,
        short_message_timeout: !args.no_long_broker_outages,
    })?);
    fleet.start_all().await?;
    drop(starting);
    tracing::info!(
        replicas = fleet.names.len(),
        "Every service and relay replica is up."
    );

    let topics = Topics::new(PREFIX);
    let event_topics = topics.events();
    let tap = tap::Tap::start(&brokers, &topics.all(), args.partitions)?;
    let ports = &fleet.ports;
    let channel =
        |service: Service| -> Channel { mall_testkit::clients::lazy_on(ports[&service][0]) };
    let apis = check::Apis {
        order: OrderServiceClient::new(channel(Service::Order)),
        delivery: DeliveryServiceClient::new(channel(Service::Delivery)),
        inventory: InventoryServiceClient::new(channel(Service::Inventory)),
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
            kafka_nodes: usize::from(args.kafka_nodes),
            topic_partitions: args.partitions,
        },
    );
    let injector = Arc::new(inject::Injector::new(&brokers, tap.clone(), event_topics)?);
    let targets = Arc::new(faults::Targets {
        fleet: Arc::clone(&fleet),
        postgres: Arc::clone(&postgres),
        kafka: Arc::new(Mutex::new(kafka)),
        injector: Arc::clone(&injector),
        admin_url: postgres.url("postgres"),
        databases: Service::ALL
            .iter()
            .map(|s| (database(*s), database_url(*s)))
            .collect(),
    });
    let supervisor = {
        let fleet = Arc::clone(&fleet);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                fleet.supervise().await;
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
    let loading = Phase::counting(
        "Load and faults (orders placed)",
        args.orders as u64,
        Arc::clone(&progress),
    );
    let (outcome, tally) = tokio::join!(
        load::run(
            &ports[&Service::Order],
            planned,
            args.rate,
            args.clients,
            Arc::clone(&progress),
        ),
        faults::inject(fault_plan, Arc::clone(&targets), progress, args.orders),
    );
    drop(loading);
    let outcome = outcome?;
    let load_time = started.elapsed();
    tracing::info!(
        placed = outcome.placed.len(),
        "Load and faults done; waiting for quiet."
    );

    let urls: Vec<(&'static str, String)> = Service::ALL
        .iter()
        .map(|s| (s.name(), database_url(*s)))
        .collect();
    let quieting = Phase::start("Waiting for quiet");
    let time_to_quiet = quiet::wait(
        &brokers,
        PREFIX,
        args.partitions,
        &urls,
        &tap,
        Duration::from_secs(args.quiet_timeout_secs),
    )
    .await;
    drop(quieting);
    supervisor.abort();
    let blind = tap.blind_spots();
    if !blind.is_empty() {
        anyhow::bail!(
            "the observer lost sight of records, so this run cannot be judged \
             (a failure of the run, not of the mall): {blind:?}"
        );
    }

    let checking = Phase::start("Checking the invariants");
    let mut findings = check::Findings::default();
    mall_testkit::oracle::public_invariants(&apis, &initial_stock, Some(&outcome), &mut findings)
        .await?;
    let poison = injector.poison_sent.lock().await.clone();
    check::wire_invariants(&tap, PREFIX, &urls, &poison, &mut findings).await?;

    fleet.scrape_all().await;
    let counted = fleet.totals().await;
    drop(checking);
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
    // The run is judged and its data is thrown away.
    let mut kafka = targets.kafka.lock().await;
    kafka.kill_all().await?;
    // The nodes' logs stay with the run's (their data may be temporary).
    for node in 0..kafka.len() {
        if let Some(log) = kafka.log_path(node) {
            let _ = std::fs::copy(log, log_dir.join(format!("kafka-node-{}.log", node + 1)));
        }
    }
    Ok(figures.passed())
}
