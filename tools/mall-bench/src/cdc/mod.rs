//! P8 and P9: the relay beside Debezium's outbox router (change data
//! capture from the WAL), on the same PostgreSQL (`wal_level=logical`, a
//! server of its own so the other figures keep the default) and the same
//! broker, with the same rows, keys, payloads and topics. One carrier runs
//! at a time; each gets a fresh database and topic, is started and proven
//! streaming by a canary row before anything is timed, and is stopped (the
//! connector's slot dropped) before the other starts.

pub mod debezium;
pub mod report;
mod traffic;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mall_testkit::process::{Process, ProcessSpec};
use mall_testkit::settings::PARTITIONS;
use tokio_postgres::Client;

use crate::hist::Latencies;
use traffic::{CANARY_BASE, Watcher};

/// How much each carrier is given.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// P8: rows written as fast as the database takes them.
    pub rows: u64,
    /// P8: rows per writing transaction.
    pub rows_per_txn: u64,
    /// P9: steady rates (rows/s), one row per transaction.
    pub rates: Vec<f64>,
    /// P9: how long each rate is held.
    pub secs: u64,
}

/// Which carrier moves the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The mall's `outbox-relay` binary, its defaults.
    Relay,
    /// Debezium's connector in Kafka Connect standalone.
    Debezium,
}

/// P9 at one rate.
pub struct Steady {
    /// Offered rows/s.
    pub rate: f64,
    /// Commit acknowledged → record arrived.
    pub lags: Latencies,
}

/// What one carrier did in one round.
pub struct Carrier {
    /// P8: rows over first commit → last arrival.
    pub drain_rows_per_s: f64,
    /// P8 as a backlog: rows written while the carrier was paused
    /// (SIGSTOP: its sessions, and Debezium's slot, kept), over resume →
    /// last arrival.
    pub backlog_rows_per_s: f64,
    /// CPU seconds its process used to drain the backlog.
    pub backlog_cpu_secs: f64,
    /// P8: how fast the database took the rows (the drain's ceiling).
    pub written_rows_per_s: f64,
    /// P8: each row's commit → arrival while the burst drained.
    pub drain_lags: Latencies,
    /// P9, one per rate.
    pub steady: Vec<Steady>,
    /// CPU seconds its process used while measured (P8 and P9).
    pub cpu_secs: f64,
    /// Its process's peak RSS.
    pub peak_rss_mib: f64,
    /// Records that arrived twice.
    pub duplicates: u64,
}

/// P8 and P9, both carriers, round by round.
pub struct Cdc {
    /// P8's rows.
    pub rows: u64,
    /// The relay, one entry per round.
    pub relay: Vec<Carrier>,
    /// Debezium, one entry per round.
    pub debezium: Vec<Carrier>,
}

/// Where the figure runs.
pub struct Setting<'a> {
    /// The `wal_level=logical` server, without a database.
    pub server_url: &'a str,
    /// Bootstrap brokers.
    pub brokers: &'a str,
    /// The relay binary's directory.
    pub bin_dir: &'a Path,
    /// Where process logs and Connect's files go.
    pub logs: &'a Path,
    /// Connect and the connector.
    pub install: &'a debezium::Install,
}

/// Runs the relay and Debezium through the same traffic, `rounds` times,
/// which goes first alternating.
pub async fn measure(setting: &Setting<'_>, sizes: &Sizes, rounds: usize) -> anyhow::Result<Cdc> {
    let mut cdc = Cdc {
        rows: sizes.rows,
        relay: Vec::new(),
        debezium: Vec::new(),
    };
    for round in 0..rounds.max(1) {
        let order = if round % 2 == 0 {
            [Kind::Relay, Kind::Debezium]
        } else {
            [Kind::Debezium, Kind::Relay]
        };
        for kind in order {
            let carried = carry(kind, setting, sizes).await?;
            match kind {
                Kind::Relay => cdc.relay.push(carried),
                Kind::Debezium => cdc.debezium.push(carried),
            }
        }
    }
    Ok(cdc)
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url} (MALL_BENCH_CDC_POSTGRES_URL)"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A running carrier.
enum Running {
    Relay(Process),
    Debezium(debezium::Connect),
}

impl Running {
    fn process(&mut self) -> &mut Process {
        match self {
            Self::Relay(process) => process,
            Self::Debezium(connect) => connect.process(),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Relay(mut process) => {
                process.stop().await?;
                Ok(())
            }
            Self::Debezium(connect) => connect.stop().await,
        }
    }
}

/// One carrier through P8 and P9, on a database and topic of its own.
async fn carry(kind: Kind, setting: &Setting<'_>, sizes: &Sizes) -> anyhow::Result<Carrier> {
    let name = mall_testkit::env::unique_name(match kind {
        Kind::Relay => "cdc_relay_",
        Kind::Debezium => "cdc_dbz_",
    });
    let server = setting.server_url.trim_end_matches('/');
    let admin = connect(&format!("{server}/postgres")).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let url = format!("{server}/{name}");
    mall_testkit::outbox::migrate_outbox(&url).await;
    let topic = format!("{name}.events");
    platform_core::kafka::ensure_topics(
        setting.brokers,
        std::slice::from_ref(&topic),
        PARTITIONS,
        1,
        platform_core::kafka::Retention::BrokerDefault,
        None,
    )
    .await?;
    let result = carry_on(kind, setting, sizes, &url, &topic).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    result
}

async fn carry_on(
    kind: Kind,
    setting: &Setting<'_>,
    sizes: &Sizes,
    url: &str,
    topic: &str,
) -> anyhow::Result<Carrier> {
    let main = connect(url).await?;
    let watcher = Watcher::start(setting.brokers, topic, PARTITIONS)?;
    let mut running = match kind {
        Kind::Relay => {
            let spec = ProcessSpec {
                name: "p8-outbox-relay".to_owned(),
                program: setting.bin_dir.join("outbox-relay"),
                args: Vec::new(),
                env: vec![
                    ("DATABASE_URL".to_owned(), url.to_owned()),
                    ("KAFKA_BROKERS".to_owned(), setting.brokers.to_owned()),
                    ("RUST_LOG".to_owned(), "warn".to_owned()),
                ],
                log: setting.logs.join("p8-outbox-relay.log"),
                uid: None,
            };
            Running::Relay(spec.spawn("benchmark, P8 and P9").await?)
        }
        Kind::Debezium => {
            let slot = mall_testkit::env::unique_name("mall_bench_");
            debezium::publish_outbox(&main, "mall_bench_outbox").await?;
            let wiring = debezium::Wiring {
                database_url: url,
                brokers: setting.brokers,
                slot: &slot,
                publication: "mall_bench_outbox",
            };
            let admin = connect(url).await?;
            let dir = setting.logs.join("debezium");
            Running::Debezium(
                debezium::Connect::start(setting.install, &dir, &wiring, admin).await?,
            )
        }
    };
    let measured = measure_carrier(&mut running, &main, &watcher, sizes, topic, url).await;
    running.stop().await?;
    measured
}

/// Waits until a canary row written now arrives: the carrier streams.
async fn until_streaming(
    running: &mut Running,
    client: &Client,
    watcher: &Watcher,
    topic: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    for seq in CANARY_BASE.. {
        traffic::canary(client, topic, seq).await?;
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_secs(2) {
            if watcher.has(seq) {
                return Ok(());
            }
            if let Some(status) = running.process().exited() {
                bail!("the carrier exited ({status}) before streaming; see its log");
            }
            if let Running::Debezium(connect) = running
                && let Some(why) = connect.failure().await
            {
                bail!("Debezium's connector failed: {why}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("no canary row arrived within 300 s; see the carrier's log");
        }
    }
    unreachable!("the canary range is not exhausted")
}

async fn measure_carrier(
    running: &mut Running,
    main: &Client,
    watcher: &Watcher,
    sizes: &Sizes,
    topic: &str,
    url: &str,
) -> anyhow::Result<Carrier> {
    until_streaming(running, main, watcher, topic).await?;
    let mut writers = Vec::new();
    for _ in 0..16 {
        writers.push(Arc::new(connect(url).await?));
    }
    let patience = Duration::from_secs(120);

    let alive = |running: &mut Running| running.process().exited().is_none();

    // Untimed: a tenth of P8's rows (the JVM compiles its hot paths; the
    // relay's connections and the broker's files warm up too).
    let warm = (sizes.rows / 10).clamp(1, 20_000);
    traffic::burst(&writers[..4], topic, 0, warm, sizes.rows_per_txn).await?;
    watcher.wait_for(warm, patience, || alive(running)).await?;

    // P8: the burst, from four writers.
    let cpu_before = running.process().cpu_secs().unwrap_or(0.0);
    let started = Instant::now();
    let commits =
        traffic::burst(&writers[..4], topic, warm, sizes.rows, sizes.rows_per_txn).await?;
    let written = started.elapsed();
    let mut next = warm + sizes.rows;
    watcher.wait_for(next, patience, || alive(running)).await?;
    let (drain_lags, last) = watcher.lags(&commits)?;
    let first = commits
        .iter()
        .map(|(_, at)| *at)
        .min()
        .context("nothing was written")?;
    let drain_rows_per_s = sizes.rows as f64 / last.duration_since(first).as_secs_f64();

    // P9: steady rates, one row per transaction.
    let mut steady = Vec::new();
    for rate in &sizes.rates {
        let commits = traffic::steady(
            &writers,
            topic,
            next,
            *rate,
            Duration::from_secs(sizes.secs),
        )
        .await?;
        next += commits.len() as u64;
        watcher.wait_for(next, patience, || alive(running)).await?;
        let (lags, _) = watcher.lags(&commits)?;
        steady.push(Steady { rate: *rate, lags });
    }
    let cpu_secs = running.process().cpu_secs().unwrap_or(0.0) - cpu_before;

    // P8 as a backlog: the carrier paused, the rows written, the carrier
    // resumed; timed from the resume.
    running.process().pause().await?;
    let commits =
        traffic::burst(&writers[..4], topic, next, sizes.rows, sizes.rows_per_txn).await?;
    next += sizes.rows;
    let cpu_paused = running.process().cpu_secs().unwrap_or(0.0);
    let resumed = Instant::now();
    running.process().resume().await?;
    watcher.wait_for(next, patience, || alive(running)).await?;
    let (_, last) = watcher.lags(&commits)?;
    let backlog_rows_per_s = sizes.rows as f64 / last.duration_since(resumed).as_secs_f64();
    let process = running.process();
    let backlog_cpu_secs = process.cpu_secs().unwrap_or(0.0) - cpu_paused;
    Ok(Carrier {
        drain_rows_per_s,
        backlog_rows_per_s,
        backlog_cpu_secs,
        written_rows_per_s: sizes.rows as f64 / written.as_secs_f64(),
        drain_lags,
        steady,
        cpu_secs,
        peak_rss_mib: process.peak_rss_mib().unwrap_or(0.0),
        duplicates: watcher.duplicates(),
    })
}
