//! The node's control plane: what members ask each other besides Raft, and the serving side of
//! every peer connection.
//!
//! A peer connection ([`crate::peer`]) carries Raft's RPCs and these messages in one envelope;
//! `serve_peer` answers both, Raft's through `raft::network::RaftService`. The messages:
//!
//! - [`ControlRequest::Status`]: the member's own view of itself ([`NodeStatus`]), for the
//!   `CLUSTER` table (`status`) and for the check that a node with an empty data dir was never
//!   a working member (`membership::formed_without_me`, from the record in `seen`).
//! - [`ControlRequest::ReadIndex`]: a follower asks the leader for a read index, to serve
//!   linearizable reads from its own state (`reads`). The leader answers with the same shared
//!   check its own reads use.
//! - [`ControlRequest::Removed`]: the leader tells a node it removed that it was removed, since
//!   openraft never tells it; the node records it and stops (`membership`).
//!
//! Deliberately not here: who may send these (any peer hello is trusted today).

use super::{Node, membership, reads};
use crate::connection::{FrameReader, FrameWriter, ReadError};
use crate::peer::{Dialer, PeerConnection, PeerError, PeerMessage};
use crate::raft::network::{RaftResponse, RaftService};
use crate::raft::{KvRaft, TypeConfig};
use openraft::async_runtime::WatchReceiver;
use openraft::type_config::alias::StoredMembershipOf;
use openraft::{Instant as _, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A message of the control plane.
#[derive(Debug, Serialize, Deserialize)]
pub enum ControlRequest {
    /// The receiver's view of itself.
    Status,
    /// The leader removed the receiver from the cluster.
    Removed(RemovalNotice),
    /// A follower asks the leader for a read index.
    ReadIndex,
}

/// The answer to a [`ControlRequest`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum ControlResponse {
    Status(Box<NodeStatus>),
    /// Whether the receiver accepted the notice (the leader confirmed it).
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
    /// The peers this node has seen hold log entries (see `seen`).
    #[serde(default)]
    pub seen_members: BTreeSet<u64>,
    /// The last log index its latest snapshot covers; the log before it may be compacted.
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    /// The last log index deleted from its log by compaction.
    #[serde(default)]
    pub purged_index: Option<u64>,
    /// Only on the leader: the members it holds an entry for that their frames cannot carry,
    /// with why.
    #[serde(default)]
    pub unsendable: BTreeMap<u64, String>,
    /// The members (voters and learners) of the membership this node has applied, hence
    /// committed; `None` while its latest membership is not applied yet.
    #[serde(default)]
    pub committed_members: Option<BTreeSet<u64>>,
    /// The last log index it knows committed.
    #[serde(default)]
    pub committed_index: Option<u64>,
    /// What its clients asked of it (for the console's graphs).
    #[serde(default)]
    pub served: Option<crate::metrics::Served>,
}

impl NodeStatus {
    /// `node`'s view of itself.
    pub(super) fn of_node(node: &Node) -> NodeStatus {
        NodeStatus {
            unsendable: node.unsendable.all(),
            served: Some(node.metrics.served()),
            ..NodeStatus::of(&node.raft, node.seen.get())
        }
    }

    /// `raft`'s view of itself, with the peers it has seen.
    pub fn of(raft: &KvRaft, seen_members: BTreeSet<u64>) -> NodeStatus {
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
            seen_members,
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
            unsendable: BTreeMap::new(),
            committed_members: committed_members(&metrics),
            committed_index: metrics.local_committed.map(|l| l.index),
            served: None,
        }
    }
}

/// The members of the membership in `metrics`, if it is applied (so committed).
fn committed_members(metrics: &RaftMetrics<TypeConfig>) -> Option<BTreeSet<u64>> {
    let membership = &metrics.membership_config;
    let applied = membership
        .log_id()
        .is_none_or(|at| metrics.last_applied.is_some_and(|applied| applied.index >= at.index));
    applied.then(|| membership.membership().nodes().map(|(id, _)| *id).collect())
}

type Outgoing = PeerMessage<RaftResponse, ControlResponse>;

/// Answers what arrives on a connection from member `peer` (after its hello) until it closes.
pub(super) async fn serve_peer(
    mut reader: FrameReader,
    mut writer: FrameWriter,
    node: &Node,
    peer: u64,
) -> Result<(), ReadError> {
    let mut raft = RaftService::new(&node.raft, peer, &node.snapshots);
    // `AppendEntries`, which carries every write, is decoded by hand (`raft::wire`).
    while let Some((message, _)) =
        reader.read_decoded(crate::raft::wire::decode_incoming::<ControlRequest>).await?
    {
        let answer: Outgoing = match message {
            PeerMessage::Raft(rpc) => match raft.answer(rpc).await {
                Ok(answer) => PeerMessage::Raft(answer),
                Err(forged) => {
                    tracing::warn!("closing a peer connection: {forged}");
                    return Ok(());
                }
            },
            PeerMessage::Control(request) => PeerMessage::Control(answer(node, request, peer).await),
        };
        writer.send_compact(&answer).await.map_err(ReadError::Io)?;
    }
    Ok(())
}

async fn answer(node: &Node, request: ControlRequest, peer: u64) -> ControlResponse {
    match request {
        ControlRequest::Status => ControlResponse::Status(Box::new(NodeStatus::of_node(node))),
        ControlRequest::Removed(notice) => {
            ControlResponse::Removed(membership::removed(node, notice, peer).await)
        }
        // Follower checks share the leader's own, so that many readers cost one quorum round.
        ControlRequest::ReadIndex => ControlResponse::ReadIndex(reads::leader_read_index(node).await),
    }
}

/// The control plane's calls to one peer.
pub struct ControlClient {
    connection: PeerConnection,
}

impl ControlClient {
    /// A client for node `target` at `addr`, connecting through `dialer`.
    pub fn new(dialer: Dialer, target: u64, addr: String) -> ControlClient {
        ControlClient { connection: PeerConnection::new(dialer, target, addr) }
    }

    /// The node this client talks to.
    pub fn target(&self) -> u64 {
        self.connection.target()
    }

    /// Where it reaches that node.
    pub fn addr(&self) -> &str {
        self.connection.addr()
    }

    /// Asks the peer for its [`NodeStatus`].
    pub async fn status(&mut self, timeout: Duration) -> Result<NodeStatus, PeerError> {
        match self.call(ControlRequest::Status, timeout).await? {
            ControlResponse::Status(status) => Ok(*status),
            other => Err(self.unexpected(other)),
        }
    }

    /// Asks the peer, which should lead, for a read index (see [`ControlRequest::ReadIndex`]).
    pub async fn read_index(&mut self, timeout: Duration) -> Result<Option<u64>, PeerError> {
        match self.call(ControlRequest::ReadIndex, timeout).await? {
            ControlResponse::ReadIndex(index) => Ok(index),
            other => Err(self.unexpected(other)),
        }
    }

    /// Tells the peer it was removed from the cluster; returns whether it took note.
    pub async fn notify_removed(
        &mut self,
        notice: RemovalNotice,
        timeout: Duration,
    ) -> Result<bool, PeerError> {
        match self.call(ControlRequest::Removed(notice), timeout).await? {
            ControlResponse::Removed(accepted) => Ok(accepted),
            other => Err(self.unexpected(other)),
        }
    }

    async fn call(
        &mut self,
        request: ControlRequest,
        timeout: Duration,
    ) -> Result<ControlResponse, PeerError> {
        let sent: PeerMessage<(), ControlRequest> = PeerMessage::Control(request);
        match self
            .connection
            .call::<_, PeerMessage<serde::de::IgnoredAny, ControlResponse>>(&sent, timeout)
            .await?
        {
            PeerMessage::Control(response) => Ok(response),
            PeerMessage::Raft(_) => Err(PeerError::Unexpected {
                target: self.target(),
                what: "a Raft answer to a control request".to_string(),
            }),
        }
    }

    fn unexpected(&self, response: ControlResponse) -> PeerError {
        PeerError::Unexpected { target: self.target(), what: format!("{response:?}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever a peer connection sends as a payload decodes or fails; it never panics.
        #[test]
        fn decoding_arbitrary_peer_payloads_never_panics(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = crate::raft::wire::decode_incoming::<ControlRequest>(&payload);
        }
    }
}
