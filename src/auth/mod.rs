//! Authentication primitives: stored secrets, md5, and SCRAM-SHA-256 (server side for clients, client side for servers).

pub mod cache;
pub mod md5;
pub mod scram;
pub mod secret;

pub use scram::{ScramClient, ScramClientKeys, ScramError, ScramServer};
pub use secret::{ScramSecret, Secret};
