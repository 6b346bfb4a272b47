//! Linearizable reads share read-index checks, on the leader and on followers alike.
//!
//! A linearizable read must see every write acknowledged before the read arrived. A *read index*
//! gives that: the leader notes its commit index, confirms with a quorum of voters that it
//! still leads, and hands the noted index out. Any node whose state machine has applied up to
//! that index may then answer the read from its own state, which is how followers serve
//! linearizable reads without relaying them (Raft thesis §6.4; etcd does the same). On the leader
//! the check is openraft's `get_read_log_id(ReadIndex)`; on a follower it is one `ReadIndex`
//! request to the leader. With `lease_reads` the leader confirms by its lease instead of a
//! quorum round while the lease holds (see [`LeaderLease`]).
//!
//! A quorum check is a network round trip, so with many clients reading at once the checks,
//! not the reads, would be the work. [`ReadBarrier`] runs one check at a time and lets every
//! read that arrived before a check *started* use its index. A read that arrives while a check is
//! under way waits for the next one: the running check may have noted the commit index before the
//! read arrived, so it proves nothing about writes acknowledged in between. Under load, each
//! check then serves every read that arrived during the previous one. The read that starts a
//! check first lets the node's other connections be polled once, so that reads already waiting
//! in their sockets join this check rather than the next: fewer checks, each serving more.
//!
//! When a check ends, every read waiting on it is woken at once (a watch channel), so that they
//! proceed in parallel rather than handing a lock to one another in turn.
//!
//! A lease check at the leader needs no round trip, and not even a turn of openraft's core: the
//! lease is read from the metrics openraft publishes ([`LeaderLease::read_index`]), so each read
//! checks it for itself and skips the barrier.

use super::Node;
use super::control::ControlClient;
use crate::peer::Dialer;
use crate::raft::{KvRaft, TypeConfig};
use openraft::async_runtime::WatchReceiver;
use openraft::{Instant as _, LinearizerOption, RaftMetrics, ReadPolicy, ServerState};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Shares read-index checks among concurrent linearizable reads.
pub struct ReadBarrier {
    started: Mutex<Started>,
    /// The latest finished check.
    finished: watch::Sender<Finished>,
}

struct Started {
    /// How many checks have started; a check's number is this count once it started.
    count: u64,
    /// Whether a check is under way.
    running: bool,
}

#[derive(Clone, Copy)]
struct Finished {
    number: u64,
    /// The read index the check obtained; `None` if it failed.
    index: Option<u64>,
}

impl ReadBarrier {
    pub fn new() -> ReadBarrier {
        ReadBarrier {
            started: Mutex::new(Started { count: 0, running: false }),
            finished: watch::Sender::new(Finished { number: 0, index: None }),
        }
    }

    /// Returns a read index obtained by a check that started after this call began, running
    /// `check` itself if no such check is under way. Reading a state machine that has applied up
    /// to the index is then linearizable. `None` if that check failed (no leader could confirm
    /// its leadership with a quorum).
    pub async fn read_index<F, Fut>(&self, check: F) -> Option<u64>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<u64>>,
    {
        let arrived = self.lock().count;
        // Subscribed after `arrived` is known, and the latest outcome is read first thing, so no
        // check that ends in between is missed.
        let mut finished = self.finished.subscribe();
        let mut check = Some(check);
        loop {
            let latest = *finished.borrow_and_update();
            // A check numbered above `arrived` started after this read arrived.
            if latest.number > arrived {
                return latest.index;
            }
            let claimed = {
                let mut started = self.lock();
                !std::mem::replace(&mut started.running, true)
            };
            if claimed {
                let mut outcome = Outcome { barrier: self, number: None, index: None };
                // Let every connection with requests ready be polled first (a yielding task
                // resumes after the runtime has polled its sockets), so that their reads arrive
                // before this check starts and share it instead of waiting for the next one.
                tokio::task::yield_now().await;
                outcome.number = Some({
                    let mut started = self.lock();
                    started.count += 1;
                    started.count
                });
                let run = check.take().expect("a read starts at most one check");
                outcome.index = run().await;
                return outcome.index;
            }
            // Another check is under way; whichever ends next wakes us.
            if finished.changed().await.is_err() {
                return None;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Started> {
        self.started.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A read index obtained as the leader: by the lease alone when lease reads are on and it holds,
/// otherwise by a check shared through the barrier.
pub(super) async fn leader_read_index(node: &Node) -> Option<u64> {
    if let Some(index) = node.lease.read_index(&node.raft) {
        // The read happens once this node has applied through the index; the lease must still
        // hold then, or the read falls back to a quorum round.
        let applied = applied_through(&node.raft, index, Instant::now() + node.lease.duration).await;
        if applied && node.lease.read_index(&node.raft).is_some() {
            return Some(index);
        }
    }
    node.reads.read_index(|| core_read_index(&node.raft, node.lease.enabled)).await
}

/// openraft's check, a turn of its core: the commit index, once the leader knows it still leads.
/// By default that takes a quorum's answers to a heartbeat sent after the check began. With
/// `lease`, a quorum's answers to any heartbeat or append sent within the leader lease do, so an
/// active leader answers at once; a lapsed lease falls back to a heartbeat round.
async fn core_read_index(raft: &KvRaft, lease: bool) -> Option<u64> {
    let option = if lease { LinearizerOption::new(None, true) } else { ReadPolicy::ReadIndex.into() };
    raft.get_read_log_id(option).await.ok().map(|(read_log_id, _)| read_log_id.index())
}

/// The leader's lease as openraft last published it in its metrics.
///
/// openraft's own lease check is a message to its core and an answer back, and every core turn
/// republishes the metrics, waking their watchers: per read, that was a large share of the
/// leader's work (docs/BENCHMARKS.md). The metrics carry what the check needs. When a quorum of voters acknowledged a
/// heartbeat or append this node sent at time `t`, none of them votes for another candidate
/// before `t` plus the lease (openraft's: the maximum election timeout), so until then no other
/// leader can exist and commit anything. This node, leading, answers every acknowledged write
/// only once it has applied it, so its state holds them all, once it has applied through its
/// commit index. That index is a read index provided it lies in this leader's term: then the
/// blank entry that opened the term, and with it every earlier leader's entries, is committed.
///
/// Metrics may lag the core, never lead it; a stale `last_quorum_acked` is only older, so the
/// check errs toward falling back to openraft's. The one thing the metrics do not show is a
/// leadership transfer under way: openraft lets the successor be elected without waiting out
/// the followers' leases. So this node marks it before asking for one ([`Self::hand_over`]),
/// and reads take openraft's path (which refuses them while a transfer runs) until this node is
/// seen to have stepped down.
pub(super) struct LeaderLease {
    me: u64,
    /// Whether lease reads are on at all.
    enabled: bool,
    duration: Duration,
    handing_over: AtomicBool,
}

/// The share of openraft's lease that lease reads trust: the rest is a margin for clocks that
/// run at slightly different rates on the leader and its followers.
const TRUSTED_LEASE: (u32, u32) = (4, 5);

impl LeaderLease {
    /// Lease reads for node `me`, if `enabled`, trusting [`TRUSTED_LEASE`] of openraft's `lease`.
    pub fn new(me: u64, enabled: bool, lease: Duration) -> LeaderLease {
        let duration = lease * TRUSTED_LEASE.0 / TRUSTED_LEASE.1;
        LeaderLease { me, enabled, duration, handing_over: AtomicBool::new(false) }
    }

    /// This node's commit index if lease reads are on and the metrics show it leading with a
    /// valid lease and a commit in its own term; `None` means "ask openraft".
    pub fn read_index(&self, raft: &KvRaft) -> Option<u64> {
        if !self.enabled {
            return None;
        }
        // Read before the metrics: a set flag was set after its setter saw this node lead, so
        // the metrics read below are at least that recent, and a step-down in them is a step-down
        // since the transfer was asked for.
        let handing_over = self.handing_over.load(Ordering::SeqCst);
        let metrics = raft.metrics();
        let metrics = metrics.borrow_watched();
        self.judge(handing_over, &metrics)
    }

    fn judge(&self, handing_over: bool, metrics: &RaftMetrics<TypeConfig>) -> Option<u64> {
        let leading = metrics.running_state.is_ok()
            && metrics.state == ServerState::Leader
            && metrics.current_leader == Some(self.me)
            && metrics.vote.is_committed()
            && metrics.vote.leader_id().node_id == self.me;
        if handing_over {
            if !leading {
                self.handing_over.store(false, Ordering::SeqCst);
            }
            return None;
        }
        if !leading {
            return None;
        }
        let acked = metrics.last_quorum_acked.as_deref()?;
        if acked.elapsed() >= self.duration {
            return None;
        }
        let committed = metrics.local_committed.as_ref()?;
        (committed.leader_id.term == metrics.vote.leader_id().term).then_some(committed.index)
    }

    /// Marks a leadership transfer about to be asked for: lease reads take openraft's path from
    /// now until this node has stepped down.
    pub fn hand_over(&self) {
        self.handing_over.store(true, Ordering::SeqCst);
    }
}

/// Waits until this node's state machine has applied through `index`; `false` if the deadline
/// passed first.
pub(super) async fn applied_through(raft: &KvRaft, index: u64, deadline: Instant) -> bool {
    let applied = raft.metrics().borrow_watched().last_applied.map(|log_id| log_id.index);
    if applied >= Some(index) {
        return true;
    }
    let timeout = deadline.saturating_duration_since(Instant::now());
    raft.wait(Some(timeout)).applied_index_at_least(Some(index), "a linearizable read").await.is_ok()
}

/// A follower's connection to the leader for its checks, which run one at a time.
pub(super) struct LeaderLink {
    dialer: Dialer,
    client: tokio::sync::Mutex<Option<ControlClient>>,
}

impl LeaderLink {
    pub fn new(dialer: Dialer) -> LeaderLink {
        LeaderLink { dialer, client: tokio::sync::Mutex::new(None) }
    }

    /// A follower's check: asks node `leader` at `addr` for a read index.
    pub async fn read_index(&self, leader: u64, addr: &str, deadline: Instant) -> Option<u64> {
        let mut client = self.client.lock().await;
        let client = match client.as_mut() {
            Some(client) if client.target() == leader => client,
            _ => client.insert(ControlClient::new(self.dialer.clone(), leader, addr.to_string())),
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        match client.read_index(timeout).await {
            Ok(index) => index,
            Err(e) => {
                tracing::debug!(leader, error = %e, "no read index from the leader");
                None
            }
        }
    }
}

/// Publishes a check's outcome when it ends, also when the read that ran it gives up (its
/// future is dropped at a timeout), so that the reads waiting on it never wait forever.
struct Outcome<'b> {
    barrier: &'b ReadBarrier,
    /// The check's number once it has started; `None` while its read lets others join.
    number: Option<u64>,
    index: Option<u64>,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        self.barrier.lock().running = false;
        match self.number {
            Some(number) => {
                self.barrier.finished.send_replace(Finished { number, index: self.index });
            }
            // Given up before the check started: nothing to publish, but the waiting reads must
            // wake to start a check of their own.
            None => self.barrier.finished.send_modify(|_| {}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    #[tokio::test]
    async fn a_lone_read_runs_its_own_check() {
        let barrier = ReadBarrier::new();
        assert_eq!(barrier.read_index(|| async { Some(7) }).await, Some(7));
        assert_eq!(barrier.read_index(|| async { None }).await, None);
        assert_eq!(barrier.read_index(|| async { Some(9) }).await, Some(9));
    }

    /// Reads that arrive while a check runs share the next one, not the running one. One thread,
    /// so that the order of events is the test's and a loaded machine cannot reorder them.
    #[tokio::test]
    async fn reads_arriving_during_a_check_share_the_next_check() {
        let barrier = Arc::new(ReadBarrier::new());
        let checks = Arc::new(AtomicU64::new(0));
        let release = Arc::new(Notify::new());
        let check = |checks: Arc<AtomicU64>, release: Arc<Notify>| {
            move || async move {
                let n = checks.fetch_add(1, Ordering::SeqCst) + 1;
                release.notified().await;
                Some(n * 100)
            }
        };
        let first = spawn_read(&barrier, check(checks.clone(), release.clone()));
        wait_until(|| checks.load(Ordering::SeqCst) == 1).await;
        let later: Vec<_> =
            (0..10).map(|_| spawn_read(&barrier, check(checks.clone(), release.clone()))).collect();
        // Once the later reads wait at the barrier, end the first check: they must not use it.
        wait_until(|| barrier.finished.receiver_count() == 11).await;
        release.notify_one();
        assert_eq!(within_bound(first).await, Some(100));
        wait_until(|| checks.load(Ordering::SeqCst) == 2).await;
        release.notify_one();
        for read in later {
            assert_eq!(within_bound(read).await, Some(200));
        }
        assert_eq!(checks.load(Ordering::SeqCst), 2, "the ten later reads shared one check");
    }

    /// A read polled after another has claimed a check, but before that check started, shares
    /// it. One thread: the spawned reads are polled in turn.
    #[tokio::test]
    async fn reads_arriving_as_a_check_starts_share_it() {
        let barrier = Arc::new(ReadBarrier::new());
        let checks = Arc::new(AtomicU64::new(0));
        let reads: Vec<_> = (0..2)
            .map(|_| {
                let checks = checks.clone();
                spawn_read(&barrier, || async move { Some(checks.fetch_add(1, Ordering::SeqCst) + 1) })
            })
            .collect();
        for read in reads {
            assert_eq!(within_bound(read).await, Some(1));
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1, "both reads shared one check");
    }

    /// A read that gives up before its check starts does not strand the read waiting on it.
    #[tokio::test]
    async fn a_read_abandoned_before_its_check_starts_lets_the_next_read_check() {
        let barrier = Arc::new(ReadBarrier::new());
        let first = spawn_read(&barrier, || async { Some(1) });
        let waiting = spawn_read(&barrier, || async { Some(2) });
        // One turn: the first read claims the check and yields, the second waits on it.
        tokio::task::yield_now().await;
        {
            let started = barrier.lock();
            assert!(started.running && started.count == 0, "claimed, not started");
        }
        assert_eq!(barrier.finished.receiver_count(), 2, "both reads wait");
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(within_bound(waiting).await, Some(2));
    }

    /// A read that gives up in the middle of its check does not strand the reads behind it.
    #[tokio::test]
    async fn an_abandoned_check_lets_the_next_read_check_again() {
        let barrier = ReadBarrier::new();
        let abandoned =
            tokio::time::timeout(Duration::from_millis(20), barrier.read_index(std::future::pending)).await;
        assert!(abandoned.is_err());
        let next = tokio::time::timeout(BOUND, barrier.read_index(|| async { Some(3) }));
        assert_eq!(next.await.expect("not stranded"), Some(3));
    }

    /// Metrics of node 1 leading in term 3 with a lease acknowledged `acked_ago` ago and its
    /// log committed through index 10 in `committed_term`.
    fn leader_metrics(acked_ago: Duration, committed_term: u64) -> RaftMetrics<TypeConfig> {
        use openraft::metrics::SerdeInstant;
        use openraft::{LogId, TokioInstant, Vote, vote::leader_id_adv::LeaderId};
        let mut metrics = RaftMetrics::new_initial(1);
        metrics.state = ServerState::Leader;
        metrics.current_leader = Some(1);
        metrics.current_term = 3;
        metrics.vote = Vote::new_committed(3, 1);
        metrics.last_quorum_acked = Some(SerdeInstant::new(TokioInstant::now() - acked_ago));
        metrics.local_committed = Some(LogId::new(LeaderId { term: committed_term, node_id: 1 }, 10));
        metrics
    }

    const LEASE: Duration = Duration::from_secs(10);

    #[test]
    fn a_leader_within_its_lease_reads_at_its_commit_index() {
        let lease = LeaderLease::new(1, true, LEASE);
        assert_eq!(lease.judge(false, &leader_metrics(Duration::ZERO, 3)), Some(10));
        assert_eq!(lease.judge(false, &leader_metrics(LEASE, 3)), None, "lapsed");
        assert_eq!(lease.judge(false, &leader_metrics(LEASE * 9 / 10, 3)), None, "within the drift margin");
        assert_eq!(lease.judge(false, &leader_metrics(LEASE * 7 / 10, 3)), Some(10));
        assert_eq!(lease.judge(false, &leader_metrics(Duration::ZERO, 2)), None, "term not committed yet");
        let mut follower = leader_metrics(Duration::ZERO, 3);
        follower.state = ServerState::Follower;
        follower.current_leader = Some(2);
        assert_eq!(lease.judge(false, &follower), None);
        assert_eq!(LeaderLease::new(2, true, LEASE).judge(false, &leader_metrics(Duration::ZERO, 3)), None);
    }

    /// Once a transfer is asked for, the lease is not trusted until this node has stepped down.
    #[test]
    fn a_handover_suspends_lease_reads_until_the_node_steps_down() {
        let lease = LeaderLease::new(1, true, LEASE);
        lease.hand_over();
        let leading = leader_metrics(Duration::ZERO, 3);
        assert_eq!(lease.judge(lease.handing_over.load(Ordering::SeqCst), &leading), None);
        assert!(lease.handing_over.load(Ordering::SeqCst), "still leading: still suspended");
        let mut stepped_down = leader_metrics(Duration::ZERO, 3);
        stepped_down.state = ServerState::Follower;
        stepped_down.current_leader = Some(2);
        assert_eq!(lease.judge(lease.handing_over.load(Ordering::SeqCst), &stepped_down), None);
        assert!(!lease.handing_over.load(Ordering::SeqCst));
        // Leading again later, in a term of its own, with no transfer under way.
        assert_eq!(lease.judge(lease.handing_over.load(Ordering::SeqCst), &leading), Some(10));
    }

    /// A read at `barrier` as a task of its own, running `check` if it starts one.
    fn spawn_read<F, Fut>(barrier: &Arc<ReadBarrier>, check: F) -> tokio::task::JoinHandle<Option<u64>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Option<u64>> + Send + 'static,
    {
        let barrier = barrier.clone();
        tokio::spawn(async move { barrier.read_index(check).await })
    }

    /// Generous bounds: they only turn a hang into a failure.
    const BOUND: Duration = Duration::from_secs(30);

    async fn within_bound(read: tokio::task::JoinHandle<Option<u64>>) -> Option<u64> {
        tokio::time::timeout(BOUND, read).await.expect("a read within the bound").unwrap()
    }

    async fn wait_until(condition: impl Fn() -> bool) {
        tokio::time::timeout(BOUND, async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("condition within the bound");
    }
}
