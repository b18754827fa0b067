//! pgmux: a PgBouncer-compatible PostgreSQL connection pooler (library crate; `main.rs` is a thin CLI).

pub mod admin;
pub mod app;
pub mod auth;
pub mod autodb;
pub mod cancel;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod dev;
pub mod devcmd;
pub mod dns;
pub mod listener;
pub mod logging;
pub mod params;
pub mod peers;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod server;
pub mod shard;
pub mod sockopt;
pub mod state;
pub mod stats;
pub mod tls;
