//! The inbox consumer loop every service runs.
//!
//! For each record, in partition order:
//! 1. validate key and CloudEvents headers, decode the payload;
//! 2. in one transaction: take a per-key advisory lock, insert the inbox
//!    row (`ON CONFLICT DO NOTHING`), and only if it was new apply the effect
//!    and write outgoing events to the outbox;
//! 3. after the commit, store the offset (auto-commit sends stored offsets
//!    only, as in vector's kafka source).
//!
//! Poison goes to the dead-letter topic; database trouble is waited out
//! (see [`process`]). The poll loop never blocks on a slow partition: each
//! partition has its own queue and lane ([`lanes`]), started and torn down
//! in the rebalance callback ([`context`]), and a client that stops fetching
//! is replaced ([`heal`]).

mod apply;
mod context;
mod decode;
mod handler;
mod heal;
mod lane;
mod lanes;
mod process;
mod protocol;
mod receive_errors;
mod session;
mod settle;
mod skips;
mod stall;
mod stats;

pub use apply::InboxGate;
pub use handler::{ApplyError, EventHandler, Tx};
pub use lane::MAX_RUN;
pub use protocol::GroupProtocol;
pub use session::{ConsumerError, InboxConsumer};
pub use stats::Stats;
