//! What the mall's tests, its fault run and its benchmark share, so that each
//! is written once: free ports, Apache Kafka brokers (one node, or a KRaft
//! cluster whose nodes faults kill and restart) run from the jars
//! `scripts/lib.sh` fetches from Maven Central, per-test databases and the
//! database faults (read-only windows, outages), network partitions,
//! topic readers, bare outbox databases, the flags a test mall runs with,
//! the mall's binaries as processes of a fleet, the one "quiet" rule, the
//! one invariant oracle, and reading a metrics endpoint from the outside.
//!
//! Nothing here is shipped, and nothing here depends on a service: no
//! service or relay depends on this crate, and it knows the binaries only by
//! their flags and their environment.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

pub mod binaries;
pub mod clients;
pub mod env;
pub mod kafka;
pub mod nft;
pub mod oracle;
pub mod outbox;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod progress;
pub mod quiet;
pub mod scrape;
pub mod settings;
pub mod topics;

pub use kafka::{Kafka, KafkaError, KafkaSpec, Security};
pub use ports::{free_port, wait_for_port};
