//! The `CLUSTER` table: every member's own report, gathered by whichever node was asked.
//!
//! Each node reports its role, term, last log index, applied index, latest snapshot and compacted (purged) log itself (over a peer
//! connection), so the table shows what the nodes believe rather than what one node guesses. The
//! leader's report adds, for each peer, how long ago it last heard from it; lag is measured
//! against the leader's last log index, and names any member it holds an entry for that the
//! member's frames cannot carry (`problem`). A member that does not answer within
//! [`STATUS_TIMEOUT`] is shown as `unreachable`.
//!
//! The asking node keeps one connection to each member for these reports ([`StatusLinks`]), so
//! a `CLUSTER` costs no new connections.

use super::Node;
use super::control::{ControlClient, NodeStatus};
use crate::peer::{Dialer, PeerError};
use crate::protocol::message::{Cell, Reply};
use openraft::async_runtime::WatchReceiver;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long each member has to report.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

pub const COLUMNS: [&str; 11] = [
    "id",
    "address",
    "role",
    "term",
    "last_index",
    "applied",
    "snapshot",
    "purged",
    "lag",
    "last_contact_ms",
    "problem",
];

/// One control-plane connection to each member, kept for `CLUSTER`.
#[derive(Default)]
pub(super) struct StatusLinks(tokio::sync::Mutex<HashMap<u64, Arc<tokio::sync::Mutex<ControlClient>>>>);

impl StatusLinks {
    /// Member `id`'s report, over the kept connection to `addr` (a new one if the member moved).
    async fn status(&self, dialer: &Dialer, id: u64, addr: &str) -> Result<NodeStatus, PeerError> {
        let link = {
            let mut links = self.0.lock().await;
            let link = links.entry(id).or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(ControlClient::new(dialer.clone(), id, addr.to_string())))
            });
            link.clone()
        };
        let mut client = link.lock().await;
        if client.addr() != addr {
            *client = ControlClient::new(dialer.clone(), id, addr.to_string());
        }
        client.status(STATUS_TIMEOUT).await
    }
}

/// One member as the cluster table and the console show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    pub id: u64,
    pub address: String,
    /// A voter, or a learner (which gets the log but does not vote).
    pub voter: bool,
    /// Its own report; `None`: it did not answer within [`STATUS_TIMEOUT`].
    pub status: Option<NodeStatus>,
    /// Entries it lacks against the leader's last log index, if a leader reported.
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard from it (not for the leader itself).
    pub last_contact_ms: Option<u64>,
    /// Why the leader cannot send it an entry it holds, if so.
    pub problem: Option<String>,
}

impl MemberView {
    /// Its role, or `unreachable`.
    pub fn role(&self) -> &str {
        self.status.as_ref().map_or("unreachable", |s| s.role.as_str())
    }
}

/// Every member's own report, gathered at once, with what the leader's report says of it.
pub(super) async fn member_views(node: &Node) -> Vec<MemberView> {
    let me = node.config.id;
    let members: Vec<(u64, String, bool)> = {
        let metrics = node.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let members: Vec<(u64, String, bool)> =
            membership.nodes().map(|(id, n)| (*id, n.addr.clone(), voters.contains(id))).collect();
        if members.is_empty() {
            // Not initialized yet: show the configured cluster.
            node.config.members().map(|(id, addr)| (id, addr.to_string(), true)).collect()
        } else {
            members
        }
    };
    let reports = futures::future::join_all(members.iter().map(|(id, addr, _)| async move {
        if *id == me {
            return Ok(NodeStatus::of_node(node));
        }
        node.status_links.status(&node.dialer, *id, addr).await
    }))
    .await;
    let leader = reports.iter().flatten().filter(|s| s.role == "leader").max_by_key(|s| s.term).cloned();
    members
        .into_iter()
        .zip(reports)
        .map(|((id, address, voter), report)| {
            let is_leader = leader.as_ref().is_some_and(|l| l.id == id);
            let status = report.inspect_err(|e| tracing::debug!(node = id, error = %e, "no status")).ok();
            MemberView {
                id,
                address,
                voter,
                lag: leader.as_ref().zip(status.as_ref()).map(|(l, s)| {
                    l.last_log_index.unwrap_or(0).saturating_sub(s.last_log_index.unwrap_or(0))
                }),
                last_contact_ms: leader
                    .as_ref()
                    .filter(|_| !is_leader)
                    .and_then(|l| l.contact_ms.get(&id).copied().flatten()),
                problem: leader.as_ref().and_then(|l| l.unsendable.get(&id)).cloned(),
                status,
            }
        })
        .collect()
}

pub(super) async fn cluster_table(node: &Node) -> Reply {
    let int = |v: Option<u64>| v.map_or(Cell::Nil, |v| Cell::Integer(v as i64));
    let rows = member_views(node)
        .await
        .into_iter()
        .map(|member| {
            let status = member.status.as_ref();
            vec![
                Cell::Integer(member.id as i64),
                Cell::Text(member.address.clone()),
                Cell::Text(member.role().to_string()),
                int(status.map(|s| s.term)),
                int(status.and_then(|s| s.last_log_index)),
                int(status.and_then(|s| s.applied_index)),
                int(status.and_then(|s| s.snapshot_index)),
                int(status.and_then(|s| s.purged_index)),
                int(member.lag),
                int(member.last_contact_ms),
                member.problem.map_or(Cell::Nil, Cell::Text),
            ]
        })
        .collect();
    Reply::Table { columns: COLUMNS.iter().map(|c| c.to_string()).collect(), rows }
}
