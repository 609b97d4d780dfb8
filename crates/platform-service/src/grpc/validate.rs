//! Input checks shared by the gRPC APIs, with messages a caller can act on:
//! the platform's value rules, which the Kafka edge applies to events too.

pub use platform_core::validate::{clip, in_range, text};
