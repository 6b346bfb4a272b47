//! Per-peer acknowledgements: which members had persisted a write when it was answered, and how
//! long each took.
//!
//! openraft's metrics tell the leader, for each member, the last log id it has *matched*: a
//! follower answers an append only after its log store fired `IOFlushed`, so matched means
//! persisted there. The metrics are a watch channel that keeps only the latest value, so a
//! watcher task records, per peer, each time its matched index advanced. A write at index `i`
//! proposed at `t0` was acknowledged by a peer at the first recorded time its matched index
//! reached `i`.
//!
//! A peer is *unreachable* when the leader has not heard from it for longer than an election
//! timeout: waiting for it would only delay the answer. Otherwise an unacknowledged peer is
//! *pending*. A client that shows the picture to a person asks the answer to wait a few
//! milliseconds ([`ACK_WAIT`]) for pending peers, so that in a healthy cluster it is usually
//! complete; other clients get it as it is when the write is applied, without that delay.

use crate::protocol::message::{AckState, PeerAck, Replication};
use crate::raft::KvRaft;
use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a write's answer waits for healthy peers that have not acknowledged it yet.
pub const ACK_WAIT: Duration = Duration::from_millis(5);
/// How many advances of each peer's matched index are remembered; older writes' ack times are
/// reported as they were last known.
const HISTORY: usize = 16 * 1024;

/// How long a write's answer waits for acknowledgements.
#[derive(Debug, Clone, Copy)]
pub enum AckWait {
    /// Not at all: the picture is what the leader knows when the write is applied.
    No,
    /// Up to [`ACK_WAIT`], for every peer in contact.
    Healthy,
    /// Up to the timeout, for this many peers.
    AtLeast(u32, Duration),
}

/// What the leader last knew about one peer.
#[derive(Default)]
struct PeerProgress {
    /// `(matched index, when it was first seen)`, oldest first.
    advances: VecDeque<(u64, Instant)>,
    /// When the peer last acknowledged anything, if ever.
    last_contact: Option<Instant>,
}

#[derive(Default)]
struct State {
    /// Whether this node is the leader; the rest is only meaningful then.
    leading: bool,
    term: u64,
    peers: HashMap<u64, PeerProgress>,
}

/// Watches the Raft metrics and answers "who has index `i`?". Cheap to clone.
#[derive(Clone)]
pub struct AckTracker {
    state: Arc<Mutex<State>>,
    /// Bumped after every update, so that writers can wait for the next one.
    updated: watch::Receiver<u64>,
    unreachable_after: Duration,
}

impl AckTracker {
    /// Starts the watcher task; it ends when Raft shuts down.
    pub fn start(raft: &KvRaft, unreachable_after: Duration) -> AckTracker {
        let state = Arc::new(Mutex::new(State::default()));
        let (notify, updated) = watch::channel(0u64);
        // Two of openraft's three metrics channels, not the whole: a follower's data (its log,
        // its commit, its heartbeats) changes with every append and heartbeat, and waking on
        // each cost a follower answering read-index heartbeats much of its CPU. Only its role,
        // its leader and the membership matter here, which the server metrics carry.
        let mut data = raft.data_metrics();
        let mut server = raft.server_metrics();
        let watched = state.clone();
        tokio::spawn(async move {
            let mut version = 0;
            loop {
                // Clone at once: holding a watch guard can block the Raft core. The server
                // metrics are published after the data, so these data are at least as recent.
                let server_now = server.borrow_watched().clone();
                let (replication, heartbeat) = {
                    let data = data.borrow_watched();
                    (data.replication.clone(), data.heartbeat.clone())
                };
                let leading = replication.is_some();
                let now = Instant::now();
                {
                    let mut state = watched.lock().unwrap_or_else(|p| p.into_inner());
                    state.leading = leading;
                    state.term = server_now.vote.leader_id().term;
                    let members: Vec<u64> = crate::raft::other_members(&server_now).collect();
                    state.peers.retain(|id, _| members.contains(id));
                    let replication = replication.unwrap_or_default();
                    let heartbeat = heartbeat.unwrap_or_default();
                    for id in members {
                        let progress = state.peers.entry(id).or_default();
                        if let Some(Some(matched)) = replication.get(&id) {
                            let known = progress.advances.back().map(|(index, _)| *index);
                            if known.is_none_or(|known| matched.index > known) {
                                progress.advances.push_back((matched.index, now));
                                if progress.advances.len() > HISTORY {
                                    progress.advances.pop_front();
                                }
                            }
                        }
                        let since_contact = heartbeat.get(&id).cloned().flatten().map(|at| at.elapsed());
                        progress.last_contact = since_contact.and_then(|d| now.checked_sub(d));
                    }
                }
                version += 1;
                if notify.send(version).is_err() {
                    return;
                }
                if !crate::raft::metrics_changed(&mut server, &mut data, leading).await {
                    return;
                }
            }
        });
        AckTracker { state, updated, unreachable_after }
    }

    /// The picture for writes at `indexes` (in log order) proposed at `proposed_at`: at once,
    /// or, with `wait_acks`, after waiting up to [`ACK_WAIT`] for healthy peers to acknowledge the
    /// last one, or, when `min_acks` asks for it, up to `ack_timeout` for that many peers. `None`
    /// when this node is no longer the leader (the metrics no longer say who acknowledged what).
    pub async fn pictures(
        &self,
        indexes: &[u64],
        proposed_at: Instant,
        wait: AckWait,
    ) -> Vec<Option<Replication>> {
        let Some(&last) = indexes.iter().max() else { return Vec::new() };
        let (min_acks, wait) = match wait {
            AckWait::No => (None, Duration::ZERO),
            AckWait::Healthy => (None, ACK_WAIT),
            AckWait::AtLeast(n, timeout) => (Some(n), timeout),
        };
        if !wait.is_zero() {
            let deadline = tokio::time::Instant::now() + wait;
            let mut updated = self.updated.clone();
            loop {
                let done = {
                    let state = self.lock();
                    let now = Instant::now();
                    let acked = state.peers.values().filter(|p| p.matched() >= last).count();
                    match min_acks {
                        Some(n) => acked >= n as usize || acked == state.peers.len(),
                        None => state.peers.values().all(|p| p.matched() >= last || !self.healthy(p, now)),
                    }
                };
                if done || tokio::time::timeout_at(deadline, updated.changed()).await.is_err() {
                    break;
                }
            }
        }
        let state = self.lock();
        let now = Instant::now();
        indexes
            .iter()
            .map(|&index| state.leading.then(|| self.picture(&state, index, proposed_at, now)))
            .collect()
    }

    /// Who holds `index`, as of `now`. Built for every write's answer, so it allocates once.
    fn picture(&self, state: &State, index: u64, proposed_at: Instant, now: Instant) -> Replication {
        let mut peers: Vec<PeerAck> = state
            .peers
            .iter()
            .map(|(&node, progress)| match progress.acked_at(index) {
                Some(at) => PeerAck {
                    node,
                    state: AckState::Acked,
                    ms: Some(at.saturating_duration_since(proposed_at).as_secs_f64() * 1000.0),
                },
                None if self.healthy(progress, now) => PeerAck { node, state: AckState::Pending, ms: None },
                None => PeerAck { node, state: AckState::Unreachable, ms: None },
            })
            .collect();
        peers.sort_unstable_by_key(|peer| peer.node);
        Replication { term: state.term, index, peers }
    }

    fn healthy(&self, progress: &PeerProgress, now: Instant) -> bool {
        progress.last_contact.is_some_and(|at| now.saturating_duration_since(at) < self.unreachable_after)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PeerProgress {
    fn matched(&self) -> u64 {
        self.advances.back().map_or(0, |(index, _)| *index)
    }

    /// When the peer was first seen holding `index`, if it does. An index older than the
    /// remembered history counts as acknowledged at the oldest time remembered.
    fn acked_at(&self, index: u64) -> Option<Instant> {
        if self.matched() < index {
            return None;
        }
        let first = self.advances.partition_point(|(matched, _)| *matched < index);
        self.advances.get(first).map(|(_, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_acked_when_the_matched_index_first_reached_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let progress = PeerProgress {
            advances: VecDeque::from([(3, at(1)), (7, at(2)), (9, at(5))]),
            last_contact: Some(at(5)),
        };
        assert_eq!(progress.acked_at(2), Some(at(1)));
        assert_eq!(progress.acked_at(3), Some(at(1)));
        assert_eq!(progress.acked_at(4), Some(at(2)));
        assert_eq!(progress.acked_at(9), Some(at(5)));
        assert_eq!(progress.acked_at(10), None);
        assert_eq!(PeerProgress::default().acked_at(1), None);
    }
}
