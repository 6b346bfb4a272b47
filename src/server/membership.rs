//! Who is in the cluster: membership changes, joining, removal, and refusing a node that lost
//! its data.
//!
//! Changes (`CLUSTER ADD-LEARNER | ADD-VOTER | REMOVE | TRANSFER-LEADER`) run on the leader, one
//! at a time (a lock), each checked against the membership it was decided on (openraft's
//! `LastMembershipLogId` precondition), so two concurrent changes can never both be based on the
//! same old view. openraft moves voters through joint consensus, so every step keeps a quorum of
//! both the old and the new voters. On top of that, a change is refused when it could not
//! complete or would leave the cluster without a working quorum:
//!
//! - `ADD-VOTER` only for a learner that has caught up (a lagging new voter would hold up commits);
//! - `REMOVE` of a voter only if a majority of the remaining voters is reachable now;
//! - `ADD-LEARNER` never for an id that is, or ever was, a member with other data: node ids are
//!   never reused, and a voter that lost its data must not come back under its old id.
//!
//! A node's data can be lost without the node knowing it: an empty data dir looks the same as a
//! first start. So every node remembers which peers it has seen hold log entries (`seen`), and a
//! node that starts with no Raft state asks its configured peers first; if any has seen it
//! before, it refuses to start instead of voting and acknowledging with an empty log.
//!
//! openraft does not tell a removed node that it was removed, so the leader does, with a
//! [`RemovalNotice`] (`control`). The node leaves a `REMOVED` file in its data dir, stops, and
//! refuses to start again from that data dir.
//!
//! Every change ends in an [`Outcome`]: "not applied" when this node turned out not to lead (the
//! executor then tries the real leader), a refusal as a final answer, and "unknown" when the
//! change was proposed but not seen committed in time.

use super::Node;
use super::control::{ControlClient, NodeStatus, RemovalNotice};
use super::outcome::{NotApplied, Outcome};
use crate::client::Client;
use crate::command::Admin;
use crate::config::NodeConfig;
use crate::peer::Dialer;
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::message::{ErrorCode, Hello, Reply};
use crate::raft::{TypeConfig, state_machine};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Precondition, RaftMetrics};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// The file a removed node leaves in its data dir; it holds the reason.
pub const REMOVED_FILE: &str = "REMOVED";
/// A learner this many entries (or fewer) behind the leader's log counts as caught up.
const CAUGHT_UP_ENTRIES: u64 = 1000;
/// How long a fresh node waits for each configured peer to say whether it knew it.
const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a joining node keeps trying to reach the cluster before it gives up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between join attempts.
const JOIN_RETRY: Duration = Duration::from_millis(300);

/// Why a node refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Removed(String),
    #[error(
        "node {id} has no Raft state in {dir}, but node {witness} has seen it hold log entries: its data \
         was lost (or this is the wrong data dir). A node that lost its data must not rejoin under its old \
         id, since acknowledged writes could be lost. Remove it from the cluster (CLUSTER REMOVE {id}) and \
         start a fresh node with a new id and --join"
    )]
    LostData { id: u64, dir: PathBuf, witness: u64 },
    #[error("cannot join the cluster through {through}: {why}")]
    Join { through: SocketAddr, why: String },
}

/// Refuses to start a node that was removed from the cluster.
pub fn check_not_removed(data_dir: &Path) -> Result<(), Refusal> {
    match std::fs::read_to_string(data_dir.join(REMOVED_FILE)) {
        Ok(reason) => Err(Refusal::Removed(format!(
            "{}; it does not start again. Delete {} to reuse the machine, and join it with a new id",
            reason.trim(),
            data_dir.display()
        ))),
        Err(_) => Ok(()),
    }
}

/// For a node without Raft state: asks the configured peers whether any has seen this node hold
/// log entries, which means its data was lost (then it refuses to start), and whether any already
/// has Raft state (then the cluster has formed without this node, which only has to wait for the
/// leader to bring it the log). Unreachable peers cannot tell; they are skipped.
pub async fn formed_without_me(config: &NodeConfig, dialer: &Dialer) -> Result<bool, Refusal> {
    let checks = config.peers.iter().map(|peer| async move {
        let status = ControlClient::new(dialer.clone(), peer.id, peer.addr.to_string())
            .status(PEER_CHECK_TIMEOUT)
            .await;
        (peer.id, status)
    });
    let mut formed = false;
    for (peer, status) in futures::future::join_all(checks).await {
        match status {
            Ok(status) if status.seen_members.contains(&config.id) => {
                return Err(Refusal::LostData { id: config.id, dir: config.data_dir.clone(), witness: peer });
            }
            Ok(status) => formed |= status.initialized,
            Err(e) => tracing::debug!(peer, error = %e, "peer could not say whether it knew this node"),
        }
    }
    Ok(formed)
}

/// A member says, as the leader, that it removed this node. The notice is taken only from the
/// member it names as its sender, and only once the current leader confirms that its committed
/// membership leaves this node out; then the removal is recorded in the data dir and the node
/// stops. Returns whether it was accepted. (What the notice carries is never trusted: a forged
/// one would make the node stop and refuse ever to start again.)
pub(super) async fn removed(node: &Node, notice: RemovalNotice, sender: u64) -> bool {
    let me = node.config.id;
    if notice.by != sender || !node.knows_member(sender) {
        tracing::warn!(sender, by = notice.by, "ignored a removal notice from a node that cannot send one");
        return false;
    }
    // The notice itself proves nothing: the leader must say so when asked.
    let Some(confirmed) = leader_confirms_removal(node).await else {
        tracing::warn!(by = notice.by, "ignored a removal notice that the leader does not confirm");
        return false;
    };
    let reason = format!(
        "node {me} was removed from the cluster by leader {} at log index {} (confirmed by leader {} in term \
         {}: members {:?})",
        notice.by,
        notice.membership.log_id().map_or(0, |l| l.index),
        confirmed.id,
        confirmed.term,
        confirmed.committed_members.unwrap_or_default()
    );
    if let Err(e) = write_durably(&node.config.data_dir, REMOVED_FILE, format!("{reason}\n").as_bytes()) {
        tracing::warn!(error = %e, "cannot record the removal in the data dir");
    }
    tracing::error!("{reason}; it stops serving now");
    node.stop.cancel();
    true
}

/// Asks the members this node knows for their status, and returns the report of a leader (in
/// this node's term or a later one) whose committed membership leaves this node out, if one
/// does.
async fn leader_confirms_removal(node: &Node) -> Option<NodeStatus> {
    let me = node.config.id;
    let metrics = node.raft.metrics().borrow_watched().clone();
    let members: Vec<(u64, String)> = metrics
        .membership_config
        .membership()
        .nodes()
        .filter(|(id, _)| **id != me)
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let asks = members.into_iter().map(|(id, addr)| async move {
        ControlClient::new(node.dialer.clone(), id, addr).status(PEER_CHECK_TIMEOUT).await.ok()
    });
    futures::future::join_all(asks).await.into_iter().flatten().find(|status| {
        status.role == "leader"
            && status.term >= metrics.current_term
            && status.committed_members.as_ref().is_some_and(|members| !members.contains(&me))
    })
}

/// Writes `name` in `dir` and makes it durable: the file's data, then the directory entry that
/// names it, so that a crash right after cannot lose the marker.
fn write_durably(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(dir.join(name))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Executes a membership change on this node as the leader. Not applied when this node turned
/// out not to be the leader, so that the caller may retry at the real one.
pub(super) async fn change(node: &Node, admin: &Admin, deadline: Instant) -> Outcome<Reply> {
    let _one_at_a_time = node.membership_lock.lock().await;
    let metrics = match previous_change_settled(node, deadline).await {
        Ok(metrics) => metrics,
        Err(reply) => return Outcome::Done(reply),
    };
    if metrics.current_leader != Some(node.config.id) {
        return Outcome::NotApplied(NotApplied::NotLeader);
    }
    let outcome = match admin {
        Admin::AddLearner { id, addr } => add_learner(node, &metrics, *id, addr, deadline).await,
        Admin::AddVoter { id } => add_voter(node, &metrics, *id, deadline).await,
        Admin::Remove { id } => remove(node, &metrics, *id, deadline).await,
        Admin::TransferLeader { id } => transfer_leader(node, &metrics, *id, deadline).await,
    };
    match outcome {
        Ok(reply) => Outcome::Done(reply),
        Err(failure) => failure,
    }
}

/// Waits until the latest membership entry is applied here, so the next change is not refused
/// as "in progress". A leader elected just after a change holds that change uncommitted until
/// its first entry commits. An error reply when that takes past `deadline` (nothing changed).
async fn previous_change_settled(node: &Node, deadline: Instant) -> Result<Metrics, Reply> {
    let me = node.config.id;
    let left = deadline.saturating_duration_since(Instant::now());
    let settled = |m: &Metrics| {
        let membership = m.membership_config.log_id().map_or(0, |id| id.index);
        let applied = m.last_applied.map_or(0, |id| id.index);
        m.current_leader != Some(me) || applied >= membership
    };
    node.raft
        .wait(Some(left))
        .metrics(settled, "the last membership change to be applied")
        .await
        .map_err(|_| previous_change_pending())
}

fn previous_change_pending() -> Reply {
    Reply::error(
        ErrorCode::NoQuorum,
        "the previous membership change is not committed yet; nothing changed, try again",
    )
}

/// Why a change did not happen, or may not have: an outcome other than success.
type Failure = Outcome<Reply>;

fn refused(message: impl Into<String>) -> Failure {
    Outcome::Done(Reply::error(ErrorCode::Refused, message))
}

fn status(message: String) -> Reply {
    Reply::Status { value: message.into() }
}

type Metrics = RaftMetrics<TypeConfig>;

fn voters(metrics: &Metrics) -> BTreeSet<u64> {
    metrics.membership_config.membership().voter_ids().collect()
}

fn learners(metrics: &Metrics) -> BTreeSet<u64> {
    metrics.membership_config.membership().learner_ids().collect()
}

async fn add_learner(
    node: &Node,
    metrics: &Metrics,
    id: u64,
    addr: &str,
    deadline: Instant,
) -> Result<Reply, Failure> {
    if voters(metrics).contains(&id) {
        return Err(refused(format!(
            "node {id} is already a voter. If it lost its data, it must not rejoin under its old id: remove \
             it (CLUSTER REMOVE {id}) and start a fresh node with a new id"
        )));
    }
    let membership = metrics.membership_config.membership();
    if let Some(known) = membership.get_node(&id) {
        return if known.addr == addr {
            Ok(status(format!("node {id} is already a learner")))
        } else {
            Err(refused(format!("node {id} is already a learner at {}", known.addr)))
        };
    }
    let store = node.store.clone();
    let ever = tokio::task::spawn_blocking(move || state_machine::members_ever(&store))
        .await
        .map_err(|e| Outcome::Done(Reply::error(ErrorCode::Storage, e.to_string())))?
        .map_err(|e| Outcome::Done(Reply::error(ErrorCode::Storage, e.to_string())))?;
    if ever.contains(&id) {
        return Err(refused(format!(
            "node id {id} belonged to a node that was removed, and ids are never reused; start the new node \
             with an id never used before (the highest so far is {})",
            ever.last().copied().unwrap_or(id)
        )));
    }
    let added =
        tokio::time::timeout_at(deadline, node.raft.add_learner(id, BasicNode::new(addr), false)).await;
    let added = settle(added, node)?;
    Ok(status(format!("node {id} at {addr} is a learner (log index {})", added.index)))
}

async fn add_voter(node: &Node, metrics: &Metrics, id: u64, deadline: Instant) -> Result<Reply, Failure> {
    if voters(metrics).contains(&id) {
        return Ok(status(format!("node {id} is already a voter")));
    }
    if !learners(metrics).contains(&id) {
        return Err(refused(format!(
            "node {id} is not a member; start it with --join to add it as a learner first"
        )));
    }
    let progress = |metrics: &Metrics| {
        let matched =
            metrics.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
        (matched, metrics.last_log_index.unwrap_or(0))
    };
    let caught_up = |(matched, last): (Option<u64>, u64)| {
        matched.is_some_and(|matched| last.saturating_sub(matched) <= CAUGHT_UP_ENTRIES)
    };
    let (matched, last) = progress(&settled_metrics(node, deadline, |m| caught_up(progress(m))).await);
    if !caught_up((matched, last)) {
        let behind =
            matched.map_or("has no entries yet".to_string(), |m| format!("is {} entries behind", last - m));
        return Err(Outcome::Done(Reply::error(
            ErrorCode::NotCaughtUp,
            format!("node {id} {behind}; promote it once it has caught up (CLUSTER shows its lag)"),
        )));
    }
    let changed = propose(node, metrics, ChangeMembers::AddVoterIds(BTreeSet::from([id])), deadline).await?;
    Ok(status(format!("node {id} is a voter (log index {})", changed.index)))
}

async fn remove(node: &Node, metrics: &Metrics, id: u64, deadline: Instant) -> Result<Reply, Failure> {
    let voters = voters(metrics);
    let membership = metrics.membership_config.membership().clone();
    let Some(addr) = membership.get_node(&id).map(|n| n.addr.clone()) else {
        return Err(refused(format!("node {id} is not a member")));
    };
    let change = if voters.contains(&id) {
        let remaining: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != id).collect();
        if remaining.is_empty() {
            return Err(refused(format!("node {id} is the last voter; a cluster needs at least one")));
        }
        let reachable_in = |metrics: &Metrics| -> BTreeSet<u64> {
            remaining.iter().copied().filter(|v| reachable(node, metrics, *v)).collect()
        };
        let quorum = |reachable: &BTreeSet<u64>| reachable.len() * 2 > remaining.len();
        let reachable = reachable_in(&settled_metrics(node, deadline, |m| quorum(&reachable_in(m))).await);
        if !quorum(&reachable) {
            return Err(refused(format!(
                "removing node {id} would leave voters {remaining:?}, of which only {reachable:?} answer: no \
                 quorum. Bring voters back (or add new ones) first"
            )));
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    let changed = propose(node, metrics, change, deadline).await?;
    // openraft never tells a removed node; tell it, so that it stops instead of campaigning.
    let notice = RemovalNotice { by: node.config.id, membership: changed.membership.clone() };
    let told = ControlClient::new(node.dialer.clone(), id, addr)
        .notify_removed(notice, PEER_CHECK_TIMEOUT * 3)
        .await;
    let told = match told {
        Ok(true) => "it has stopped".to_string(),
        Ok(false) | Err(_) => "it could not be told, so stop it by hand".to_string(),
    };
    Ok(status(format!("node {id} is removed (log index {}); {told}", changed.index)))
}

async fn transfer_leader(
    node: &Node,
    metrics: &Metrics,
    id: u64,
    deadline: Instant,
) -> Result<Reply, Failure> {
    if id == node.config.id {
        return Ok(status(format!("node {id} is already the leader")));
    }
    if !voters(metrics).contains(&id) {
        return Err(refused(format!("node {id} is not a voter, so it cannot lead")));
    }
    // A node not heard from at all yet (the cluster has just formed) gets the benefit of the
    // doubt: the wait below bounds the attempt.
    let heard = metrics.heartbeat.as_ref().is_some_and(|h| h.get(&id).is_some_and(Option::is_some));
    if heard && !reachable(node, metrics, id) {
        return Err(refused(format!("node {id} does not answer the leader")));
    }
    if !node.transfer_leadership(id).await {
        return Err(Outcome::NotApplied(NotApplied::NotLeader));
    }
    let moved = node
        .raft
        .wait(Some(deadline.saturating_duration_since(Instant::now())))
        .metrics(|m| m.current_leader == Some(id), "the new leader")
        .await;
    match moved {
        Ok(m) => Ok(status(format!("node {id} is the leader (term {})", m.current_term))),
        Err(_) => Err(Outcome::Done(Reply::error(
            ErrorCode::Timeout,
            format!("node {id} did not take over within {} ms", node.config.request_timeout_ms),
        ))),
    }
}

/// The leader's metrics once `ready` holds for them, or as they are after one election timeout
/// (or at `deadline`, if sooner). A leader elected moments ago has not heard from its peers yet:
/// their contact times and replication progress fill in within a heartbeat or two, and a check
/// made at once would wrongly find them unreachable or behind.
async fn settled_metrics(node: &Node, deadline: Instant, ready: impl Fn(&Metrics) -> bool) -> Metrics {
    let settle_by = deadline.min(Instant::now() + Duration::from_millis(node.config.election_timeout_ms));
    let mut watch = node.raft.metrics();
    loop {
        let metrics = watch.borrow_watched().clone();
        if ready(&metrics) || Instant::now() >= settle_by {
            return metrics;
        }
        let _ = tokio::time::timeout_at(settle_by, watch.changed()).await;
    }
}

/// Whether the leader heard from `id` within an election timeout (the leader itself always is).
fn reachable(node: &Node, metrics: &Metrics, id: u64) -> bool {
    crate::raft::heard_from(metrics, id, Duration::from_millis(node.config.election_timeout_ms))
}

/// Proposes a voter change, guarded by the membership it was decided on.
async fn propose(
    node: &Node,
    metrics: &Metrics,
    change: ChangeMembers<u64, BasicNode>,
    deadline: Instant,
) -> Result<Committed, Failure> {
    let guard =
        Precondition::LastMembershipLogId { last_membership_log_id: *metrics.membership_config.log_id() };
    let changed =
        tokio::time::timeout_at(deadline, node.raft.change_membership_if(change, false, [guard])).await;
    settle(changed, node)
}

/// What a committed membership entry left behind.
struct Committed {
    index: u64,
    membership: openraft::type_config::alias::StoredMembershipOf<TypeConfig>,
}

/// openraft's answer to a membership change, or the deadline passing first.
type Answer = Result<
    Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    >,
    tokio::time::error::Elapsed,
>;

/// Turns openraft's answer to a membership change into ours.
fn settle(answer: Answer, node: &Node) -> Result<Committed, Failure> {
    let unknown = |why: String| Outcome::Unknown(format!("{why} (look at CLUSTER)"));
    match answer {
        Ok(Ok(response)) => {
            let membership = response
                .membership
                .clone()
                .map(|m| openraft::StoredMembership::new(Some(response.log_id), m));
            let membership = membership
                .unwrap_or_else(|| node.raft.metrics().borrow_watched().membership_config.as_ref().clone());
            Ok(Committed { index: response.log_id.index, membership })
        }
        Err(_) => Err(unknown(format!("not committed within {} ms", node.config.request_timeout_ms))),
        Ok(Err(e)) => match e.api_error() {
            Some(ClientWriteError::ForwardToLeader(_)) => Err(Outcome::NotApplied(NotApplied::NotLeader)),
            Some(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))) => {
                Err(Outcome::Done(previous_change_pending()))
            }
            Some(ClientWriteError::PreconditionFailed(_)) => {
                Err(refused("the membership changed meanwhile; look at CLUSTER and try again"))
            }
            Some(ClientWriteError::ChangeMembershipError(e)) => Err(refused(e.to_string())),
            _ => Err(unknown(format!("the change failed ({e})"))),
        },
    }
}

/// Joins the cluster through `through`: asks to be added as a learner, then, unless this node
/// is to stay a learner, to be promoted once caught up. Stops the node if the cluster refuses it
/// or cannot be reached within [`JOIN_TIMEOUT`].
pub(super) async fn join(node: std::sync::Arc<Node>, through: SocketAddr) {
    let me = node.config.id;
    let add_learner =
        ["CLUSTER", "ADD-LEARNER", &me.to_string(), &node.config.advertised().to_string()].map(String::from);
    if let Err(why) = ask_until_done(&node, through, &add_learner).await {
        let refusal = Refusal::Join { through, why };
        tracing::error!("{refusal}; stopping");
        node.fail(refusal.into());
        return;
    }
    tracing::info!(through = %through, "joined the cluster as a learner");
    if node.config.learner {
        return;
    }
    let add_voter = ["CLUSTER", "ADD-VOTER", &me.to_string()].map(String::from);
    match ask_until_done(&node, through, &add_voter).await {
        Ok(()) => tracing::info!("promoted to voter"),
        // Still a working learner: say so and carry on.
        Err(e) => tracing::error!("stays a learner: {e}"),
    }
}

/// Sends a membership request until it succeeds, is refused, or time runs out. Retries what
/// certainly changed nothing (no quorum, still catching up, cannot connect).
async fn ask_until_done(node: &Node, through: SocketAddr, args: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::from("no answer");
    while started.elapsed() < JOIN_TIMEOUT && !node.stop.is_cancelled() {
        let addrs = [through.to_string()];
        let attempt = async {
            let hello = Hello {
                version: PROTOCOL_VERSION,
                client: format!("node {}", node.config.id),
                peer: None,
                forwarded_by: None,
                cluster: None,
            };
            let dial = node.dialer.address(&addrs[0]);
            let (mut client, _) = Client::connect_with(&addrs[0], Duration::from_secs(1), hello, dial)
                .await
                .map_err(|e| e.to_string())?;
            client.call(args.iter().map(|a| a.as_bytes().to_vec()).collect()).await.map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(response) => match response.reply {
                Reply::Error { code: ErrorCode::Refused, message } => return Err(message),
                Reply::Error { code, message } => last = format!("{code}: {message}"),
                _ => return Ok(()),
            },
            Err(e) => last = e,
        }
        tracing::debug!(error = %last, "membership request not done yet; retrying");
        tokio::select! {
            () = tokio::time::sleep(JOIN_RETRY) => {}
            () = node.stop.cancelled() => {}
        }
    }
    Err(format!("gave up after {JOIN_TIMEOUT:?}: {last}"))
}
