//! What the mall's tests, its fault run and its benchmark share, so that each
//! is written once: free ports, and Apache Kafka brokers (one node, or a
//! KRaft cluster whose nodes faults kill and restart) run from the jars
//! `scripts/lib.sh` fetches from Maven Central.
//!
//! Nothing here is shipped: no service or relay depends on this crate.

pub mod kafka;
pub mod ports;

pub use kafka::{Kafka, KafkaError, KafkaSpec, Security};
pub use ports::{free_port, wait_for_port};
