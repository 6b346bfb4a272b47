//! Executing a client's batch of requests: here, at the leader through Raft, or forwarded to it.
//!
//! Requests are answered in order. Each one either needs the leader (writes, and reads unless
//! the client asked for a local read) or is answered by this node (`PING`, `CLUSTER`, local reads,
//! and requests that failed to parse). Consecutive requests that need the leader form a run,
//! done in parts ([`Part`]):
//!
//! - On the leader, consecutive writes become one proposal (one Raft append, one fsync,
//!   replicated together), answered once applied, with their replication picture. Consecutive
//!   reads share one read-index check, as do reads from other connections that arrive meanwhile
//!   ([`super::reads`]), then read the store. A membership change is a part of its own.
//! - On a follower, consecutive linearizable reads are answered here, behind one read index from
//!   the leader; everything else is forwarded to the leader ([`super::forward`]).
//!
//! Every part ends in an [`Outcome`] per request. Waiting is bounded by the node's request
//! timeout, counted for each part from when it starts. What is certainly not applied is tried
//! again (at whichever node leads by then) until that time is up, and then fails with
//! `NO_QUORUM`. What may have been applied is tried again only if the client numbered it in a
//! session (`Request::once`): the state machine then applies it at most once, whoever proposes
//! it how often. Such a write is answered `OUTCOME_UNKNOWN` only if its time runs out; an
//! unnumbered one at once, and never tried again, so no retry can apply it twice. A run stops at
//! its first part that did not go through, so that nothing behind it is applied before it.
//!
//! Everything here reaches the cluster through [`Cluster`], so these rules are tested in-process
//! by the golden scripts in `testscripts/executor/`.

use super::acks::AckWait;
use super::cluster::{Cluster, Leader, Written};
use super::outcome::{NotApplied, Outcome};
use crate::command::{Admin, Command, Limits, Read, Write};
use crate::protocol::message::{ErrorCode, Reply, Request, Response};
use crate::store::pong;
use std::time::Duration;
use tokio::time::Instant;

/// How long a write waits for `min_acks` when the client gave no timeout.
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// A request and what it parsed into.
pub(super) struct Item {
    pub request: Request,
    command: Result<Command, Reply>,
}

impl Item {
    pub fn parse(request: Request, limits: &Limits) -> Item {
        let command = Command::parse(request.args.clone(), limits).map_err(|e| e.to_reply());
        Item { request, command }
    }

    fn needs_leader(&self) -> bool {
        match &self.command {
            Ok(Command::Write(_) | Command::Admin(_) | Command::Password(_)) => true,
            Ok(Command::Read(_)) => !self.request.local,
            _ => false,
        }
    }

    pub fn write(&self) -> Option<&Write> {
        match &self.command {
            Ok(Command::Write(write)) => Some(write),
            _ => None,
        }
    }

    /// Whether it is a write, or becomes one once its password is hashed.
    fn is_write(&self) -> bool {
        matches!(&self.command, Ok(Command::Write(_) | Command::Password(_)))
    }

    /// Whether it is a write the state machine applies at most once (numbered in a session), so
    /// that it may be proposed again after an unknown outcome.
    fn resendable(&self) -> bool {
        self.is_write() && self.request.once.is_some()
    }

    /// The write to propose: hashes a password first, off the async threads, and wraps it in
    /// its session's number if it has one.
    async fn write_to_propose(&self) -> Option<Write> {
        match &self.command {
            Ok(Command::Write(_)) => self.plain_write_to_propose(),
            Ok(Command::Password(change)) => {
                let change = change.clone();
                let hashed =
                    tokio::task::spawn_blocking(move || change.hashed()).await.expect("hashing never panics");
                Some(self.numbered(hashed))
            }
            _ => None,
        }
    }

    /// For a write that needs no password hashed: the write to propose, wrapped in its
    /// session's number if it has one.
    pub fn plain_write_to_propose(&self) -> Option<Write> {
        self.write().map(|write| self.numbered(write.clone()))
    }

    fn numbered(&self, write: Write) -> Write {
        match self.request.once {
            Some(once) => Write::Once {
                session: once.session,
                seq: once.seq,
                answered_below: once.answered_below,
                write: std::sync::Arc::new(write),
            },
            None => write,
        }
    }

    /// The command, unless it failed to parse.
    pub fn command(&self) -> Option<&Command> {
        self.command.as_ref().ok()
    }

    /// Answers the request with `reply` instead of executing it.
    pub fn refuse(&mut self, reply: Reply) {
        self.command = Err(reply);
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

    pub fn answer(&self, reply: Reply) -> Response {
        Response::new(self.request.id, reply)
    }

    /// The most bytes this request's answer can take: a value for a `GET`, a table for `CLUSTER`,
    /// a short status, count or error for anything else.
    pub fn answer_bound(&self, limits: &Limits) -> usize {
        match &self.command {
            Ok(Command::Read(Read::Get { .. })) => limits.max_value_bytes + SMALL_ANSWER_BYTES,
            // Their keys and values stop at a budget, past which one value may run.
            Ok(Command::Read(Read::MGet { .. } | Read::Scan(_)) | Command::Write(Write::Txn(_))) => {
                crate::store::ANSWER_BYTES
                    + limits.max_key_bytes
                    + limits.max_value_bytes
                    + TABLE_ANSWER_BYTES
            }
            Ok(Command::Cluster) => TABLE_ANSWER_BYTES,
            Ok(Command::Read(Read::Users | Read::Roles)) => ACCOUNTS_ANSWER_BYTES,
            _ => SMALL_ANSWER_BYTES,
        }
    }
}

/// The most an answer that carries no value takes (a status, a count, an error message, a write's
/// replication picture).
const SMALL_ANSWER_BYTES: usize = 1024;
/// The most the `CLUSTER` table takes.
const TABLE_ANSWER_BYTES: usize = 64 * 1024;
/// The most a `USER LIST` or `ROLE LIST` table takes (see `auth::MAX_USERS` and its kin).
const ACCOUNTS_ANSWER_BYTES: usize = 2 * 1024 * 1024;

/// Executes the batches of one client connection.
pub(super) struct Executor<'n, C> {
    cluster: &'n C,
    /// Set when the client is another node forwarding to us: then we never forward or wait for a
    /// leader, we answer `NOT_LEADER` and let that node re-route.
    forwarded_by: Option<u64>,
    limits: Limits,
    /// A read index obtained for the batch being executed, and the leader that confirmed it.
    /// Every request of the batch arrived before it was asked for, so the batch's later reads
    /// may use it too, until a change goes through (a read after a write must see it).
    batch_read_index: Option<(u64, u64)>,
}

impl<'n, C: Cluster> Executor<'n, C> {
    pub fn new(cluster: &'n C, forwarded_by: Option<u64>, limits: Limits) -> Executor<'n, C> {
        Executor { cluster, forwarded_by, limits, batch_read_index: None }
    }

    pub fn cluster(&self) -> &'n C {
        self.cluster
    }

    pub fn forwarded_by(&self) -> Option<u64> {
        self.forwarded_by
    }

    /// Starts a new batch: the requests about to be executed arrived after any read index
    /// obtained so far.
    pub fn new_batch(&mut self) {
        self.batch_read_index = None;
    }

    /// Parses a batch of requests; a request that does not parse is answered with why.
    pub fn parse(&self, batch: Vec<Request>) -> Vec<Item> {
        batch.into_iter().map(|request| Item::parse(request, &self.limits)).collect()
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
            Ok(Command::Cluster) => self.cluster.cluster_table().await,
            Ok(Command::Read(read)) => {
                let (mut replies, revision) = self.cluster.read(&[read]);
                let mut response = item.answer(replies.remove(0));
                response.revision = revision.filter(|_| read.is_of_keys());
                return response;
            }
            Ok(Command::Write(_) | Command::Admin(_) | Command::Password(_)) => {
                unreachable!("changes always go through the leader")
            }
            // A session's business, never sent here by the handler; refused should one come.
            Ok(Command::Auth { .. }) => {
                Reply::error(ErrorCode::BadRequest, "AUTH is answered by the node the client connected to")
            }
        };
        item.answer(reply)
    }

    /// Answers a run of requests that need the leader, retrying those certainly not applied
    /// until the request timeout.
    ///
    /// The timeout runs for each part of the run from when that part starts, and starts again
    /// for what is left whenever a round answers anything, so a request waits about that long
    /// behind its own leader, never for the time its predecessors in a long pipelined batch took.
    async fn through_leader(&mut self, items: &[Item]) -> Vec<Response> {
        let timeout = self.cluster.request_timeout();
        let mut deadline = Instant::now() + timeout;
        let mut answers: Vec<Option<Response>> = items.iter().map(|_| None).collect();
        // Why the outcome of a numbered write is unknown, while it is being tried again.
        let mut unknown: Vec<Option<String>> = items.iter().map(|_| None).collect();
        let mut watch = self.cluster.watch();
        loop {
            let pending: Vec<usize> = (0..items.len()).filter(|&i| answers[i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            let run: Vec<&Item> = pending.iter().map(|&i| &items[i]).collect();
            let outcomes = match (self.cluster.leader(), self.forwarded_by) {
                (Leader::Me, _) => self.execute_run(&run, &Leader::Me, timeout).await,
                (leader @ Leader::Other { .. }, None) => self.execute_run(&run, &leader, timeout).await,
                _ => Vec::new(),
            };
            let mut progressed = false;
            for (&i, outcome) in pending.iter().zip(outcomes) {
                answers[i] = match outcome {
                    // Tried again by the node the client reached (a node it forwarded to reports
                    // back), which the session's number makes safe.
                    Outcome::Unknown(why) if items[i].resendable() && self.forwarded_by.is_none() => {
                        unknown[i] = Some(why);
                        None
                    }
                    outcome => match (outcome.settled(items[i].request.id), &unknown[i]) {
                        // Refused now, but an earlier proposal of it may still be applied.
                        (Some(response), Some(why))
                            if matches!(response.reply, Reply::Error { code: ErrorCode::NoQuorum, .. }) =>
                        {
                            Some(items[i].answer(super::outcome::unknown(why)))
                        }
                        (answer, _) => answer,
                    },
                };
                progressed |= answers[i].is_some();
            }
            if progressed {
                deadline = Instant::now() + timeout;
                continue;
            }
            if let Some(by) = self.forwarded_by {
                let not_leader = not_leader(self.cluster.id(), by);
                fill(&mut answers, items, || not_leader.clone());
                break;
            }
            if Instant::now() >= deadline {
                let message = format!(
                    "no leader with a quorum within {} ms (an election is under way or too many nodes \
                     are down); the command was not applied",
                    timeout.as_millis()
                );
                for ((slot, item), why) in answers.iter_mut().zip(items).zip(&unknown) {
                    if slot.is_none()
                        && let Some(why) = why
                    {
                        *slot = Some(item.answer(super::outcome::unknown(why)));
                    }
                }
                fill(&mut answers, items, || Reply::error(ErrorCode::NoQuorum, message.clone()));
                break;
            }
            self.cluster.leadership_news(&mut watch, deadline).await;
        }
        answers.into_iter().map(|a| a.expect("every slot is filled")).collect()
    }

    /// Executes a run part by part: as the leader, or as a follower of `leader`. Stops at the
    /// first part that did not go through entirely; what it did not reach is not applied.
    async fn execute_run(
        &mut self,
        run: &[&Item],
        leader: &Leader,
        timeout: Duration,
    ) -> Vec<Outcome<Response>> {
        let leading = *leader == Leader::Me;
        let mut outcomes = Vec::with_capacity(run.len());
        while outcomes.len() < run.len() {
            let rest = &run[outcomes.len()..];
            let deadline = Instant::now() + timeout;
            let (part, len) = Part::at_head(rest, leading);
            let head = &rest[..len];
            if !matches!(part, Part::Reads) {
                self.batch_read_index = None;
            }
            let done = match (part, leader) {
                (Part::MembershipChange, _) => {
                    let admin = head[0].admin().expect("a membership part holds one change");
                    let outcome = self.cluster.change_membership(admin, deadline).await;
                    vec![outcome.map(|reply| head[0].answer(reply))]
                }
                (Part::Writes, _) => {
                    let mut writes = Vec::with_capacity(head.len());
                    for item in head {
                        writes.extend(item.write_to_propose().await);
                    }
                    let proposed = self.cluster.propose(writes, ack_wait(head, timeout), deadline).await;
                    written_answers(self.cluster.id(), head, proposed.await)
                }
                (Part::Reads, _) => self.read(head, leader, deadline).await,
                (Part::Forwarded, Leader::Other { id, addr }) => {
                    let requests: Vec<&Request> = head.iter().map(|i| &i.request).collect();
                    self.cluster.forward(*id, addr, &requests, deadline).await
                }
                (Part::Forwarded, _) => unreachable!("only a follower of a known leader forwards"),
            };
            let complete = !done.iter().any(Outcome::is_not_applied);
            outcomes.extend(done);
            if !complete {
                break;
            }
        }
        // Parts never started were not applied.
        outcomes.resize(run.len(), Outcome::NotApplied(NotApplied::NotLeader));
        outcomes
    }

    /// Answers consecutive reads from this node's state once it has applied through a read index
    /// obtained after they arrived (this node's own as the leader, or the leader's), or not at
    /// all.
    async fn read(&mut self, run: &[&Item], leader: &Leader, deadline: Instant) -> Vec<Outcome<Response>> {
        let confirmed_by = match leader {
            Leader::Other { id, .. } => *id,
            _ => self.cluster.id(),
        };
        let index = match self.batch_read_index {
            Some((by, index)) if by == confirmed_by => Some(index),
            _ => self.cluster.read_index(leader, deadline).await,
        };
        let ready = match index {
            Some(index) => self.cluster.applied_through(index, deadline).await,
            None => false,
        };
        let Some(index) = index.filter(|_| ready) else {
            return run.iter().map(|_| Outcome::NotApplied(NotApplied::NoReadIndex)).collect();
        };
        self.batch_read_index = Some((confirmed_by, index));
        let reads: Vec<&Read> = run.iter().filter_map(|i| i.read()).collect();
        let (replies, revision) = self.cluster.read(&reads);
        run.iter()
            .zip(replies)
            .map(|(item, reply)| {
                let mut response = item.answer(reply);
                response.leader = Some(confirmed_by);
                response.revision = revision.filter(|_| item.read().is_some_and(Read::is_of_keys));
                Outcome::Done(response)
            })
            .collect()
    }
}

/// How long the answers to `run`'s writes wait for acknowledgements: as long as the most
/// demanding request asks, and never past `bound` (the request timeout), whatever a client asks.
pub(super) fn ack_wait(run: &[&Item], bound: Duration) -> AckWait {
    let min_acks = run.iter().filter_map(|i| i.request.min_acks).max();
    let ack_timeout = run
        .iter()
        .filter_map(|i| i.request.ack_timeout_ms)
        .max()
        .map_or(DEFAULT_ACK_TIMEOUT, Duration::from_millis)
        .min(bound);
    match min_acks {
        Some(n) => AckWait::AtLeast(n, ack_timeout),
        None if run.iter().any(|i| i.request.wait_acks) => AckWait::Healthy,
        None => AckWait::No,
    }
}

/// The answers to `run`'s writes, proposed together by the leader `me`, from their outcomes.
///
/// A write rejected before one that was applied cannot be retried without reordering the two,
/// so it fails as not applied (`NO_QUORUM`) instead of waiting to be retried.
pub(super) fn written_answers(
    me: u64,
    run: &[&Item],
    outcomes: Vec<Outcome<Written>>,
) -> Vec<Outcome<Response>> {
    let last_done = outcomes.iter().rposition(|o| !o.is_not_applied());
    run.iter()
        .zip(outcomes)
        .enumerate()
        .map(|(n, (item, outcome))| match outcome {
            Outcome::Done(Written { reply, revision, replication }) => {
                let mut response = item.answer(reply);
                response.leader = Some(me);
                response.replication = replication;
                response.revision = Some(revision);
                Outcome::Done(response)
            }
            Outcome::NotApplied(_) if last_done.is_some_and(|last| n < last) => {
                let message = "rejected while leadership was changing; the write was not applied";
                Outcome::Done(item.answer(Reply::error(ErrorCode::NoQuorum, message)))
            }
            Outcome::NotApplied(why) => Outcome::NotApplied(why),
            Outcome::Unknown(why) => Outcome::Unknown(why),
        })
        .collect()
}

/// The answer to a node forwarding to us when we do not lead: it retries elsewhere.
pub(super) fn not_leader(me: u64, by: u64) -> Reply {
    let message = format!("node {me} is not the leader; node {by} will retry elsewhere");
    Reply::error(ErrorCode::NotLeader, message)
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
            (true, false) => (Part::Writes, |i| i.is_write()),
            (false, _) if reads => (Part::Reads, |i| i.read().is_some()),
            (false, _) => (Part::Forwarded, |i| i.read().is_none()),
        };
        (part, rest.iter().position(|i| !belongs(i)).unwrap_or(rest.len()))
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

#[cfg(test)]
mod tests;
