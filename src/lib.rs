//! kv: a key-value store served by `kv-node` and used through `kv-cli`.
//!
//! The request path, in module order (docs/ARCHITECTURE.md follows it step by step):
//!
//! 1. [`connection`] reads frames ([`protocol::frame`]) and decodes them into
//!    [`protocol::message::Request`]s.
//! 2. [`server`] accepts connections, and its handler gathers the requests a client has
//!    pipelined into one batch and parses each with [`command::Command::parse`]. A connection
//!    whose hello names a peer carries Raft traffic and the node's control plane instead
//!    ([`peer`], [`raft::network`]).
//! 3. The server's executor runs the batch in parts, reaching the cluster only through its
//!    `Cluster` trait. Writes and membership changes go to the leader (a follower forwards
//!    them), where consecutive writes become one Raft proposal ([`raft`]), which the state
//!    machine applies to the [`store`] through the deterministic `Store::apply_write` on every
//!    node. Consecutive linearizable reads share one read index confirmed by the leader (a
//!    follower asks the leader for it), wait until the node has applied that far, and read its
//!    own store. Each step ends in an outcome (done, certainly not applied, or unknown), and only
//!    what was certainly not applied is retried.
//! 4. The answers go back in request order, one flush per batch, writes with their replication
//!    picture.
//!
//! The client side is [`client`] (connect, call, pipeline) and [`cli`] (shell, batches, demo).
//! [`config`] turns a TOML file and flags into a validated node configuration; [`tls`] secures
//! every connection.

pub mod addr;
pub mod auth;
pub mod cli;
pub mod client;
pub mod command;
pub mod config;
pub mod connection;
pub mod log;
pub mod metrics;
pub mod peer;
pub mod protocol;
pub mod raft;
pub mod server;
pub mod store;
pub mod tls;
