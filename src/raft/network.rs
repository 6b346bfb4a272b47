//! Raft traffic between nodes: openraft's RPCs over peer connections ([`crate::peer`]), on the
//! same frame codec and the same address as clients.
//!
//! The sender ([`PeerClient`]) writes one [`RaftRequest`] at a time and reads its
//! [`RaftResponse`]: openraft keeps at most one RPC in flight per target, so a plain
//! request/response connection per target is all it needs. The receiver answers them through
//! [`RaftService`], which the node's peer connections dispatch to (`server::control`).
//!
//! Every frame stays under the receiver's frame limit (from its welcome), like a client's:
//! - an `AppendEntries` whose entries would not fit sends the prefix that does and reports a
//!   partial success, so openraft sends the rest next;
//! - a snapshot is streamed in chunks, each acknowledged; the receiver assembles them and installs
//!   the snapshot after the last one. A transfer cut short (the connection broke, the sender
//!   stopped) is dropped with its connection, and openraft sends the snapshot again.
//!
//! Failures map onto openraft's terms: a peer that cannot be reached is `Unreachable` (openraft
//! backs off instead of flooding the log), a connection that breaks mid-RPC is a `Network` error
//! and is dropped, to be reopened by the next RPC.
//!
//! Deliberately not here: the node's own messages between peers (status, read indexes, removal
//! notices), which are `server::control`'s.

use super::{KvRaft, TypeConfig};
use crate::peer::{Dialer, PeerConnection, PeerError, PeerMessage};
use bytes::{Bytes, BytesMut};
use openraft::async_runtime::WatchReceiver;
use openraft::entry::RaftEntry;
use openraft::error::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{EntryOf, SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::{BasicNode, EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::protocol::frame::{ENTRY_OVERHEAD, Outgoing, PEER_FRAME_MARGIN as FRAME_MARGIN};

type Error = RaftError<TypeConfig>;

/// One Raft RPC.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// Part of a snapshot: `data` goes at `offset`; the last chunk has `done` set.
    SnapshotChunk {
        vote: VoteOf<TypeConfig>,
        meta: SnapshotMetaOf<TypeConfig>,
        offset: u64,
        data: ByteBuf,
        done: bool,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

/// The answer to a [`RaftRequest`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    AppendEntries(Result<AppendEntriesResponse<TypeConfig>, Error>),
    Vote(Result<VoteResponse<TypeConfig>, Error>),
    /// `None` for a chunk that is not the last; `Err` when the transfer cannot go on.
    SnapshotChunk(Result<Option<SnapshotResponse<TypeConfig>>, String>),
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, Error>),
}

/// The envelope of a Raft message: the control plane's variant never occurs on this side.
type Envelope<T> = PeerMessage<T, Never>;

/// Stands for the control plane's messages, which Raft never sends or expects.
#[derive(Debug, Serialize, Deserialize)]
pub enum Never {}

/// Answers the Raft RPCs of one peer connection.
pub struct RaftService<'a> {
    raft: &'a KvRaft,
    /// The member the connection's hello named.
    peer: u64,
    /// Where snapshots being received are written, and how big one may be.
    snapshots: &'a SnapshotInbox,
    /// A snapshot being received on this connection.
    incoming: Option<IncomingSnapshot>,
}

/// Where and how big the snapshots a node receives may be.
#[derive(Debug, Clone)]
pub struct SnapshotInbox {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

/// A snapshot being received on one connection: its chunks go to a file, never to memory. The
/// file has no name (it is unlinked as it is made), so no other transfer can open or truncate it,
/// and it is gone once the transfer and any mapping of it are.
struct IncomingSnapshot {
    meta: SnapshotMetaOf<TypeConfig>,
    file: Arc<std::fs::File>,
    len: u64,
    chunks: usize,
}

impl<'a> RaftService<'a> {
    /// The Raft side of a connection from member `peer`.
    pub fn new(raft: &'a KvRaft, peer: u64, snapshots: &'a SnapshotInbox) -> RaftService<'a> {
        RaftService { raft, peer, snapshots, incoming: None }
    }

    /// Hands one RPC to openraft and returns its answer. `Err` when the RPC speaks for another
    /// node than the connection's member (a vote, an append or a handover in someone else's
    /// name): the connection is then closed and nothing reaches openraft.
    pub async fn answer(&mut self, request: RaftRequest) -> Result<RaftResponse, String> {
        let speaker = match &request {
            RaftRequest::AppendEntries(rpc) => rpc.vote.leader_id().node_id,
            RaftRequest::Vote(rpc) | RaftRequest::PreVote(rpc) => rpc.vote.leader_id().node_id,
            RaftRequest::SnapshotChunk { vote, .. } => vote.leader_id().node_id,
            RaftRequest::TransferLeader(rpc) => rpc.from_leader().leader_id().node_id,
        };
        if speaker != self.peer {
            return Err(format!("node {} sent a Raft message in the name of node {speaker}", self.peer));
        }
        let raft = self.raft;
        Ok(match request {
            RaftRequest::AppendEntries(rpc) => RaftResponse::AppendEntries(raft.append_entries(rpc).await),
            RaftRequest::Vote(rpc) => RaftResponse::Vote(raft.vote(rpc).await),
            RaftRequest::PreVote(rpc) => RaftResponse::Vote(raft.pre_vote(rpc).await),
            RaftRequest::SnapshotChunk { vote, meta, offset, data, done } => {
                let received = self.receive_chunk(vote, meta, offset, data, done).await;
                if received.is_err() {
                    self.incoming = None;
                }
                RaftResponse::SnapshotChunk(received)
            }
            RaftRequest::TransferLeader(rpc) => {
                RaftResponse::TransferLeader(raft.handle_transfer_leader(rpc).await.map_err(RaftError::Fatal))
            }
        })
    }

    /// Adds one chunk to the snapshot being received, and installs it after the last one. A
    /// transfer is taken only from the leader of this node's current term (or a newer one),
    /// sending with that leader's vote, and only up to the inbox's size.
    async fn receive_chunk(
        &mut self,
        vote: VoteOf<TypeConfig>,
        meta: SnapshotMetaOf<TypeConfig>,
        offset: u64,
        data: ByteBuf,
        done: bool,
    ) -> Result<Option<SnapshotResponse<TypeConfig>>, String> {
        let leader = vote.leader_id();
        let (term, current_leader) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            (metrics.current_term, metrics.current_leader)
        };
        // A newer term's leader is one this node has not heard from yet (a new member is sent
        // a snapshot before anything else); in the current term, only the leader it follows.
        let current =
            leader.term > term || (leader.term == term && current_leader.is_none_or(|l| l == self.peer));
        if !vote.is_committed() || leader.node_id != self.peer || !current {
            return Err(format!(
                "refused a snapshot from node {} with the vote of node {} in term {} (this node is in term \
                 {term}): only the leader of the current term may send one",
                self.peer, leader.node_id, leader.term
            ));
        }
        if offset == 0 {
            let file = tempfile::tempfile_in(&self.snapshots.dir).map_err(|e| {
                format!("cannot make a file for the snapshot in {}: {e}", self.snapshots.dir.display())
            })?;
            self.incoming =
                Some(IncomingSnapshot { meta: meta.clone(), file: Arc::new(file), len: 0, chunks: 0 });
        }
        let Some(snapshot) = self.incoming.as_mut().filter(|s| s.meta == meta && s.len == offset) else {
            return Err(format!(
                "snapshot chunk at offset {offset} does not continue a transfer; start over"
            ));
        };
        let len = snapshot.len + data.len() as u64;
        if len > self.snapshots.max_bytes {
            return Err(format!(
                "the snapshot is over the {} bytes this node takes (max_snapshot_bytes)",
                self.snapshots.max_bytes
            ));
        }
        let file = snapshot.file.clone();
        tokio::task::spawn_blocking(move || std::os::unix::fs::FileExt::write_all_at(&*file, &data, offset))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot write the snapshot: {e}"))?;
        snapshot.len = len;
        snapshot.chunks += 1;
        if !done {
            return Ok(None);
        }
        let incoming = self.incoming.take().expect("checked above");
        let bytes = incoming.len;
        let chunks = incoming.chunks;
        let last = incoming.meta.last_log_id.map(|l| l.index);
        // SAFETY: the file has no name, so nothing but this transfer can reach it, and the
        // transfer has ended: nothing writes to it or truncates it while it is mapped.
        let mapped = unsafe { memmap2::Mmap::map(&*incoming.file) }
            .map_err(|e| format!("cannot map the snapshot: {e}"))?;
        let snapshot =
            SnapshotOf::<TypeConfig, _> { meta: incoming.meta.clone(), snapshot: Bytes::from_owner(mapped) };
        let response = self.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string())?;
        tracing::info!(last_index = ?last, bytes, chunks, "installed a snapshot from the leader");
        Ok(Some(response))
    }
}

/// Opens connections to peers for openraft.
pub struct PeerNetwork {
    /// Opens the connections, as this node.
    pub dialer: Dialer,
    /// Where entries that a peer's frames cannot carry are reported, for `CLUSTER`.
    pub unsendable: Arc<Unsendable>,
    /// Where each RPC's round trip is observed, for `/metrics`.
    pub round_trips: crate::metrics::PeerRoundTrips,
}

/// The peers this node holds an entry for that their frames cannot carry, with why: shown in
/// `CLUSTER` until the entry goes through.
#[derive(Debug, Default)]
pub struct Unsendable(std::sync::Mutex<std::collections::BTreeMap<u64, String>>);

impl Unsendable {
    /// Every peer stuck on an entry, with why.
    pub fn all(&self) -> std::collections::BTreeMap<u64, String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            connection: PeerConnection::new(self.dialer.clone(), target, node.addr.clone()),
            unsendable: self.unsendable.clone(),
            reported_unsendable: None,
            round_trips: self.round_trips.of(target),
        }
    }
}

/// openraft's client for one peer.
pub struct PeerClient {
    connection: PeerConnection,
    unsendable: Arc<Unsendable>,
    /// The last entry found too big for the peer's frames, so that it is reported once.
    reported_unsendable: Option<u64>,
    /// This peer's round-trip series.
    round_trips: prometheus_client::metrics::histogram::Histogram,
}

impl PeerClient {
    /// The error for an entry too big for the peer's frames: said loudly once per entry, then
    /// reported to openraft as the peer being unreachable, so that it backs off instead of
    /// sending it again and again.
    fn unsendable(&mut self, entry: &EntryOf<TypeConfig>, max_frame: usize) -> RPCError<TypeConfig> {
        let index = entry.log_id().index;
        let why = format!(
            "log entry {index} cannot be sent to node {}: it does not fit the {max_frame}-byte frames \
             that node accepts (give every member the same max_frame_bytes)",
            self.connection.target()
        );
        if self.reported_unsendable != Some(index) {
            tracing::error!("{why}");
            self.unsendable.lock().insert(self.connection.target(), why.clone());
            self.reported_unsendable = Some(index);
        }
        RPCError::Unreachable(Unreachable::from_string(why))
    }

    /// Sends one RPC and reads its answer within `ttl`.
    async fn call(
        &mut self,
        request: RaftRequest,
        ttl: std::time::Duration,
    ) -> Result<RaftResponse, RPCError<TypeConfig>> {
        let sent = std::time::Instant::now();
        let answer: Envelope<RaftResponse> = match &request {
            // Every write goes to every follower in one of these: encoded by hand (`wire`).
            RaftRequest::AppendEntries(rpc) => {
                let encode = |buffer: &mut BytesMut| {
                    super::wire::encode_append_entries(rpc, buffer).map_err(|e| e.to_string())
                };
                self.connection.call_as::<(), _>(Outgoing::Encoded(&encode), ttl).await
            }
            _ => self.connection.call(&Envelope::Raft(request), ttl).await,
        }
        .map_err(rpc_error)?;
        self.round_trips.observe(sent.elapsed().as_secs_f64());
        match answer {
            PeerMessage::Raft(response) => Ok(response),
            PeerMessage::Control(never) => match never {},
        }
    }
}

/// openraft's view of a failed call: a peer never reached is unreachable (openraft backs off),
/// anything else a network error.
fn rpc_error(e: PeerError) -> RPCError<TypeConfig> {
    if e.never_sent() {
        RPCError::Unreachable(Unreachable::from_string(e.to_string()))
    } else {
        RPCError::Network(NetworkError::from_string(e.to_string()))
    }
}

/// How many of `entries`, from the first, fit in `budget` bytes (estimated from their payloads).
fn fitting_entries(entries: &[EntryOf<TypeConfig>], budget: usize) -> usize {
    let mut used = 0;
    for (n, entry) in entries.iter().enumerate() {
        used += match &entry.payload {
            EntryPayload::Normal(write) => write.encoded_len_estimate(),
            EntryPayload::Membership(membership) => 64 + 128 * membership.nodes().count(),
            EntryPayload::Blank => 0,
        } + ENTRY_OVERHEAD;
        if used > budget {
            return n;
        }
    }
    entries.len()
}

/// Picks the expected variant's result out of a response; anything else is a protocol error.
macro_rules! expect_response {
    ($response:expr, $variant:ident) => {
        match $response {
            RaftResponse::$variant(result) => result.map_err(remote),
            other => Err(RPCError::Network(NetworkError::from_string(format!(
                "unexpected peer response {other:?}"
            )))),
        }
    };
}

/// A remote Raft that answered with an error (it is shutting down or broken): back off from it.
fn remote(e: Error) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(e.to_string()))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let max_frame = self.connection.max_frame(option.hard_ttl()).await.map_err(rpc_error)?;
        let budget = max_frame.saturating_sub(FRAME_MARGIN);
        let fits = fitting_entries(&rpc.entries, budget);
        if fits == 0 && !rpc.entries.is_empty() {
            // Admission keeps every write within a frame of this node's own limit (see
            // `Limits::max_write_bytes`); a peer configured with a smaller one cannot take it.
            return Err(self.unsendable(&rpc.entries[0], max_frame));
        }
        let sent_part = (fits < rpc.entries.len()).then(|| {
            rpc.entries.truncate(fits);
            rpc.entries.last().map(|e| e.log_id())
        });
        let response = expect_response!(
            self.call(RaftRequest::AppendEntries(rpc), option.hard_ttl()).await?,
            AppendEntries
        )?;
        if self.reported_unsendable.take().is_some() {
            self.unsendable.lock().remove(&self.connection.target());
        }
        Ok(match (response, sent_part) {
            (AppendEntriesResponse::Success, Some(last)) => AppendEntriesResponse::PartialSuccess(last),
            (response, _) => response,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        expect_response!(self.call(RaftRequest::Vote(rpc), option.hard_ttl()).await?, Vote)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        expect_response!(self.call(RaftRequest::PreVote(rpc), option.hard_ttl()).await?, Vote)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Bytes>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let ttl = option.hard_ttl();
        let send = async {
            let max_frame = self.connection.max_frame(ttl).await.map_err(rpc_error)?;
            let chunk_bytes = max_frame.saturating_sub(FRAME_MARGIN).max(max_frame / 2).max(1);
            let data = snapshot.snapshot;
            let mut offset = 0;
            loop {
                let end = (offset + chunk_bytes).min(data.len());
                let done = end == data.len();
                let request = RaftRequest::SnapshotChunk {
                    vote,
                    meta: snapshot.meta.clone(),
                    offset: offset as u64,
                    data: ByteBuf::from(&data[offset..end]),
                    done,
                };
                let answer = match self.call(request, ttl).await? {
                    RaftResponse::SnapshotChunk(answer) => answer,
                    other => {
                        let e = format!("unexpected peer response {other:?}");
                        return Err(RPCError::Network(NetworkError::from_string(e)));
                    }
                };
                match answer {
                    Ok(Some(response)) if done => return Ok(response),
                    Ok(None) if !done => offset = end,
                    Ok(_) => {
                        let e = "the peer answered out of turn during a snapshot".to_string();
                        return Err(RPCError::Network(NetworkError::from_string(e)));
                    }
                    Err(e) => {
                        // The connection may hold half a transfer: start the next one afresh.
                        self.connection.reset();
                        return Err(RPCError::Network(NetworkError::from_string(format!(
                            "node {}: {e}",
                            self.connection.target()
                        ))));
                    }
                }
            }
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            response = send => Ok(response?),
        }
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        expect_response!(
            self.call(RaftRequest::TransferLeader(rpc), option.hard_ttl()).await?,
            TransferLeader
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Read, Write};
    use crate::connection;
    use crate::protocol::message::Reply;
    use crate::protocol::message::{Hello, HelloReply};
    use crate::raft::log_store::LogStore;
    use crate::raft::state_machine::StateMachine;
    use crate::store::Store;
    use bytes::Bytes;
    use openraft::Raft;
    use openraft::async_runtime::WatchReceiver;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::net::TcpListener;
    use tokio::net::TcpStream;

    const DEADLINE: Duration = Duration::from_secs(20);

    struct TestNode {
        raft: KvRaft,
        store: Arc<Store>,
        server: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    fn config() -> openraft::Config {
        openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            ..Default::default()
        }
    }

    /// A node whose listener speaks only the peer side of the protocol.
    async fn start(id: u64, listener: TcpListener, config: openraft::Config) -> TestNode {
        start_with_frame(id, listener, config, 1 << 20).await
    }

    /// A node that welcomes peers with a frame limit of `max_frame` bytes.
    async fn start_with_frame(
        id: u64,
        listener: TcpListener,
        config: openraft::Config,
        max_frame: usize,
    ) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let raft = Raft::new(
            id,
            Arc::new(config.validate().unwrap()),
            PeerNetwork {
                dialer: Dialer::new(id, None),
                unsendable: Default::default(),
                round_trips: Default::default(),
            },
            LogStore::open(dir.path()).unwrap(),
            StateMachine::open(store.clone(), 10_000).unwrap(),
        )
        .await
        .unwrap();
        let served = raft.clone();
        let inbox = SnapshotInbox { dir: dir.path().to_path_buf(), max_bytes: 1 << 30 };
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (raft, inbox) = (served.clone(), inbox.clone());
                tokio::spawn(async move {
                    let (mut reader, mut writer) = connection::split(stream, max_frame);
                    let Ok(Some(Hello { peer: Some(peer), .. })) = reader.read::<Hello>().await else {
                        return;
                    };
                    let welcome =
                        HelloReply::Welcome { version: 1, node_id: id, max_frame_bytes: max_frame as u64 };
                    if writer.send(&welcome).await.is_ok() {
                        let mut service = RaftService::new(&raft, peer, &inbox);
                        while let Ok(Some(Envelope::Raft(rpc))) = reader.read::<Envelope<RaftRequest>>().await
                        {
                            let Ok(answer) = service.answer(rpc).await else { break };
                            let answer: Envelope<RaftResponse> = PeerMessage::Raft(answer);
                            if writer.send_compact(&answer).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        TestNode { raft, store, server, _dir: dir }
    }

    fn get(store: &Store, key: &str) -> Reply {
        store.read(&Read::get(Bytes::copy_from_slice(key.as_bytes()))).unwrap()
    }

    fn set(key: &str, value: &str) -> Write {
        Write::set(Bytes::copy_from_slice(key.as_bytes()), Bytes::copy_from_slice(value.as_bytes()))
    }

    /// Writes through `node`, retrying while a fresh leader's lease is not yet confirmed by a
    /// quorum: openraft refuses such a proposal before appending it, so a retry cannot apply it
    /// twice.
    async fn write(raft: &KvRaft, write: Write) -> openraft::raft::ClientWriteResponse<TypeConfig> {
        let started = std::time::Instant::now();
        loop {
            match raft.client_write(write.clone()).await {
                Ok(response) => return response,
                Err(e) if e.forward_to_leader().is_some() && started.elapsed() < DEADLINE => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("write failed: {e}"),
            }
        }
    }

    /// Listeners on free loopback ports for nodes `1..=count`, and the membership naming them.
    async fn bind_members(count: u64) -> (Vec<(u64, TcpListener)>, BTreeMap<u64, BasicNode>) {
        let mut listeners = Vec::new();
        let mut members = BTreeMap::new();
        for id in 1..=count {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            members.insert(id, BasicNode::new(listener.local_addr().unwrap().to_string()));
            listeners.push((id, listener));
        }
        (listeners, members)
    }

    async fn leader_among(nodes: &BTreeMap<u64, TestNode>, excluded: Option<u64>) -> u64 {
        let any = nodes.values().next().unwrap();
        let metrics = any
            .raft
            .wait(Some(DEADLINE))
            .metrics(|m| m.current_leader.is_some_and(|l| Some(l) != excluded), "a leader")
            .await
            .unwrap();
        metrics.current_leader.unwrap()
    }

    /// A snapshot is taken only from the leader of this node's current term, and only up to the
    /// inbox's size.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_chunks_from_anyone_but_the_leader_or_past_the_bound_are_refused() {
        let (mut listeners, members) = bind_members(1).await;
        let node = start(1, listeners.pop().unwrap().1, config()).await;
        node.raft.initialize(members).await.unwrap();
        node.raft.wait(Some(DEADLINE)).current_leader(1, "leading").await.unwrap();
        let term = node.raft.metrics().borrow_watched().current_term;
        let dir = tempfile::tempdir().unwrap();
        let inbox = SnapshotInbox { dir: dir.path().to_path_buf(), max_bytes: 1000 };
        let chunk = |vote, bytes: usize, offset: u64| RaftRequest::SnapshotChunk {
            vote,
            meta: Default::default(),
            offset,
            data: ByteBuf::from(vec![7u8; bytes]),
            done: false,
        };
        let refused = |answer: Result<RaftResponse, String>, why: &str| match answer {
            Ok(RaftResponse::SnapshotChunk(Err(e))) | Err(e) => assert!(e.contains(why), "{e}"),
            other => panic!("expected a refusal ({why}), got {other:?}"),
        };

        // A stranger claiming to be node 9, with node 9's vote in the current term.
        let mut stranger = RaftService::new(&node.raft, 9, &inbox);
        let forged = openraft::Vote::new_committed(term, 9);
        refused(stranger.answer(chunk(forged, 10, 0)).await, "only the leader of the current term");
        // The leader's vote, sent by someone else; a vote request in another's name too.
        let leaders = openraft::Vote::new_committed(term, 1);
        refused(stranger.answer(chunk(leaders, 10, 0)).await, "in the name of node 1");
        let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(term + 1, 1), None);
        refused(
            stranger.answer(RaftRequest::Vote(vote)).await,
            "node 9 sent a Raft message in the name of node 1",
        );
        // An old term's leader.
        let mut old = RaftService::new(&node.raft, 1, &inbox);
        refused(
            old.answer(chunk(openraft::Vote::new_committed(term - 1, 1), 10, 0)).await,
            "only the leader",
        );

        // The leader itself, within the bound, then past it.
        let mut leader = RaftService::new(&node.raft, 1, &inbox);
        let answer = leader.answer(chunk(leaders, 600, 0)).await;
        assert!(matches!(answer, Ok(RaftResponse::SnapshotChunk(Ok(None)))), "{answer:?}");
        refused(leader.answer(chunk(leaders, 600, 600)).await, "over the 1000 bytes");
        node.server.abort();
        node.raft.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_nodes_replicate_over_tcp_and_survive_losing_the_leader() {
        let (listeners, members) = bind_members(3).await;
        let mut nodes = BTreeMap::new();
        for (id, listener) in listeners {
            nodes.insert(id, start(id, listener, config()).await);
        }
        nodes[&1].raft.initialize(members).await.unwrap();

        let leader = leader_among(&nodes, None).await;
        let written = write(&nodes[&leader].raft, set("k", "v1")).await;
        assert_eq!(written.data.reply, Reply::ok());
        let index = written.log_id.index;
        for node in nodes.values() {
            node.raft.wait(Some(DEADLINE)).applied_index_at_least(Some(index), "the write").await.unwrap();
            assert_eq!(get(&node.store, "k"), Reply::Bulk { value: ByteBuf::from("v1") });
        }

        // The leader goes away; the other two elect one of themselves and keep committing.
        let old = nodes.remove(&leader).unwrap();
        old.server.abort();
        old.raft.shutdown().await.unwrap();
        let new_leader = leader_among(&nodes, Some(leader)).await;
        let written = write(&nodes[&new_leader].raft, set("k", "v2")).await;
        for node in nodes.values() {
            let index = written.log_id.index;
            node.raft
                .wait(Some(DEADLINE))
                .applied_index_at_least(Some(index), "the second write")
                .await
                .unwrap();
            assert_eq!(get(&node.store, "k"), Reply::Bulk { value: ByteBuf::from("v2") });
        }
        for node in nodes.into_values() {
            node.server.abort();
            node.raft.shutdown().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_that_missed_the_compacted_log_catches_up_by_snapshot() {
        let compacting = openraft::Config {
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10),
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..config()
        };
        let (mut listeners, members) = bind_members(3).await;
        let (late_id, late_listener) = listeners.pop().unwrap();
        let mut nodes = BTreeMap::new();
        for (id, listener) in listeners {
            nodes.insert(id, start(id, listener, compacting.clone()).await);
        }
        nodes[&1].raft.initialize(members).await.unwrap();
        let leader = leader_among(&nodes, None).await;
        let mut last = 0;
        for i in 0..40 {
            last =
                write(&nodes[&leader].raft, set(&format!("key{i}"), &format!("value{i}"))).await.log_id.index;
        }
        // The log the late node would need is gone from the leader.
        nodes[&leader]
            .raft
            .wait(Some(DEADLINE))
            .metrics(|m| m.purged.is_some_and(|p| p.index > 1), "the log to be purged")
            .await
            .unwrap();

        let late = start(late_id, late_listener, compacting).await;
        late.raft.wait(Some(DEADLINE)).applied_index_at_least(Some(last), "catching up").await.unwrap();
        let metrics = late.raft.metrics().borrow_watched().clone();
        assert!(metrics.snapshot.is_some(), "the late node got a snapshot: {metrics:?}");
        for i in 0..40 {
            let want = Reply::Bulk { value: ByteBuf::from(format!("value{i}")) };
            assert_eq!(get(&late.store, &format!("key{i}")), want);
        }
        for node in nodes.into_values().chain([late]) {
            node.server.abort();
            node.raft.shutdown().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_bigger_than_a_frame_together_reach_every_node() {
        // Peers accept 32 KiB frames and each write carries 3 KB, so the writes proposed together
        // make appends too big for one frame: each goes out in parts, openraft sending the rest
        // after each partial success.
        let frame = 32 * 1024;
        let (listeners, members) = bind_members(3).await;
        let mut nodes = BTreeMap::new();
        for (id, listener) in listeners {
            nodes.insert(id, start_with_frame(id, listener, config(), frame).await);
        }
        nodes[&1].raft.initialize(members).await.unwrap();
        let leader = nodes[&leader_among(&nodes, None).await].raft.clone();
        let value = "x".repeat(3000);
        let writers: Vec<_> = (0..200)
            .map(|i| {
                let (leader, value) = (leader.clone(), value.clone());
                tokio::spawn(
                    async move { write(&leader, set(&format!("key{i}"), &value)).await.log_id.index },
                )
            })
            .collect();
        let mut last = 0;
        for writer in writers {
            let index = tokio::time::timeout(DEADLINE, writer).await.expect("a write within the deadline");
            last = last.max(index.unwrap());
        }
        for node in nodes.values() {
            node.raft.wait(Some(DEADLINE)).applied_index_at_least(Some(last), "every write").await.unwrap();
            for i in [0, 99, 199] {
                let want = Reply::Bulk { value: ByteBuf::from(value.as_str()) };
                assert_eq!(get(&node.store, &format!("key{i}")), want);
            }
        }
        for node in nodes.into_values() {
            node.server.abort();
            node.raft.shutdown().await.unwrap();
        }
    }

    /// Forwards connections to `target`, except that it cuts the first one that has carried more
    /// than `cut_after` bytes towards the target; returns whether it has cut one.
    async fn cutting_proxy(
        listener: TcpListener,
        target: std::net::SocketAddr,
        cut_after: usize,
    ) -> Arc<std::sync::atomic::AtomicBool> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cut = Arc::new(AtomicBool::new(false));
        let cutting = cut.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let cut = cutting.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_target, mut to_target) = outbound.into_split();
                    let back =
                        tokio::spawn(async move { tokio::io::copy(&mut from_target, &mut to_client).await });
                    let mut buf = vec![0; 8192];
                    let mut carried = 0;
                    while let Ok(n) = from_client.read(&mut buf).await {
                        carried += n;
                        if n == 0 || (carried > cut_after && !cut.swap(true, Ordering::SeqCst)) {
                            break;
                        }
                        if to_target.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    // Dropping both halves closes the connection mid-transfer.
                    back.abort();
                });
            }
        });
        cut
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_transfer_cut_short_is_sent_again_in_chunks() {
        use std::sync::atomic::Ordering;
        let compacting = openraft::Config {
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(50),
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..config()
        };
        // Peers accept 32 KiB frames, so a snapshot of some 80 KB goes in several chunks.
        let frame = 32 * 1024;
        let mut members = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        let mut listeners = Vec::new();
        for id in 1..=2u64 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            members.insert(id, BasicNode::new(listener.local_addr().unwrap().to_string()));
            listeners.push((id, listener));
        }
        for (id, listener) in listeners {
            nodes.insert(id, start_with_frame(id, listener, compacting.clone(), frame).await);
        }
        // The late node is reached through a proxy that breaks the first long transfer.
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let late_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.insert(3, BasicNode::new(proxy.local_addr().unwrap().to_string()));
        let cut = cutting_proxy(proxy, late_listener.local_addr().unwrap(), 40_000).await;
        nodes[&1].raft.initialize(members).await.unwrap();
        let leader = leader_among(&nodes, None).await;
        let value = "v".repeat(200);
        let mut last = 0;
        for i in 0..400 {
            last = write(&nodes[&leader].raft, set(&format!("key{i}"), &value)).await.log_id.index;
        }
        nodes[&leader]
            .raft
            .wait(Some(DEADLINE))
            .metrics(|m| m.purged.is_some_and(|p| p.index > 100), "the log to be purged")
            .await
            .unwrap();

        let late = start_with_frame(3, late_listener, compacting, frame).await;
        late.raft.wait(Some(DEADLINE)).applied_index_at_least(Some(last), "catching up").await.unwrap();
        assert!(cut.load(Ordering::SeqCst), "the proxy cut a transfer short");
        assert_eq!(get(&late.store, "key399"), Reply::Bulk { value: ByteBuf::from(value.as_str()) });
        for node in nodes.into_values().chain([late]) {
            node.server.abort();
            node.raft.shutdown().await.unwrap();
        }
    }
}
