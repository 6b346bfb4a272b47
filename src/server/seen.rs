//! The peers this node has seen hold log entries: the memory behind lost-data detection.
//!
//! A node's data can be lost without the node knowing it: an empty data dir looks the same as a
//! first start. So every node remembers, durably, each peer it has seen hold log entries (as
//! leader, each peer that acknowledged an entry; as follower, its leader), and a node that
//! starts with no Raft state asks its configured peers first (`membership::formed_without_me`):
//! if any has seen it before, it refuses to start instead of voting with an empty log. Peers
//! ask through the control plane's status (`control`).
//!
//! A watcher task learns each peer once. It follows openraft's server metrics (role, leader,
//! membership), which change rarely, and the leader's data metrics (replication progress, which
//! change with every append) only while some member has not been seen yet, so a steady cluster
//! pays nothing for it.
//!
//! The record lives in the Raft log's metadata (`LogStore::record_seen_members`), written by its
//! writer thread without waiting: a peer recorded a moment before a crash may be forgotten, which
//! only weakens the check for a peer that had just started to hold entries.

use crate::raft::KvRaft;
use crate::raft::log_store::LogStore;
use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The peers seen holding log entries, in memory and on disk.
pub struct SeenMembers {
    log: LogStore,
    seen: Mutex<BTreeSet<u64>>,
}

impl SeenMembers {
    /// What `log` recorded before.
    pub fn load(log: LogStore) -> SeenMembers {
        let seen = log.seen_members().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the peers seen");
            BTreeSet::new()
        });
        SeenMembers { log, seen: Mutex::new(seen) }
    }

    /// Every peer seen so far.
    pub fn get(&self) -> BTreeSet<u64> {
        self.lock().clone()
    }

    /// Records `peers`, writing the record if that adds any.
    fn record(&self, peers: impl IntoIterator<Item = u64>) {
        let mut seen = self.lock();
        let before = seen.len();
        seen.extend(peers);
        if seen.len() > before
            && let Err(e) = self.log.record_seen_members(&seen)
        {
            tracing::warn!(error = %e, "cannot record the peers seen");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the watcher task; it ends when Raft shuts down.
    pub fn watch(self: &Arc<Self>, raft: &KvRaft) {
        let record = self.clone();
        let mut server = raft.server_metrics();
        let mut data = raft.data_metrics();
        tokio::spawn(async move {
            loop {
                // Clone at once: holding a watch guard can block the Raft core.
                let now = server.borrow_watched().clone();
                let me = now.id;
                let members: BTreeSet<u64> = crate::raft::other_members(&now).collect();
                // A leader holds log entries too: its followers remember it as well.
                record.record(now.current_leader.filter(|l| *l != me));
                let leading = now.current_leader == Some(me);
                let unseen = |record: &SeenMembers| leading && !members.is_subset(&record.get());
                if unseen(&record) {
                    let replication = data.borrow_watched().replication.clone().unwrap_or_default();
                    let holding = replication.into_iter().filter(|(_, matched)| matched.is_some());
                    record.record(holding.map(|(id, _)| id).filter(|id| members.contains(id)));
                }
                if !crate::raft::metrics_changed(&mut server, &mut data, unseen(&record)).await {
                    return;
                }
            }
        });
    }
}
