//! kv: a key-value store served by `kv-node` and used through `kv-cli`.

pub mod command;
pub mod config;
pub mod connection;
pub mod protocol;
pub mod server;
pub mod store;
