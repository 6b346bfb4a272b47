//! Raft traffic between nodes, over the same frame codec and the same address as clients.
//!
//! A peer connection starts with a [`Hello`] whose `peer` field names the sender, so the node
//! can tell it from a client. After that the sender writes one [`PeerRequest`] at a time and
//! reads its [`PeerResponse`]: openraft keeps at most one RPC in flight per target, so a plain
//! request/response connection per target is all it needs.
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
//! Besides Raft, peers ask each other for their [`NodeStatus`] (the `CLUSTER` table, and the check
//! that a node with an empty data dir was never a working member), and a leader tells a node it
//! removed that it was removed ([`RemovalNotice`]), since openraft never tells it. A follower
//! asks the leader for read indexes, to serve linearizable reads itself
//! ([`PeerRequest::ReadIndex`]).

use super::{KvRaft, TypeConfig};
use crate::connection::{self, FrameReader, FrameWriter, ReadError};
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::message::{Hello, HelloReply};
use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use openraft::entry::RaftEntry;
use openraft::error::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{EntryOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::{BasicNode, EntryPayload, Instant as _, OptionalSend, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpStream;

/// Room in a frame for everything around the entries of an `AppendEntries` or the bytes of a
/// snapshot chunk: the vote, log ids, the snapshot's membership, encoding overhead.
const FRAME_MARGIN: usize = 16 * 1024;

type Error = RaftError<TypeConfig>;

/// One Raft RPC, or one of the few node-to-node messages beside Raft.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
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
    /// Not Raft: the node's view of itself, for the `CLUSTER` table.
    Status,
    /// Not Raft: the leader removed the receiver from the cluster.
    Removed(RemovalNotice),
    /// Not Raft: a follower asks the leader for a read index, to serve linearizable reads from
    /// its own state once it has applied up to it.
    ReadIndex,
}

/// The answer to a [`PeerRequest`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<TypeConfig>, Error>),
    Vote(Result<VoteResponse<TypeConfig>, Error>),
    /// `None` for a chunk that is not the last; `Err` when the transfer cannot go on.
    SnapshotChunk(Result<Option<SnapshotResponse<TypeConfig>>, String>),
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, Error>),
    Status(NodeStatus),
    /// Whether the receiver accepted the notice (the membership indeed leaves it out).
    Removed(bool),
    /// The read index, confirmed with a quorum after the request arrived; `None` if the receiver
    /// could not confirm that it leads.
    ReadIndex(Option<u64>),
}

/// A leader's word that it removed the receiver: the membership that leaves it out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemovalNotice {
    pub by: u64,
    pub membership: StoredMembershipOf<TypeConfig>,
}

/// What a node knows beyond its Raft state, for its peers to ask about.
pub trait NodeFacts: Sync {
    /// The peers this node has seen hold log entries while it led.
    fn seen_members(&self) -> BTreeSet<u64>;
    /// A leader says this node was removed; returns whether the notice was accepted.
    fn removed(&self, notice: RemovalNotice) -> bool;
    /// As the leader, a read index confirmed with a quorum after this call; `None` if this node
    /// cannot confirm that it leads.
    fn read_index(&self) -> BoxFuture<'_, Option<u64>>;
}

/// What a node reports about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub leader: Option<u64>,
    /// Only on the leader: for each other member, milliseconds since it last acknowledged
    /// anything (`None`: never).
    pub contact_ms: BTreeMap<u64, Option<u64>>,
    /// Whether the node has Raft state (a log or a membership); a fresh node has none.
    #[serde(default)]
    pub initialized: bool,
    /// The peers this node has seen hold log entries while it led.
    #[serde(default)]
    pub seen_members: BTreeSet<u64>,
    /// The last log index its latest snapshot covers; the log before it may be compacted.
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    /// The last log index deleted from its log by compaction.
    #[serde(default)]
    pub purged_index: Option<u64>,
}

impl NodeStatus {
    pub fn of(raft: &KvRaft, facts: &dyn NodeFacts) -> NodeStatus {
        // Clone at once: holding the watch guard can block the Raft core.
        let metrics: RaftMetrics<TypeConfig> = raft.metrics().borrow_watched().clone();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let contact_ms = metrics
            .heartbeat
            .iter()
            .flatten()
            .filter(|(id, _)| **id != metrics.id)
            .map(|(id, at)| (*id, at.as_ref().map(|at| at.elapsed().as_millis() as u64)))
            .collect();
        NodeStatus {
            id: metrics.id,
            role: role.to_string(),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            applied_index: metrics.last_applied.map(|l| l.index),
            leader: metrics.current_leader,
            contact_ms,
            initialized: metrics.last_log_index.is_some()
                || metrics.membership_config.membership().nodes().next().is_some(),
            seen_members: facts.seen_members(),
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
        }
    }
}

/// A snapshot being received on one connection.
struct IncomingSnapshot {
    meta: SnapshotMetaOf<TypeConfig>,
    data: Vec<u8>,
    chunks: usize,
}

/// Answers the RPCs arriving on a peer connection (after its hello) until it closes.
pub async fn serve_peer(
    mut reader: FrameReader,
    mut writer: FrameWriter,
    raft: &KvRaft,
    facts: &dyn NodeFacts,
) -> Result<(), ReadError> {
    let mut incoming: Option<IncomingSnapshot> = None;
    while let Some(request) = reader.read::<PeerRequest>().await? {
        let response = match request {
            PeerRequest::AppendEntries(rpc) => PeerResponse::AppendEntries(raft.append_entries(rpc).await),
            PeerRequest::Vote(rpc) => PeerResponse::Vote(raft.vote(rpc).await),
            PeerRequest::PreVote(rpc) => PeerResponse::Vote(raft.pre_vote(rpc).await),
            PeerRequest::SnapshotChunk { vote, meta, offset, data, done } => PeerResponse::SnapshotChunk(
                receive_chunk(raft, &mut incoming, vote, meta, offset, data, done).await,
            ),
            PeerRequest::TransferLeader(rpc) => {
                PeerResponse::TransferLeader(raft.handle_transfer_leader(rpc).await.map_err(RaftError::Fatal))
            }
            PeerRequest::Status => PeerResponse::Status(NodeStatus::of(raft, facts)),
            PeerRequest::Removed(notice) => PeerResponse::Removed(facts.removed(notice)),
            PeerRequest::ReadIndex => PeerResponse::ReadIndex(facts.read_index().await),
        };
        writer.send_compact(&response).await.map_err(ReadError::Io)?;
    }
    Ok(())
}

/// Adds one chunk to the snapshot being received, and installs it after the last one.
async fn receive_chunk(
    raft: &KvRaft,
    incoming: &mut Option<IncomingSnapshot>,
    vote: VoteOf<TypeConfig>,
    meta: SnapshotMetaOf<TypeConfig>,
    offset: u64,
    data: ByteBuf,
    done: bool,
) -> Result<Option<SnapshotResponse<TypeConfig>>, String> {
    if offset == 0 {
        *incoming = Some(IncomingSnapshot { meta: meta.clone(), data: Vec::new(), chunks: 0 });
    }
    let Some(snapshot) = incoming.as_mut().filter(|s| s.meta == meta && s.data.len() as u64 == offset) else {
        *incoming = None;
        return Err(format!("snapshot chunk at offset {offset} does not continue a transfer; start over"));
    };
    snapshot.data.extend_from_slice(&data);
    snapshot.chunks += 1;
    if !done {
        return Ok(None);
    }
    let IncomingSnapshot { meta, data, chunks } = incoming.take().expect("checked above");
    let bytes = data.len();
    let last = meta.last_log_id.map(|l| l.index);
    let snapshot = SnapshotOf::<TypeConfig, _> { meta, snapshot: Bytes::from(data) };
    let response = raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string())?;
    tracing::info!(last_index = ?last, bytes, chunks, "installed a snapshot from the leader");
    Ok(Some(response))
}

/// Opens connections to peers for openraft.
pub struct PeerNetwork {
    /// This node's id, announced in the hello.
    pub node_id: u64,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient::new(self.node_id, target, node.addr.clone())
    }
}

/// The connection to one peer, opened on first use and again after a failure.
pub struct PeerClient {
    node_id: u64,
    target: u64,
    addr: String,
    /// The open connection and the largest frame the peer accepts on it.
    connection: Option<(FrameReader, FrameWriter, usize)>,
}

impl PeerClient {
    /// A client for `target` at `addr`, announcing itself as `node_id`.
    pub fn new(node_id: u64, target: u64, addr: String) -> PeerClient {
        PeerClient { node_id, target, addr, connection: None }
    }

    /// Asks the peer for its [`NodeStatus`].
    pub async fn status(&mut self, timeout: Duration) -> Result<NodeStatus, String> {
        match self.call(PeerRequest::Status, timeout).await.map_err(|e| e.to_string())? {
            PeerResponse::Status(status) => Ok(status),
            other => Err(format!("unexpected peer response {other:?}")),
        }
    }

    /// The node this client talks to.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Asks the peer, which should lead, for a read index (see [`PeerRequest::ReadIndex`]).
    pub async fn read_index(&mut self, timeout: Duration) -> Result<Option<u64>, String> {
        match self.call(PeerRequest::ReadIndex, timeout).await.map_err(|e| e.to_string())? {
            PeerResponse::ReadIndex(index) => Ok(index),
            other => Err(format!("unexpected peer response {other:?}")),
        }
    }

    /// Tells the peer it was removed from the cluster; returns whether it took note.
    pub async fn notify_removed(&mut self, notice: RemovalNotice, timeout: Duration) -> Result<bool, String> {
        match self.call(PeerRequest::Removed(notice), timeout).await.map_err(|e| e.to_string())? {
            PeerResponse::Removed(accepted) => Ok(accepted),
            other => Err(format!("unexpected peer response {other:?}")),
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<(FrameReader, FrameWriter, usize), String> {
        let open = async {
            let stream = TcpStream::connect(&self.addr).await.map_err(|e| e.to_string())?;
            // Answers are bounded by what we send (a status, an ack, a vote), never by data.
            let (mut reader, mut writer) =
                connection::split(stream, crate::protocol::frame::DEFAULT_MAX_FRAME_BYTES);
            let hello = Hello {
                version: PROTOCOL_VERSION,
                client: "peer".into(),
                peer: Some(self.node_id),
                forwarded_by: None,
            };
            writer.send(&hello).await.map_err(|e| e.to_string())?;
            match reader.read::<HelloReply>().await.map_err(|e| e.to_string())? {
                Some(HelloReply::Welcome { node_id, max_frame_bytes, .. }) if node_id == self.target => {
                    Ok((reader, writer, max_frame_bytes as usize))
                }
                Some(HelloReply::Welcome { node_id, .. }) => {
                    Err(format!("{} is node {node_id}, not node {}", self.addr, self.target))
                }
                Some(HelloReply::Refused { code, message }) => Err(format!("refused: {code} {message}")),
                None => Err("closed during hello".into()),
            }
        };
        tokio::time::timeout(timeout, open).await.map_err(|_| format!("no hello within {timeout:?}"))?
    }

    /// The largest frame the peer accepts, connecting first if needed.
    async fn max_frame(&mut self, ttl: Duration) -> Result<usize, RPCError<TypeConfig>> {
        if self.connection.is_none() {
            self.connection = Some(self.connect(ttl).await.map_err(|e| self.unreachable(e))?);
        }
        Ok(self.connection.as_ref().map_or(0, |c| c.2))
    }

    fn unreachable(&self, e: String) -> RPCError<TypeConfig> {
        RPCError::Unreachable(Unreachable::from_string(format!("node {} at {}: {e}", self.target, self.addr)))
    }

    /// Sends one RPC and reads its answer within `ttl`.
    async fn call(
        &mut self,
        request: PeerRequest,
        ttl: Duration,
    ) -> Result<PeerResponse, RPCError<TypeConfig>> {
        let (mut reader, mut writer, max_frame) = match self.connection.take() {
            Some(connection) => connection,
            None => self.connect(ttl).await.map_err(|e| self.unreachable(e))?,
        };
        let exchange = async {
            writer.send_compact(&request).await.map_err(|e| e.to_string())?;
            reader
                .read::<PeerResponse>()
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "connection closed".to_string())
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(response)) => {
                self.connection = Some((reader, writer, max_frame));
                Ok(response)
            }
            Ok(Err(e)) => {
                Err(RPCError::Network(NetworkError::from_string(format!("node {}: {e}", self.target))))
            }
            Err(_) => Err(RPCError::Network(NetworkError::from_string(format!(
                "node {}: no answer within {ttl:?}",
                self.target
            )))),
        }
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
        } + 64;
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
            PeerResponse::$variant(result) => result.map_err(remote),
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
        let budget = self.max_frame(option.hard_ttl()).await?.saturating_sub(FRAME_MARGIN);
        // Always at least one entry: the node's own limits keep a single write within a frame.
        let fits = fitting_entries(&rpc.entries, budget).max(1);
        let sent_part = (fits < rpc.entries.len()).then(|| {
            rpc.entries.truncate(fits);
            rpc.entries.last().map(|e| e.log_id())
        });
        let response = expect_response!(
            self.call(PeerRequest::AppendEntries(rpc), option.hard_ttl()).await?,
            AppendEntries
        )?;
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
        expect_response!(self.call(PeerRequest::Vote(rpc), option.hard_ttl()).await?, Vote)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        expect_response!(self.call(PeerRequest::PreVote(rpc), option.hard_ttl()).await?, Vote)
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
            let max_frame = self.max_frame(ttl).await?;
            let chunk_bytes = max_frame.saturating_sub(FRAME_MARGIN).max(max_frame / 2).max(1);
            let data = snapshot.snapshot;
            let mut offset = 0;
            loop {
                let end = (offset + chunk_bytes).min(data.len());
                let done = end == data.len();
                let request = PeerRequest::SnapshotChunk {
                    vote,
                    meta: snapshot.meta.clone(),
                    offset: offset as u64,
                    data: ByteBuf::from(&data[offset..end]),
                    done,
                };
                let answer = match self.call(request, ttl).await? {
                    PeerResponse::SnapshotChunk(answer) => answer,
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
                        self.connection = None;
                        return Err(RPCError::Network(NetworkError::from_string(format!(
                            "node {}: {e}",
                            self.target
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
            self.call(PeerRequest::TransferLeader(rpc), option.hard_ttl()).await?,
            TransferLeader
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Read, Write};
    use crate::protocol::message::Reply;
    use crate::raft::log_store::LogStore;
    use crate::raft::state_machine::StateMachine;
    use crate::store::Store;
    use bytes::Bytes;
    use openraft::Raft;
    use std::sync::Arc;
    use tokio::net::TcpListener;

    const DEADLINE: Duration = Duration::from_secs(20);

    struct NoFacts;

    impl NodeFacts for NoFacts {
        fn seen_members(&self) -> BTreeSet<u64> {
            BTreeSet::new()
        }

        fn removed(&self, _: RemovalNotice) -> bool {
            false
        }

        fn read_index(&self) -> futures::future::BoxFuture<'_, Option<u64>> {
            Box::pin(async { None })
        }
    }

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
            PeerNetwork { node_id: id },
            LogStore::open(dir.path()).unwrap(),
            StateMachine::open(store.clone(), 10_000).unwrap(),
        )
        .await
        .unwrap();
        let served = raft.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let raft = served.clone();
                tokio::spawn(async move {
                    let (mut reader, mut writer) = connection::split(stream, max_frame);
                    let Ok(Some(Hello { peer: Some(_), .. })) = reader.read::<Hello>().await else { return };
                    let welcome =
                        HelloReply::Welcome { version: 1, node_id: id, max_frame_bytes: max_frame as u64 };
                    if writer.send(&welcome).await.is_ok() {
                        let _ = serve_peer(reader, writer, &raft, &NoFacts).await;
                    }
                });
            }
        });
        TestNode { raft, store, server, _dir: dir }
    }

    fn get(store: &Store, key: &str) -> Reply {
        store.read(&Read::Get { key: Bytes::copy_from_slice(key.as_bytes()) }).unwrap()
    }

    fn set(key: &str, value: &str) -> Write {
        Write::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
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
        assert_eq!(written.data, Reply::ok());
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
        let metrics = {
            use openraft::async_runtime::WatchReceiver;
            late.raft.metrics().borrow_watched().clone()
        };
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
