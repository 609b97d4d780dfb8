//! Starting a service: its settings, the security and durability checks that
//! must pass before it serves, and the start-up itself in named phases
//! (`database`, `topics`, `serve`), waited for patiently and supervised.

pub mod app;
pub mod config;
mod database;
pub mod durability;
pub mod error;
mod patience;
pub mod security;
mod serve;
pub mod spec;
mod supervise;
mod topics;
