//! The Raft state machine: committed [`Write`](crate::command::Write)s applied to the node's
//! [`Store`].
//!
//! Entries go through the same deterministic `Store::apply_write` a single node uses, so every
//! node computes the same state and the same answers. The store keeps applied writes in memory
//! until a flush moves them into its database, every [`FLUSH_EVERY_ENTRIES`] entries or
//! [`FLUSH_EVERY_BYTES`] bytes, at once for a membership change, and before a snapshot is built.
//! The flush's transaction also records the last applied log id and the membership, so the data
//! and the claim about how much of the log it reflects can never disagree after a crash.
//!
//! A flush is begun between two batches (the writes applied so far are frozen, with the log id
//! of the last) and written on a blocking thread while the next batches are applied over it;
//! the next flush waits for it. Writing a flush of tens of thousands of keys takes long enough
//! that stopping the applies for it showed in the slowest answers of a pipelined load. A
//! membership's flush, a snapshot and a snapshot install wait for the flush under way.
//!
//! Between flushes nothing here is durable, and need not be: the Raft log is, so a crash only
//! rolls the state machine back to the last flush, and openraft applies the committed entries
//! after it again on restart (at most a flush's worth). What makes that safe is that the log is
//! never purged past what the database holds: log purges follow snapshots, and a snapshot is
//! only built after a flush of everything applied. This takes the per-batch commit (and its
//! fsync) off every node's write path.
//!
//! It also remembers every node id that was ever a member ([`members_ever`]), so that an id is
//! never given to a second node: a fresh node under an old id could replay old memberships in
//! which it alone is a quorum.
//!
//! Snapshots are the whole key space plus that id set, MessagePack-encoded as a
//! `SnapshotBody`, built from a read transaction (so `apply` goes on meanwhile) and kept in
//! memory, shared (not copied) with openraft and the peers it is sent to. After a restart
//! openraft builds one at once if the log behind it was compacted.
//!
//! A snapshot costs a pass over every key, so taking one every fixed number of entries would
//! make each write cost a big store more than a small one: at 10,000 entries, a node holding a
//! million keys would encode a hundred of them per write. `SnapshotSchedule` instead asks for
//! one once the log since the last holds as many entries as that snapshot held keys, and at
//! least the configured `snapshot_entries`. Snapshotting then costs at most about one key per
//! applied entry, and the log behind a snapshot stays about the snapshot's size (the Raft thesis,
//! §5.1.3, suggests the same rule in bytes).

use super::{KvRaft, TypeConfig, io_error, written_bytes};
use crate::protocol::message::Reply;
use crate::protocol::msgpack;
use crate::store::{Applied, Flush, KV, SessionsSnapshot, Store, StoreError};
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde_bytes::ByteBuf;
use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
type Snapshot = SnapshotOf<TypeConfig, Bytes>;

/// The applied log id and the membership, MessagePack-encoded, beside the data in the same file.
const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";
const MEMBERS_EVER: &str = "members_ever";

/// Applied entries are flushed into the database once this many have gathered. The bigger the
/// batch, the more of its keys share the B-tree pages that redb rewrites once per commit, which
/// cuts the nodes' CPU per write under load (docs/BENCHMARKS.md has the A/B). The cost is memory
/// until the flush, and a restart applies at most this many entries again.
pub const FLUSH_EVERY_ENTRIES: u64 = 32768;

/// ... or once their keys and values come to this many bytes, which bounds the memory they hold.
pub const FLUSH_EVERY_BYTES: u64 = 16 * 1024 * 1024;

/// What a snapshot carries: the store's keys with their records (`crate::store::record`), and
/// its revision.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotBody {
    members_ever: BTreeSet<u64>,
    revision: u64,
    /// Which writes of each client session were applied (`crate::store::sessions`).
    sessions: SessionsSnapshot,
    pairs: Vec<(ByteBuf, ByteBuf)>,
}

/// Every node id that has been a member of the cluster, as of the last applied entry.
pub fn members_ever(store: &Store) -> Result<BTreeSet<u64>, StoreError> {
    let txn = store.begin_read()?;
    let table = txn.open_table(RAFT_META).map_err(StoreError::storage)?;
    Ok(read_members_ever(&table)?)
}

/// Whether the store holds applied entries (a fresh one has none). Before the state machine has
/// created its table, it holds none.
pub fn has_applied(store: &Store) -> Result<bool, StoreError> {
    let txn = store.begin_read()?;
    match txn.open_table(RAFT_META) {
        Ok(table) => Ok(read_state(&table)?.0.is_some()),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(StoreError::storage(e)),
    }
}

fn read_members_ever(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<BTreeSet<u64>, redb::Error> {
    Ok(table.get(MEMBERS_EVER)?.map(|v| decode(v.value())).transpose()?.unwrap_or_default())
}

/// The latest snapshot, as openraft hands it to lagging followers.
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Bytes,
}

/// When the next snapshot is due (see the module docs): counted in entries applied since the
/// state the last snapshot holds.
struct SnapshotSchedule {
    /// The configured `snapshot_entries`: never sooner than this.
    min_entries: u64,
    /// Entries applied since the state the last snapshot (or, after a start, the store) holds.
    since: u64,
    /// `since` at which a snapshot is asked for next.
    due_at: u64,
}

impl SnapshotSchedule {
    /// A schedule starting from a state of `keys` keys.
    fn new(min_entries: u64, keys: u64) -> SnapshotSchedule {
        SnapshotSchedule { min_entries, since: 0, due_at: min_entries.max(keys) }
    }

    /// Counts `count` more applied entries; `true` when a snapshot should be asked for now.
    fn applied(&mut self, count: u64) -> bool {
        self.since += count;
        if self.since < self.due_at {
            return false;
        }
        // Asked again after as many entries more, should this request come to nothing (openraft
        // drops one that arrives while a build runs).
        self.due_at = self.since + self.min_entries;
        true
    }

    /// A snapshot of `keys` keys now holds everything applied.
    fn taken(&mut self, keys: u64) {
        *self = SnapshotSchedule::new(self.min_entries, keys);
    }
}

/// How far applying has got beyond what the database holds. Applies, flushes and snapshot
/// installs hold it while they run, so they happen one at a time.
struct Progress {
    /// The last applied log id, if anything was applied since the node started; the database
    /// records it at the next flush.
    applied: Option<LogId>,
    /// Entries applied since the last flush ...
    unflushed: u64,
    /// ... and roughly the bytes they wrote.
    unflushed_bytes: u64,
    snapshots: SnapshotSchedule,
}

impl Progress {
    fn new(snapshots: SnapshotSchedule) -> Progress {
        Progress { applied: None, unflushed: 0, unflushed_bytes: 0, snapshots }
    }

    /// Whether enough has gathered for a flush.
    fn flush_due(&self) -> bool {
        self.unflushed >= FLUSH_EVERY_ENTRIES || self.unflushed_bytes >= FLUSH_EVERY_BYTES
    }

    /// Applies `entries` (whose writes come to about `bytes`) to the store; returns each
    /// entry's reply, the memberships among them, and whether a flush and a snapshot are due.
    fn apply(&mut self, store: &Store, entries: &[Entry], bytes: u64) -> Result<AppliedBatch, StoreError> {
        let mut replies = Vec::with_capacity(entries.len());
        let mut memberships = Vec::new();
        for entry in entries {
            replies.push(match &entry.payload {
                EntryPayload::Normal(write) => store.apply_write(write)?,
                EntryPayload::Membership(membership) => {
                    memberships.push(StoredMembership::new(Some(entry.log_id()), membership.clone()));
                    Applied { reply: Reply::ok(), revision: store.revision() }
                }
                EntryPayload::Blank => Applied { reply: Reply::ok(), revision: store.revision() },
            });
        }
        self.applied = entries.last().map(|e| e.log_id()).or(self.applied);
        self.unflushed += entries.len() as u64;
        self.unflushed_bytes += bytes;
        // A membership is flushed at once: nodes ask for the ids ever used (`members_ever`).
        let flush_due = self.flush_due() || !memberships.is_empty();
        let snapshot_due = self.snapshots.applied(entries.len() as u64);
        Ok(AppliedBatch { replies, memberships, flush_due, snapshot_due })
    }

    /// Begins a flush of everything applied (see [`Store::freeze`]); what [`write_flush`] then
    /// records beside the data: the last applied log id.
    fn freeze(&mut self, store: &Store) -> Result<(Flush, Option<LogId>), StoreError> {
        let flush = store.freeze()?;
        self.unflushed = 0;
        self.unflushed_bytes = 0;
        Ok((flush, self.applied))
    }

    /// Flushes the store, recording the applied log id and `memberships` beside the data. Fails
    /// if a flush is under way.
    fn flush(&mut self, store: &Store, memberships: &[Membership]) -> Result<(), StoreError> {
        let (flush, applied) = self.freeze(store)?;
        write_flush(store, flush, applied, memberships)
    }
}

/// Writes a flush begun by [`Progress::freeze`], recording the log id `applied` and
/// `memberships` beside the data.
fn write_flush(
    store: &Store,
    flush: Flush,
    applied: Option<LogId>,
    memberships: &[Membership],
) -> Result<(), StoreError> {
    store.write_frozen(flush, |txn| {
        let mut meta = txn.open_table(RAFT_META)?;
        if let Some(applied) = applied {
            meta.insert(APPLIED, encode(&Some(applied))?.as_slice())?;
        }
        if let Some(latest) = memberships.last() {
            meta.insert(MEMBERSHIP, encode(latest)?.as_slice())?;
            let mut ever = read_members_ever(&meta)?;
            ever.extend(memberships.iter().flat_map(|m| m.membership().nodes().map(|(id, _)| *id)));
            meta.insert(MEMBERS_EVER, encode(&ever)?.as_slice())?;
        }
        Ok(())
    })
}

/// What applying a batch gave.
struct AppliedBatch {
    replies: Vec<Applied>,
    memberships: Vec<Membership>,
    flush_due: bool,
    snapshot_due: bool,
}

/// The flush writing in the background, if any. Held while a flush is begun or the state
/// replaced, after waiting for the one under way, so that flushes run one at a time.
type Flushing = Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<(), StoreError>>>>>;

/// Waits for the flush under way in `flushing`, if any, and gives its outcome.
async fn flushed(flushing: &mut Option<tokio::task::JoinHandle<Result<(), StoreError>>>) -> io::Result<()> {
    match flushing.take() {
        Some(under_way) => under_way.await.map_err(io_error)?.map_err(io_error),
        None => Ok(()),
    }
}

/// The state machine given to openraft; also its own snapshot builder. Clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    progress: Arc<Mutex<Progress>>,
    flushing: Flushing,
    /// Notified when a snapshot is due; [`request_snapshots`] asks openraft for it.
    snapshot_due: Arc<Notify>,
}

impl StateMachine {
    /// Opens the state machine on `store`; snapshots are due at the earliest every
    /// `snapshot_entries` applied entries (see the module docs).
    pub fn open(store: Arc<Store>, snapshot_entries: u64) -> Result<StateMachine, StoreError> {
        store.flush(|txn| {
            txn.open_table(RAFT_META)?;
            Ok(())
        })?;
        let keys = store.flushed().len().map_err(StoreError::storage)?;
        let progress = Progress::new(SnapshotSchedule::new(snapshot_entries, keys));
        Ok(StateMachine {
            store,
            snapshot: Arc::new(Mutex::new(None)),
            progress: Arc::new(Mutex::new(progress)),
            flushing: Flushing::default(),
            snapshot_due: Arc::new(Notify::new()),
        })
    }

    /// What [`request_snapshots`] waits on.
    pub fn snapshot_due(&self) -> Arc<Notify> {
        self.snapshot_due.clone()
    }

    fn remember(&self, snapshot: StoredSnapshot) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
    }

    /// Flushes everything applied, recording `memberships` beside it. The writing runs in the
    /// background while later entries are applied (a flush of a busy store takes long enough
    /// to show in every answer's latency otherwise), unless a membership must be durable at
    /// once; a flush still under way from before is waited for first.
    async fn flush(&self, memberships: Vec<Membership>) -> io::Result<()> {
        let mut flushing = self.flushing.lock().await;
        flushed(&mut flushing).await?;
        // Frozen here, before the next entry is applied: the log id recorded with the data is
        // exactly the last one in it.
        let (flush, applied) = lock(&self.progress).freeze(&self.store).map_err(io_error)?;
        let store = self.store.clone();
        let at_once = !memberships.is_empty();
        let writing = tokio::task::spawn_blocking(move || write_flush(&store, flush, applied, &memberships));
        *flushing = Some(writing);
        if at_once {
            flushed(&mut flushing).await?;
        }
        Ok(())
    }

    /// Runs blocking store work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> io::Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store)).await.map_err(io_error)?.map_err(io_error)
    }
}

/// Asks openraft for a snapshot whenever the state machine finds one `due`. Ends when `stop` is
/// cancelled or Raft has stopped.
pub async fn request_snapshots(raft: KvRaft, due: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = due.notified() => {}
            () = stop.cancelled() => return,
        }
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

fn lock(progress: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, redb::Error> {
    rmp_serde::to_vec_named(value).map_err(|e| redb::Error::Corrupted(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, redb::Error> {
    rmp_serde::from_slice(bytes).map_err(|e| redb::Error::Corrupted(e.to_string()))
}

/// Encodes a [`SnapshotBody`] straight from the table, pair by pair: collecting the pairs first
/// would hold every key and value twice more (a node with a million keys would need a hundred
/// megabytes more for every snapshot it builds). The buffer starts with `room` bytes.
fn encode_body(
    members_ever: &BTreeSet<u64>,
    revision: u64,
    sessions: &SessionsSnapshot,
    kv: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    room: usize,
) -> Result<Vec<u8>, redb::Error> {
    let corrupted = |e: &dyn std::fmt::Display| redb::Error::Corrupted(e.to_string());
    let mut out = Vec::with_capacity(room);
    // The same bytes `rmp_serde::to_vec_named(&SnapshotBody { .. })` would write.
    rmp::encode::write_map_len(&mut out, 4).map_err(|e| corrupted(&e))?;
    rmp::encode::write_str(&mut out, "members_ever").map_err(|e| corrupted(&e))?;
    out.extend_from_slice(&encode(members_ever)?);
    rmp::encode::write_str(&mut out, "revision").map_err(|e| corrupted(&e))?;
    rmp::encode::write_uint(&mut out, revision).map_err(|e| corrupted(&e))?;
    rmp::encode::write_str(&mut out, "sessions").map_err(|e| corrupted(&e))?;
    out.extend_from_slice(&encode(sessions)?);
    rmp::encode::write_str(&mut out, "pairs").map_err(|e| corrupted(&e))?;
    let len = u32::try_from(kv.len()?).map_err(|e| corrupted(&e))?;
    rmp::encode::write_array_len(&mut out, len).map_err(|e| corrupted(&e))?;
    // By hand (`protocol::msgpack`): through `rmp`, the headers cost more than the bytes.
    for item in kv.iter()? {
        let (key, value) = item?;
        msgpack::put_array_len(&mut out, 2).map_err(|e| corrupted(&e))?;
        msgpack::put_bin(&mut out, key.value()).map_err(|e| corrupted(&e))?;
        msgpack::put_bin(&mut out, value.value()).map_err(|e| corrupted(&e))?;
    }
    // Growing by doubling can leave up to half the buffer unused, for as long as it is kept.
    out.shrink_to_fit();
    Ok(out)
}

/// Reads the applied log id and membership from a table of [`RAFT_META`].
fn read_state(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<(Option<LogId>, Membership), redb::Error> {
    let applied = table.get(APPLIED)?.map(|v| decode(v.value())).transpose()?.flatten();
    let membership = table.get(MEMBERSHIP)?.map(|v| decode(v.value())).transpose()?.unwrap_or_default();
    Ok((applied, membership))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Bytes;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        let progress = self.progress.clone();
        self.blocking(move |store| {
            // Memberships are flushed at once, so only the applied log id can be ahead of the file.
            let progress = lock(&progress);
            let txn = store.begin_read()?;
            let table = txn.open_table(RAFT_META).map_err(StoreError::storage)?;
            let (applied, membership) = read_state(&table)?;
            Ok((progress.applied.or(applied), membership))
        })
        .await
    }

    async fn apply<Strm>(&mut self, mut stream: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Sized by the stream's hint (openraft's knows its length): grown from empty, these
        // were reallocated and copied several times per batch.
        let (expected, _) = stream.size_hint();
        let (mut entries, mut responders) = (Vec::with_capacity(expected), Vec::with_capacity(expected));
        while let Some((entry, responder)) = stream.try_next().await? {
            entries.push(entry);
            responders.push(responder);
        }
        // Roughly what applying them puts in the store's memory until the next flush.
        let bytes = entries.iter().map(|e| written_bytes(e) as u64).sum::<u64>();
        // Applying runs here: an apply touches only memory, and a hop to another thread and
        // back would cost it more than the apply. One that would wait for a snapshot's flush to
        // let go of the progress leaves the async threads.
        let applied_here = match self.progress.try_lock() {
            Ok(mut progress) => Some(progress.apply(&self.store, &entries, bytes)),
            Err(_) => None,
        };
        let AppliedBatch { replies, memberships, flush_due, snapshot_due } = match applied_here {
            Some(applied) => applied.map_err(io_error)?,
            None => {
                let progress = self.progress.clone();
                self.blocking(move |store| lock(&progress).apply(store, &entries, bytes)).await?
            }
        };
        if flush_due {
            self.flush(memberships).await?;
        }
        if snapshot_due {
            self.snapshot_due.notify_one();
        }
        // Answered only now that the batch is applied (reads see it from now on).
        for (responder, reply) in responders.into_iter().zip(replies) {
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Bytes) -> Result<(), io::Error> {
        let data = snapshot;
        let body: SnapshotBody =
            rmp_serde::from_slice(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let state = (meta.last_log_id, meta.last_membership.clone());
        let progress = self.progress.clone();
        // No flush may write over the new state.
        let mut flushing = self.flushing.lock().await;
        flushed(&mut flushing).await?;
        self.blocking(move |store| {
            let mut progress = lock(&progress);
            let records = body.pairs.iter().map(|(key, record)| (key.as_slice(), record.as_slice()));
            store.replace(records, body.revision, &body.sessions, |txn| {
                let mut table = txn.open_table(RAFT_META)?;
                table.insert(MEMBERS_EVER, encode(&body.members_ever)?.as_slice())?;
                table.insert(APPLIED, encode(&state.0)?.as_slice())?;
                table.insert(MEMBERSHIP, encode(&state.1)?.as_slice())?;
                Ok(())
            })?;
            progress.applied = state.0;
            progress.unflushed = 0;
            progress.unflushed_bytes = 0;
            progress.snapshots.taken(body.pairs.len() as u64);
            Ok(())
        })
        .await?;
        self.remember(StoredSnapshot { meta: meta.clone(), data });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let stored = self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: s.data }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let progress = self.progress.clone();
        // Room for about what the last snapshot took: grown from empty, a snapshot of many keys
        // was copied again at each doubling, into memory never touched before.
        let room = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |last| last.data.len() + last.data.len() / 8);
        let mut flushing = self.flushing.clone().lock_owned().await;
        flushed(&mut flushing).await?;
        let (meta, data) = self
            .blocking(move |store| {
                // Everything applied goes into the database, because the log will be purged up
                // to the log id the snapshot reflects; no apply comes in between, so the view
                // taken then shows exactly that.
                let (txn, kv, revision) = {
                    let mut progress = lock(&progress);
                    progress.flush(store, &[])?;
                    drop(flushing);
                    let revision = store.revision();
                    let txn = store.begin_read()?;
                    let kv = txn.open_table(KV).map_err(StoreError::storage)?;
                    progress.snapshots.taken(kv.len().map_err(StoreError::storage)?);
                    (txn, kv, revision)
                };
                let meta = txn.open_table(RAFT_META).map_err(StoreError::storage)?;
                let (applied, membership) = read_state(&meta)?;
                let members_ever = read_members_ever(&meta)?;
                let sessions = crate::store::sessions_snapshot(&txn)?;
                let data = encode_body(&members_ever, revision, &sessions, &kv, room)
                    .map_err(StoreError::storage)?;
                Ok((SnapshotMeta { last_log_id: applied, last_membership: membership }, data))
            })
            .await?;
        // Shared, not copied: a million keys make a snapshot of tens of megabytes.
        let data = Bytes::from(data);
        self.remember(StoredSnapshot { meta: meta.clone(), data: data.clone() });
        Ok(Snapshot { meta, snapshot: data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Read, Write};
    use bytes::Bytes;
    use openraft::testing::log_id;

    fn open(dir: &std::path::Path) -> StateMachine {
        StateMachine::open(Arc::new(Store::open(dir).unwrap()), 10_000).unwrap()
    }

    fn normal(index: u64, write: Write) -> EntryResponder<TypeConfig> {
        (openraft::Entry::new_normal(log_id::<TypeConfig>(1, 1, index), write), None)
    }

    fn get(sm: &StateMachine, key: &str) -> Reply {
        sm.store.read(&Read::get(Bytes::copy_from_slice(key.as_bytes()))).unwrap()
    }

    #[test]
    fn a_snapshot_body_is_encoded_as_serde_would() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let pairs = [("a", "1"), ("b", ""), ("c\0", "\u{ff}")];
        for (k, v) in pairs {
            let write = Write::set(Bytes::from(k), Bytes::from(v));
            store.apply_write(&write).unwrap();
        }
        store.flush(|_| Ok(())).unwrap();
        let members_ever = BTreeSet::from([1, 2, 5]);
        let txn = store.begin_read().unwrap();
        let sessions = SessionsSnapshot::default();
        let streamed = encode_body(&members_ever, 3, &sessions, &txn.open_table(KV).unwrap(), 0).unwrap();
        // Each key as its record: the revision that wrote it, version 1.
        let pairs = (1..)
            .zip(pairs)
            .map(|(revision, (k, v))| {
                let meta = crate::store::record::Meta {
                    create_revision: revision,
                    mod_revision: revision,
                    version: 1,
                };
                (
                    ByteBuf::from(k.as_bytes()),
                    ByteBuf::from(crate::store::record::encode(meta, v.as_bytes()).to_vec()),
                )
            })
            .collect();
        assert_eq!(streamed, encode(&SnapshotBody { members_ever, revision: 3, sessions, pairs }).unwrap());
    }

    #[test]
    fn a_snapshot_is_due_after_as_many_entries_as_the_last_one_held_keys() {
        let mut schedule = SnapshotSchedule::new(100, 10);
        assert!(!schedule.applied(99));
        assert!(schedule.applied(1), "never later than the minimum");
        // Asked again after the minimum once more, in case the first request came to nothing.
        assert!(!schedule.applied(99));
        assert!(schedule.applied(1));
        schedule.taken(1000);
        assert!(!schedule.applied(999));
        assert!(schedule.applied(1), "after as many entries as the snapshot held keys");
        schedule.taken(5);
        assert!(!schedule.applied(99));
        assert!(schedule.applied(1), "and never sooner than the minimum");
    }

    #[tokio::test]
    async fn an_apply_past_the_schedule_says_a_snapshot_is_due() {
        use futures::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(Arc::new(Store::open(dir.path()).unwrap()), 3).unwrap();
        let due = sm.snapshot_due();
        let set = |index: u64| normal(index, Write::set(format!("k{index}"), Bytes::new()));
        // `notify_one` leaves a permit when no one waits, so a due snapshot is seen at once.
        sm.apply(futures::stream::iter([Ok(set(1)), Ok(set(2))])).await.unwrap();
        assert!(due.notified().now_or_never().is_none(), "not due after 2 of 3 entries");
        sm.apply(futures::stream::iter([Ok(set(3))])).await.unwrap();
        assert!(due.notified().now_or_never().is_some(), "due after 3");
        // Building one starts the count again, from the keys it holds.
        sm.build_snapshot().await.unwrap();
        sm.apply(futures::stream::iter([Ok(set(4)), Ok(set(5))])).await.unwrap();
        assert!(due.notified().now_or_never().is_none(), "not due 2 entries after a snapshot of 3 keys");
        sm.apply(futures::stream::iter([Ok(set(6))])).await.unwrap();
        assert!(due.notified().now_or_never().is_some(), "due 3 entries after it");
    }

    #[tokio::test]
    async fn big_values_are_flushed_before_many_entries_have_gathered() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        // Four of these (with their keys) reach the flush's byte budget; three do not.
        let value = Bytes::from(vec![b'v'; FLUSH_EVERY_BYTES as usize / 4]);
        let mut unflushed = Vec::new();
        for index in 1..=5 {
            let write = Write::set(format!("k{index}"), value.clone());
            sm.apply(futures::stream::iter([Ok(normal(index, write))])).await.unwrap();
            unflushed.push(lock(&sm.progress).unflushed);
        }
        assert_eq!(unflushed, [1, 2, 3, 0, 1]);
        assert_eq!(get(&sm, "k4"), Reply::Bulk { value: ByteBuf::from(value.to_vec()) });
    }

    /// A snapshot's flush holds the progress for as long as the disk takes; an apply meanwhile
    /// must wait off the async threads, not block one of them.
    #[tokio::test(flavor = "current_thread")]
    async fn an_apply_waiting_for_the_progress_leaves_the_async_thread_free() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let (held_tx, held) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let progress = sm.progress.clone();
        let holder = std::thread::spawn(move || {
            let _guard = lock(&progress);
            held_tx.send(()).unwrap();
            // Let go when told, or after a while so that a failing test still ends.
            let _ = release_rx.recv_timeout(std::time::Duration::from_secs(5));
        });
        held.recv().unwrap();
        let write = Write::set(Bytes::from("k"), Bytes::from("v"));
        let mut applying =
            tokio::spawn(async move { sm.apply(futures::stream::iter([Ok(normal(1, write))])).await });
        // This runtime has one thread: the timer fires only if the apply left it free.
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), &mut applying).await;
        assert!(early.is_err(), "the apply ran while the progress was held");
        release.send(()).unwrap();
        applying.await.unwrap().unwrap();
        holder.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_carries_the_data_and_its_position_to_another_node() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = open(a_dir.path());
        let set = |k: &str, v: &str| Write::set(k.to_string(), v.to_string());
        // A write numbered in a client session: the snapshot carries that it was applied.
        let once =
            |write| Write::Once { session: 7, seq: 1, answered_below: 0, write: std::sync::Arc::new(write) };
        let incr = || Write::Incr { key: Bytes::from("n"), by: 1 };
        let entries = vec![
            normal(1, set("kept", "1")),
            normal(2, set("gone", "2")),
            normal(3, Write::del(vec![Bytes::from("gone")])),
            normal(4, once(set("bin", "\0\u{ff}"))),
            normal(5, once(incr())),
        ];
        a.apply(futures::stream::iter(entries.into_iter().map(Ok))).await.unwrap();
        assert_eq!(a.applied_state().await.unwrap().0, Some(log_id::<TypeConfig>(1, 1, 5)));
        assert_eq!(get(&a, "n"), Reply::Nil, "a repeat of seq 1 was not applied");

        let snapshot = a.build_snapshot().await.unwrap();
        let mut b = open(b_dir.path());
        // b holds stale data that the snapshot must replace, not merge with.
        let stale = vec![normal(1, set("stale", "x"))];
        b.apply(futures::stream::iter(stale.into_iter().map(Ok))).await.unwrap();
        b.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();

        assert_eq!(b.applied_state().await.unwrap().0, Some(log_id::<TypeConfig>(1, 1, 5)));
        assert_eq!(get(&b, "kept"), Reply::Bulk { value: ByteBuf::from("1") });
        assert_eq!(get(&b, "bin"), Reply::Bulk { value: ByteBuf::from("\0\u{ff}") });
        assert_eq!(get(&b, "gone"), Reply::Nil);
        assert_eq!(get(&b, "stale"), Reply::Nil);
        let current = b.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id::<TypeConfig>(1, 1, 5)));
        // The session's record came along: a repeat of its write is answered, not applied.
        b.apply(futures::stream::iter([Ok(normal(6, once(incr())))])).await.unwrap();
        assert_eq!(
            get(&b, "n"),
            Reply::Nil,
            "the repeat was not applied on the node that installed the snapshot"
        );
        assert_eq!(b.store.revision(), a.store.revision());
        // The keys' metadata came along: a write carries it forward, on either node alike.
        for sm in [&mut a, &mut b] {
            sm.apply(futures::stream::iter([Ok(normal(7, set("kept", "2")))])).await.unwrap();
        }
        let meta = |sm: &StateMachine| {
            sm.store.read(&Read::Get { key: Bytes::from("kept"), with_meta: true }).unwrap()
        };
        let Reply::Entries { entries, .. } = meta(&b) else { panic!("kept exists") };
        assert_eq!((entries[0].create_revision, entries[0].version), (1, 2));
        assert_eq!(meta(&a), meta(&b));
    }
}
