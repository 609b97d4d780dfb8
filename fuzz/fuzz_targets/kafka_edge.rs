//! Arbitrary records through the Kafka edge (see `mall-fuzz-harness`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mall_fuzz_harness::{Record, kafka_edge};

fuzz_target!(|record: Record| {
    kafka_edge(&record);
});
