//! Durable key-value state in an embedded `redb` database.
//!
//! [`Store`] owns one redb file under the node's data directory. Its contract is narrow on
//! purpose: [`Store::execute`] runs a sequence of commands in *one* transaction and commits it
//! durably (fsync) before returning, and [`apply_write`] is a deterministic function from a
//! [`Write`] and the current table to a [`Reply`]. Determinism is what lets a replicated log drive
//! the same code on every node and get the same state.
//!
//! redb calls block, so async callers go through [`group_commit::GroupCommit`] (writes) or call
//! reads directly: a read is a short in-memory B-tree walk or a page read, cheaper than a thread hop.
//!
//! Not here: replication, and anything about connections or the wire.

pub mod group_commit;

use crate::command::{Command, Read, Write};
use crate::protocol::message::Reply;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_bytes::ByteBuf;
use std::path::{Path, PathBuf};

/// The user's keys and values.
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

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
        let db = Database::create(&path).map_err(|source| StoreError::Open { path, source })?;
        // Create the table up front so that read transactions never see it missing.
        let txn = db.begin_write().map_err(StoreError::storage)?;
        txn.open_table(KV).map_err(StoreError::storage)?;
        txn.commit().map_err(StoreError::storage)?;
        Ok(Store { db })
    }

    /// Answers a read from the latest committed state.
    pub fn read(&self, read: &Read) -> Result<Reply, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let table = txn.open_table(KV).map_err(StoreError::storage)?;
        apply_read(&table, read).map_err(StoreError::storage)
    }

    /// Runs `f` in one write transaction and commits it durably if `f` succeeds. This is for an
    /// owner of tables beside [`KV`]: the Raft state machine keeps its applied index there, written
    /// in the same transaction as the data it describes.
    pub(crate) fn transact<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::storage)?;
        let value = f(&txn)?;
        txn.commit().map_err(StoreError::storage)?;
        Ok(value)
    }

    /// A consistent read-only view of the latest committed state.
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db.begin_read().map_err(StoreError::storage)
    }

    /// Runs `commands` in order in one transaction and commits it durably. Reads in the sequence
    /// see the writes before them. Either every write is committed or none is.
    pub fn execute<'a>(
        &self,
        commands: impl IntoIterator<Item = &'a Command>,
    ) -> Result<Vec<Reply>, StoreError> {
        self.transact(|txn| {
            let mut table = txn.open_table(KV)?;
            let replies = commands
                .into_iter()
                .map(|command| match command {
                    Command::Write(write) => apply_write(&mut table, write),
                    Command::Read(read) => apply_read(&table, read),
                    Command::Ping { message } => Ok(pong(message.as_deref())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(replies)
        })
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
    fn set(k: &str, v: &str) -> Command {
        Command::Write(Write::Set { key: b(k), value: b(v) })
    }
    fn get(k: &str) -> Command {
        Command::Read(Read::Get { key: b(k) })
    }
    fn del(ks: &[&str]) -> Command {
        Command::Write(Write::Del { keys: ks.iter().map(|k| b(k)).collect() })
    }
    fn bulk(v: &[u8]) -> Reply {
        Reply::Bulk { value: ByteBuf::from(v) }
    }

    #[test]
    fn a_batch_sees_its_own_writes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let replies =
            store.execute(&[get("a"), set("a", "1"), get("a"), del(&["a", "a", "b"]), get("a")]).unwrap();
        assert_eq!(
            replies,
            vec![Reply::Nil, Reply::ok(), bulk(b"1"), Reply::Integer { value: 1 }, Reply::Nil]
        );
    }

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.execute(&[set("k", "v"), set("bin", "\0\u{1}"), set("gone", "x")]).unwrap();
            store.execute(&[del(&["gone"])]).unwrap();
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
