//! Durable key-value state in an embedded `redb` database.
//!
//! [`Store`] owns one redb file under the node's data directory. Its contract is narrow on
//! purpose: `Store::apply_write` is a deterministic function from a [`Write`] and the current
//! state to a [`Reply`]. Determinism is what lets the replicated log drive the same code on every
//! node and get the same state; the only writer is the Raft state machine
//! ([`crate::raft::state_machine`]).
//!
//! Applied writes first go to an in-memory map of *unflushed* writes, which every read consults
//! before the database (past a filter that rules most absent keys out: `unflushed.rs`); a flush
//! moves them into the database in one durable transaction. It comes in two steps, so that
//! applying need not stop for the disk: `Store::freeze` sets the writes so far aside (reads
//! consult them beneath the newer ones), and `Store::write_frozen`, on any thread, writes them
//! and drops them from memory once committed.
//! A redb commit costs tens of microseconds and an fsync whatever it holds, and its copy-on-write
//! B-tree rewrites every page a transaction touches: committing once per few thousand writes
//! instead of once per Raft apply (often a handful of writes) takes most of that off every node,
//! and the more writes share a commit, the more of them share its pages. Nothing is
//! lost by it: the Raft log holds every applied write, and the state machine records in the same
//! transaction how far the database reflects the log (etcd's backend batches its commits the
//! same way).
//!
//! Reads are called directly from async code: a read is a map lookup and a short B-tree walk or
//! a page read, cheaper than a thread hop. Every reader shares one read-only view of the
//! database, taken after each commit, rather than opening its own read transaction: opening one
//! per read showed in a leader's profile under a read load (docs/BENCHMARKS.md).
//!
//! Every key carries its metadata ([`record`]): the revision that created it, the one that last
//! changed it, and how many writes did. The store's revision counts the writes that changed
//! any key (the system's records, users and roles, do not count). Each such write is also kept
//! in a change log, by revision, for at least the last [`HISTORY_REVISIONS`] revisions: what a
//! watch resuming from a recent revision will read. Each flush adds its revisions as one row and
//! drops the rows wholly older than that, and a
//! node that installs a snapshot starts its log afresh at the snapshot's revision.
//!
//! Not here: replication, and anything about connections or the wire.

mod apply;
mod pending;
mod range;
pub mod sessions;

pub use apply::ANSWER_BYTES;
pub mod record;
#[cfg(test)]
mod scripts;
mod unflushed;

use crate::auth::Accounts;
use crate::command::{Read, Write};
use crate::protocol::message::Reply;
use bytes::Bytes;
use pending::Pending;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde_bytes::ByteBuf;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use unflushed::Unflushed;

/// Every key with its record ([`record`]): the user's, and the system's (under
/// [`crate::auth::SYSTEM_PREFIX`]).
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// The change log, one row per flush (by the first revision it holds): each revision with the
/// keys that write changed and their new records (or none for a deletion), MessagePack-encoded.
/// A row per revision cost a flush an insert and a removal per write, as much as the data's own.
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");

/// The store's own numbers: its revision and its format.
const STORE_META: TableDefinition<&str, u64> = TableDefinition::new("store_meta");
const REVISION: &str = "revision";
const SESSION_CLOCK: &str = "session_clock";

/// Each client session's applied writes and answers ([`sessions`]), MessagePack-encoded.
const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
const FORMAT: &str = "format";
/// The layout of the store's tables. A store holding keys without a format was written before
/// keys had metadata, and is refused rather than misread.
const FORMAT_VERSION: u64 = 3;
/// The format whose change log had a row per revision: its store is read, and its change log
/// starts afresh, as after installing a snapshot.
const FORMAT_ROW_PER_REVISION: u64 = 2;

/// How many revisions of changes the change log keeps.
pub const HISTORY_REVISIONS: u64 = 10_000;

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
    #[error(
        "{path} holds keys in an older layout (without revisions) that this version does not read; \
         move it away and let the node catch up from the cluster"
    )]
    OldFormat { path: PathBuf },
    #[error("a flush of the store is already under way")]
    FlushUnderWay,
}

impl StoreError {
    pub(crate) fn storage(e: impl Into<redb::Error>) -> StoreError {
        StoreError::Storage(e.into())
    }
}

/// In place of the writes being flushed when no flush is under way.
static NOTHING_FROZEN: Unflushed = Unflushed::new();

/// The writes a flush under way is moving into the database, if any.
fn frozen_writes(frozen: &Option<Arc<Frozen>>) -> &Unflushed {
    frozen.as_deref().map_or(&NOTHING_FROZEN, |f| &f.writes)
}

/// The applied state as a read sees it: the writes in memory, newest layer first, over the
/// database as last flushed.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    layers: &'a [&'a Unflushed],
    flushed: &'a FlushedTable,
}

/// Applied writes that a flush is moving into the database, read beneath the unflushed ones
/// until it has committed.
struct Frozen {
    writes: Unflushed,
    changes: Changes,
}

/// Change log entries in memory, oldest first: a revision, and one key's state right after it
/// (a write that changed several keys has a row for each, side by side). Rows, not a list of keys
/// per revision: a `SET` then costs no allocation of its own. At most the last
/// [`HISTORY_REVISIONS`] revisions: a flush writes no older ones.
type Changes = VecDeque<(u64, Bytes, Pending)>;

/// Each revision in `changes` with the range of its rows, oldest first.
fn revisions(changes: &Changes) -> impl Iterator<Item = (u64, std::ops::Range<usize>)> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let (at, ..) = changes.get(start)?;
        let end = start + changes.range(start..).take_while(|(row, ..)| row == at).count();
        let rows = start..end;
        start = end;
        Some((*at, rows))
    })
}

/// A flush begun by [`Store::freeze`], to be written by [`Store::write_frozen`].
pub(crate) struct Flush {
    frozen: Arc<Frozen>,
    revision: u64,
    sessions: Vec<EncodedSession>,
    session_clock: u64,
}

/// A write's answer and the store's revision after it (unchanged if it changed no key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub reply: Reply,
    pub revision: u64,
}

/// A consistent view of the database's key-value table.
pub(crate) type FlushedTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The node's durable key-value state.
pub struct Store {
    db: Database,
    /// What reads see. A flush commits, then clears the unflushed writes and takes a new view
    /// under the write lock, so a reader holding the read lock sees every applied write once.
    applied: RwLock<StoreState>,
    /// Bumped whenever users or roles may have changed: a system write applied, or the whole
    /// state replaced.
    accounts_version: AtomicU64,
    /// The users and roles decoded, as of a version: a login check per batch then costs no
    /// read of the records and no decoding.
    accounts: Mutex<Option<(u64, Arc<Accounts>)>>,
    /// How long each flush's transaction took (for `/metrics`).
    flush_durations: prometheus_client::metrics::histogram::Histogram,
}

/// The applied state: the database as last flushed into, and the writes applied since.
impl StoreState {
    /// The writes in memory, newest first: the unflushed ones, then those being flushed.
    fn layers(&self) -> [&Unflushed; 2] {
        [&self.unflushed, self.frozen()]
    }

    /// Adds revision `at`'s change to the change log in memory, dropping the rows of revisions
    /// older than those kept.
    fn log_change(&mut self, at: u64, change: impl IntoIterator<Item = (Bytes, Pending)>) {
        // One push at a time: `extend` through an adapter took several times as long for the
        // one row of a `SET`.
        for (key, pending) in change {
            self.unflushed_changes.push_back((at, key, pending));
        }
        while self.unflushed_changes.front().is_some_and(|(oldest, ..)| at - oldest >= HISTORY_REVISIONS) {
            self.unflushed_changes.pop_front();
        }
    }

    fn frozen(&self) -> &Unflushed {
        frozen_writes(&self.frozen)
    }
}

struct StoreState {
    /// Applied writes that `flush` has not moved into the database yet.
    unflushed: Unflushed,
    /// Their change log entries, by revision: each key's state right after that revision.
    unflushed_changes: Changes,
    /// The writes a flush under way is moving into the database.
    frozen: Option<Arc<Frozen>>,
    /// The revision of the last write that changed a key.
    revision: u64,
    /// Which writes of each client session were applied.
    sessions: sessions::Sessions,
    /// A view of the key-value table as of the last commit, shared by every reader.
    flushed: Arc<FlushedTable>,
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
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        // Create the tables up front so that read transactions never see them missing.
        let txn = db.begin_write().map_err(StoreError::storage)?;
        let kv = txn.open_table(KV).map_err(StoreError::storage)?;
        let mut meta = txn.open_table(STORE_META).map_err(StoreError::storage)?;
        let format = meta.get(FORMAT).map_err(StoreError::storage)?.map(|v| v.value());
        if format.is_none() && !kv.is_empty().map_err(StoreError::storage)? {
            return Err(StoreError::OldFormat { path });
        }
        meta.insert(FORMAT, FORMAT_VERSION).map_err(StoreError::storage)?;
        let revision = meta.get(REVISION).map_err(StoreError::storage)?.map_or(0, |v| v.value());
        let clock = meta.get(SESSION_CLOCK).map_err(StoreError::storage)?.map_or(0, |v| v.value());
        drop((kv, meta));
        let mut changes = txn.open_table(CHANGES).map_err(StoreError::storage)?;
        if format == Some(FORMAT_ROW_PER_REVISION) {
            changes.retain(|_, _| false).map_err(StoreError::storage)?;
        }
        drop(changes);
        let records = read_sessions(&txn.open_table(SESSIONS).map_err(StoreError::storage)?)?;
        txn.commit().map_err(StoreError::storage)?;
        let flushed = view(&db)?;
        let state = StoreState {
            unflushed: Unflushed::filtered(),
            unflushed_changes: Changes::new(),
            frozen: None,
            revision,
            sessions: sessions::Sessions::load(clock, records),
            flushed,
        };
        Ok(Store {
            db,
            applied: RwLock::new(state),
            accounts_version: AtomicU64::new(0),
            accounts: Mutex::new(None),
            flush_durations: crate::metrics::duration_histogram(),
        })
    }

    fn applied(&self) -> RwLockReadGuard<'_, StoreState> {
        self.applied.read().unwrap_or_else(|p| p.into_inner())
    }

    fn applied_mut(&self) -> RwLockWriteGuard<'_, StoreState> {
        self.applied.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers a read from the latest applied state.
    pub fn read(&self, read: &Read) -> Result<Reply, StoreError> {
        Ok(self.read_many([read])?.0.remove(0))
    }

    /// Answers reads from one consistent view of the latest applied state, and gives the
    /// revision they read at.
    pub fn read_many<'a>(
        &self,
        reads: impl IntoIterator<Item = &'a Read>,
    ) -> Result<(Vec<Reply>, u64), StoreError> {
        let applied = self.applied();
        let layers = applied.layers();
        let view = View { layers: &layers, flushed: &applied.flushed };
        let replies = reads
            .into_iter()
            .map(|read| apply_read(view, read).map_err(StoreError::storage))
            .collect::<Result<_, _>>()?;
        Ok((replies, applied.revision))
    }

    /// The revision of the last write that changed a key.
    pub fn revision(&self) -> u64 {
        self.applied().revision
    }

    /// The users and roles as applied.
    pub fn accounts(&self) -> Result<Arc<Accounts>, StoreError> {
        // Read before the records: a change applied meanwhile leaves the result stale, and the
        // next call, finding a newer version, reads again.
        let version = self.accounts_version.load(Ordering::Acquire);
        let cached = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, accounts)) = cached.as_ref()
            && *at == version
        {
            return Ok(accounts.clone());
        }
        drop(cached);
        let accounts = Arc::new(self.with_system_records(|records| Accounts::load(records))?);
        *self.accounts.lock().unwrap_or_else(|p| p.into_inner()) = Some((version, accounts.clone()));
        Ok(accounts)
    }

    /// The cluster's id, once it has applied one.
    pub fn cluster_id(&self) -> Result<Option<String>, StoreError> {
        self.with_system_records(|records| crate::auth::cluster_id(records))
    }

    /// Runs `f` on the system's records in the applied state.
    fn with_system_records<T>(
        &self,
        f: impl FnOnce(&dyn crate::auth::Records) -> T,
    ) -> Result<T, StoreError> {
        let applied = self.applied();
        let records = SystemRecords::new(&applied.unflushed, applied.frozen(), &applied.flushed);
        let found = f(&records);
        records.checked(found)
    }

    /// How long each flush into the database took, in seconds.
    pub fn flush_durations(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.flush_durations.clone()
    }

    /// A view of the key-value table as last flushed (without the unflushed writes).
    pub(crate) fn flushed(&self) -> Arc<FlushedTable> {
        self.applied().flushed.clone()
    }

    /// Applies one write and returns its answer. Deterministic: both depend only on the write and
    /// the state before it. Only the state machine calls this, `freeze` and `replace`, one call
    /// at a time (`write_frozen` may run beside them).
    pub(crate) fn apply_write(&self, write: &Write) -> Result<Applied, StoreError> {
        let mut applied = self.applied_mut();
        let state = &mut *applied;
        let Write::Once { session, seq, answered_below, write } = write else {
            return self.apply_locked(state, write);
        };
        match state.sessions.seen(*session, *seq, state.revision) {
            sessions::Seen::Answered(first) => Ok(first),
            sessions::Seen::New => {
                let applied = self.apply_locked(state, write)?;
                state.sessions.record(*session, *seq, *answered_below, &applied);
                Ok(applied)
            }
        }
    }

    /// Applies one write that is not wrapped in a session's number.
    fn apply_locked(&self, state: &mut StoreState, write: &Write) -> Result<Applied, StoreError> {
        // Fields, not `StoreState::layers`: `unflushed` is written below.
        let frozen = frozen_writes(&state.frozen);
        let flushed = &*state.flushed;
        if let Write::System(change) = write {
            self.accounts_version.fetch_add(1, Ordering::Release);
            let mut records = SystemRecords::new(&mut state.unflushed, frozen, flushed);
            let reply = crate::auth::apply(&mut records, change);
            return Ok(Applied { reply: records.checked(reply)?, revision: state.revision });
        }
        if let Write::Set { key, value, only_if: None } = write {
            // The most common write, without a staged view (it cannot fail part-way) and
            // without reading the database (see `pending`).
            let revision = state.revision + 1;
            let after = match state.unflushed.entry(key.clone()) {
                std::collections::btree_map::Entry::Vacant(vacant) => {
                    vacant.insert(Pending::set(None, value, revision).map_err(StoreError::storage)?).clone()
                }
                std::collections::btree_map::Entry::Occupied(mut occupied) => {
                    let after =
                        Pending::set(Some(occupied.get()), value, revision).map_err(StoreError::storage)?;
                    occupied.insert(after.clone());
                    after
                }
            };
            state.log_change(revision, [(key.clone(), after)]);
            state.revision = revision;
            return Ok(Applied { reply: Reply::ok(), revision });
        }
        let mut staged = apply::Staged::new([&state.unflushed, frozen], flushed, state.revision);
        let reply = staged.apply(write).map_err(StoreError::storage)?;
        let (overlay, changes) = staged.finish();
        if !changes.is_empty() {
            state.revision += 1;
            state.unflushed.extend(overlay);
            let changes = changes.into_iter().map(|(key, record)| (key, Pending::Record(record)));
            state.log_change(state.revision, changes);
        }
        Ok(Applied { reply, revision: state.revision })
    }

    /// How many keys have unflushed writes.
    #[cfg(test)]
    fn unflushed_keys(&self) -> usize {
        self.applied().unflushed.len()
    }

    /// Moves the unflushed writes into the database in one durable transaction, in which `also`
    /// writes beside them (the state machine records there how far the data reflects the log).
    /// Fails if a flush is under way.
    pub(crate) fn flush(
        &self,
        also: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let flush = self.freeze()?;
        self.write_frozen(flush, also)
    }

    /// Begins a flush of the writes applied so far: from now on they are read beneath the
    /// writes applied next, until [`Store::write_frozen`] has moved them into the database,
    /// which may run on another thread while writes go on being applied. Fails if a flush is
    /// under way.
    pub(crate) fn freeze(&self) -> Result<Flush, StoreError> {
        let mut applied = self.applied_mut();
        if applied.frozen.is_some() {
            return Err(StoreError::FlushUnderWay);
        }
        // The sessions changed since the last flush, encoded now: applying goes on meanwhile.
        let session_clock = applied.sessions.clock();
        let sessions: Result<Vec<EncodedSession>, redb::Error> = applied
            .sessions
            .take_dirty()
            .into_iter()
            .map(|(id, record)| Ok((id, record.map(encode_record).transpose()?)))
            .collect();
        let frozen = Arc::new(Frozen {
            writes: std::mem::replace(&mut applied.unflushed, Unflushed::filtered()),
            // Sized as the last, up to a row per revision kept: growing from empty copied the
            // rows again at each doubling, and a burst of many-key writes should not leave its
            // size behind.
            changes: {
                let rows = applied.unflushed_changes.len().min(HISTORY_REVISIONS as usize);
                std::mem::replace(&mut applied.unflushed_changes, Changes::with_capacity(rows))
            },
        });
        applied.frozen = Some(frozen.clone());
        Ok(Flush {
            frozen,
            revision: applied.revision,
            sessions: sessions.map_err(StoreError::from)?,
            session_clock,
        })
    }

    /// Writes a flush begun by [`Store::freeze`] into the database in one durable transaction,
    /// with `also` beside.
    pub(crate) fn write_frozen(
        &self,
        flush: Flush,
        also: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        // The database as the frozen writes were applied over; it changes only below.
        let flushed = self.applied().flushed.clone();
        let Flush { frozen, revision, sessions, session_clock } = flush;
        let started = std::time::Instant::now();
        self.transact(|txn| {
            let mut table = txn.open_table(KV)?;
            // The flushed metadata of the keys whose records depend on it, for the change log:
            // hashed, since each of the flush's revisions looks its keys up here (a binary search
            // by key cost the flush more than its data's inserts).
            // (Seeded: the keys are the clients' choice.)
            let mut bases: foldhash::HashMap<&[u8], Option<record::Meta>> =
                HashMap::with_capacity_and_hasher(frozen.writes.len(), Default::default());
            // A key whose record depends on the one stored takes two walks down the tree if
            // guessed wrong and one if guessed right: looked up and replaced in place if it is
            // there, written at once if it is new (the insert then tells whether it was). The
            // guess is what most such keys before it in this flush were, present at first: a
            // flush's keys are mostly of one kind (overwrites, or a burst of new keys), and a
            // guess carried over from the last flush was wrong for the whole of the first
            // flush of overwrites after a burst of new keys.
            let mut present = 0;
            for (key, pending) in frozen.writes.iter() {
                // A record that does not depend on the stored one is simply written.
                let Some(sets) = pending.as_sets() else {
                    match pending.record_on(None) {
                        Some(record) => table.insert(key.as_ref(), record.as_ref())?,
                        None => table.remove(key.as_ref())?,
                    };
                    continue;
                };
                let decode = |stored: &[u8]| record::decode(stored).map(|(meta, _)| meta);
                let base = if present * 2 >= bases.len() {
                    let base = match table.get_mut(key.as_ref())? {
                        Some(mut stored) => {
                            let base = decode(stored.value()).map_err(redb::StorageError::from)?;
                            stored.insert(sets.record_on(Some(base)).as_ref())?;
                            Some(base)
                        }
                        None => None,
                    };
                    if base.is_none() {
                        table.insert(key.as_ref(), sets.record_on(None).as_ref())?;
                    }
                    base
                } else {
                    let base = match table.insert(key.as_ref(), sets.record_on(None).as_ref())? {
                        Some(before) => Some(decode(before.value()).map_err(redb::StorageError::from)?),
                        None => None,
                    };
                    if base.is_some()
                        && let Some(mut stored) = table.get_mut(key.as_ref())?
                    {
                        stored.insert(sets.record_on(base).as_ref())?;
                    }
                    base
                };
                present += usize::from(base.is_some());
                bases.insert(key, base);
            }
            drop(table);
            let mut changes = txn.open_table(CHANGES)?;
            let oldest_kept = revision.saturating_sub(HISTORY_REVISIONS) + 1;
            // A flush can hold more revisions than are kept: the older ones are never written.
            let kept: Vec<_> = revisions(&frozen.changes).filter(|(at, _)| *at >= oldest_kept).collect();
            let record = |key: &Bytes, pending: &Pending| match bases.get(key.as_ref()) {
                Some(base) => Ok(pending.record_on(*base)),
                // Set before a later write to the key made its record known.
                None => pending.record(|| pending::flushed_meta(key, &*flushed)),
            };
            if let Some((first, _)) = kept.first() {
                let row = encode_changes(&kept, &frozen.changes, record)?;
                changes.insert(*first, row.as_slice())?;
            }
            // A row ends where the next begins: drop those that end before the oldest kept.
            let starts: Vec<u64> =
                changes.iter()?.map(|row| row.map(|(start, _)| start.value())).collect::<Result<_, _>>()?;
            for pair in starts.windows(2).filter(|pair| pair[1] <= oldest_kept) {
                changes.remove(pair[0])?;
            }
            drop(changes);
            let mut meta = txn.open_table(STORE_META)?;
            meta.insert(REVISION, revision)?;
            meta.insert(SESSION_CLOCK, session_clock)?;
            drop(meta);
            let mut table = txn.open_table(SESSIONS)?;
            for (id, record) in &sessions {
                match record {
                    Some(record) => table.insert(*id, record.as_slice())?,
                    None => table.remove(*id)?,
                };
            }
            drop(table);
            also(txn)
        })?;
        self.flush_durations.observe(started.elapsed().as_secs_f64());
        // Taken before the write lock: it holds what the frozen writes hold, so readers in
        // between see the same either way.
        let view = view(&self.db)?;
        let mut applied = self.applied_mut();
        applied.frozen = None;
        applied.flushed = view;
        Ok(())
    }

    /// Replaces the whole state with `records` (key and record pairs, as [`KV`] holds them) at
    /// `revision`: drops the unflushed writes and the change log, and runs `also` beside, in one
    /// durable transaction. Readers see the state before it until it is committed, then the new
    /// one. They do not wait for it: writing a big snapshot takes seconds, and a read blocked on
    /// the lock meanwhile would hold an async thread (on a node with one worker thread,
    /// everything else).
    pub(crate) fn replace<'r>(
        &self,
        records: impl IntoIterator<Item = (&'r [u8], &'r [u8])>,
        revision: u64,
        sessions: &SessionsSnapshot,
        also: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        // Only the state machine writes, and it is the caller: nothing is applied meanwhile.
        self.transact(|txn| {
            let mut table = txn.open_table(SESSIONS)?;
            table.retain(|_, _| false)?;
            for (id, record) in &sessions.records {
                table.insert(*id, encode_record(record)?.as_slice())?;
            }
            drop(table);
            let mut meta = txn.open_table(STORE_META)?;
            meta.insert(SESSION_CLOCK, sessions.clock)?;
            meta.insert(REVISION, revision)?;
            drop(meta);
            let mut kv = txn.open_table(KV)?;
            kv.retain(|_, _| false)?;
            for (key, record) in records {
                record::decode(record).map_err(redb::StorageError::from)?;
                kv.insert(key, record)?;
            }
            drop(kv);
            txn.open_table(CHANGES)?.retain(|_, _| false)?;
            also(txn)
        })?;
        let flushed = view(&self.db);
        let mut applied = self.applied_mut();
        // The new state supersedes the unflushed writes even if no view of it can be taken.
        applied.unflushed.clear();
        applied.unflushed_changes.clear();
        applied.frozen = None;
        applied.revision = revision;
        applied.sessions = sessions::Sessions::load(sessions.clock, sessions.records.iter().cloned());
        applied.flushed = flushed?;
        self.accounts_version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The change log's entries from revision `from` on, oldest first: each revision with the
    /// keys it changed and their new records (`None` for a deletion).
    pub fn changes_since(&self, from: u64) -> Result<Vec<(u64, Vec<apply::Change>)>, StoreError> {
        // Held so that no flush clears the unflushed entries between the two reads; one that has
        // committed but not cleared them yet shows them twice, once in each.
        let applied = self.applied();
        let txn = self.begin_read()?;
        let table = txn.open_table(CHANGES).map_err(StoreError::storage)?;
        // From the row holding `from` (the last starting at or before it) on.
        let first = match table.range(..=from).map_err(StoreError::storage)?.next_back() {
            Some(row) => row.map_err(StoreError::storage)?.0.value(),
            None => from,
        };
        let mut out = Vec::new();
        for row in table.range(first..).map_err(StoreError::storage)? {
            let (_, chunk) = row.map_err(StoreError::storage)?;
            type Stored = Vec<(u64, Vec<(ByteBuf, Option<ByteBuf>)>)>;
            let chunk: Stored = rmp_serde::from_slice(chunk.value())
                .map_err(|e| StoreError::storage(redb::StorageError::Corrupted(e.to_string())))?;
            for (at, change) in chunk.into_iter().filter(|(at, _)| *at >= from) {
                let change = change
                    .into_iter()
                    .map(|(k, v)| (Bytes::from(k.into_vec()), v.map(|v| Bytes::from(v.into_vec()))))
                    .collect();
                out.push((at, change));
            }
        }
        let layers = applied.layers();
        let nothing_frozen = Changes::new();
        let frozen = applied.frozen.as_deref().map_or(&nothing_frozen, |f| &f.changes);
        // Each layer's changes resolve over the layers beneath it.
        for (changes, beneath) in [(frozen, &layers[2..]), (&applied.unflushed_changes, &layers[1..])] {
            for (at, rows) in revisions(changes).filter(|(at, _)| *at >= from) {
                let last = out.last().map(|(at, _)| *at);
                if last.is_some_and(|last| at <= last) {
                    continue;
                }
                // Every revision has an entry; a layer that dropped its oldest ones leaves a gap,
                // and what comes before it no longer leads up to what follows.
                if last.is_some_and(|last| at > last + 1) {
                    out.clear();
                }
                let view = View { layers: beneath, flushed: &applied.flushed };
                out.push((at, resolved(changes.range(rows), view).map_err(StoreError::storage)?));
            }
        }
        Ok(out)
    }

    /// Runs `f` in one write transaction and commits it durably (fsynced before this returns) if
    /// `f` succeeds. `f` may write tables beside [`KV`]: the Raft state machine keeps its applied
    /// index there, written in the same transaction as the data it describes.
    fn transact(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::storage)?;
        f(&txn)?;
        txn.commit().map_err(StoreError::storage)
    }

    /// A consistent read-only view of the latest committed state.
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db.begin_read().map_err(StoreError::storage)
    }
}

/// A view of the key-value table as the last commit left it.
fn view(db: &Database) -> Result<Arc<FlushedTable>, StoreError> {
    let txn = db.begin_read().map_err(StoreError::storage)?;
    Ok(Arc::new(txn.open_table(KV).map_err(StoreError::storage)?))
}

/// A session's id and its record encoded, or none for a session dropped.
type EncodedSession = (u64, Option<Vec<u8>>);

/// The sessions' table as a snapshot carries it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SessionsSnapshot {
    pub clock: u64,
    pub records: Vec<(u64, sessions::SessionRecord)>,
}

/// The sessions' table as the database holds it after the last flush.
pub fn sessions_snapshot(txn: &redb::ReadTransaction) -> Result<SessionsSnapshot, StoreError> {
    let meta = txn.open_table(STORE_META).map_err(StoreError::storage)?;
    let clock = meta.get(SESSION_CLOCK).map_err(StoreError::storage)?.map_or(0, |v| v.value());
    let records = read_sessions(&txn.open_table(SESSIONS).map_err(StoreError::storage)?)?;
    Ok(SessionsSnapshot { clock, records })
}

fn read_sessions(
    table: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Vec<(u64, sessions::SessionRecord)>, StoreError> {
    let mut records = Vec::new();
    for item in table.iter().map_err(StoreError::storage)? {
        let (id, record) = item.map_err(StoreError::storage)?;
        let record = rmp_serde::from_slice(record.value()).map_err(|e| {
            StoreError::storage(redb::StorageError::Corrupted(format!("a session record: {e}")))
        })?;
        records.push((id.value(), record));
    }
    Ok(records)
}

fn encode_record(record: &sessions::SessionRecord) -> Result<Vec<u8>, redb::Error> {
    rmp_serde::to_vec_named(record).map_err(|e| redb::Error::Corrupted(e.to_string()))
}

/// A change log entry with each key's record, given the layers beneath it.
fn resolved<'c>(
    change: impl Iterator<Item = &'c (u64, Bytes, Pending)>,
    beneath: View,
) -> Result<Vec<apply::Change>, redb::StorageError> {
    let record =
        |key, pending: &Pending| pending.record(|| pending::meta_in(beneath.layers, beneath.flushed, key));
    change.map(|(_, key, pending)| Ok((key.clone(), record(key, pending)?))).collect()
}

/// A row of the change log as the database holds it: MessagePack, as `rmp_serde` writes a list of
/// `(revision, [(key, record or nil)])` (and [`Store::changes_since`] reads it), but written
/// straight from the rows in memory, each `record` resolved as it is written.
fn encode_changes(
    kept: &[(u64, std::ops::Range<usize>)],
    rows: &Changes,
    record: impl Fn(&Bytes, &Pending) -> Result<Option<Bytes>, redb::StorageError>,
) -> Result<Vec<u8>, redb::Error> {
    use rmp::encode::{write_array_len, write_bin, write_nil, write_uint};
    fn written(e: impl std::fmt::Display) -> redb::Error {
        redb::Error::Corrupted(e.to_string())
    }
    let len =
        |n: usize| u32::try_from(n).map_err(|_| redb::Error::Corrupted(format!("{n} changes in one row")));
    let mut out = Vec::new();
    write_array_len(&mut out, len(kept.len())?).map_err(written)?;
    for (at, range) in kept {
        write_array_len(&mut out, 2).map_err(written)?;
        write_uint(&mut out, *at).map_err(written)?;
        write_array_len(&mut out, len(range.len())?).map_err(written)?;
        for (_, key, pending) in rows.range(range.clone()) {
            write_array_len(&mut out, 2).map_err(written)?;
            write_bin(&mut out, key).map_err(written)?;
            match record(key, pending)? {
                Some(record) => write_bin(&mut out, &record).map_err(written)?,
                None => write_nil(&mut out).map_err(written)?,
            }
        }
    }
    Ok(out)
}

/// The answer to `PING [message]`.
pub fn pong(message: Option<&[u8]>) -> Reply {
    match message {
        None => Reply::Status { value: "PONG".into() },
        Some(m) => Reply::Bulk { value: ByteBuf::from(m) },
    }
}

/// The system's records ([`crate::auth`]) in the applied state: `U` is the unflushed writes, to
/// read, or to write as well while applying a change. A read that fails is remembered, and
/// nothing is written after it: a change applied to a record that could not be read would
/// overwrite what it holds.
struct SystemRecords<'a, U> {
    unflushed: U,
    frozen: &'a Unflushed,
    flushed: &'a FlushedTable,
    failed: std::cell::Cell<Option<redb::StorageError>>,
}

impl<'a, U: std::ops::Deref<Target = Unflushed>> SystemRecords<'a, U> {
    fn new(unflushed: U, frozen: &'a Unflushed, flushed: &'a FlushedTable) -> Self {
        SystemRecords { unflushed, frozen, flushed, failed: std::cell::Cell::new(None) }
    }

    /// `value`, unless a read failed on the way to it.
    fn checked<T>(self, value: T) -> Result<T, StoreError> {
        match self.failed.into_inner() {
            Some(e) => Err(StoreError::storage(e)),
            None => Ok(value),
        }
    }
}

impl<U: std::ops::Deref<Target = Unflushed>> crate::auth::Records for SystemRecords<'_, U> {
    fn get(&self, key: &[u8]) -> Option<Bytes> {
        let layers = [&*self.unflushed, self.frozen];
        match with_value(View { layers: &layers, flushed: self.flushed }, key, Bytes::copy_from_slice) {
            Ok(value) => value,
            Err(e) => {
                self.failed.set(Some(e));
                None
            }
        }
    }
}

impl crate::auth::RecordsMut for SystemRecords<'_, &mut Unflushed> {
    fn put(&mut self, key: &[u8], value: Bytes) {
        let failed = self.failed.take();
        if failed.is_none() {
            // The system's records carry no revisions: they are not keys a client sees.
            let record = record::encode(record::Meta::default(), &value);
            self.unflushed.insert(Bytes::copy_from_slice(key), Pending::Record(Some(record)));
        }
        self.failed.set(failed);
    }
}

/// Runs `f` on `key`'s record in the applied state, if it exists.
fn with_record<T>(
    view: View,
    key: &[u8],
    f: impl FnOnce(&[u8]) -> T,
) -> Result<Option<T>, redb::StorageError> {
    for (depth, layer) in view.layers.iter().enumerate() {
        if let Some(pending) = layer.get(key) {
            let record = pending.record(|| pending::meta_in(&view.layers[depth + 1..], view.flushed, key))?;
            return Ok(record.map(|record| f(&record)));
        }
    }
    Ok(view.flushed.get(key)?.map(|record| f(record.value())))
}

/// Runs `f` on `key`'s value in the applied state, if it exists (cheaper than its record).
fn with_value<T>(
    view: View,
    key: &[u8],
    f: impl FnOnce(&[u8]) -> T,
) -> Result<Option<T>, redb::StorageError> {
    if let Some(pending) = view.layers.iter().find_map(|layer| layer.get(key)) {
        return Ok(pending.value()?.map(f));
    }
    Ok(match view.flushed.get(key)? {
        Some(record) => Some(f(record::decode(record.value())?.1)),
        None => None,
    })
}

/// The value of a key as an answer: `Bulk`, or `Nil` for a missing key.
fn value_of(view: View, key: &[u8]) -> Result<Reply, redb::StorageError> {
    Ok(match with_value(view, key, |v| ByteBuf::from(v))? {
        Some(value) => Reply::Bulk { value },
        None => Reply::Nil,
    })
}

fn apply_read(view: View, read: &Read) -> Result<Reply, redb::StorageError> {
    Ok(match read {
        Read::Get { key, with_meta: false } => value_of(view, key)?,
        Read::Get { key, with_meta: true } => {
            match with_record(view, key, |r| record::key_value(key, r, true))?.transpose()? {
                Some(entry) => Reply::Entries { entries: vec![entry], more: false, next: None },
                None => Reply::Nil,
            }
        }
        Read::MGet { keys } => {
            let mut budget = apply::ANSWER_BYTES;
            let mut items = Vec::with_capacity(keys.len());
            for key in keys {
                let item = match value_of(view, key)? {
                    Reply::Bulk { value } if value.len() > budget => apply::over_budget(),
                    item => item,
                };
                budget -= apply::answer_bytes(&item);
                items.push(item);
            }
            Reply::Array { items }
        }
        Read::Exists { keys } => {
            let mut found = 0;
            for key in keys {
                found += i64::from(with_value(view, key, |_| ())?.is_some());
            }
            Reply::Integer { value: found }
        }
        Read::Scan(scan) => range::page(range::layers(view, scan)?, scan, apply::ANSWER_BYTES)?,
        Read::Users | Read::Roles => {
            let records = SystemRecords::new(
                view.layers[0],
                view.layers.get(1).copied().unwrap_or(&NOTHING_FROZEN),
                view.flushed,
            );
            let accounts = Accounts::load(&records);
            if let Some(e) = records.failed.into_inner() {
                return Err(e);
            }
            match read {
                Read::Users => accounts.users_table(),
                _ => accounts.roles_table(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::KeyValue;
    use bytes::Bytes;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }
    fn set(k: &str, v: &str) -> Write {
        Write::set(b(k), b(v))
    }
    fn del(ks: &[&str]) -> Write {
        Write::del(ks.iter().map(|k| b(k)).collect())
    }
    fn apply(store: &Store, writes: &[Write]) -> Vec<Reply> {
        writes.iter().map(|w| store.apply_write(w).unwrap().reply).collect()
    }
    fn flush(store: &Store) {
        store.flush(|_| Ok(())).unwrap();
    }
    fn get(store: &Store, key: &str) -> Reply {
        store.read(&Read::get(b(key))).unwrap()
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
        let reads = [Read::get(b("a")), Read::get(b("b"))];
        assert_eq!(store.read_many(&reads).unwrap(), (vec![Reply::Nil, bulk(b"2")], 3));
    }

    #[test]
    fn reads_and_deletes_see_flushed_and_unflushed_writes_alike() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        apply(&store, &[set("old", "1"), set("both", "1"), set("dropped", "1")]);
        flush(&store);
        apply(&store, &[set("both", "2"), set("new", "2"), del(&["dropped"])]);
        assert_eq!(store.unflushed_keys(), 3);
        let seen = |store: &Store| {
            let keys = ["old", "both", "new", "dropped"];
            let values: Vec<Reply> = keys.iter().map(|k| get(store, k)).collect();
            let counted = apply(store, &[del(&["old", "both", "new", "dropped", "never"])]);
            (values, counted)
        };
        let expected =
            (vec![bulk(b"1"), bulk(b"2"), bulk(b"2"), Reply::Nil], vec![Reply::Integer { value: 3 }]);
        assert_eq!(seen(&store), expected, "before the flush");

        let again_dir = tempfile::tempdir().unwrap();
        let again = Store::open(again_dir.path()).unwrap();
        apply(&again, &[set("old", "1"), set("both", "1"), set("dropped", "1")]);
        flush(&again);
        apply(&again, &[set("both", "2"), set("new", "2"), del(&["dropped"])]);
        flush(&again);
        assert_eq!(again.unflushed_keys(), 0);
        assert_eq!(seen(&again), expected, "after the flush");
    }

    #[test]
    fn the_accounts_follow_every_system_write_flushed_or_not() {
        use crate::auth::SystemWrite;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.accounts().unwrap().users.is_empty());
        apply(&store, &[Write::System(SystemWrite::Bootstrap { root_password: "h".into() })]);
        assert!(store.accounts().unwrap().users.contains_key("root"));
        flush(&store);
        let add = SystemWrite::UserAdd { name: "alice".into(), password: "h".into() };
        apply(&store, &[Write::System(add)]);
        let users: Vec<String> = store.accounts().unwrap().users.keys().cloned().collect();
        assert_eq!(users, ["alice", "root"]);
    }

    #[test]
    fn only_flushed_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            apply(&store, &[set("k", "v"), set("bin", "\0\u{1}"), set("gone", "x")]);
            apply(&store, &[del(&["gone"])]);
            flush(&store);
            // The Raft log holds this one; the state machine applies it again after a restart.
            apply(&store, &[set("unflushed", "1")]);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.read(&Read::get(b("k"))).unwrap(), bulk(b"v"));
        assert_eq!(store.read(&Read::get(b("bin"))).unwrap(), bulk(b"\0\x01"));
        assert_eq!(store.read(&Read::get(b("gone"))).unwrap(), Reply::Nil);
        let exists = Read::Exists { keys: vec![b("k"), b("k"), b("gone")] };
        assert_eq!(store.read(&exists).unwrap(), Reply::Integer { value: 2 });
        assert_eq!(get(&store, "unflushed"), Reply::Nil);
    }

    /// A read while the state is being replaced (a snapshot installed) answers from the state
    /// before it at once, and the new state shows once it is committed.
    #[test]
    fn reads_answer_from_the_old_state_while_the_state_is_replaced() {
        use std::sync::mpsc;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        apply(&store, &[set("flushed", "1")]);
        flush(&store);
        apply(&store, &[set("unflushed", "1")]);
        let (writing, wait_writing) = mpsc::channel();
        let (read, wait_read) = mpsc::channel();
        let replacer = {
            let store = store.clone();
            std::thread::spawn(move || {
                let record = record::encode(record::Meta::default(), b"2");
                store.replace(
                    [(b"flushed".as_slice(), record.as_ref())],
                    9,
                    &SessionsSnapshot::default(),
                    |_| {
                        writing.send(()).unwrap();
                        // A read that waited for this transaction would never let it finish.
                        wait_read
                            .recv_timeout(Duration::from_secs(10))
                            .map_err(|_| redb::Error::Corrupted("no read answered meanwhile".into()))
                    },
                )
            })
        };
        wait_writing.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((get(&store, "flushed"), get(&store, "unflushed")), (bulk(b"1"), bulk(b"1")));
        read.send(()).unwrap();
        replacer.join().unwrap().unwrap();
        assert_eq!((get(&store, "flushed"), get(&store, "unflushed")), (bulk(b"2"), Reply::Nil));
    }

    #[test]
    fn multi_key_answers_stop_at_their_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let big = "v".repeat(apply::ANSWER_BYTES * 2 / 5);
        apply(&store, &[set("a", &big), set("b", &big), set("c", &big), set("d", "small")]);
        let keys = ["a", "b", "c", "d"].map(b).to_vec();
        let Reply::Array { items } = store.read(&Read::MGet { keys }).unwrap() else { panic!("an array") };
        assert!(matches!(&items[..2], [Reply::Bulk { .. }, Reply::Bulk { .. }]));
        assert!(matches!(
            &items[2],
            Reply::Error { code: crate::protocol::message::ErrorCode::TooLarge, .. }
        ));
        assert_eq!(items[3], bulk(b"small"), "what still fits is answered");
        let scan = crate::command::scan::parse(&[b("a")], 64).unwrap();
        let Reply::Entries { entries, more, next } = store.read(&Read::Scan(scan)).unwrap() else { panic!() };
        assert_eq!((entries.len(), more, next.map(|n| n.into_vec())), (2, true, Some(b"b\0".to_vec())));
    }

    #[test]
    fn a_store_written_before_keys_had_metadata_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = redb::Database::create(dir.path().join(STATE_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(KV).unwrap().insert(b"k".as_slice(), b"v".as_slice()).unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(dir.path()).err().expect("an old layout is refused");
        assert!(err.to_string().contains("older layout"), "{err}");
    }

    #[test]
    fn a_short_record_on_disk_is_a_storage_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .transact(|txn| {
                txn.open_table(KV)?.insert(b"k".as_slice(), b"short".as_slice())?;
                Ok(())
            })
            .unwrap();
        let store = {
            drop(store);
            Store::open(dir.path()).unwrap()
        };
        assert!(store.read(&Read::get(b("k"))).is_err());
        assert!(store.apply_write(&Write::Incr { key: b("k"), by: 1 }).is_err());
        let scan = crate::command::scan::parse(&[b("")], 64).unwrap();
        assert!(store.read(&Read::Scan(scan)).is_err());
    }

    #[test]
    fn the_change_log_keeps_its_history_and_drops_only_whole_older_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let per_flush = HISTORY_REVISIONS / 4 + 1;
        for round in 0..6 {
            let writes: Vec<Write> =
                (0..per_flush).map(|i| set(&format!("k{i}"), &format!("{round}"))).collect();
            apply(&store, &writes);
            flush(&store);
        }
        apply(&store, &[set("k0", "unflushed")]);
        let revision = store.revision();
        let log = store.changes_since(0).unwrap();
        let oldest = log[0].0;
        assert!(oldest <= revision - HISTORY_REVISIONS + 1, "at least the history is kept");
        assert!(oldest + per_flush > revision - HISTORY_REVISIONS, "older flushes are dropped");
        let revisions: Vec<u64> = log.iter().map(|(at, _)| *at).collect();
        assert_eq!(revisions, (oldest..=revision).collect::<Vec<_>>());
        let (at, change) = &log[log.len() - 2];
        let (meta, value) = record::decode(change[0].1.as_deref().unwrap()).unwrap();
        assert_eq!((*at, meta.version, value), (revision - 1, 6, &b"5"[..]), "{:?}", change[0].0);
        let from = revision - per_flush - 7;
        assert_eq!(store.changes_since(from).unwrap()[0].0, from, "read from inside a row");
    }

    #[test]
    fn more_revisions_than_the_history_between_flushes_keep_just_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        apply(&store, &(0..100).map(|i| set(&format!("k{i}"), "v")).collect::<Vec<_>>());
        flush(&store);
        let writes: Vec<Write> =
            (0..HISTORY_REVISIONS + 500).map(|i| set(&format!("k{}", i % 50), "w")).collect();
        apply(&store, &writes);
        let revision = store.revision();
        let kept: Vec<u64> = (revision - HISTORY_REVISIONS + 1..=revision).collect();
        let log =
            |store: &Store| store.changes_since(0).unwrap().iter().map(|(at, _)| *at).collect::<Vec<_>>();
        assert_eq!(log(&store), kept, "the flushed revisions do not lead up to those in memory");
        flush(&store);
        assert_eq!(log(&store), kept);
    }

    #[test]
    fn writes_applied_during_a_flush_read_over_it_and_land_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        apply(&store, &[set("a", "1"), set("b", "1")]);
        flush(&store);
        apply(&store, &[set("a", "2"), set("c", "1"), del(&["b"])]);
        let under_way = store.freeze().unwrap();
        assert!(matches!(store.freeze(), Err(StoreError::FlushUnderWay)));
        apply(&store, &[set("a", "3"), set("b", "2"), set("c", "2"), set("d", "1")]);
        let metas = |store: &Store| -> Vec<String> {
            let scan = crate::command::scan::parse(&[b("")], 64).unwrap();
            let Reply::Entries { entries, .. } = store.read(&Read::Scan(scan)).unwrap() else { panic!() };
            let meta = |e: &KeyValue| {
                format!("create {} mod {} version {}", e.create_revision, e.mod_revision, e.version)
            };
            entries.iter().map(|e| format!("{:?} {:?} {}", e.key, e.value, meta(e))).collect()
        };
        let seen = metas(&store);
        let log = store.changes_since(1).unwrap();
        assert_eq!(log.iter().map(|(at, _)| *at).collect::<Vec<_>>(), (1..=9).collect::<Vec<_>>());
        assert_eq!(log, {
            store.write_frozen(under_way, |_| Ok(())).unwrap();
            store.changes_since(1).unwrap()
        });
        assert_eq!(metas(&store), seen, "the same once the flush is in");
        flush(&store);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(metas(&store), seen, "and after a restart");
        assert!(seen[0].ends_with("create 1 mod 6 version 3"), "{}", seen[0]);
        assert!(seen[1].ends_with("create 7 mod 7 version 1"), "{}", seen[1]);
        assert!(seen[2].ends_with("create 4 mod 8 version 2"), "{}", seen[2]);
    }

    #[test]
    fn a_write_of_several_keys_is_one_revision_in_the_change_log_wherever_it_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mset = Write::MSet { pairs: vec![(b("a"), b("1")), (b("b"), b("1")), (b("c"), b("1"))] };
        apply(&store, &[set("a", "0"), mset, del(&["a", "c", "none"]), set("b", "2")]);
        let shape = |store: &Store| -> Vec<(u64, Vec<(Bytes, bool)>)> {
            let log = store.changes_since(1).unwrap();
            log.into_iter()
                .map(|(at, c)| (at, c.into_iter().map(|(k, v)| (k, v.is_some())).collect()))
                .collect()
        };
        let expected = vec![
            (1, vec![(b("a"), true)]),
            (2, vec![(b("a"), true), (b("b"), true), (b("c"), true)]),
            (3, vec![(b("a"), false), (b("c"), false)]),
            (4, vec![(b("b"), true)]),
        ];
        assert_eq!(shape(&store), expected, "in memory");
        let in_memory = store.changes_since(1).unwrap();
        flush(&store);
        assert_eq!(store.changes_since(1).unwrap(), in_memory, "flushed");
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.changes_since(1).unwrap(), in_memory, "after a restart");
        assert_eq!(store.changes_since(3).unwrap(), in_memory[2..], "read from inside a row");
    }

    #[test]
    fn a_second_open_of_the_same_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().expect("second open must fail");
        assert!(err.to_string().contains("state.redb"), "{err}");
    }
}
