//! kv: a key-value store served by `kv-node` and used through `kv-cli`.
//!
//! The request path, in module order:
//!
//! 1. [`connection`] reads frames ([`protocol::frame`]) and decodes them into
//!    [`protocol::message::Request`]s.
//! 2. [`server`] accepts connections, and its handler gathers the requests a client has
//!    pipelined into one batch and parses each with [`command::Command::parse`].
//! 3. [`store`] executes the batch: writes through group commit (one durable redb transaction for
//!    every writer waiting at that moment) via the deterministic [`store::apply_write`], reads
//!    straight from the latest committed state.
//! 4. The answers go back in request order, one flush per batch.
//!
//! The client side is [`client`] (connect, call, pipeline) and [`cli`] (shell, batches, demo).
//! [`config`] turns a TOML file and flags into a validated node configuration.

pub mod cli;
pub mod client;
pub mod command;
pub mod config;
pub mod connection;
pub mod protocol;
pub mod raft;
pub mod server;
pub mod store;
