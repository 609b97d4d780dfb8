//! The end-to-end suite: the whole mall in-process (`mall_e2e::spawn_mall`)
//! on real PostgreSQL and Apache Kafka, one module per subject.
//!
//! One test binary rather than one per file: each binary links the whole
//! mall, and forty of them made most of the suite's build time. nextest
//! still runs every test in a process of its own; run one subject with
//! `scripts/test.sh -p mall-e2e saga::` (a name filter).

mod auth;
mod bad_input;
mod bad_input_props;
mod broker_failover;
mod burst;
mod clients;
mod configuration_docs;
mod crash_consumer;
mod crash_relay;
mod db_errors;
mod db_faults;
mod dlq_redrive;
mod durability;
mod durability_cluster;
mod health;
mod hostile_callers;
mod hostile_records;
mod inbox_reuse;
mod kafka_security;
mod limits;
mod metrics;
mod out_of_order;
mod partition;
mod pg_tls;
mod poison;
mod rebalance_lanes;
mod relay;
mod relay_fair;
mod relay_faults;
mod relay_foreign;
mod relay_health;
mod relay_lock_order;
mod relay_order;
mod relay_prepare;
mod relay_stalls;
mod replay;
mod replicas;
mod request_id;
mod retention;
mod saga;
mod self_heal;
mod shared_rows;
mod startup;
mod traces;
