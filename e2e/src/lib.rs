//! Test harness: a whole mall per test, on real PostgreSQL and a real broker.
//!
//! Like zero-to-production's `spawn_app()`, every test gets its own
//! databases, its own topic prefix and consumer groups, and servers on port
//! 0, so tests run in parallel without seeing each other. The infrastructure
//! comes from `scripts/test.sh` through `MALL_TEST_POSTGRES_URL` and
//! `MALL_TEST_KAFKA_BROKERS`; without it every test fails loudly.
//!
//! This crate keeps only the in-process mall (the one piece that links the
//! three services) and its tests; what the fault run and the benchmark share
//! with it is the test kit's (`mall-testkit`), re-exported here under the
//! names the tests use.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

pub mod mall;
pub mod scrape;

pub use mall::{Mall, spawn_mall, spawn_mall_with};
pub use mall_testkit::env::{required_env, run, unique_name, wait_for};
pub use mall_testkit::{outbox, postgres, topics as kafka};
