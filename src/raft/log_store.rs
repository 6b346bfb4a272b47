//! The Raft log and vote, durable under the data directory: entries in `raft-log.entries` (an
//! append-only file of checksummed records, see `entry_file`), and the vote, purge point,
//! committed index and peers seen in `raft-log.redb`.
//!
//! openraft asks two things of [`RaftLogStorage::append`]: entries are readable when it returns,
//! and its callback fires only once they are on disk. Making them durable costs an fsync, so
//! `append` does not do it itself:
//!
//! 1. It puts the entries in the log's in-memory tail (`log_tail`) that every reader consults, and
//!    returns.
//! 2. One writer thread takes every operation queued so far and runs them in order: the appends
//!    as one write to the entries file and **one** `fdatasync`, anything else in redb. Then it
//!    adds the records to the file's index, marks them durable in the tail (which keeps the
//!    newest of them, so reads near the end of the log need not touch the file) and fires the
//!    callbacks.
//!
//! While one fsync runs, later appends queue up and share the next one, so the cost per entry falls
//! as load rises and the Raft core never waits on the disk for an append. Appends are written
//! without holding the lock readers take (the writer alone writes past the end of the file), so
//! replication and apply read on while the disk syncs. Votes, truncation and purge go through the
//! same queue (so all writes stay in order) and are awaited: a vote must be durable before it is
//! answered.

use super::entry_file::EntryFile;
use super::log_tail::Tail;
use super::{TypeConfig, io_error, written_bytes};
use openraft::OptionalSend;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;

/// Where earlier versions kept the entries (by index, MessagePack-encoded); moved to the entries
/// file on first open.
const OLD_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// The vote, the last purged log id and the committed log id, MessagePack-encoded.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const PURGED: &str = "last_purged";
const COMMITTED: &str = "committed";
/// The peers this node, as leader, has seen hold log entries. A node's own log cannot tell it
/// that its data was lost; the other nodes' memory of it can (see `crate::server::membership`).
const SEEN: &str = "seen_members";

/// How often the committed index is written when nothing else is (it is only a hint for
/// restarts: losing the latest one means re-applying a little more of the log).
const COMMITTED_EVERY: Duration = Duration::from_secs(1);

/// redb's page cache for the log's metadata, which is tiny.
const CACHE_BYTES: usize = 1024 * 1024;

/// The name of the log's metadata database inside the data directory.
pub const LOG_FILE: &str = "raft-log.redb";
/// The name of the entries file inside the data directory.
pub const ENTRIES_FILE: &str = "raft-log.entries";

/// What readers and the writer thread share.
struct Shared {
    db: Database,
    /// The newest entries, durable or not; from its first index on, readers look only here.
    tail: Mutex<Tail>,
    /// The durable entries. Lock order: `tail` before `file`.
    file: RwLock<EntryFile>,
    /// The latest committed log id openraft reported, encoded, and whether it is still to be
    /// written.
    committed: Mutex<(Option<Vec<u8>>, bool)>,
    /// How long each durable write took (for `/metrics`).
    write_durations: prometheus_client::metrics::histogram::Histogram,
}

/// One write, queued to the writer thread in the order openraft issued it.
enum Op {
    Append {
        entries: Vec<(LogId, Vec<u8>)>,
        flushed: IOFlushed<TypeConfig>,
    },
    /// Deletes every entry with an index of at least `from`.
    Truncate {
        from: u64,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Deletes every entry up to and including `upto`, and remembers it as purged.
    Purge {
        upto: LogId,
        encoded: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Writes a meta key; `done` is `None` when nobody needs to wait for it.
    Meta {
        key: &'static str,
        value: Vec<u8>,
        done: Option<oneshot::Sender<io::Result<()>>>,
    },
}

/// The log store given to openraft. Cloning it shares the same files and writer.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    ops: mpsc::UnboundedSender<Op>,
}

impl LogStore {
    /// Opens (or creates) the log in `data_dir` and starts its writer thread, which ends when the
    /// last handle is dropped.
    ///
    /// Refuses a log that lost one of its two files while the other remains: without the vote
    /// the node could vote twice in a term, and without the entries it would acknowledge and
    /// vote as if it had never held entries it acknowledged.
    pub fn open(data_dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(data_dir)?;
        let (vote_path, entries_path) = (data_dir.join(LOG_FILE), data_dir.join(ENTRIES_FILE));
        let (had_vote_file, had_entries_file) = (vote_path.exists(), entries_path.exists());
        if had_entries_file && !had_vote_file {
            return Err(missing(&vote_path, "the node's vote", &entries_path));
        }
        let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(&vote_path).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", vote_path.display()))
        })?;
        let txn = db.begin_write().map_err(io_error)?;
        txn.open_table(META).map_err(io_error)?;
        txn.commit().map_err(io_error)?;
        if had_vote_file
            && !had_entries_file
            && read_meta::<VoteOf<TypeConfig>>(&db, VOTE)?.is_some()
            && !has_old_entries(&db)?
        {
            return Err(missing(&entries_path, "the node's log entries", &vote_path));
        }
        let mut file = EntryFile::open(&entries_path)?;
        if !had_vote_file || !had_entries_file {
            // New files are durable only once the directory that names them is.
            File::open(data_dir)?.sync_all()?;
        }
        move_old_entries(&db, &mut file)?;
        let purged: Option<LogId> = read_meta(&db, PURGED)?;
        if let Some(purged) = purged {
            // Purged records may still sit in the file's prefix until it is rewritten.
            file.purge_upto(purged.index());
        }
        let shared = Arc::new(Shared {
            db,
            tail: Mutex::new(Tail::default()),
            file: RwLock::new(file),
            committed: Mutex::new((None, false)),
            write_durations: crate::metrics::duration_histogram(),
        });
        let (ops, queue) = mpsc::unbounded_channel();
        // The writer holds the database only while it writes, so that dropping the last handle
        // closes it at once rather than whenever the thread notices.
        let writer = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(&writer, queue))?;
        Ok(LogStore { shared, ops })
    }

    /// Queues `op` and waits for the writer to make it durable.
    async fn write_and_wait(&self, op: impl FnOnce(oneshot::Sender<io::Result<()>>) -> Op) -> io::Result<()> {
        let (done, result) = oneshot::channel();
        self.ops.send(op(done)).map_err(|_| writer_gone())?;
        result.await.map_err(|_| writer_gone())?
    }
}

/// The error for a data dir that lost the log file at `lost` (holding `what`) but kept `kept`.
fn missing(lost: &Path, what: &str, kept: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{} ({what}) is missing but {} exists: refusing to start, since a node that lost part of \
             its Raft state could vote twice in a term or lose acknowledged writes. Restore the file, \
             or remove the node from the cluster and join a fresh one in its place",
            lost.display(),
            kept.display()
        ),
    )
}

/// Whether an earlier version's log, kept in redb before the entries file existed, holds entries.
fn has_old_entries(db: &Database) -> io::Result<bool> {
    let txn = db.begin_read().map_err(io_error)?;
    match txn.open_table(OLD_LOG) {
        Ok(table) => Ok(!redb::ReadableTableMetadata::is_empty(&table).map_err(io_error)?),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(io_error(e)),
    }
}

/// Moves entries that an earlier version kept in redb into the entries file, once.
fn move_old_entries(db: &Database, file: &mut EntryFile) -> io::Result<()> {
    let txn = db.begin_write().map_err(io_error)?;
    {
        let mut old = txn.open_table(OLD_LOG).map_err(io_error)?;
        let mut records = Vec::new();
        for item in old.iter().map_err(io_error)? {
            let (index, bytes) = item.map_err(io_error)?;
            records.push((index.value(), bytes.value().to_vec()));
        }
        if records.is_empty() {
            drop(old);
            txn.delete_table(OLD_LOG).map_err(io_error)?;
            return txn.commit().map_err(io_error);
        }
        let start = file.last_index().map_or(0, |last| last + 1);
        let fresh: Vec<(u64, &[u8])> =
            records.iter().filter(|(i, _)| *i >= start).map(|(i, b)| (*i, b.as_slice())).collect();
        file.append_now(&fresh)?;
        file.sync()?;
        old.retain(|_, _| false).map_err(io_error)?;
    }
    txn.delete_table(OLD_LOG).map_err(io_error)?;
    txn.commit().map_err(io_error)
}

impl LogStore {
    /// How long each of the writer's durable writes took, in seconds.
    pub fn write_durations(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.shared.write_durations.clone()
    }

    /// The peers this node has seen acknowledge log entries while it led.
    pub fn seen_members(&self) -> io::Result<std::collections::BTreeSet<u64>> {
        Ok(read_meta(&self.shared.db, SEEN)?.unwrap_or_default())
    }

    /// Records the peers seen so far (a superset of what was recorded before); fire and forget.
    pub fn record_seen_members(&self, seen: &std::collections::BTreeSet<u64>) -> io::Result<()> {
        let value = encode(seen)?;
        self.ops.send(Op::Meta { key: SEEN, value, done: None }).map_err(|_| writer_gone())
    }
}

fn writer_gone() -> io::Error {
    io::Error::other("the raft log writer thread has stopped")
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(io_error)
}

/// An entry's record in the entries file: MessagePack with structs as arrays, without field names
/// (they were much of an entry's bytes and most of its encoding time), written by hand for the
/// usual entries ([`super::wire`]). [`decode_entry`] reads these and the named maps that files
/// written before used alike.
fn encode_entry(entry: &Entry) -> io::Result<Vec<u8>> {
    // Sized up front: growing from empty took four allocations for a typical write's record.
    let mut record = Vec::with_capacity(written_bytes(entry) + 32);
    super::wire::encode_entry(entry, &mut record).map_err(io_error)?;
    Ok(record)
}

fn decode_entry(record: &[u8]) -> io::Result<Entry> {
    super::wire::decode_entry_record(record).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> io::Result<Option<T>> {
    let txn = db.begin_read().map_err(io_error)?;
    let table = txn.open_table(META).map_err(io_error)?;
    let value = table.get(key).map_err(io_error)?;
    value.map(|v| decode(v.value())).transpose()
}

impl Shared {
    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        // A panic while holding this lock would be a bug here; the tail itself stays consistent.
        self.tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn file_read(&self) -> std::sync::RwLockReadGuard<'_, EntryFile> {
        self.file.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn file_write(&self) -> std::sync::RwLockWriteGuard<'_, EntryFile> {
        self.file.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(start) => *start,
            Bound::Excluded(start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(end) => end.saturating_add(1),
            Bound::Excluded(end) => *end,
            Bound::Unbounded => u64::MAX,
        };
        // One consistent cut: the writer drops entries from the tail only under both locks, once
        // the file's index has them, so holding both sees every entry in one place or the other.
        let (file, newest, tail_start) = {
            let tail = self.tail();
            let file = self.file_read();
            let tail_start = tail.first_index().unwrap_or(u64::MAX).max(start);
            (file, tail.read(tail_start..end), tail_start)
        };
        let older = start..end.min(tail_start);
        let mut entries = Vec::with_capacity(newest.len());
        if !older.is_empty() {
            for (_, payload) in file.read(older)? {
                entries.push(decode_entry(&payload)?);
            }
        }
        drop(file);
        entries.extend(newest);
        Ok(entries)
    }

    fn last_log_id(&self) -> io::Result<Option<LogId>> {
        if let Some(last) = self.tail().last_log_id() {
            return Ok(Some(last));
        }
        let file = self.file_read();
        let Some(last) = file.last_index() else { return Ok(None) };
        let payload = file.read(last..=last)?.pop().map(|(_, payload)| payload);
        payload.map(|p| decode_entry(&p).map(|e| e.log_id())).transpose()
    }
}

/// The writer thread: takes every operation queued so far and makes them durable together.
fn write_loop(shared: &Weak<Shared>, mut queue: mpsc::UnboundedReceiver<Op>) {
    let mut committed_written = Instant::now();
    // The writer's own handle on the entries file; a rewrite (purge) replaces the file.
    let mut handle: Option<std::fs::File> = None;
    while let Some(first) = queue.blocking_recv() {
        let Some(shared) = shared.upgrade() else {
            // Every handle is gone; whoever queued these is no longer there to care.
            return;
        };
        // The committed index is taken before the batch is gathered: openraft queues the append
        // of every entry it commits before it saves the commit, so each entry this index covers
        // is in this batch or an earlier one, and the index never reaches the disk ahead of them.
        let (committed, dirty) = shared.committed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut batch = vec![first];
        while let Ok(op) = queue.try_recv() {
            batch.push(op);
        }
        let due = committed_written.elapsed() >= COMMITTED_EVERY;
        let unwritten =
            dirty && (due || batch.iter().any(|op| matches!(op, Op::Meta { .. } | Op::Purge { .. })));
        let committed = committed.filter(|_| unwritten);
        if unwritten {
            committed_written = Instant::now();
            let mut slot = shared.committed.lock().unwrap_or_else(|p| p.into_inner());
            // Still to write only if a newer index came meanwhile.
            if slot.0 == committed {
                slot.1 = false;
            }
        }
        let appends_only = batch.iter().all(|op| matches!(op, Op::Append { .. } | Op::Meta { .. }));
        let started = Instant::now();
        let result = if appends_only {
            write_appends(&shared, &mut handle, &batch, committed.as_deref())
        } else {
            handle = None;
            write_in_order(&shared, &batch, committed.as_deref())
        };
        shared.write_durations.observe(started.elapsed().as_secs_f64());
        let result = result.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log write failed");
        }
        // Let go of the database before anyone hears back: a caller that drops its last handle
        // on hearing back must be able to open it again at once (redb locks its file). The
        // writer's own handle on the entries file holds no lock, and goes when the queue closes.
        drop(shared);
        for op in batch {
            let outcome = result.clone().map_err(io::Error::other);
            match op {
                Op::Append { flushed, .. } => flushed.io_completed(outcome),
                Op::Truncate { done, .. } | Op::Purge { done, .. } => {
                    let _ = done.send(outcome);
                }
                Op::Meta { done, .. } => {
                    if let Some(done) = done {
                        let _ = done.send(outcome);
                    }
                }
            }
        }
    }
}

/// The common case, appends (and meta writes): one write past the end of the entries file and
/// one sync, without holding the lock readers take; then the new records join the index.
fn write_appends(
    shared: &Shared,
    handle: &mut Option<std::fs::File>,
    batch: &[Op],
    committed: Option<&[u8]>,
) -> io::Result<()> {
    let records: Vec<(u64, &[u8])> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Append { entries, .. } => Some(records(entries)),
            _ => None,
        })
        .flatten()
        .collect();
    if !records.is_empty() {
        let (start, allocated) = {
            let file = shared.file_read();
            if handle.is_none() {
                *handle = Some(file.handle()?);
            }
            (file.end(), file.allocated())
        };
        let handle = handle.as_ref().expect("set just above");
        let mut buf = Vec::new();
        let placed = EntryFile::encode(start, &records, &mut buf);
        let allocated = EntryFile::write_at_end(handle, &buf, start, allocated)?;
        handle.sync_data()?;
        let mut tail = shared.tail();
        let mut file = shared.file_write();
        file.appended(placed, start + buf.len() as u64, allocated);
        tail.mark_durable(appended(batch));
    }
    write_meta(&shared.db, batch, committed)
}

/// Truncations and purges change what readers may see, so the batch runs in order, each step
/// under both locks. A purge's slow parts, syncing the file, recording the purge point and
/// rewriting the file without its purged prefix, hold no lock that readers wait on: readers go
/// on from the old file until the rewritten one is switched to.
fn write_in_order(shared: &Shared, batch: &[Op], committed: Option<&[u8]>) -> io::Result<()> {
    for op in batch {
        match op {
            Op::Append { entries, .. } => {
                let _tail = shared.tail();
                shared.file_write().append_now(&records(entries).collect::<Vec<_>>())?;
            }
            Op::Truncate { from, .. } => {
                let _tail = shared.tail();
                shared.file_write().truncate_from(*from)?;
            }
            Op::Purge { upto, encoded, .. } => {
                // Remembered before the records go, so that a crash cannot leave a log that
                // starts later than its recorded purge point says.
                shared.file_read().sync()?;
                commit_meta(&shared.db, [(PURGED, encoded.as_slice())])?;
                {
                    let _tail = shared.tail();
                    shared.file_write().purge_upto(upto.index());
                }
                let rewritten = {
                    let file = shared.file_read();
                    if file.compaction_due() { Some(file.rewrite()?) } else { None }
                };
                if let Some(rewritten) = rewritten {
                    let _tail = shared.tail();
                    shared.file_write().install(rewritten);
                }
            }
            Op::Meta { .. } => {}
        }
    }
    shared.file_read().sync()?;
    {
        let mut tail = shared.tail();
        let _file = shared.file_write();
        tail.mark_durable(appended(batch));
    }
    write_meta(&shared.db, batch, committed)
}

/// The log ids of the batch's appended entries.
fn appended(batch: &[Op]) -> impl Iterator<Item = LogId> + '_ {
    batch
        .iter()
        .filter_map(|op| match op {
            Op::Append { entries, .. } => Some(entries.iter().map(|(log_id, _)| *log_id)),
            _ => None,
        })
        .flatten()
}

/// An append's entries as `(index, encoded entry)` records for the entries file.
fn records(entries: &[(LogId, Vec<u8>)]) -> impl Iterator<Item = (u64, &[u8])> {
    entries.iter().map(|(id, bytes)| (id.index(), bytes.as_slice()))
}

/// Writes the batch's meta keys (and the committed index, when due) in one durable transaction.
fn write_meta(db: &Database, batch: &[Op], committed: Option<&[u8]>) -> io::Result<()> {
    let metas: Vec<(&str, &[u8])> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Meta { key, value, .. } => Some((*key, value.as_slice())),
            _ => None,
        })
        .chain(committed.map(|c| (COMMITTED, c)))
        .collect();
    if metas.is_empty() {
        return Ok(());
    }
    commit_meta(db, metas)
}

/// Writes meta keys in one durable transaction.
fn commit_meta<'a>(db: &Database, pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> io::Result<()> {
    let txn = db.begin_write().map_err(io_error)?;
    {
        let mut meta = txn.open_table(META).map_err(io_error)?;
        for (key, value) in pairs {
            meta.insert(key, value).map_err(io_error)?;
        }
    }
    txn.commit().map_err(io_error)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.shared.entries(range)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        read_meta(&self.shared.db, VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    /// Replication tasks read through a clone of the store itself.
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = read_meta(&self.shared.db, PURGED)?;
        let last_log_id = self.shared.last_log_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        let value = encode(vote)?;
        self.write_and_wait(|done| Op::Meta { key: VOTE, value, done: Some(done) }).await
    }

    /// Written with the next transaction, not by one of its own: committing advances after
    /// every batch, and a transaction just for it would double the writer's work and delay the
    /// next append behind it. Losing the last few updates in a crash only means openraft
    /// re-applies from an older committed id, which is safe.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let value = encode(&committed)?;
        *self.shared.committed.lock().unwrap_or_else(|p| p.into_inner()) = (Some(value), true);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let latest = self.shared.committed.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        match latest {
            Some(bytes) => decode(&bytes),
            None => Ok(read_meta::<Option<LogId>>(&self.shared.db, COMMITTED)?.flatten()),
        }
    }

    async fn append<I>(&mut self, entries: I, flushed: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded =
            entries.iter().map(|e| Ok((e.log_id(), encode_entry(e)?))).collect::<io::Result<Vec<_>>>()?;
        {
            let mut tail = self.shared.tail();
            for (entry, (_, bytes)) in entries.into_iter().zip(&encoded) {
                tail.push(entry, bytes.len());
            }
        }
        self.ops.send(Op::Append { entries: encoded, flushed }).map_err(|_| writer_gone())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        // Appends queued before this are committed first (the queue is in order) and then cut
        // from disk; dropping them from the tail now keeps readers from seeing them meanwhile.
        self.shared.tail().truncate_from(from);
        self.write_and_wait(|done| Op::Truncate { from, done }).await
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        let encoded = encode(&upto)?;
        self.shared.tail().purge_upto(upto.index());
        self.write_and_wait(|done| Op::Purge { upto, encoded, done }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::blank_ent;
    use openraft::type_config::TypeConfigExt;
    use std::time::Duration;

    /// Entries are written without field names now; files written before hold named maps, and
    /// both must read back as the same entries.
    #[test]
    fn entries_read_back_from_both_encodings() {
        use crate::command::Write;
        use bytes::Bytes;
        use openraft::testing::log_id;
        let members = std::collections::BTreeMap::from([(1, openraft::BasicNode::new("127.0.0.1:1"))]);
        let entries = [
            blank_ent::<TypeConfig>(1, 1, 1),
            Entry::new_membership(log_id::<TypeConfig>(1, 1, 2), openraft::Membership::from(members)),
            Entry::new_normal(
                log_id::<TypeConfig>(2, 1, 3),
                Write::set(Bytes::from("k"), Bytes::from_static(b"\0\xff")),
            ),
            Entry::new_normal(log_id::<TypeConfig>(2, 1, 4), Write::del(vec![Bytes::from("k")])),
        ];
        for entry in entries {
            let compact = encode_entry(&entry).unwrap();
            let named = rmp_serde::to_vec_named(&entry).unwrap();
            assert!(compact.len() < named.len());
            assert_eq!(decode_entry(&compact).unwrap(), entry);
            assert_eq!(decode_entry(&named).unwrap(), entry);
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.index()).collect()
    }

    /// The point of the pending tail: entries are readable the moment `append` returns, and the
    /// flush callback fires only once the writer has committed them.
    #[tokio::test]
    #[expect(clippy::await_holding_lock, reason = "the lock stalls the writer thread, not this task")]
    async fn appends_are_readable_at_once_and_acknowledged_only_when_durable() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        // Holding the committed-index slot keeps the writer thread from starting a batch.
        let shared = log.shared.clone();
        let blocker = shared.committed.lock().unwrap();

        let (tx, mut flushed) = TypeConfig::oneshot();
        let entries = (1..=3).map(|i| blank_ent::<TypeConfig>(1, 1, i));
        log.append(entries, IOFlushed::signal(tx)).await.unwrap();
        let mut reader = log.get_log_reader().await;
        assert_eq!(indexes(&reader.try_get_log_entries(1..).await.unwrap()), [1, 2, 3]);
        assert_eq!(log.get_log_state().await.unwrap().last_log_id.map(|id| id.index()), Some(3));
        let early = tokio::time::timeout(Duration::from_millis(50), &mut flushed).await;
        assert!(early.is_err(), "acknowledged before it was committed");

        drop(blocker);
        let result = tokio::time::timeout(Duration::from_secs(10), flushed).await.unwrap().unwrap();
        assert!(result.is_ok());
        assert!(log.shared.tail().all_durable(), "the writer marks what it committed durable");
        assert_eq!(indexes(&reader.try_get_log_entries(2..=3).await.unwrap()), [2, 3]);
    }

    #[tokio::test]
    async fn entries_an_earlier_version_kept_in_redb_are_moved_to_the_entries_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(LOG_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut old = txn.open_table(OLD_LOG).unwrap();
                for i in 1..=3 {
                    old.insert(i, encode(&blank_ent::<TypeConfig>(1, 1, i)).unwrap().as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let mut log = LogStore::open(dir.path()).unwrap();
            assert_eq!(indexes(&log.try_get_log_entries(0..).await.unwrap()), [1, 2, 3]);
        }
    }

    #[tokio::test]
    async fn the_log_and_vote_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let vote = openraft::Vote::new(3, 2);
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            let (tx, flushed) = TypeConfig::oneshot();
            log.append((1..=5).map(|i| blank_ent::<TypeConfig>(1, 1, i)), IOFlushed::signal(tx))
                .await
                .unwrap();
            flushed.await.unwrap().unwrap();
            log.save_vote(&vote).await.unwrap();
            log.truncate_after(Some(openraft::testing::log_id::<TypeConfig>(1, 1, 4))).await.unwrap();
            log.purge(openraft::testing::log_id::<TypeConfig>(1, 1, 1)).await.unwrap();
        }
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|id| id.index()), Some(1));
        assert_eq!(state.last_log_id.map(|id| id.index()), Some(4));
        assert_eq!(indexes(&log.try_get_log_entries(0..).await.unwrap()), [2, 3, 4]);
    }
}
