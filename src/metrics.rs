//! The node's Prometheus metrics, served at `/metrics` on its HTTP port (`http_listen`).
//!
//! Names follow etcd's where etcd has one (`has_leader`, `leader_changes_seen_total`,
//! `proposals_committed_total`, `wal_fsync_duration_seconds`, ...), under the `kv_` prefix, so
//! that dashboards and alerts written for etcd carry over. Each node registers its own
//! [`NodeMetrics`] (no process-wide recorder), so nodes run in one process for tests keep
//! theirs apart.
//!
//! Most values are read off openraft's metrics at scrape time ([`NodeMetrics::observe`]):
//! nothing on the write path pays for them. What a scrape cannot read afterwards is counted as
//! it happens: leader changes (a watcher task), the durations of the log's fsyncs and of the
//! store's flushes (histograms the log store and the store keep), and the round trip of each
//! Raft RPC to each peer ([`PeerRoundTrips`], observed by the peer network).
//!
//! Requests are counted by command and outcome as their answers leave a client's connection
//! (`server::handler::Answers`); a follower's forwarding link is not counted at the leader, so the
//! sum over the members is what clients asked.
//!
//! For the browser console, each member also counts its clients' reads (every request that
//! changes nothing) and writes, and keeps the last whole second's write latencies
//! ([`Served`], reported to whoever asks for the member's status).
//!
//! Not done: proposals that failed (the executor's retries make "failed" ambiguous; the outcomes
//! `NO_QUORUM` and `OUTCOME_UNKNOWN` among the requests say what clients saw).

use crate::command::CommandSpec;
use crate::raft::{KvRaft, TypeConfig};
use openraft::Instant as _;
use openraft::RaftMetrics;
use openraft::async_runtime::WatchReceiver;
use openraft::type_config::alias::LogIdOf;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The labels of a per-peer series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's node id.
    pub peer: String,
}

/// A histogram of durations in seconds, with buckets from 1 ms to about 8 s (etcd's disk
/// histograms' range).
pub fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// The index of a log id; 0 for none.
pub fn index(id: Option<LogIdOf<TypeConfig>>) -> u64 {
    id.map_or(0, |id| id.index)
}

/// The labels of a request count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The command's name as the command table spells it, or `unknown`.
    pub command: &'static str,
    /// `ok`, or the error code answered.
    pub outcome: &'static str,
}

/// The labels of a request latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    pub command: &'static str,
}

/// A histogram of request latencies in seconds, from 100 µs to about 6.5 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// How long each Raft RPC to each peer took, answer included (for an append, the peer's writing
/// of the entries to its log is part of it). Cheap to clone: clones share the series.
#[derive(Clone)]
pub struct PeerRoundTrips(Family<PeerLabel, Histogram, fn() -> Histogram>);

impl Default for PeerRoundTrips {
    fn default() -> PeerRoundTrips {
        PeerRoundTrips(Family::new_with_constructor(request_histogram))
    }
}

impl PeerRoundTrips {
    /// The series for `peer`, to observe its round trips without a lookup each time.
    pub fn of(&self, peer: u64) -> Histogram {
        self.0.get_or_create(&PeerLabel { peer: peer.to_string() }).clone()
    }
}

/// Gauges that hold whole numbers.
type IntGauge = Gauge<i64, std::sync::atomic::AtomicI64>;

/// One node's metrics and the registry that names them.
pub struct NodeMetrics {
    registry: Registry,
    has_leader: IntGauge,
    is_leader: IntGauge,
    term: IntGauge,
    leader_changes: Counter,
    committed: Counter<u64, AtomicU64>,
    applied: Counter<u64, AtomicU64>,
    pending: IntGauge,
    last_log_index: IntGauge,
    snapshot_index: IntGauge,
    purged_index: IntGauge,
    follower_lag: Family<PeerLabel, IntGauge>,
    since_contact: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    failure_tolerance: IntGauge,
    open_connections: IntGauge,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<CommandLabel, Histogram, fn() -> Histogram>,
    /// The two series above for each command and outcome seen, by where their names live (they
    /// are static): a family's own lookup hashes and compares the names, twice per request.
    request_series: std::sync::RwLock<foldhash::HashMap<(usize, usize), (Counter, Histogram)>>,
    /// How long after a peer's last contact the leader counts it unreachable.
    unreachable_after: Duration,
    traffic: Traffic,
}

/// What this member's clients asked, as the console graphs it: reads and writes answered, and
/// the write latencies of the last whole second.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Served {
    pub reads: u64,
    pub writes: u64,
    /// The median and 99th percentile of the last whole second's write latencies, in
    /// microseconds; `None` if that second had no writes.
    pub write_p50_us: Option<u64>,
    pub write_p99_us: Option<u64>,
}

/// Counts requests, and keeps one second of write latencies at a time.
struct Traffic {
    reads: AtomicU64,
    writes: AtomicU64,
    started: std::time::Instant,
    window: std::sync::Mutex<LatencyWindow>,
}

struct LatencyWindow {
    /// The second (since `started`) `current` is filling.
    second: u64,
    current: hdrhistogram::Histogram<u64>,
    /// The quantiles of the second before `second`, if it had writes.
    previous: Option<(u64, u64)>,
}

impl LatencyWindow {
    /// Moves on to `second`, keeping the quantiles of the second just ended.
    fn turn_to(&mut self, second: u64) {
        if second == self.second {
            return;
        }
        let ended = &self.current;
        self.previous = (second == self.second + 1 && !ended.is_empty())
            .then(|| (ended.value_at_quantile(0.5), ended.value_at_quantile(0.99)));
        self.current.reset();
        self.second = second;
    }
}

impl Traffic {
    fn new() -> Traffic {
        let current = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2)
            .expect("valid bounds: 1 µs to a minute");
        Traffic {
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            started: std::time::Instant::now(),
            window: std::sync::Mutex::new(LatencyWindow { second: 0, current, previous: None }),
        }
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn answered(&self, writes: bool, took: Duration) {
        if !writes {
            self.reads.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        let second = self.second();
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        window.turn_to(second);
        window.current.saturating_record(took.as_micros() as u64);
    }

    fn served(&self) -> Served {
        let second = self.second();
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        window.turn_to(second);
        Served {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            write_p50_us: window.previous.map(|q| q.0),
            write_p99_us: window.previous.map(|q| q.1),
        }
    }
}

impl NodeMetrics {
    /// A node's metrics, with its log's fsync and its store's flush durations, and the round
    /// trips of its Raft RPCs.
    pub fn new(
        fsync: Histogram,
        flush: Histogram,
        round_trips: PeerRoundTrips,
        unreachable_after: Duration,
    ) -> NodeMetrics {
        let mut metrics = NodeMetrics {
            registry: Registry::with_prefix("kv"),
            has_leader: IntGauge::default(),
            is_leader: IntGauge::default(),
            term: IntGauge::default(),
            leader_changes: Counter::default(),
            committed: Counter::default(),
            applied: Counter::default(),
            pending: IntGauge::default(),
            last_log_index: IntGauge::default(),
            snapshot_index: IntGauge::default(),
            purged_index: IntGauge::default(),
            follower_lag: Family::default(),
            since_contact: Family::default(),
            failure_tolerance: IntGauge::default(),
            open_connections: IntGauge::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(request_histogram),
            request_series: Default::default(),
            unreachable_after,
            traffic: Traffic::new(),
        };
        let server = metrics.registry.sub_registry_with_prefix("server");
        server.register(
            "has_leader",
            "Whether this member knows a leader (1) or not (0)",
            metrics.has_leader.clone(),
        );
        server.register("is_leader", "Whether this member leads (1) or not (0)", metrics.is_leader.clone());
        server.register("term", "The Raft term this member is in", metrics.term.clone());
        server.register(
            "leader_changes_seen",
            "Times this member saw the leader change, since it started",
            metrics.leader_changes.clone(),
        );
        server.register(
            "proposals_committed",
            "Log entries this member knows committed (its committed index)",
            metrics.committed.clone(),
        );
        server.register(
            "proposals_applied",
            "Log entries this member applied (its applied index)",
            metrics.applied.clone(),
        );
        server.register(
            "proposals_pending",
            "Log entries this member holds and does not know committed yet",
            metrics.pending.clone(),
        );
        server.register(
            "last_log_index",
            "The index of this member's last log entry",
            metrics.last_log_index.clone(),
        );
        server.register(
            "snapshot_index",
            "The last index this member's snapshot covers",
            metrics.snapshot_index.clone(),
        );
        server.register(
            "purged_index",
            "The last log index this member has compacted away",
            metrics.purged_index.clone(),
        );
        server.register(
            "follower_lag_entries",
            "On the leader: how many entries each follower lacks",
            metrics.follower_lag.clone(),
        );
        server.register(
            "seconds_since_peer_contact",
            "On the leader: time since each peer last acknowledged it",
            metrics.since_contact.clone(),
        );
        server.register(
            "failure_tolerance",
            "On the leader: how many more voters the cluster can lose and still commit, counting the \
             voters it heard from within the election timeout. Other members cannot tell, and report \
             0: take the maximum over the members",
            metrics.failure_tolerance.clone(),
        );
        server.register(
            "open_connections",
            "Client connections open on this member",
            metrics.open_connections.clone(),
        );
        server.register(
            "requests",
            "Requests from clients connected to this member, by command and outcome",
            metrics.requests.clone(),
        );
        server.register(
            "request_duration_seconds",
            "From reading a client's request to sending its answer, by command",
            metrics.request_seconds.clone(),
        );
        let network = metrics.registry.sub_registry_with_prefix("network");
        network.register(
            "peer_round_trip_time_seconds",
            "How long each Raft RPC to each peer took, answer included (an append's includes the peer \
             writing the entries to its log)",
            round_trips.0,
        );
        let disk = metrics.registry.sub_registry_with_prefix("disk");
        disk.register(
            "wal_fsync_duration_seconds",
            "How long each durable write of the Raft log took",
            fsync,
        );
        disk.register(
            "backend_commit_duration_seconds",
            "How long each flush of applied writes into the store took",
            flush,
        );
        metrics
    }

    /// Counts a client's request of `command` (`None`: not a command), answered with `outcome`
    /// after `took`.
    pub fn request_answered(
        &self,
        command: Option<&'static CommandSpec>,
        outcome: &'static str,
        took: Duration,
    ) {
        let writes = command.is_some_and(|spec| spec.writes);
        self.traffic.answered(writes, took);
        let command = command.map_or("unknown", |spec| spec.name);
        let at = (command.as_ptr() as usize, outcome.as_ptr() as usize);
        let count = |(requests, seconds): &(Counter, Histogram)| {
            requests.inc();
            seconds.observe(took.as_secs_f64());
        };
        if let Some(series) = self.request_series.read().unwrap_or_else(|p| p.into_inner()).get(&at) {
            return count(series);
        }
        let series = (
            self.requests.get_or_create(&RequestLabels { command, outcome }).clone(),
            self.request_seconds.get_or_create(&CommandLabel { command }).clone(),
        );
        count(&series);
        self.request_series.write().unwrap_or_else(|p| p.into_inner()).insert(at, series);
    }

    /// What this member's clients asked so far (for the console).
    pub fn served(&self) -> Served {
        self.traffic.served()
    }

    /// Counts leader changes as `raft` reports them, until it shuts down.
    pub fn watch_leader(self: &std::sync::Arc<Self>, raft: &KvRaft) {
        let mut server = raft.server_metrics();
        let metrics = self.clone();
        tokio::spawn(async move {
            let mut leader = server.borrow_watched().current_leader;
            while server.changed().await.is_ok() {
                let now = server.borrow_watched().current_leader;
                if now.is_some() && now != leader {
                    metrics.leader_changes.inc();
                }
                leader = now;
            }
        });
    }

    /// Sets what is read off `raft` and the connection count, just before a scrape.
    pub fn observe(&self, raft: &RaftMetrics<TypeConfig>, open_connections: usize) {
        let set = |gauge: &IntGauge, value: u64| gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        set(&self.has_leader, u64::from(raft.current_leader.is_some()));
        set(&self.is_leader, u64::from(raft.current_leader == Some(raft.id)));
        set(&self.term, raft.current_term);
        // Counters only go up: each takes the index's growth since the last scrape.
        for (counter, now) in
            [(&self.committed, index(raft.local_committed)), (&self.applied, index(raft.last_applied))]
        {
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        let last = raft.last_log_index.unwrap_or(0);
        set(&self.last_log_index, last);
        set(&self.pending, last.saturating_sub(index(raft.local_committed)));
        set(&self.snapshot_index, index(raft.snapshot));
        set(&self.purged_index, index(raft.purged));
        set(&self.open_connections, open_connections as u64);
        self.follower_lag.clear();
        self.since_contact.clear();
        let voters: Vec<u64> = raft.membership_config.membership().voter_ids().collect();
        let majority = voters.len() / 2 + 1;
        let tolerance = if let Some(replication) = &raft.replication {
            for (peer, matched) in replication.iter().filter(|(peer, _)| **peer != raft.id) {
                let label = PeerLabel { peer: peer.to_string() };
                set(&self.follower_lag.get_or_create(&label), last.saturating_sub(index(*matched)));
            }
            let heartbeat = raft.heartbeat.iter().flatten().filter(|(peer, _)| **peer != raft.id);
            for (peer, at) in heartbeat {
                if let Some(at) = at {
                    let label = PeerLabel { peer: peer.to_string() };
                    self.since_contact.get_or_create(&label).set(at.elapsed().as_secs_f64());
                }
            }
            let reachable =
                voters.iter().filter(|v| crate::raft::heard_from(raft, **v, self.unreachable_after));
            reachable.count().saturating_sub(majority)
        } else {
            0
        };
        set(&self.failure_tolerance, tolerance as u64);
    }

    /// The metrics in the Prometheus text format (OpenMetrics flavour).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_window_reports_the_second_just_ended_and_only_it() {
        let current = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2).unwrap();
        let mut window = LatencyWindow { second: 0, current, previous: None };
        for us in [100, 200, 300, 10_000] {
            window.current.saturating_record(us);
        }
        window.turn_to(0);
        assert_eq!(window.previous, None, "the second is not over");
        window.turn_to(1);
        let (p50, p99) = window.previous.unwrap();
        assert!((195..=205).contains(&p50) && (9_900..=10_100).contains(&p99), "{p50} {p99}");
        window.turn_to(3);
        assert_eq!(window.previous, None, "second 1 had no writes, and second 2 is what just ended");
    }
}
