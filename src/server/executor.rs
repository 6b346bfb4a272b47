//! Executing a client's batch of requests: here, at the leader through Raft, or forwarded to it.
//!
//! Requests are answered in order. Each one either needs the leader (writes, and reads unless
//! the client asked for a local read) or is answered by this node (`PING`, `CLUSTER`, local reads,
//! and requests that failed to parse). Consecutive requests that need the leader form a run:
//!
//! - On the leader, consecutive writes become one `client_write_many` (one Raft append, one
//!   fsync, replicated together), answered once applied, with their replication picture.
//!   Consecutive reads share one read-index check, as do reads from other connections that
//!   arrive meanwhile ([`super::reads`]), then read the store.
//! - On a follower, consecutive linearizable reads are answered here, behind one read index from
//!   the leader ([`super::reads`]); everything else is forwarded to the leader
//!   ([`super::forward`]).
//!
//! Waiting is bounded by the node's request timeout, counted for each part of a run from when it
//! starts. A request that never reached a leader with a quorum in that time fails with `NO_QUORUM` (certainly not applied); a write that was
//! proposed but whose fate is unknown gets `OUTCOME_UNKNOWN`. Nothing is retried unless it is
//! certain it was not applied, so no retry can apply a write twice.

use super::Node;
use super::acks::AckWait;
use super::{membership, reads, status};
use crate::command::{Admin, Command, Read, Write};
use crate::protocol::message::{ErrorCode, Reply, Request, Response};
use crate::raft::TypeConfig;
use crate::store::pong;
use futures::StreamExt;
use futures::stream::BoxStream;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, Fatal};
use openraft::raft::WriteResult;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::RwLockReadGuard;
use tokio::time::Instant;

/// How long to wait for news of a leader before trying again.
const LEADER_POLL: Duration = Duration::from_millis(50);
/// How long a write waits for `min_acks` when the client gave no timeout.
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// The answers to writes proposed ahead (see [`Executor::propose_ahead`]), once they are known.
pub(super) type AnswersAhead<'n> = Pin<Box<dyn Future<Output = Vec<Response>> + Send + 'n>>;

/// A request and what it parsed into.
pub(super) struct Item {
    request: Request,
    command: Result<Command, Reply>,
}

impl Item {
    fn needs_leader(&self) -> bool {
        match &self.command {
            Ok(Command::Write(_) | Command::Admin(_)) => true,
            Ok(Command::Read(_)) => !self.request.local,
            _ => false,
        }
    }

    fn write(&self) -> Option<&Write> {
        match &self.command {
            Ok(Command::Write(write)) => Some(write),
            _ => None,
        }
    }

    fn admin(&self) -> Option<&Admin> {
        match &self.command {
            Ok(Command::Admin(admin)) => Some(admin),
            _ => None,
        }
    }

    fn read(&self) -> Option<&Read> {
        match &self.command {
            Ok(Command::Read(read)) => Some(read),
            _ => None,
        }
    }

    fn answer(&self, reply: Reply) -> Response {
        Response::new(self.request.id, reply)
    }
}

/// Executes the batches of one client connection.
pub(super) struct Executor<'n> {
    node: &'n Node,
    /// Set when the client is another node forwarding to us: then we never forward or wait for a
    /// leader, we answer `NOT_LEADER` and let that node re-route.
    forwarded_by: Option<u64>,
}

impl<'n> Executor<'n> {
    pub fn new(node: &'n Node, forwarded_by: Option<u64>) -> Executor<'n> {
        Executor { node, forwarded_by }
    }

    pub fn node_id(&self) -> u64 {
        self.node.config.id
    }

    /// Parses a batch of requests; a request that does not parse is answered with why.
    pub fn parse(&self, batch: Vec<Request>) -> Vec<Item> {
        let limits = self.node.config.limits();
        batch
            .into_iter()
            .map(|request| {
                let command = Command::parse(request.args.clone(), &limits).map_err(|e| e.to_reply());
                Item { request, command }
            })
            .collect()
    }

    /// On a follower's forwarding connection to this leader, proposes a batch of nothing but
    /// writes at once and returns the future of its answers, so that the connection can read and
    /// propose the follower's next batch while this one commits. A shared forwarding link carries
    /// many clients' writes, and running its batches one at a time would make each wait for the
    /// commit of the one before.
    ///
    /// Raft applies proposals in the order they were made, so the answers of batches proposed
    /// ahead complete in request order. Gives the batch back when it must run the usual way, after
    /// everything proposed ahead is answered: it holds anything but writes, the client is not a
    /// forwarding node, this node does not lead, or a leadership handover is under way.
    pub async fn propose_ahead(&self, items: Vec<Item>) -> Result<AnswersAhead<'n>, Vec<Item>> {
        let node = self.node;
        let Some(by) = self.forwarded_by else { return Err(items) };
        let leading = node.raft.metrics().borrow_watched().current_leader == Some(node.config.id);
        if !leading || !items.iter().all(|i| i.write().is_some()) {
            return Err(items);
        }
        // Never wait for the lock here: a handover waits for the proposals this connection has
        // ahead, which only progress while the connection polls them.
        let Ok(proposing) = node.proposing.try_read() else { return Err(items) };
        let deadline = PartClock(Duration::from_millis(node.config.request_timeout_ms)).deadline();
        let writes = items.iter().filter_map(|i| i.write().cloned()).collect();
        let submitted = submit(node, writes, proposing, deadline).await;
        Ok(Box::pin(async move {
            let run: Vec<&Item> = items.iter().collect();
            let answers = outcomes(node, submitted, &run, deadline).await;
            let not_leader = not_leader(node, by);
            answers
                .into_iter()
                .zip(&items)
                .map(|(a, i)| a.unwrap_or_else(|| i.answer(not_leader.clone())))
                .collect()
        }))
    }

    /// Answers a batch of requests in order.
    pub async fn execute(&mut self, items: Vec<Item>) -> Vec<Response> {
        let mut answers = Vec::with_capacity(items.len());
        let mut start = 0;
        while start < items.len() {
            if !items[start].needs_leader() {
                answers.push(self.here(&items[start]).await);
                start += 1;
                continue;
            }
            let end =
                items[start..].iter().position(|i| !i.needs_leader()).map_or(items.len(), |n| start + n);
            answers.extend(self.through_leader(&items[start..end]).await);
            start = end;
        }
        answers
    }

    /// Answers what this node answers by itself.
    async fn here(&self, item: &Item) -> Response {
        let reply = match &item.command {
            Err(reply) => reply.clone(),
            Ok(Command::Ping { message }) => pong(message.as_deref()),
            Ok(Command::Cluster) => status::cluster_table(self.node).await,
            Ok(Command::Read(read)) => self.node.store.read(read).unwrap_or_else(|e| storage_error(&e)),
            Ok(Command::Write(_) | Command::Admin(_)) => unreachable!("changes always go through the leader"),
        };
        item.answer(reply)
    }

    /// Answers a run of requests that need the leader, retrying those certainly not applied
    /// until the request timeout.
    ///
    /// The timeout runs for each part of the run from when that part starts (see [`PartClock`]),
    /// so a request waits at most that long behind its own leader, never for the time its
    /// predecessors in a long pipelined batch took.
    async fn through_leader(&mut self, items: &[Item]) -> Vec<Response> {
        let clock = PartClock(Duration::from_millis(self.node.config.request_timeout_ms));
        let mut deadline = clock.deadline();
        let mut answers: Vec<Option<Response>> = items.iter().map(|_| None).collect();
        let mut metrics = self.node.raft.metrics();
        loop {
            let pending: Vec<usize> = (0..items.len()).filter(|&i| answers[i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            let run: Vec<&Item> = pending.iter().map(|&i| &items[i]).collect();
            let got = match (self.node.leader(), self.forwarded_by) {
                (Some((leader, _)), _) if leader == self.node.config.id => {
                    self.execute_run(&run, None, clock).await
                }
                (Some((leader, addr)), None) => self.execute_run(&run, Some((leader, &addr)), clock).await,
                _ => Vec::new(),
            };
            let progressed = got.iter().any(Option::is_some);
            for (i, answer) in pending.iter().zip(got) {
                answers[*i] = answer;
            }
            if progressed {
                deadline = clock.deadline();
                continue;
            }
            if let Some(by) = self.forwarded_by {
                let not_leader = not_leader(self.node, by);
                fill(&mut answers, items, || not_leader.clone());
                break;
            }
            if Instant::now() >= deadline {
                let message = format!(
                    "no leader with a quorum within {} ms (an election is under way or too many nodes \
                     are down); the command was not applied",
                    self.node.config.request_timeout_ms
                );
                fill(&mut answers, items, || Reply::error(ErrorCode::NoQuorum, message.clone()));
                break;
            }
            let pause = deadline.min(Instant::now() + LEADER_POLL);
            let _ = tokio::time::timeout_at(pause, metrics.changed()).await;
        }
        answers.into_iter().map(|a| a.expect("every slot is filled")).collect()
    }

    /// Executes a run part by part (see [`Part`]): as the leader when `leader` is `None`, else as a
    /// follower of that leader. Stops at the first part that could not be done; what it did not
    /// answer was not applied.
    async fn execute_run(
        &mut self,
        run: &[&Item],
        leader: Option<(u64, &str)>,
        clock: PartClock,
    ) -> Vec<Option<Response>> {
        let mut answers = Vec::with_capacity(run.len());
        while answers.len() < run.len() {
            let rest = &run[answers.len()..];
            let deadline = clock.deadline();
            let (part, len) = Part::at_head(rest, leader.is_none());
            let head = &rest[..len];
            let answered = match (part, leader) {
                (Part::MembershipChange, _) => {
                    let admin = head[0].admin().expect("a membership part holds one change");
                    let reply = membership::change(self.node, admin, deadline).await;
                    vec![reply.map(|reply| head[0].answer(reply))]
                }
                (Part::Writes, _) => self.propose(head, deadline).await,
                (Part::Reads, _) => self.read(head, leader, deadline).await,
                (Part::Forwarded, Some((id, addr))) => {
                    let requests: Vec<&Request> = head.iter().map(|i| &i.request).collect();
                    self.node.forwarding.forward(id, addr, &requests, deadline).await
                }
                (Part::Forwarded, None) => unreachable!("the leader forwards nothing"),
            };
            let complete = answered.iter().all(Option::is_some);
            answers.extend(answered);
            if !complete {
                break;
            }
        }
        answers.resize_with(run.len(), || None);
        answers
    }

    /// Proposes consecutive writes as one batch and answers each once it is applied.
    async fn propose(&self, run: &[&Item], deadline: Instant) -> Vec<Option<Response>> {
        // Shared with other proposals; a leader handing over waits for it (see `Node::proposing`).
        let Ok(proposing) = tokio::time::timeout_at(deadline, self.node.proposing.read()).await else {
            // The node is stopping and proposes nothing more: not applied.
            return run.iter().map(|_| None).collect();
        };
        let writes = run.iter().filter_map(|i| i.write().cloned()).collect();
        let submitted = submit(self.node, writes, proposing, deadline).await;
        outcomes(self.node, submitted, run, deadline).await
    }

    /// Answers consecutive reads from this node's state once it has applied through a read index
    /// obtained after they arrived, or not at all. The index comes from this node's own check as
    /// the leader (`leader` is `None`), or from the leader's.
    async fn read(
        &self,
        run: &[&Item],
        leader: Option<(u64, &str)>,
        deadline: Instant,
    ) -> Vec<Option<Response>> {
        let node = self.node;
        let read_index = async {
            match leader {
                None => reads::leader_read_index(node).await,
                Some((id, addr)) => {
                    node.reads.read_index(|| node.leader_link.read_index(id, addr, deadline)).await
                }
            }
        };
        let ready = match tokio::time::timeout_at(deadline, read_index).await {
            Ok(Some(index)) => reads::applied_through(&node.raft, index, deadline).await,
            _ => false,
        };
        if !ready {
            return run.iter().map(|_| None).collect();
        }
        let replies = match node.store.read_many(run.iter().filter_map(|i| i.read())) {
            Ok(replies) => replies,
            Err(e) => run.iter().map(|_| storage_error(&e)).collect(),
        };
        let confirmed_by = leader.map_or(node.config.id, |(id, _)| id);
        run.iter()
            .zip(replies)
            .map(|(item, reply)| {
                let mut response = item.answer(reply);
                response.leader = Some(confirmed_by);
                Some(response)
            })
            .collect()
    }
}

/// Writes handed to Raft whose outcomes are still to come.
struct Proposal<'n> {
    /// Keeps a leadership handover waiting until the outcomes are known (see `Node::proposing`).
    _proposing: RwLockReadGuard<'n, ()>,
    outcomes: BoxStream<'static, Result<WriteResult<TypeConfig>, Fatal<TypeConfig>>>,
    proposed_at: std::time::Instant,
}

/// Hands `writes` to Raft as one batch. `Err(None)` if they were certainly not proposed (Raft has
/// stopped), `Err(Some(reply))` with the answer for each if their fate is unknown.
async fn submit<'n>(
    node: &'n Node,
    writes: Vec<Write>,
    proposing: RwLockReadGuard<'n, ()>,
    deadline: Instant,
) -> Result<Proposal<'n>, Option<Reply>> {
    let proposed_at = std::time::Instant::now();
    match tokio::time::timeout_at(deadline, node.raft.client_write_many(writes)).await {
        Ok(Ok(outcomes)) => Ok(Proposal { _proposing: proposing, outcomes, proposed_at }),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some(unknown("the leader did not take the write in time"))),
    }
}

/// Waits for the outcome of each write of `run`, submitted as `submitted`, and answers it with
/// its replication picture. `None` for a write rejected before it was appended (another node
/// leads) or never proposed: certainly not applied.
async fn outcomes(
    node: &Node,
    submitted: Result<Proposal<'_>, Option<Reply>>,
    run: &[&Item],
    deadline: Instant,
) -> Vec<Option<Response>> {
    let me = node.config.id;
    let Proposal { _proposing: proposing, mut outcomes, proposed_at } = match submitted {
        Ok(proposal) => proposal,
        Err(reply) => return run.iter().map(|i| reply.clone().map(|reply| i.answer(reply))).collect(),
    };
    let mut answers: Vec<Option<Response>> = run.iter().map(|_| None).collect();
    let mut indexes = Vec::new();
    for (slot, item) in answers.iter_mut().zip(run) {
        let reply = match tokio::time::timeout_at(deadline, outcomes.next()).await {
            Ok(Some(Ok(Ok(written)))) => {
                indexes.push(written.log_id.index);
                let mut response = item.answer(written.response);
                response.leader = Some(me);
                *slot = Some(response);
                continue;
            }
            // Rejected before it was appended: another node leads, or the lease lapsed.
            Ok(Some(Ok(Err(ClientWriteError::ForwardToLeader(_))))) => continue,
            Ok(Some(Ok(Err(e)))) => unknown(&format!("leadership changed before it committed ({e})")),
            Ok(Some(Err(_)) | None) => unknown("the node stopped before it committed"),
            Err(_) => unknown(&format!(
                "not committed within {} ms (the leader may have lost its quorum)",
                node.config.request_timeout_ms
            )),
        };
        *slot = Some(item.answer(reply));
    }
    drop(proposing);
    // A rejected write before an applied one cannot be retried without reordering them.
    if let Some(last) = answers.iter().rposition(Option::is_some) {
        for (slot, item) in answers[..last].iter_mut().zip(run) {
            if slot.is_none() {
                let message = "rejected while leadership was changing; the write was not applied";
                *slot = Some(item.answer(Reply::error(ErrorCode::NoQuorum, message)));
            }
        }
    }
    let min_acks = run.iter().filter_map(|i| i.request.min_acks).max();
    let ack_timeout = run
        .iter()
        .filter_map(|i| i.request.ack_timeout_ms)
        .max()
        .map_or(DEFAULT_ACK_TIMEOUT, Duration::from_millis);
    let wait = match min_acks {
        Some(n) => AckWait::AtLeast(n, ack_timeout),
        None if run.iter().any(|i| i.request.wait_acks) => AckWait::Healthy,
        None => AckWait::No,
    };
    let pictures = node.acks.pictures(&indexes, proposed_at, wait).await;
    let mut pictures = pictures.into_iter();
    for answer in answers.iter_mut().flatten() {
        if answer.leader.is_some() {
            answer.replication = pictures.next().flatten();
        }
    }
    answers
}

/// The answer to a node forwarding to us when we do not lead: it retries elsewhere.
fn not_leader(node: &Node, by: u64) -> Reply {
    let message = format!("node {} is not the leader; node {by} will retry elsewhere", node.config.id);
    Reply::error(ErrorCode::NotLeader, message)
}

fn unknown(why: &str) -> Reply {
    Reply::error(ErrorCode::OutcomeUnknown, format!("{why}; the write may or may not have been applied"))
}

/// A stretch of a run that is done in one go.
#[derive(Clone, Copy)]
enum Part {
    /// On the leader: one membership change.
    MembershipChange,
    /// On the leader: consecutive writes, proposed together.
    Writes,
    /// Consecutive linearizable reads, behind one read index.
    Reads,
    /// On a follower: consecutive writes and membership changes, sent to the leader together.
    Forwarded,
}

impl Part {
    /// The part at the head of `rest`, and how many requests it takes.
    fn at_head(rest: &[&Item], leading: bool) -> (Part, usize) {
        let reads = rest[0].read().is_some();
        let (part, belongs): (Part, fn(&Item) -> bool) = match (leading, rest[0].admin().is_some()) {
            (true, true) => return (Part::MembershipChange, 1),
            (true, false) if reads => (Part::Reads, |i| i.read().is_some()),
            (true, false) => (Part::Writes, |i| i.write().is_some()),
            (false, _) if reads => (Part::Reads, |i| i.read().is_some()),
            (false, _) => (Part::Forwarded, |i| i.read().is_none()),
        };
        (part, rest.iter().position(|i| !belongs(i)).unwrap_or(rest.len()))
    }
}

/// The request timeout, started afresh for each part of a run (a proposal, a read-index check,
/// a forwarded burst, a membership change): that is when its requests start waiting.
#[derive(Clone, Copy)]
struct PartClock(Duration);

impl PartClock {
    fn deadline(self) -> Instant {
        Instant::now() + self.0
    }
}

/// Answers every empty slot with `reply()`.
fn fill(answers: &mut [Option<Response>], items: &[Item], reply: impl Fn() -> Reply) {
    for (slot, item) in answers.iter_mut().zip(items) {
        if slot.is_none() {
            *slot = Some(item.answer(reply()));
        }
    }
}

fn storage_error(e: &crate::store::StoreError) -> Reply {
    tracing::error!(error = %e, "read failed");
    Reply::error(ErrorCode::Storage, e.to_string())
}
