//! `mall-bench`: every performance figure of the mall next to its baseline,
//! measured in one run on the same PostgreSQL and the same broker. It prints
//! a table (and with `--json` the same figures as one JSON object on the
//! last line); it asserts nothing about speed. `scripts/bench.sh` runs it.
#![allow(clippy::print_stdout)]

mod acks;
mod cdc;
mod cpu;
mod drain;
mod fair;
mod fleet;
mod hist;
mod inbox_cost;
mod lag;
mod load;
mod rebalance;
mod relay_report;
mod report;
mod rounds;
mod saga;
mod wakeup;
mod write_path;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mall_testkit::progress::Phase;

use anyhow::Context;
use clap::Parser;

/// Sizes of every figure; the defaults finish in under ten minutes on two cores.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A short run with tiny sizes (what the test suite runs so the
    /// benchmark cannot rot); its figures mean nothing.
    #[arg(long)]
    quick: bool,
    /// Also print every figure as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Directory of the service and relay binaries (default: this binary's).
    #[arg(long, env = "BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Where the processes' logs go (default: a new directory under /tmp).
    #[arg(long, env = "BENCH_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// The pgbench binary of P1's baseline.
    #[arg(long, env = "BENCH_PGBENCH", default_value = "pgbench")]
    pgbench: String,
    /// P1: concurrent clients on each side.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// P1: seconds each side runs.
    #[arg(long, default_value_t = 10)]
    write_secs: u64,
    /// P2: rows in the outbox to drain.
    #[arg(long, default_value_t = 200_000)]
    drain_rows: u64,
    /// P2: rows the relay fetches and sends at a time (`RELAY_BATCH_SIZE`;
    /// the relay's default is 500).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    drain_batch_size: u64,
    /// P2b: seconds the naive relay works.
    #[arg(long, default_value_t = 10)]
    naive_secs: u64,
    /// P3: seconds of load while the lag is measured.
    #[arg(long, default_value_t = 20)]
    lag_secs: u64,
    /// P4: offered rates (orders/s), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,200,500")]
    latency_rates: Vec<f64>,
    /// P4: seconds at each rate.
    #[arg(long, default_value_t = 60)]
    latency_secs: u64,
    /// P5: offered rates to step through (orders/s), until one falls behind.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,200,300,400,500,600,800,1000,1200,1500"
    )]
    step_rates: Vec<f64>,
    /// P5: seconds at each step.
    #[arg(long, default_value_t = 10)]
    step_secs: u64,
    /// P6: records each pass consumes.
    #[arg(long, default_value_t = 20_000)]
    inbox_records: u64,
    /// R1: offered orders/s while a delivery replica joins and leaves.
    #[arg(long, default_value_t = 50.0)]
    rebalance_rate: f64,
    /// R1: seconds of each phase (join, leave), per group protocol.
    #[arg(long, default_value_t = 30)]
    rebalance_secs: u64,
    /// P4, P5 and R1: products in the catalogue, orders spread over them
    /// round-robin (1 makes every reservation wait for one row lock).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    products: u64,
    /// P4 and P5: how long to wait at most for orders to settle after the
    /// load ended (what is still pending then is reported as such).
    #[arg(long, default_value_t = 90)]
    cutoff_secs: u64,
    /// P8: rows written as fast as the database takes them, for each of
    /// the relay and Debezium.
    #[arg(long, default_value_t = 200_000)]
    cdc_rows: u64,
    /// P8: rows per writing transaction (four writers).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    cdc_rows_per_txn: u64,
    /// P9: steady rates (rows/s, one row per transaction), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "500,2000")]
    cdc_rates: Vec<f64>,
    /// P9: seconds at each rate.
    #[arg(long, default_value_t = 20)]
    cdc_secs: u64,
    /// P8, P9 and P12: rounds, the carriers alternating which goes first
    /// (the median is the figure).
    #[arg(long, default_value_t = 3)]
    cdc_rounds: usize,
    /// P8 and P9: a PostgreSQL server with `wal_level=logical`, without a
    /// database (scripts/bench.sh starts one beside the main one).
    #[arg(long, env = "MALL_BENCH_CDC_POSTGRES_URL")]
    cdc_postgres_url: Option<String>,
    /// P8 and P9: Kafka Connect's jars (scripts/lib.sh's `ensure_debezium`).
    #[arg(long, env = "MALL_CONNECT_LIBS")]
    connect_libs: Option<PathBuf>,
    /// P8 and P9: the directory holding Debezium's connector (Connect's
    /// `plugin.path`).
    #[arg(long, env = "MALL_DEBEZIUM_PLUGINS")]
    debezium_plugins: Option<PathBuf>,
    /// P8 and P9: the `java` that runs Kafka Connect.
    #[arg(long, env = "BENCH_JAVA", default_value = "java")]
    java: PathBuf,
    /// P10: rows of the hot key waiting when the cold keys start.
    #[arg(long, default_value_t = 100_000)]
    fair_hot_rows: i64,
    /// P10: cold rows written per second, one key each.
    #[arg(long, default_value_t = 200.0)]
    fair_rate: f64,
    /// P10: seconds the cold keys are written.
    #[arg(long, default_value_t = 20)]
    fair_secs: u64,
    /// P2, P3 and P10: rounds (the median is the figure).
    #[arg(long, default_value_t = 3)]
    relay_rounds: usize,
    /// P11: seconds of pgbench per side and round.
    #[arg(long, default_value_t = 10)]
    wakeup_secs: u64,
    /// P11: rounds, the sides alternating (the median is the figure).
    #[arg(long, default_value_t = 3)]
    wakeup_rounds: usize,
    /// Only these figures, comma-separated (e.g. `p4,p6`; p7 comes with p5,
    /// p9 and p12 with p8).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "p1,p2,p3,p4,p5,p5c,p6,p8,p10,p11,r1"
    )]
    only: Vec<String>,
}

impl Args {
    /// `--quick` shrinks every size.
    fn shrink(&mut self) {
        self.write_secs = 1;
        self.wakeup_secs = 1;
        self.wakeup_rounds = 1;
        self.drain_rows = 2_000;
        self.naive_secs = 1;
        self.lag_secs = 1;
        self.latency_rates = vec![10.0, 50.0];
        self.latency_secs = 2;
        self.step_rates = vec![20.0, 40.0];
        self.step_secs = 2;
        self.inbox_records = 200;
        self.rebalance_rate = 10.0;
        self.rebalance_secs = 6;
        self.cutoff_secs = 60;
        self.cdc_rows = 2_000;
        self.cdc_secs = 1;
        self.cdc_rounds = 1;
        self.relay_rounds = 1;
        self.fair_hot_rows = 2_000;
        self.fair_secs = 1;
    }

    /// Where P8 and P9 run, or what is missing for them.
    fn cdc_install(&self) -> anyhow::Result<(String, cdc::debezium::Install)> {
        let missing = "P8 and P9 need --cdc-postgres-url, --connect-libs and --debezium-plugins \
                       (scripts/bench.sh sets them; or leave p8 out of --only)";
        let (Some(url), Some(connect_libs), Some(plugins)) = (
            self.cdc_postgres_url.clone(),
            self.connect_libs.clone(),
            self.debezium_plugins.clone(),
        ) else {
            anyhow::bail!(missing);
        };
        let install = cdc::debezium::Install {
            java: self.java.clone(),
            connect_libs,
            plugins,
        };
        Ok((url, install))
    }

    fn wants(&self, figure: &str) -> bool {
        self.only.iter().any(|f| f.eq_ignore_ascii_case(figure))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.shrink();
    }
    platform_service::telemetry::init();
    let bin_dir = match args.bin_dir.clone() {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("the binary has no directory")?
            .to_owned(),
    };
    let logs = match args.work_dir.clone() {
        Some(dir) => dir,
        None => std::env::temp_dir().join(mall_testkit::env::unique_name("mall-bench-")),
    };
    std::fs::create_dir_all(&logs)?;
    println!(
        "12st Mall benchmark{}: figures only, nothing is asserted. Process logs in {}",
        if args.quick {
            " (--quick: tiny sizes, figures meaningless)"
        } else {
            ""
        },
        logs.display()
    );
    let started = Instant::now();
    let secs = Duration::from_secs;
    let cutoff = secs(args.cutoff_secs);
    let shape = saga::Shape {
        cutoff,
        products: usize::try_from(args.products)?,
    };
    let mut figures = report::Figures::default();

    if args.wants("p1") {
        let phase = step("P1 write path, beside pgbench");
        let write = write_path::measure(
            &bin_dir,
            &logs,
            &args.pgbench,
            args.clients,
            secs(args.write_secs),
        )
        .await?;
        phase.say(&format!(
            "   {:.0} PlaceOrder/s; pgbench {:.0} tx/s",
            write.ours, write.pgbench
        ));
        figures.write = Some(write);
    }
    if args.wants("p11") {
        let phase = step("P11 the write transaction beside the relay's wake-up");
        let wakeup = wakeup::measure(
            &bin_dir,
            &logs,
            &args.pgbench,
            args.clients,
            secs(args.wakeup_secs),
            args.wakeup_rounds,
        )
        .await?;
        phase.say(&format!(
            "   with the relay polling {:.0} tx/s, without {:.0} tx/s, with NOTIFY {:.0} tx/s (medians)",
            rounds::median(&wakeup.with),
            rounds::median(&wakeup.without),
            rounds::median(&wakeup.notify)
        ));
        figures.wakeup = Some(wakeup);
    }
    if args.wants("p4") {
        let phase = step("P4 saga latency");
        let mut mall = saga::Saga::start(&bin_dir, &logs, shape).await?;
        for rate in &args.latency_rates {
            let run = mall.latency(*rate, secs(args.latency_secs)).await?;
            phase.say(&format!(
                "   at {rate:.0}/s: {} ({} unsettled at cut-off)",
                run.saga.summary(),
                run.pending
            ));
            figures.latency.push(run);
        }
    }
    if args.wants("p5") {
        let phase = step("P5 saga throughput (and P7 memory)");
        let mut mall = saga::Saga::start(&bin_dir, &logs, shape).await?;
        figures.steps = climb(&mut mall, &args.step_rates, secs(args.step_secs), &phase).await?;
        figures.rss = mall.peak_rss_mib();
    }
    if args.wants("p5c") {
        let phase =
            step("P5c saga throughput on three brokers (replication 3, min.insync.replicas 2)");
        let mut spec = mall_testkit::KafkaSpec::new(logs.join("kafka-cluster"), 3);
        spec.heap_mb = 512;
        let mut kafka = mall_testkit::Kafka::start(spec).await?;
        let replication = [("KAFKA_TOPIC_REPLICATION", "3".to_owned())];
        let mut mall =
            saga::Saga::start_on(&bin_dir, &logs, shape, &kafka.bootstrap(), &replication).await?;
        figures.cluster_steps =
            climb(&mut mall, &args.step_rates, secs(args.step_secs), &phase).await?;
        drop(mall);
        // A throwaway cluster: killed, not stopped node by node (a
        // graceful stop waits for each controlled shutdown).
        kafka.kill_all().await?;
    }
    if args.wants("r1") {
        use platform_service::consumer::GroupProtocol;
        for protocol in [GroupProtocol::Classic, GroupProtocol::Consumer] {
            let phase = step(&format!("R1 rebalance pause, group.protocol={protocol:?}"));
            let r1 = rebalance::measure(
                &bin_dir,
                &logs,
                protocol,
                args.rebalance_rate,
                secs(args.rebalance_secs),
                shape,
            )
            .await?;
            phase.say(&format!(
                "   join: saga p50 {:.0} ms, max {:.0} ms; leave: p50 {:.0} ms, max {:.0} ms",
                r1.join.0, r1.join.1, r1.leave.0, r1.leave.1
            ));
            figures.rebalance.push(r1);
        }
    }
    if args.wants("p3") {
        // Half of P1's rate (200/s when P1 was not measured).
        let rate = figures
            .write
            .as_ref()
            .map_or(200.0, |w| w.ours / 2.0)
            .max(1.0);
        let phase = step(&format!("P3 relay lag at {rate:.0} orders/s"));
        for _ in 0..args.relay_rounds.max(1) {
            let lag = lag::measure(&bin_dir, &logs, rate, secs(args.lag_secs)).await?;
            phase.say(&format!("   {}", lag.latencies.summary()));
            figures.lag.push(lag);
        }
    }
    if args.wants("p10") {
        let phase = step("P10 a cold key's lag beside a hot key's backlog");
        for _ in 0..args.relay_rounds.max(1) {
            let fair =
                fair::measure(args.fair_hot_rows, args.fair_rate, secs(args.fair_secs)).await?;
            phase.say(&format!(
                "   cold keys {}; the hot key {:.0} rows/s",
                fair.cold.summary(),
                fair.hot_rows_per_s
            ));
            figures.fair.push(fair);
        }
    }
    if args.wants("p6") {
        let phase = step("P6 inbox cost");
        let inbox = inbox_cost::measure(args.inbox_records).await?;
        phase.say(&format!(
            "   with inbox {:.0} rec/s, without {:.0} rec/s, replay {:.0} rec/s",
            inbox.with_inbox, inbox.without_inbox, inbox.replay
        ));
        figures.inbox = Some(inbox);
    }
    if args.wants("p8") {
        let (server_url, install) = args.cdc_install()?;
        let phase = step("P8 and P9 relay beside Debezium's outbox router (CDC)");
        let sizes = cdc::Sizes {
            rows: args.cdc_rows,
            rows_per_txn: args.cdc_rows_per_txn,
            rates: args.cdc_rates.clone(),
            secs: args.cdc_secs,
        };
        let setting = cdc::Setting {
            server_url: &server_url,
            brokers: &mall_testkit::settings::brokers(),
            bin_dir: &bin_dir,
            logs: &logs,
            install: &install,
        };
        let result = cdc::measure(&setting, &sizes, args.cdc_rounds).await?;
        for line in result.rows() {
            phase.say(&format!(
                "   {}: {}, {} ({})",
                line[0], line[2], line[3], line[1]
            ));
        }
        figures.cdc = Some(result);
    }
    if args.wants("p2") {
        // Last: it leaves hundreds of thousands of records in the broker.
        let phase = step("P2 relay drain, beside a bare producer and a naive relay");
        for _ in 0..args.relay_rounds.max(1) {
            let drain = drain::measure(
                args.drain_rows,
                secs(args.naive_secs),
                i64::try_from(args.drain_batch_size)?,
            )
            .await?;
            phase.say(&format!(
                "   relay {:.0} rows/s, bare producer {:.0} rec/s, naive {:.0} rows/s",
                drain.relay, drain.raw, drain.naive
            ));
            figures.drain.push(drain);
        }
    }

    println!("\n{}\n\n{}", figures.table(), figures.details());
    println!("Whole benchmark: {:.0} s", started.elapsed().as_secs_f64());
    if args.json {
        println!("{}", figures.json());
    }
    Ok(())
}

/// P5's steps on `mall`: each offered rate in turn until one is not kept up.
async fn climb(
    mall: &mut saga::Saga,
    rates: &[f64],
    each: Duration,
    phase: &Phase,
) -> anyhow::Result<Vec<saga::Step>> {
    let mut steps = Vec::new();
    for rate in rates {
        let result = mall.step(*rate, each).await?;
        phase.say(&format!("   {}", report::step_line(&result)));
        let kept_up = result.sustained;
        steps.push(result);
        if !kept_up {
            break;
        }
    }
    Ok(steps)
}

/// Announces a phase and keeps its live progress line until dropped.
fn step(what: &str) -> Phase {
    println!("== {what}");
    Phase::start(what)
}
