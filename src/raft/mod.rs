//! Raft glue: openraft's type configuration and the durable storage it runs on.
//!
//! - `log_store`: the replicated log and the vote, in their own files (`entry_file` holds the
//!   entries; the vote and other metadata sit in a small redb database). Appends return at
//!   once and are made durable by a writer thread in batches (group commit), so disk latency
//!   never stalls the Raft core. The newest entries stay decoded in memory (`log_tail`), where
//!   replication and apply find them.
//! - `state_machine`: applies committed [`Write`]s to the node's [`crate::store::Store`] through
//!   the same deterministic `apply_write` a single node uses; the store flushes them into its
//!   database in batches, with the applied log id and the membership written in the same
//!   transaction as the data.
//! - `network`: Raft RPCs between nodes over the frame codec, on the node's one address; a hello
//!   with a `peer` id marks a peer connection.
//!
//!
//! The node's request path on top of this (forwarding, linearizable reads, acknowledgements) lives
//! in [`crate::server`].

mod entry_file;
pub mod log_store;
mod log_tail;
pub mod network;
pub mod state_machine;
pub(crate) mod wire;

use crate::command::Write;
use crate::config::NodeConfig;
use crate::store::Applied;
use openraft::Raft;

openraft::declare_raft_types!(
    /// The types our Raft group is made of: log entries carry [`Write`]s, applying one yields the
    /// [`Applied`] answer the client sees, and a node is known by one address that serves clients
    /// and peers.
    pub TypeConfig:
        D = Write,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// A running Raft member of our cluster.
pub type KvRaft = Raft<TypeConfig, state_machine::StateMachine>;

/// A watch on openraft's server metrics (role, leader, membership), which change rarely.
pub type ServerMetricsWatch = openraft::type_config::alias::WatchReceiverOf<
    TypeConfig,
    openraft::metrics::RaftServerMetrics<TypeConfig>,
>;
/// A watch on openraft's data metrics (log, replication, heartbeats), which change with every
/// append.
pub type DataMetricsWatch =
    openraft::type_config::alias::WatchReceiverOf<TypeConfig, openraft::metrics::RaftDataMetrics<TypeConfig>>;

/// The members other than this node, as its server metrics show the membership.
pub fn other_members(
    metrics: &openraft::metrics::RaftServerMetrics<TypeConfig>,
) -> impl Iterator<Item = u64> + '_ {
    metrics.membership_config.membership().nodes().map(|(id, _)| *id).filter(move |id| *id != metrics.id)
}

/// Whether the node whose metrics these are, leading, heard from member `id` within `within`
/// (it always hears from itself). A follower hears from no one.
pub fn heard_from(metrics: &openraft::RaftMetrics<TypeConfig>, id: u64, within: std::time::Duration) -> bool {
    use openraft::Instant as _;
    if id == metrics.id {
        return true;
    }
    let contact = metrics.heartbeat.as_ref().and_then(|h| h.get(&id).cloned().flatten());
    contact.is_some_and(|at| at.elapsed() < within)
}

/// Waits for the next change of the server metrics, or, `with_data`, of either watch; `false`
/// once Raft has stopped. Watchers that need the data metrics only at times (while leading, say)
/// wake on every append only then.
pub async fn metrics_changed(
    server: &mut ServerMetricsWatch,
    data: &mut DataMetricsWatch,
    with_data: bool,
) -> bool {
    use openraft::async_runtime::WatchReceiver;
    let changed = if with_data {
        tokio::select! {
            changed = data.changed() => changed,
            changed = server.changed() => changed,
        }
    } else {
        server.changed().await
    };
    changed.is_ok()
}

/// openraft's settings for a node: the timing from its configuration, the rest openraft's
/// defaults. Snapshots are asked for by the state machine's own schedule (`state_machine`).
pub fn raft_config(node: &NodeConfig) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: "kv".to_string(),
        heartbeat_interval: node.heartbeat_ms,
        election_timeout_min: node.election_timeout_ms,
        election_timeout_max: election_timeout_max_ms(node),
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: node.keep_log_entries,
        // A node restarting with its own vote must win an election again instead of resuming as
        // leader: a resumed leader whose term was already superseded would accept writes only to
        // have them discarded, leaving their clients an unknown outcome.
        enable_leader_restore: Some(false),
        // Replicate entries as soon as the leader has queued them for its disk, so the leader's
        // fsync and the followers' overlap instead of running one after the other.
        broadcast_submitted_on_append: Some(true),
        // A follower whose election timer fires first asks whether it would win, instead of
        // raising its term at once: a node that was cut off from the leader (or paused) then
        // comes back without a higher term, which would make the healthy leader step down.
        enable_pre_vote: Some(true),
        ..Default::default()
    }
    .validate()
}

/// How long a follower that heard from the leader refuses to vote for anyone else: openraft's
/// leader lease, which is its maximum election timeout.
pub fn leader_lease(node: &NodeConfig) -> std::time::Duration {
    std::time::Duration::from_millis(election_timeout_max_ms(node))
}

fn election_timeout_max_ms(node: &NodeConfig) -> u64 {
    node.election_timeout_ms * 2
}

/// Roughly how many bytes of keys and values a log entry carries: its write's, or none for the
/// (rare, small) membership and blank entries.
fn written_bytes(entry: &openraft::type_config::alias::EntryOf<TypeConfig>) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(write) => write.encoded_len_estimate(),
        _ => 0,
    }
}

/// Turns any storage failure into the `io::Error` openraft's storage traits speak.
fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::TypeConfig;
    use super::log_store::LogStore;
    use super::state_machine::StateMachine;
    use crate::store::Store;
    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};
    use std::sync::Arc;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let dir = tempfile::tempdir().unwrap();
            let log = LogStore::open(dir.path()).unwrap();
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let sm = StateMachine::open(store, 10_000).unwrap();
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite for log stores and state machines.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_pass_the_openraft_suite() {
        Suite::test_all(Builder).await.unwrap();
    }
}
