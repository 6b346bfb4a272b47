//! What the browser console's stream carries: the cluster as this node sees it, once a second,
//! plus events and write journeys as they happen (docs/CONSOLE.md describes the messages).
//!
//! One sampler task per node (started with the HTTP port) asks every member for its report, the
//! same reports `CLUSTER` shows ([`super::status::member_views`]), and turns them into a *tick*:
//! the member table, the leader, how many more voters the cluster can lose, and one point of the
//! throughput and latency graphs (summed and maxed over the members' own counters). Comparing a
//! tick with the one before gives the *events*: leader changes, members unreachable and back,
//! joining or leaving, snapshots taken or installed.
//!
//! Every browser shares what is produced here, so the cost does not grow with browsers: the
//! latest tick is a `watch` (a slow browser skips ticks), events and journeys go through one
//! bounded `broadcast` (a browser that falls behind it is sent the whole state again), and the
//! recent history a newly connected browser starts from is a few bounded rings. Each message is
//! serialized once.
//!
//! A write's *journey* is its replication picture (leader, term, index, each peer's ack and its
//! latency), as the shell shows after each write. Clients' writes answered by this node are
//! sampled, at most [`JOURNEYS_PER_SECOND`], and only while a browser watches.
//!
//! Not done: journeys of writes sent to other members (each member's console shows its own);
//! graphs older than [`SAMPLES_KEPT`] seconds (Prometheus keeps those); snapshot transfers in
//! progress (the events show them once installed).

use super::Node;
use super::status::{MemberView, member_views};
use crate::protocol::message::Response;
use openraft::async_runtime::WatchReceiver;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// How often the console's state is sampled.
pub const TICK: Duration = Duration::from_secs(1);
/// How many samples (one per tick) the graphs start from.
pub const SAMPLES_KEPT: usize = 300;
/// How many events a newly connected browser is sent.
pub const EVENTS_KEPT: usize = 200;
/// How many recent write journeys a newly connected browser is sent.
pub const JOURNEYS_KEPT: usize = 20;
/// The most client writes per second whose journey is streamed.
pub const JOURNEYS_PER_SECOND: u64 = 10;
/// Events and journeys a browser may fall behind by before it is sent the whole state again.
pub const NEWS_QUEUE: usize = 256;

/// The stream every browser watching this node shares.
pub(super) struct ConsoleFeed {
    /// The latest tick, as a JSON message.
    ticks: watch::Sender<Arc<str>>,
    /// Events and journeys, as JSON messages.
    news: broadcast::Sender<Arc<str>>,
    history: Mutex<History>,
    /// When the last journey was streamed, in milliseconds since the epoch.
    last_journey_ms: AtomicU64,
}

/// What a browser that connects now is sent first.
#[derive(Default)]
struct History {
    samples: VecDeque<Sample>,
    events: VecDeque<Event>,
    journeys: VecDeque<Journey>,
    tick: Option<Tick>,
}

/// The cluster at one moment, as this node gathered it.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The node serving this console.
    pub node: u64,
    pub leader: Option<u64>,
    pub term: Option<u64>,
    /// How many more voters the cluster can lose and still commit; `None` without a leader.
    pub failure_tolerance: Option<u64>,
    pub members: Vec<MemberView>,
    pub sample: Sample,
}

/// One point of the graphs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    /// Reads and writes per second answered by all reachable members to their clients.
    pub reads_per_s: f64,
    pub writes_per_s: f64,
    /// The slowest member's median and 99th percentile write latency over the last second, in
    /// milliseconds; `None` if no member answered a write then.
    pub write_p50_ms: Option<f64>,
    pub write_p99_ms: Option<f64>,
}

/// Something that happened to the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: u64,
    /// `leader`, `no_leader`, `unreachable`, `reachable`, `joined`, `left`, `promoted`,
    /// `snapshot` or `installed`.
    pub kind: &'static str,
    /// The member it is about, if one.
    pub node: Option<u64>,
    pub term: Option<u64>,
    pub text: String,
}

/// One write's trip through the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Journey {
    pub at_ms: u64,
    /// The command, as the client named it.
    pub command: String,
    /// The answer, in the JSON form `kv-cli --json` prints, with its replication picture.
    pub answer: serde_json::Value,
}

/// Messages to the browser; `type` names each.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message<'a> {
    Tick(&'a Tick),
    Event(&'a Event),
    Journey(&'a Journey),
    State {
        tick: Option<&'a Tick>,
        samples: Vec<&'a Sample>,
        events: Vec<&'a Event>,
        journeys: Vec<&'a Journey>,
    },
}

fn to_json(message: &Message<'_>) -> Arc<str> {
    serde_json::to_string(message).expect("console messages always serialize").into()
}

/// The time, in milliseconds since the Unix epoch, as the stream gives it.
pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl ConsoleFeed {
    pub fn new() -> ConsoleFeed {
        ConsoleFeed {
            ticks: watch::channel(Arc::from("")).0,
            news: broadcast::channel(NEWS_QUEUE).0,
            history: Mutex::new(History::default()),
            last_journey_ms: AtomicU64::new(0),
        }
    }

    /// Receivers for a browser: the ticks and the news.
    pub fn subscribe(&self) -> (watch::Receiver<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        (self.ticks.subscribe(), self.news.subscribe())
    }

    /// Everything a browser starts from, as one message.
    pub fn state(&self) -> Arc<str> {
        let history = self.lock();
        to_json(&Message::State {
            tick: history.tick.as_ref(),
            samples: history.samples.iter().collect(),
            events: history.events.iter().collect(),
            journeys: history.journeys.iter().collect(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Offers a client's answered write for streaming: kept if a browser watches and the
    /// journey rate allows it.
    pub fn write_answered(&self, command: &str, response: &Response) {
        // Cheapest first: this runs for every client write.
        if response.replication.is_none() {
            return;
        }
        let now = now_ms();
        let last = self.last_journey_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000 / JOURNEYS_PER_SECOND
            || self.news.receiver_count() == 0
            || self.last_journey_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        self.journey(Journey {
            at_ms: now,
            command: command.to_string(),
            answer: crate::protocol::json::response_json(response),
        });
    }

    /// Streams a journey and keeps it for browsers that connect later.
    pub fn journey(&self, journey: Journey) {
        let message = to_json(&Message::Journey(&journey));
        push(&mut self.lock().journeys, journey, JOURNEYS_KEPT);
        let _ = self.news.send(message);
    }

    fn event(&self, event: Event) {
        let message = to_json(&Message::Event(&event));
        push(&mut self.lock().events, event, EVENTS_KEPT);
        let _ = self.news.send(message);
    }

    fn tick(&self, tick: Tick) {
        let message = to_json(&Message::Tick(&tick));
        {
            let mut history = self.lock();
            push(&mut history.samples, tick.sample, SAMPLES_KEPT);
            history.tick = Some(tick);
        }
        self.ticks.send_replace(message);
    }
}

fn push<T>(ring: &mut VecDeque<T>, item: T, cap: usize) {
    if ring.len() == cap {
        ring.pop_front();
    }
    ring.push_back(item);
}

/// Samples the cluster every [`TICK`] into `node`'s console feed until `token` is cancelled.
pub(super) async fn sample(node: Arc<Node>, token: CancellationToken) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counters = Counters::default();
    let mut previous: Option<Tick> = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = token.cancelled() => return,
        }
        let members = member_views(&node).await;
        let at_ms = now_ms();
        let leader = members.iter().find(|m| m.role() == "leader");
        let unreachable_after = node.raft.config().election_timeout_min;
        let tick = Tick {
            at_ms,
            node: node.config.id,
            leader: leader.map(|m| m.id),
            term: leader
                .and_then(|m| m.status.as_ref().map(|s| s.term))
                .or_else(|| Some(node.raft.metrics().borrow_watched().current_term)),
            failure_tolerance: leader.map(|_| failure_tolerance(&members, unreachable_after)),
            sample: counters.sample(at_ms, &members),
            members,
        };
        for event in changes(previous.as_ref(), &tick) {
            node.console.event(event);
        }
        previous = Some(tick.clone());
        node.console.tick(tick);
    }
}

/// How many more voters can be lost while a majority of voters stays in contact with the
/// leader (the leader counts, and a voter it heard from within `unreachable_after`).
fn failure_tolerance(members: &[MemberView], unreachable_after: u64) -> u64 {
    let voters: Vec<&MemberView> = members.iter().filter(|m| m.voter).collect();
    let majority = voters.len() / 2 + 1;
    let in_contact = voters
        .iter()
        .filter(|m| m.role() == "leader" || m.last_contact_ms.is_some_and(|ms| ms <= unreachable_after))
        .count();
    in_contact.saturating_sub(majority) as u64
}

/// The members' request counters at the last tick, to turn them into rates.
#[derive(Default)]
struct Counters {
    at_ms: u64,
    by_member: BTreeMap<u64, (u64, u64)>,
}

impl Counters {
    fn sample(&mut self, at_ms: u64, members: &[MemberView]) -> Sample {
        let seconds = at_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        let mut sample = Sample { at_ms, ..Sample::default() };
        let mut by_member = BTreeMap::new();
        for member in members {
            let Some(served) = member.status.as_ref().and_then(|s| s.served) else { continue };
            by_member.insert(member.id, (served.reads, served.writes));
            // A member that restarted counts from zero again.
            if let Some((reads, writes)) = self.by_member.get(&member.id)
                && seconds > 0.0
            {
                sample.reads_per_s += served.reads.saturating_sub(*reads) as f64 / seconds;
                sample.writes_per_s += served.writes.saturating_sub(*writes) as f64 / seconds;
            }
            let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
            sample.write_p50_ms = max(sample.write_p50_ms, ms(served.write_p50_us));
            sample.write_p99_ms = max(sample.write_p99_ms, ms(served.write_p99_us));
        }
        self.at_ms = at_ms;
        self.by_member = by_member;
        sample
    }
}

fn max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// What changed from `before` to `now`, as events.
fn changes(before: Option<&Tick>, now: &Tick) -> Vec<Event> {
    let mut events = Vec::new();
    let mut event = |kind, node, term, text: String| {
        events.push(Event { at_ms: now.at_ms, kind, node, term, text });
    };
    // The first tick tells who leads, as a change from nothing.
    if before.is_none_or(|before| (now.leader, now.term) != (before.leader, before.term)) {
        match (now.leader, before.map(|before| before.leader)) {
            (Some(leader), _) => event(
                "leader",
                Some(leader),
                now.term,
                format!("node {leader} leads in term {}", now.term.unwrap_or(0)),
            ),
            (None, None) => event("no_leader", None, now.term, "no leader".to_string()),
            (None, Some(Some(lost))) => {
                event("no_leader", None, now.term, format!("no leader (node {lost} lost it)"))
            }
            (None, Some(None)) => {}
        }
    }
    let Some(before) = before else { return events };
    let was: BTreeMap<u64, &MemberView> = before.members.iter().map(|m| (m.id, m)).collect();
    for member in &now.members {
        let id = member.id;
        let Some(old) = was.get(&id) else {
            let kind = if member.voter { "a voter" } else { "a learner" };
            event("joined", Some(id), now.term, format!("node {id} joined as {kind}"));
            continue;
        };
        if member.voter && !old.voter {
            event("promoted", Some(id), now.term, format!("node {id} became a voter"));
        }
        match (&old.status, &member.status) {
            (Some(_), None) => event("unreachable", Some(id), now.term, format!("node {id} is unreachable")),
            (None, Some(status)) => event(
                "reachable",
                Some(id),
                now.term,
                format!(
                    "node {id} is back, as {} at index {}",
                    status.role,
                    status.last_log_index.unwrap_or(0)
                ),
            ),
            (Some(old), Some(new)) if new.snapshot_index > old.snapshot_index => {
                let at = new.snapshot_index.unwrap_or(0);
                // A snapshot beyond what the member held came from the leader.
                if old.last_log_index.unwrap_or(0) < at {
                    event(
                        "installed",
                        Some(id),
                        now.term,
                        format!("the leader sent node {id} a snapshot, installed up to index {at}"),
                    )
                } else {
                    event(
                        "snapshot",
                        Some(id),
                        now.term,
                        format!("node {id} took a snapshot up to index {at}"),
                    )
                }
            }
            _ => {}
        }
    }
    for old in &before.members {
        if !now.members.iter().any(|m| m.id == old.id) {
            event("left", Some(old.id), now.term, format!("node {} left the cluster", old.id));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::control::NodeStatus;
    use std::collections::BTreeSet;

    fn status(id: u64, role: &str, term: u64, last: u64, snapshot: Option<u64>) -> NodeStatus {
        NodeStatus {
            id,
            role: role.to_string(),
            term,
            last_log_index: Some(last),
            applied_index: Some(last),
            leader: None,
            contact_ms: BTreeMap::new(),
            initialized: true,
            seen_members: BTreeSet::new(),
            snapshot_index: snapshot,
            purged_index: None,
            unsendable: BTreeMap::new(),
            committed_members: None,
            committed_index: Some(last),
            served: None,
        }
    }

    fn member(id: u64, status: Option<NodeStatus>, contact: Option<u64>) -> MemberView {
        MemberView {
            id,
            address: format!("127.0.0.1:{id}"),
            voter: true,
            status,
            lag: None,
            last_contact_ms: contact,
            problem: None,
        }
    }

    fn tick(leader: Option<u64>, term: u64, members: Vec<MemberView>) -> Tick {
        Tick {
            at_ms: 0,
            node: 1,
            leader,
            term: Some(term),
            failure_tolerance: None,
            members,
            sample: Sample::default(),
        }
    }

    fn kinds(events: &[Event]) -> Vec<(&'static str, Option<u64>)> {
        events.iter().map(|e| (e.kind, e.node)).collect()
    }

    #[test]
    fn a_new_leader_an_unreachable_member_and_an_installed_snapshot_are_events() {
        let before = tick(
            Some(1),
            2,
            vec![
                member(1, Some(status(1, "leader", 2, 50, None)), None),
                member(2, Some(status(2, "follower", 2, 50, None)), Some(10)),
                member(3, Some(status(3, "follower", 2, 10, None)), Some(10)),
            ],
        );
        let now = tick(
            Some(2),
            3,
            vec![
                member(1, None, None),
                member(2, Some(status(2, "leader", 3, 60, None)), None),
                member(3, Some(status(3, "follower", 3, 60, Some(40))), Some(5)),
            ],
        );
        assert_eq!(
            kinds(&changes(Some(&before), &now)),
            [("leader", Some(2)), ("unreachable", Some(1)), ("installed", Some(3))]
        );
        assert!(changes(Some(&now), &now).is_empty(), "nothing changed, nothing to tell");
    }

    #[test]
    fn members_joining_being_promoted_and_leaving_are_events() {
        let before = tick(
            Some(1),
            2,
            vec![member(1, Some(status(1, "leader", 2, 5, None)), None), member(2, None, None)],
        );
        let mut learner = member(3, Some(status(3, "learner", 2, 5, None)), Some(3));
        learner.voter = false;
        let now = tick(Some(1), 2, vec![member(1, Some(status(1, "leader", 2, 6, None)), None), learner]);
        assert_eq!(kinds(&changes(Some(&before), &now)), [("joined", Some(3)), ("left", Some(2))]);
        let mut promoted = now.clone();
        promoted.members[1].voter = true;
        assert_eq!(kinds(&changes(Some(&now), &promoted)), [("promoted", Some(3))]);
    }

    #[test]
    fn failure_tolerance_counts_the_voters_the_leader_heard_from_lately() {
        let members = vec![
            member(1, Some(status(1, "leader", 2, 5, None)), None),
            member(2, Some(status(2, "follower", 2, 5, None)), Some(40)),
            member(3, None, Some(5_000)),
        ];
        assert_eq!(failure_tolerance(&members, 150), 0);
        assert_eq!(failure_tolerance(&members, 10_000), 1);
        let mut learner = member(4, None, Some(1));
        learner.voter = false;
        let with_learner = [members, vec![learner]].concat();
        assert_eq!(failure_tolerance(&with_learner, 10_000), 1, "a learner does not vote");
    }

    #[test]
    fn rates_come_from_the_members_counters_and_a_restart_counts_from_zero() {
        let served = |reads, writes, p99| {
            let mut s = status(1, "follower", 1, 1, None);
            s.served =
                Some(crate::metrics::Served { reads, writes, write_p50_us: Some(100), write_p99_us: p99 });
            s
        };
        let mut counters = Counters::default();
        counters.sample(1_000, &[member(1, Some(served(100, 10, None)), None)]);
        let sample = counters.sample(
            3_000,
            &[
                member(1, Some(served(300, 50, Some(2_000))), None),
                member(2, Some(served(40, 4, Some(500))), None),
            ],
        );
        assert_eq!((sample.reads_per_s, sample.writes_per_s), (100.0, 20.0), "member 2 is new: no rate yet");
        assert_eq!((sample.write_p50_ms, sample.write_p99_ms), (Some(0.1), Some(2.0)));
        let restarted = counters.sample(4_000, &[member(1, Some(served(5, 1, None)), None)]);
        assert_eq!(restarted.writes_per_s, 0.0);
    }
}
