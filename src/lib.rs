//! kv: a key-value store served by `kv-node` and used through `kv-cli`.

pub mod protocol;
