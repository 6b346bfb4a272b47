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

pub(super) async fn cluster_table(node: &Node) -> Reply {
    let me = node.config.id;
    let members: Vec<(u64, String)> = {
        let metrics = node.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let members: Vec<(u64, String)> = membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
        if members.is_empty() {
            // Not initialized yet: show the configured cluster.
            node.config.members().map(|(id, addr)| (id, addr.to_string())).collect()
        } else {
            members
        }
    };
    let reports = futures::future::join_all(members.iter().map(|(id, addr)| async move {
        if *id == me {
            return Ok(NodeStatus::of_node(node));
        }
        node.status_links.status(&node.dialer, *id, addr).await
    }))
    .await;
    let leader = reports.iter().flatten().filter(|s| s.role == "leader").max_by_key(|s| s.term).cloned();
    let int = |v: Option<u64>| v.map_or(Cell::Nil, |v| Cell::Integer(v as i64));
    let rows = members
        .iter()
        .zip(reports)
        .map(|((id, addr), report)| {
            let contact = leader.as_ref().and_then(|l| l.contact_ms.get(id).copied().flatten());
            let is_leader = leader.as_ref().is_some_and(|l| l.id == *id);
            let problem = leader
                .as_ref()
                .and_then(|l| l.unsendable.get(id))
                .map_or(Cell::Nil, |why| Cell::Text(why.clone()));
            match report {
                Ok(status) => {
                    let lag = leader.as_ref().map(|l| {
                        l.last_log_index.unwrap_or(0).saturating_sub(status.last_log_index.unwrap_or(0))
                    });
                    vec![
                        Cell::Integer(*id as i64),
                        Cell::Text(addr.clone()),
                        Cell::Text(status.role),
                        int(Some(status.term)),
                        int(status.last_log_index),
                        int(status.applied_index),
                        int(status.snapshot_index),
                        int(status.purged_index),
                        int(lag),
                        if is_leader { Cell::Nil } else { int(contact) },
                        problem,
                    ]
                }
                Err(e) => {
                    tracing::debug!(node = id, error = %e, "no status");
                    vec![
                        Cell::Integer(*id as i64),
                        Cell::Text(addr.clone()),
                        Cell::Text("unreachable".to_string()),
                        Cell::Nil,
                        Cell::Nil,
                        Cell::Nil,
                        Cell::Nil,
                        Cell::Nil,
                        Cell::Nil,
                        int(contact),
                        problem,
                    ]
                }
            }
        })
        .collect();
    Reply::Table { columns: COLUMNS.iter().map(|c| c.to_string()).collect(), rows }
}
