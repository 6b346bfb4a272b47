//! Durable key-value state in an embedded `redb` database.
//!
//! [`Store`] owns one redb file under the node's data directory. Its contract is narrow on
//! purpose: [`apply_write`] is a deterministic function from a [`Write`] and the current table to
//! a [`Reply`], and `Store::transact` runs such writes in one transaction. Determinism
//! is what lets the replicated log drive the same code on every node and get the same state; the
//! only writer is the Raft state machine ([`crate::raft::state_machine`]).
//!
//! Reads are called directly from async code: a read is a short in-memory B-tree walk or a page
//! read, cheaper than a thread hop.
//!
//! Not here: replication, and anything about connections or the wire.

use crate::command::{Read, Write};
use crate::protocol::message::Reply;
pub use redb::Durability;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_bytes::ByteBuf;
use std::path::{Path, PathBuf};

/// The user's keys and values.
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// redb's page cache for this file. Its default (1 GiB) would let a node grow to hold the whole
/// file; pages beyond this are read back from the operating system's file cache, which is fast
/// and does not count against the node.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The name of the database file inside the data directory.
pub const STATE_FILE: &str = "state.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
}

impl StoreError {
    pub(crate) fn storage(e: impl Into<redb::Error>) -> StoreError {
        StoreError::Storage(e.into())
    }
}

/// The node's durable key-value state.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the store in `data_dir`. Fails if another process has it open.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::CreateDir { path: data_dir.to_path_buf(), source })?;
        let path = data_dir.join(STATE_FILE);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| StoreError::Open { path, source })?;
        // Create the table up front so that read transactions never see it missing.
        let txn = db.begin_write().map_err(StoreError::storage)?;
        txn.open_table(KV).map_err(StoreError::storage)?;
        txn.commit().map_err(StoreError::storage)?;
        Ok(Store { db })
    }

    /// Answers a read from the latest committed state.
    pub fn read(&self, read: &Read) -> Result<Reply, StoreError> {
        Ok(self.read_many([read])?.remove(0))
    }

    /// Answers reads from one consistent view of the latest committed state.
    pub fn read_many<'a>(&self, reads: impl IntoIterator<Item = &'a Read>) -> Result<Vec<Reply>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let table = txn.open_table(KV).map_err(StoreError::storage)?;
        reads.into_iter().map(|read| apply_read(&table, read).map_err(StoreError::storage)).collect()
    }

    /// Runs `f` in one write transaction and commits it if `f` succeeds: durably (fsynced before
    /// this returns) or not. A non-durable commit is visible to readers at once but may be lost in
    /// a crash, back to the last durable one; the next durable commit makes it durable too. This is
    /// for an owner of tables beside [`KV`]: the Raft state machine keeps its applied index there,
    /// written in the same transaction as the data it describes.
    pub(crate) fn transact<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write().map_err(StoreError::storage)?;
        txn.set_durability(durability).map_err(StoreError::storage)?;
        let value = f(&txn)?;
        txn.commit().map_err(StoreError::storage)?;
        Ok(value)
    }

    /// Makes every commit so far durable and returns a read-only view of exactly that state:
    /// no commit can slip in between, so everything the view shows survives a crash.
    pub(crate) fn durable_view(&self) -> Result<redb::ReadTransaction, StoreError> {
        // Holding the write transaction keeps other writers out until the view is taken.
        let txn = self.db.begin_write().map_err(StoreError::storage)?;
        let view = self.db.begin_read().map_err(StoreError::storage)?;
        txn.commit().map_err(StoreError::storage)?;
        Ok(view)
    }

    /// A consistent read-only view of the latest committed state.
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db.begin_read().map_err(StoreError::storage)
    }
}

/// The answer to `PING [message]`.
pub fn pong(message: Option<&[u8]>) -> Reply {
    match message {
        None => Reply::Status { value: "PONG".to_string() },
        Some(m) => Reply::Bulk { value: ByteBuf::from(m) },
    }
}

/// Applies one write to the table. Deterministic: the reply and the new state depend only on the
/// write and the table's contents.
pub fn apply_write(
    table: &mut redb::Table<&[u8], &[u8]>,
    write: &Write,
) -> Result<Reply, redb::StorageError> {
    Ok(match write {
        Write::Set { key, value } => {
            table.insert(key.as_ref(), value.as_ref())?;
            Reply::ok()
        }
        Write::Del { keys } => {
            let mut removed = 0;
            for key in keys {
                if table.remove(key.as_ref())?.is_some() {
                    removed += 1;
                }
            }
            Reply::Integer { value: removed }
        }
    })
}

fn apply_read(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    read: &Read,
) -> Result<Reply, redb::StorageError> {
    Ok(match read {
        Read::Get { key } => match table.get(key.as_ref())? {
            Some(value) => Reply::Bulk { value: ByteBuf::from(value.value()) },
            None => Reply::Nil,
        },
        Read::Exists { keys } => {
            let mut found = 0;
            for key in keys {
                if table.get(key.as_ref())?.is_some() {
                    found += 1;
                }
            }
            Reply::Integer { value: found }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }
    fn set(k: &str, v: &str) -> Write {
        Write::Set { key: b(k), value: b(v) }
    }
    fn del(ks: &[&str]) -> Write {
        Write::Del { keys: ks.iter().map(|k| b(k)).collect() }
    }
    fn apply(store: &Store, writes: &[Write]) -> Vec<Reply> {
        store
            .transact(Durability::Immediate, |txn| {
                let mut table = txn.open_table(KV)?;
                Ok(writes.iter().map(|w| apply_write(&mut table, w)).collect::<Result<Vec<_>, _>>()?)
            })
            .unwrap()
    }
    fn bulk(v: &[u8]) -> Reply {
        Reply::Bulk { value: ByteBuf::from(v) }
    }

    #[test]
    fn writes_apply_in_order_and_answer_like_redis() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let replies = apply(&store, &[set("a", "1"), set("b", "2"), del(&["a", "a", "c"]), del(&["a"])]);
        assert_eq!(
            replies,
            vec![Reply::ok(), Reply::ok(), Reply::Integer { value: 1 }, Reply::Integer { value: 0 }]
        );
        let reads = [Read::Get { key: b("a") }, Read::Get { key: b("b") }];
        assert_eq!(store.read_many(&reads).unwrap(), vec![Reply::Nil, bulk(b"2")]);
    }

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            apply(&store, &[set("k", "v"), set("bin", "\0\u{1}"), set("gone", "x")]);
            apply(&store, &[del(&["gone"])]);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.read(&Read::Get { key: b("k") }).unwrap(), bulk(b"v"));
        assert_eq!(store.read(&Read::Get { key: b("bin") }).unwrap(), bulk(b"\0\x01"));
        assert_eq!(store.read(&Read::Get { key: b("gone") }).unwrap(), Reply::Nil);
        let exists = Read::Exists { keys: vec![b("k"), b("k"), b("gone")] };
        assert_eq!(store.read(&exists).unwrap(), Reply::Integer { value: 2 });
    }

    #[test]
    fn a_second_open_of_the_same_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().expect("second open must fail");
        assert!(err.to_string().contains("state.redb"), "{err}");
    }
}
