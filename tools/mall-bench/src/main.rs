//! `mall-bench`: every performance figure of the mall next to its baseline,
//! measured in one run on the same PostgreSQL and the same broker. It prints
//! a table (and with `--json` the same figures as one JSON object on the
//! last line); it asserts nothing about speed. `scripts/bench.sh` runs it.
#![allow(clippy::print_stdout)]

mod drain;
mod fleet;
mod hist;
mod inbox_cost;
mod lag;
mod load;
mod report;
mod saga;
mod write_path;

use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    /// P2b: seconds the naive relay works.
    #[arg(long, default_value_t = 10)]
    naive_secs: u64,
    /// P3: seconds of load while the lag is measured.
    #[arg(long, default_value_t = 20)]
    lag_secs: u64,
    /// P4: offered rates (orders/s), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,200")]
    latency_rates: Vec<f64>,
    /// P4: seconds at each rate.
    #[arg(long, default_value_t = 60)]
    latency_secs: u64,
    /// P5: offered rates to step through (orders/s), until one falls behind.
    #[arg(long, value_delimiter = ',', default_value = "100,200,300,400,500,600,800,1000,1200,1500")]
    step_rates: Vec<f64>,
    /// P5: seconds at each step.
    #[arg(long, default_value_t = 10)]
    step_secs: u64,
    /// P6: records each pass consumes.
    #[arg(long, default_value_t = 20_000)]
    inbox_records: u64,
}

impl Args {
    /// `--quick` shrinks every size.
    fn shrink(&mut self) {
        self.write_secs = 1;
        self.drain_rows = 2_000;
        self.naive_secs = 1;
        self.lag_secs = 1;
        self.latency_rates = vec![10.0, 50.0];
        self.latency_secs = 2;
        self.step_rates = vec![20.0, 40.0];
        self.step_secs = 2;
        self.inbox_records = 200;
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
        None => std::env::temp_dir().join(mall_e2e::unique_name("mall-bench-")),
    };
    std::fs::create_dir_all(&logs)?;
    println!(
        "12st Mall benchmark{}: figures only, nothing is asserted. Process logs in {}",
        if args.quick { " (--quick: tiny sizes, figures meaningless)" } else { "" },
        logs.display()
    );
    let started = Instant::now();
    let secs = Duration::from_secs;

    step("P1 write path, with pgbench");
    let write = write_path::measure(&bin_dir, &logs, &args.pgbench, args.clients, secs(args.write_secs)).await?;
    step("P2 relay drain, with a bare producer and a naive relay");
    let drain = drain::measure(args.drain_rows, secs(args.naive_secs)).await?;
    step("P3 relay lag at half of P1's rate");
    let lag = lag::measure(&bin_dir, &logs, (write.ours / 2.0).max(1.0), secs(args.lag_secs)).await?;
    step("P4 saga latency");
    let mut mall = saga::Saga::start(&bin_dir, &logs).await?;
    let mut latency = Vec::new();
    for rate in &args.latency_rates {
        latency.push(mall.latency(*rate, secs(args.latency_secs)).await?);
    }
    drop(mall);
    step("P5 saga throughput (and P7 memory)");
    let mut mall = saga::Saga::start(&bin_dir, &logs).await?;
    let mut steps = Vec::new();
    for rate in &args.step_rates {
        let result = mall.step(*rate, secs(args.step_secs)).await?;
        let kept_up = result.sustained;
        steps.push(result);
        if !kept_up {
            break;
        }
    }
    let rss = mall.peak_rss_mib();
    drop(mall);
    step("P6 inbox cost");
    let inbox = inbox_cost::measure(args.inbox_records).await?;

    let figures = report::Figures {
        write,
        drain,
        lag,
        latency,
        steps,
        inbox,
        rss,
    };
    println!("\n{}\n\n{}", figures.table(), figures.details());
    println!("Whole benchmark: {:.0} s", started.elapsed().as_secs_f64());
    if args.json {
        println!("{}", figures.json());
    }
    Ok(())
}

fn step(what: &str) {
    println!("== {what}");
}
