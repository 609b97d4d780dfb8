//! What a record of the outbox platform is, without any client.
//!
//! The CloudEvents envelope and its parsing, the topic names, the wiring
//! of an application, the value rules the APIs and the consumers share,
//! the dead-letter copy of a record, and the echo of what a stranger sent.
//! Pure data and pure functions: `platform-core` builds the clients on it,
//! and the Kafka edge can be fuzzed without building any of them.

pub mod cloudevents;
pub mod dead_letter;
pub mod echo;
pub mod names;
pub mod validate;
pub mod wiring;
