//! The boundary between request handling and the Raft node: what the executor may ask of the
//! cluster, and nothing else.
//!
//! [`Cluster`] is everything routing needs: who leads, propose writes, a read index (as the
//! leader or from it), forward to the leader, change the membership, read this node's state.
//! Each call that can fail on the way to the leader answers an [`Outcome`], so that the one rule
//! that matters (only what certainly was not applied is retried) is decided in one place, the
//! executor, whatever the path.
//!
//! Two implementations: the real [`Node`] here, over openraft, the store, the forwarding link
//! and the acknowledgement tracker; and a scripted fake in the executor's golden tests, which
//! plays leader changes, lost quorums and refusals deterministically in paused time.
//!
//! Deliberately not here: peer connections (`control`, `raft::network`) and the accept loop.

use super::Node;
use super::acks::AckWait;
use super::outcome::{NotApplied, Outcome};
use super::{membership, reads, status};
use crate::auth::Accounts;
use crate::command::{Admin, Read, Write};
use crate::protocol::message::{ErrorCode, Replication, Reply, Request, Response};
use futures::StreamExt;
use futures::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use openraft::error::ClientWriteError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLockReadGuard;
use tokio::time::Instant;

/// Who leads, as this node knows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leader {
    Me,
    Other { id: u64, addr: String },
    Unknown,
}

/// A write that went through: its answer, and (at the leader) who had it when it was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub reply: Reply,
    /// The store's revision after it.
    pub revision: u64,
    pub replication: Option<Replication>,
}

/// Writes handed to Raft: the outcome of each, in order, once known.
pub type Proposed<'a> = BoxFuture<'a, Vec<Outcome<Written>>>;

/// What request handling asks of the cluster.
pub trait Cluster: Sync {
    /// Something to wait on for news of the leadership (see [`Cluster::leadership_news`]).
    type Watch: Send;

    /// This node's id.
    fn id(&self) -> u64;

    /// How long a request may wait for a leader with a quorum, counted for each step.
    fn request_timeout(&self) -> Duration;

    /// Who leads, as this node knows it now.
    fn leader(&self) -> Leader;

    /// Starts watching the leadership.
    fn watch(&self) -> Self::Watch;

    /// Waits until the leadership may have changed since `watch` last looked, or until `until`.
    fn leadership_news(&self, watch: &mut Self::Watch, until: Instant) -> impl Future<Output = ()> + Send;

    /// As the leader: proposes `writes` as one batch, waiting (up to `deadline`) for a
    /// leadership handover under way to finish first. The returned future gives each write's
    /// outcome, with its replication picture gathered as `acks` asks.
    fn propose(
        &self,
        writes: Vec<Write>,
        acks: AckWait,
        deadline: Instant,
    ) -> impl Future<Output = Proposed<'_>> + Send;

    /// Like [`Cluster::propose`], but only if this node leads and no handover is under way:
    /// `None` otherwise, and then nothing was proposed.
    fn propose_now(
        &self,
        writes: Vec<Write>,
        acks: AckWait,
        deadline: Instant,
    ) -> impl Future<Output = Option<Proposed<'_>>> + Send;

    /// A read index: confirmed by this node as the leader, or asked of `leader`. `None` if none
    /// could be had by `deadline`.
    fn read_index(&self, leader: &Leader, deadline: Instant) -> impl Future<Output = Option<u64>> + Send;

    /// Waits until this node has applied through `index`; false if `deadline` came first.
    fn applied_through(&self, index: u64, deadline: Instant) -> impl Future<Output = bool> + Send;

    /// Answers reads from this node's own state, and gives the revision they read at (none if
    /// the state could not be read).
    fn read(&self, reads: &[&Read]) -> (Vec<Reply>, Option<u64>);

    /// The users and roles in this node's own state; none if they cannot be read (which
    /// grants nothing).
    fn accounts(&self) -> Arc<Accounts>;

    /// Sends `requests` in order to the leader `id` at `addr`; each comes back with its outcome.
    fn forward(
        &self,
        id: u64,
        addr: &str,
        requests: &[&Request],
        deadline: Instant,
    ) -> impl Future<Output = Vec<Outcome<Response>>> + Send;

    /// As the leader: one membership change.
    fn change_membership(
        &self,
        admin: &Admin,
        deadline: Instant,
    ) -> impl Future<Output = Outcome<Reply>> + Send;

    /// The `CLUSTER` table.
    fn cluster_table(&self) -> impl Future<Output = Reply> + Send;
}

/// How long to wait for news of a leader before looking again.
const LEADER_POLL: Duration = Duration::from_millis(50);

impl Cluster for Node {
    type Watch = openraft::type_config::alias::WatchReceiverOf<crate::raft::TypeConfig, Metrics>;

    fn id(&self) -> u64 {
        self.config.id
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    fn leader(&self) -> Leader {
        // Clone what is needed at once: holding the watch guard can block the Raft core. The
        // leader's own address is never needed, so it is not copied on the leader's hot path.
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        match metrics.current_leader {
            Some(id) if id == self.config.id => Leader::Me,
            Some(id) => match metrics.membership_config.membership().get_node(&id) {
                Some(node) => Leader::Other { id, addr: node.addr.clone() },
                None => Leader::Unknown,
            },
            None => Leader::Unknown,
        }
    }

    fn watch(&self) -> Self::Watch {
        self.raft.metrics()
    }

    async fn leadership_news(&self, watch: &mut Self::Watch, until: Instant) {
        let pause = until.min(Instant::now() + LEADER_POLL);
        let _ = tokio::time::timeout_at(pause, watch.changed()).await;
    }

    async fn propose(&self, writes: Vec<Write>, acks: AckWait, deadline: Instant) -> Proposed<'_> {
        // Shared with other proposals; a leader handing over waits for it (see `Node::proposing`).
        let Ok(proposing) = tokio::time::timeout_at(deadline, self.proposing.read()).await else {
            // The node is stopping and proposes nothing more.
            let not_applied = writes.iter().map(|_| Outcome::NotApplied(NotApplied::Stopping)).collect();
            return Box::pin(std::future::ready(not_applied));
        };
        submit(self, writes, proposing, acks, deadline).await
    }

    async fn propose_now(
        &self,
        writes: Vec<Write>,
        acks: AckWait,
        deadline: Instant,
    ) -> Option<Proposed<'_>> {
        if self.leader() != Leader::Me {
            return None;
        }
        // Never wait for the lock here: a handover waits for the proposals made this way, which
        // only progress while their connection polls them.
        let proposing = self.proposing.try_read().ok()?;
        Some(submit(self, writes, proposing, acks, deadline).await)
    }

    async fn read_index(&self, leader: &Leader, deadline: Instant) -> Option<u64> {
        let index = async {
            match leader {
                Leader::Me => reads::leader_read_index(self).await,
                Leader::Other { id, addr } => {
                    let check = || async {
                        // A read is never applied: once another leader is on the way, the check
                        // (and every read sharing it) gives up, to ask the new one.
                        tokio::select! {
                            index = self.leader_link.read_index(*id, addr, deadline) => index,
                            () = self.leader_replaced(*id) => None,
                        }
                    };
                    self.reads.read_index(check).await
                }
                Leader::Unknown => None,
            }
        };
        tokio::time::timeout_at(deadline, index).await.ok().flatten()
    }

    async fn applied_through(&self, index: u64, deadline: Instant) -> bool {
        reads::applied_through(&self.raft, index, deadline).await
    }

    fn accounts(&self) -> Arc<Accounts> {
        self.store.accounts().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the users and roles; refusing every logged-in command");
            Arc::default()
        })
    }

    fn read(&self, reads: &[&Read]) -> (Vec<Reply>, Option<u64>) {
        match self.store.read_many(reads.iter().copied()) {
            Ok((replies, revision)) => (replies, Some(revision)),
            Err(e) => (reads.iter().map(|_| storage_error(&e)).collect(), None),
        }
    }

    async fn forward(
        &self,
        id: u64,
        addr: &str,
        requests: &[&Request],
        deadline: Instant,
    ) -> Vec<Outcome<Response>> {
        // Once another leader is on the way, the old one gets a moment to answer what it was
        // sent (a leader handing over does at once); one that cannot, cut off or stopped, has
        // its link failed then instead of at the request timeout.
        let grace = Duration::from_millis(self.config.election_timeout_ms / 2);
        let replaced = async {
            self.leader_replaced(id).await;
            tokio::time::sleep(grace).await;
        };
        self.forwarding.forward(id, addr, requests, deadline, replaced).await
    }

    async fn change_membership(&self, admin: &Admin, deadline: Instant) -> Outcome<Reply> {
        membership::change(self, admin, deadline).await
    }

    async fn cluster_table(&self) -> Reply {
        status::cluster_table(self).await
    }
}

type Metrics = openraft::RaftMetrics<crate::raft::TypeConfig>;

impl Node {
    /// Completes once this node no longer takes `leader` for the leader: another was elected, or
    /// an election is under way. Watches the server metrics, which change with the role and the
    /// leader only, not with every append.
    async fn leader_replaced(&self, leader: u64) {
        let mut server = self.raft.server_metrics();
        loop {
            if server.borrow_watched().current_leader != Some(leader) {
                return;
            }
            if server.changed().await.is_err() {
                // Raft has stopped: nothing will change any more.
                return std::future::pending().await;
            }
        }
    }
}

/// Hands `writes` to Raft as one batch, and returns the future of their outcomes, which keeps
/// `proposing` held until they are known (see `Node::proposing`).
async fn submit<'n>(
    node: &'n Node,
    writes: Vec<Write>,
    proposing: RwLockReadGuard<'n, ()>,
    acks: AckWait,
    deadline: Instant,
) -> Proposed<'n> {
    let count = writes.len();
    let proposed_at = std::time::Instant::now();
    let mut outcomes = match tokio::time::timeout_at(deadline, node.raft.client_write_many(writes)).await {
        Ok(Ok(outcomes)) => outcomes,
        // Raft has stopped: nothing was proposed.
        Ok(Err(_)) => {
            return Box::pin(std::future::ready(vec![Outcome::NotApplied(NotApplied::Stopping); count]));
        }
        Err(_) => {
            let unknown = Outcome::Unknown("the leader did not take the write in time".to_string());
            return Box::pin(std::future::ready(vec![unknown; count]));
        }
    };
    let timeout_ms = node.config.request_timeout_ms;
    Box::pin(async move {
        let mut settled = Vec::with_capacity(count);
        let mut indexes = Vec::new();
        for _ in 0..count {
            settled.push(match tokio::time::timeout_at(deadline, outcomes.next()).await {
                Ok(Some(Ok(Ok(written)))) => {
                    indexes.push(written.log_id.index);
                    let applied = written.response;
                    Outcome::Done(Written {
                        reply: applied.reply,
                        revision: applied.revision,
                        replication: None,
                    })
                }
                // Rejected before it was appended: another node leads, or the lease lapsed.
                Ok(Some(Ok(Err(ClientWriteError::ForwardToLeader(_))))) => {
                    Outcome::NotApplied(NotApplied::NotLeader)
                }
                Ok(Some(Ok(Err(e)))) => {
                    Outcome::Unknown(format!("leadership changed before it committed ({e})"))
                }
                Ok(Some(Err(_)) | None) => {
                    Outcome::Unknown("the node stopped before it committed".to_string())
                }
                Err(_) => Outcome::Unknown(format!(
                    "not committed within {timeout_ms} ms (the leader may have lost its quorum)"
                )),
            });
        }
        drop(proposing);
        let pictures = node.acks.pictures(&indexes, proposed_at, acks).await;
        let done = settled.iter_mut().filter_map(|outcome| match outcome {
            Outcome::Done(written) => Some(written),
            _ => None,
        });
        for (written, picture) in done.zip(pictures) {
            written.replication = picture;
        }
        settled
    })
}

fn storage_error(e: &crate::store::StoreError) -> Reply {
    tracing::error!(error = %e, "read failed");
    Reply::error(ErrorCode::Storage, e.to_string())
}
