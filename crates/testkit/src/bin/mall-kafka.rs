//! Runs Apache Kafka for the mall's shell commands (`scripts/test.sh`,
//! `scripts/run-mall.sh`, `scripts/bench.sh`) the way the tests run it:
//! starts the nodes, prints one line `KAFKA_BROKERS=<host:port,…>` on
//! standard output once every node is listed in metadata, and on SIGTERM or
//! Ctrl-C shuts them down cleanly.

use std::path::PathBuf;

use clap::Parser;
use mall_testkit::{Kafka, KafkaSpec};
use tokio::signal::unix::{SignalKind, signal};

/// Apache Kafka (KRaft) on 127.0.0.1, from the jars in $MALL_KAFKA_LIBS.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where the nodes keep their data and logs (reused when present).
    #[arg(long, env = "MALL_KAFKA_DIR")]
    dir: PathBuf,
    /// How many nodes, each broker and controller.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
    nodes: u16,
    /// Heap of each node's JVM, in MiB.
    #[arg(long, env = "MALL_KAFKA_HEAP_MB", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(128..=16384))]
    heap_mb: u32,
    /// The client port of the first node (a free one if unset).
    #[arg(long)]
    port: Option<u16>,
    /// A file to write the `KAFKA_BROKERS=…` line to as well.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut spec = KafkaSpec::new(&args.dir, usize::from(args.nodes));
    spec.heap_mb = args.heap_mb;
    spec.first_port = args.port;
    let mut kafka = tokio::select! {
        started = Kafka::start(spec) => started?,
        _ = terminate.recv() => return Ok(()),
        _ = interrupt.recv() => return Ok(()),
    };
    let line = format!("KAFKA_BROKERS={}", kafka.bootstrap());
    if let Some(file) = &args.ready_file {
        std::fs::write(file, format!("{line}\n"))?;
    }
    tracing::info!(brokers = %kafka.bootstrap(), nodes = kafka.len(), "Kafka is ready.");
    #[allow(clippy::print_stdout)]
    {
        println!("{line}");
    }
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::info!("Stopping Kafka.");
    kafka.stop().await?;
    Ok(())
}
