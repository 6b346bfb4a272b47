//! Forwarding a client's writes and membership changes from a follower to the leader, so that a
//! client may talk to any node: both halves, the follower's link and the leader's side of it.
//! (Linearizable reads are not forwarded: a follower answers them behind a read index, see
//! [`super::reads`].)
//!
//! ## The follower's half: one link
//!
//! A follower keeps one connection to the leader for all of its clients, opened on first use:
//! a *link*. Whatever its clients' connections hand it while it is writing goes out in the next
//! write, so the leader reads many clients' writes at once and proposes them together, and its
//! answers come back the same way. (One connection per client made every forwarded write cost
//! the leader a read, a proposal and a write of its own, and the follower two more syscalls.)
//! The link numbers the requests it writes and matches each answer to its request by that
//! number, so the leader may answer one client's batch before another's.
//!
//! A client's own requests keep their order: its connection hands the link one batch at a time
//! and waits for the answers before the next. The leader knows the link for a forwarding one
//! from its hello and never forwards again; if it is no longer the leader it answers
//! `NOT_LEADER`, which means "not applied": only those requests are retried, at whichever node
//! leads next.
//!
//! When the link fails, each request's [`Outcome`] depends on how far it got:
//! - not written to the link yet (no connection, or queued behind the failure): not applied;
//! - written, and unanswered: unknown, since it may have been applied, so it is never re-sent
//!   (that could apply it twice);
//! - unless the leader said it is going away (`SHUTTING_DOWN` notice): then nothing it left
//!   unanswered was applied.
//!
//! A link that fails is replaced by a new connection on the next use. So is one whose answers
//! stop coming for longer than the leader's own request timeout allows. A leader that hung up
//! while the link was idle is noticed before the next batch is written ([`hung_up`]), so that
//! batch is retried rather than reported unknown.
//!
//! ## The leader's half: proposing ahead
//!
//! A link carries many clients' writes, and running its batches one at a time would make each
//! wait for the commit of the one before. So on a forwarding connection the leader proposes a
//! batch of nothing but writes as soon as it has read it, and goes on reading the next while
//! it commits ([`Ahead`], up to [`MAX_AHEAD`] batches). Each batch is answered as soon as its
//! outcomes are known, and requests that wait for acknowledgements differently (`min_acks`,
//! `ack_timeout_ms`, `wait_acks`) are proposed apart, so one client's wait for acknowledgements
//! delays no other client's answers. Anything else (a read, a membership change, or any batch
//! while this node does not lead or hands its leadership over) waits until what was proposed
//! ahead is answered, and then runs the usual way.

use super::cluster::Cluster;
use super::executor::{self, Executor, Item};
use super::handler::Answers;
use super::outcome::{NotApplied, Outcome};
use crate::client::{Client, ClientError, NodeInfo, RequestSender, ResponseReceiver, expect_id};
use crate::connection::ReadError;
use crate::peer::Dialer;
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::message::{ErrorCode, Hello, Reply, Request, Response};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long forwarding waits past the request timeout for the leader's own timeout answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);
/// The longest a connection attempt to the leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The most requests a link writes before it flushes.
const MAX_WRITE: usize = 1024;
/// The most batches a leader proposes ahead on one forwarding connection before it stops
/// reading until the oldest is answered.
pub(super) const MAX_AHEAD: usize = 64;

/// A follower's way to the leader, shared by all of its client connections.
pub(super) struct Forwarding {
    dialer: Dialer,
    link: tokio::sync::Mutex<Option<Link>>,
}

impl Forwarding {
    pub fn new(dialer: Dialer) -> Forwarding {
        Forwarding { dialer, link: tokio::sync::Mutex::new(None) }
    }

    /// Forwards `requests` in order to node `leader` at `addr`, and returns the outcome of each.
    /// If `replaced` completes first (another leader took over), the link is failed at once:
    /// what was sent is unknown, what was not is left to retry at the new leader.
    pub async fn forward(
        &self,
        leader: u64,
        addr: &str,
        requests: &[&Request],
        deadline: Instant,
        replaced: impl Future<Output = ()>,
    ) -> Vec<Outcome<Response>> {
        let Some(link) = self.link_to(leader, addr, deadline).await else {
            return not_sent_outcomes(requests.len());
        };
        let (answer, mut answers) = oneshot::channel();
        let job = Job { requests: requests.iter().map(|r| (*r).clone()).collect(), answer };
        if link.jobs.send(job).is_err() {
            // The link has stopped taking jobs: this one was never sent.
            return not_sent_outcomes(requests.len());
        }
        let waited = tokio::select! {
            waited = tokio::time::timeout_at(deadline + ANSWER_MARGIN, &mut answers) => {
                // The leader answers within its request timeout; a link this late is broken.
                waited.map_err(|_| "no answer in time")
            }
            () = replaced => Err("another leader took over"),
        };
        match waited {
            Ok(Ok(answers)) => answers,
            // The link ended without a word for this job; it may have been sent.
            Ok(Err(_)) => unknown_for(requests.len(), leader, "the link to the leader ended"),
            Err(why) => {
                link.shared.fail(leader, why, false);
                // Failing the link answered the job: its answers so far, the rest unknown.
                answers.try_recv().unwrap_or_else(|_| unknown_for(requests.len(), leader, why))
            }
        }
    }

    /// The link to `leader`, connecting one if there is none or the current one failed.
    async fn link_to(&self, leader: u64, addr: &str, deadline: Instant) -> Option<Link> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref().filter(|l| l.leader == leader && !l.shared.stop.is_cancelled()) {
            return Some(link.clone());
        }
        // Dropping the old link lets it finish what it carries and close.
        *current = None;
        let timeout = deadline.saturating_duration_since(Instant::now()).min(CONNECT_TIMEOUT);
        let client = match connect(&self.dialer, addr, leader, timeout).await {
            Ok((client, info)) if info.node_id == leader => client,
            Ok((_, info)) => {
                tracing::warn!(
                    leader,
                    addr,
                    found = info.node_id,
                    "the leader's address answers as another node"
                );
                return None;
            }
            Err(e) => {
                tracing::debug!(leader, addr, error = %e, "cannot reach the leader");
                return None;
            }
        };
        let (sender, receiver) = client.split();
        let (jobs, queued) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new());
        tokio::spawn(send_jobs(sender, queued, shared.clone(), leader));
        tokio::spawn(receive_answers(receiver, shared.clone(), leader));
        Some(current.insert(Link { leader, jobs, shared }).clone())
    }
}

/// Connects to `leader` at `addr` on behalf of this node, to forward its clients' requests: the
/// hello says so, and the leader then never forwards them again.
async fn connect(
    dialer: &Dialer,
    addr: &str,
    leader: u64,
    timeout: Duration,
) -> Result<(Client, NodeInfo), ClientError> {
    let me = dialer.me;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        client: format!("node {me}"),
        peer: None,
        forwarded_by: Some(me),
        cluster: dialer.cluster(),
    };
    Client::connect_with(addr, timeout, hello, dialer.member(addr, leader)).await
}

/// One connection to the leader, shared by the follower's clients.
#[derive(Clone)]
struct Link {
    leader: u64,
    /// To the task that writes; the link retires when every sender is gone.
    jobs: mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
}

/// One client connection's batch, and where its outcomes go.
struct Job {
    requests: Vec<Request>,
    answer: oneshot::Sender<Vec<Outcome<Response>>>,
}

/// What the writing and the reading task share.
struct Shared {
    state: Mutex<State>,
    /// Cancelled when the link fails, or has retired and has nothing left to answer.
    stop: CancellationToken,
}

struct State {
    /// Jobs written (or being written), oldest first.
    sent: VecDeque<Sent>,
    /// The id the leader will answer the next request written with.
    next_id: u64,
    /// No job will be added: the link has retired or failed.
    closed: bool,
}

/// A job on the wire.
struct Sent {
    /// The link's id for the job's first request; the others follow in order.
    first_id: u64,
    /// The client's ids, which its answers must carry.
    client_ids: Vec<u64>,
    /// The outcomes so far; `answered` says which are the leader's answers.
    outcomes: Vec<Outcome<Response>>,
    answered: Vec<bool>,
    received: usize,
    answer: oneshot::Sender<Vec<Outcome<Response>>>,
}

impl Shared {
    fn new() -> Shared {
        // A new connection numbers its requests from 1 (see `RequestSender`).
        let state = State { sent: VecDeque::new(), next_id: 1, closed: false };
        Shared { state: Mutex::new(state), stop: CancellationToken::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends the link: every written job gets the answers it has, and for the rest "not applied"
    /// when the leader said it is going away (`not_applied`), else "unknown".
    fn fail(&self, leader: u64, why: &str, not_applied: bool) {
        let mut state = self.lock();
        if !state.closed || !state.sent.is_empty() {
            tracing::warn!(leader, error = why, "the link to the leader failed");
        }
        state.closed = true;
        self.stop.cancel();
        for sent in state.sent.drain(..) {
            let Sent { mut outcomes, answered, answer, .. } = sent;
            for (outcome, _) in outcomes.iter_mut().zip(answered).filter(|(_, answered)| !answered) {
                *outcome = if not_applied {
                    Outcome::NotApplied(NotApplied::Stopping)
                } else {
                    Outcome::Unknown(lost(leader, why))
                };
            }
            let _ = answer.send(outcomes);
        }
    }

    /// Hands an answer to the job it belongs to. `Err` says why the link must end, and whether
    /// what is unanswered is certainly not applied.
    fn deliver(&self, response: Response) -> Result<(), (String, bool)> {
        if response.id == 0 {
            // The leader speaks for the whole connection: it is going away, or saw garbage.
            let refusal = expect_id(response, u64::MAX).err();
            return Err(refusal.map_or(("an answer to request 0".to_string(), false), link_ended));
        }
        let mut state = self.lock();
        let id = response.id;
        // The leader answers each batch in order, but batches as they complete: one waiting for
        // acknowledgements holds up no other.
        let in_flight = |s: &Sent| (s.first_id..s.first_id + s.outcomes.len() as u64).contains(&id);
        let Some(at) = state.sent.iter().position(in_flight) else {
            return Err((format!("an answer to request {id}, which is not in flight"), false));
        };
        let sent = &mut state.sent[at];
        let slot = (id - sent.first_id) as usize;
        if std::mem::replace(&mut sent.answered[slot], true) {
            return Err((format!("a second answer to request {id}"), false));
        }
        sent.received += 1;
        sent.outcomes[slot] = match response.reply {
            Reply::Error { code: ErrorCode::NotLeader, .. } => Outcome::NotApplied(NotApplied::NotLeader),
            _ => Outcome::Done(Response { id: sent.client_ids[slot], ..response }),
        };
        if sent.received == sent.outcomes.len() {
            let done = state.sent.remove(at).expect("the job just answered");
            let _ = done.answer.send(done.outcomes);
            if state.closed && state.sent.is_empty() {
                self.stop.cancel();
            }
        }
        Ok(())
    }
}

/// Writes the jobs handed to the link, each batch of them in one flush, until the link fails or
/// every handle to it is gone. Jobs it never wrote are not applied.
async fn send_jobs(
    mut sender: RequestSender,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    shared: Arc<Shared>,
    leader: u64,
) {
    loop {
        let job = tokio::select! {
            () = shared.stop.cancelled() => break,
            job = jobs.recv() => job,
        };
        let Some(job) = job else {
            // Retired: the reader ends once the last answer is in.
            let mut state = shared.lock();
            state.closed = true;
            if state.sent.is_empty() {
                shared.stop.cancel();
            }
            return;
        };
        let mut batch = vec![job];
        let mut count = batch[0].requests.len();
        while count < MAX_WRITE {
            let Ok(job) = jobs.try_recv() else { break };
            count += job.requests.len();
            batch.push(job);
        }
        let mut requests = Vec::with_capacity(count);
        {
            // Registered before anything is written, so that no answer can arrive first.
            let mut state = shared.lock();
            if state.closed {
                not_sent(batch);
                break;
            }
            // A leader that hung up (or said it is going away) while nothing was in flight would
            // take the batch and run none of it, and the reader may not have noticed yet: then
            // the batch is certainly not applied, and is retried elsewhere rather than lost.
            if state.sent.is_empty() && hung_up(sender.socket()) {
                drop(state);
                not_sent(batch);
                shared.fail(leader, "the leader closed the link while it was idle", true);
                break;
            }
            for job in batch {
                let first_id = state.next_id;
                state.next_id += job.requests.len() as u64;
                let client_ids = job.requests.iter().map(|r| r.id).collect();
                let outcomes = not_sent_outcomes(job.requests.len());
                let answered = vec![false; job.requests.len()];
                state.sent.push_back(Sent {
                    first_id,
                    client_ids,
                    outcomes,
                    answered,
                    received: 0,
                    answer: job.answer,
                });
                requests.extend(job.requests);
            }
        }
        let written = async {
            for request in requests {
                sender.send_request(request).await?;
            }
            sender.flush().await
        };
        if let Err(e) = written.await {
            shared.fail(leader, &e.to_string(), false);
            break;
        }
    }
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        not_sent(vec![job]);
    }
}

/// Reads the leader's answers and hands each to its job, until the link fails or has retired
/// with nothing left to answer.
async fn receive_answers(mut receiver: ResponseReceiver, shared: Arc<Shared>, leader: u64) {
    loop {
        let response = tokio::select! {
            () = shared.stop.cancelled() => return,
            response = receiver.next() => response,
        };
        let outcome = response.map_err(link_ended).and_then(|response| shared.deliver(response));
        if let Err((why, not_applied)) = outcome {
            shared.fail(leader, &why, not_applied);
            return;
        }
    }
}

/// On a request/response connection with nothing outstanding, whether the other side has hung
/// up or sent something unasked (a going-away notice): then nothing written now would be
/// executed. Asks the socket itself, without reading (`MSG_PEEK`), so it sees a hang-up the
/// reading task has not been woken for yet.
fn hung_up(socket: std::os::fd::RawFd) -> bool {
    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, recv};
    let mut byte = [0u8; 1];
    match recv(socket, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        // Nothing waiting: the connection is open and quiet.
        Err(Errno::EAGAIN | Errno::EINTR) => false,
        // End of stream, an unasked message, or a reset.
        Ok(_) | Err(_) => true,
    }
}

/// Why the link ends, and whether what it left unanswered is certainly not applied: only when the
/// leader said it is going away.
fn link_ended(e: ClientError) -> (String, bool) {
    match e {
        ClientError::GoingAway(message) => (message, true),
        e => (e.to_string(), false),
    }
}

/// Answers jobs that were never written: not applied.
fn not_sent(jobs: Vec<Job>) {
    for job in jobs {
        let _ = job.answer.send(not_sent_outcomes(job.requests.len()));
    }
}

fn not_sent_outcomes(count: usize) -> Vec<Outcome<Response>> {
    vec![Outcome::NotApplied(NotApplied::Unreachable); count]
}

fn lost(leader: u64, why: &str) -> String {
    format!("the connection to leader {leader} failed ({why}) after the write was sent")
}

fn unknown_for(count: usize, leader: u64, why: &str) -> Vec<Outcome<Response>> {
    vec![Outcome::Unknown(lost(leader, why)); count]
}

/// The answers to a batch proposed ahead, once they are known.
type AnswersAhead<'n> = Pin<Box<dyn Future<Output = Vec<Response>> + Send + 'n>>;

/// The leader's side of a forwarding connection: the batches proposed ahead, answered as each
/// completes.
pub(super) struct Ahead<'n> {
    batches: FuturesUnordered<AnswersAhead<'n>>,
}

impl<'n> Ahead<'n> {
    pub fn new() -> Ahead<'n> {
        Ahead { batches: FuturesUnordered::new() }
    }

    /// Whether another batch may be proposed ahead; when not, the connection stops reading.
    pub fn has_room(&self) -> bool {
        self.batches.len() < MAX_AHEAD
    }

    /// The answers of the oldest batch, once known; pending forever while there is none.
    pub async fn next(&mut self) -> Vec<Response> {
        match self.batches.next().await {
            Some(answers) => answers,
            None => std::future::pending().await,
        }
    }

    /// On a forwarding connection to this leader, proposes a batch of nothing but writes at once
    /// and keeps the future of its answers. Gives the batch back when it must run the usual way,
    /// after everything proposed ahead is answered: it holds anything but writes, the client is
    /// not a forwarding node, this node does not lead, or a leadership handover is under way.
    ///
    /// `held` (what the batch holds of the node's capacity) is kept until its answers are known.
    pub async fn propose<C: Cluster, H: Send + Sync + 'n>(
        &mut self,
        executor: &Executor<'n, C>,
        items: Vec<Item>,
        held: H,
    ) -> Result<(), Vec<Item>> {
        let cluster = executor.cluster();
        let Some(by) = executor.forwarded_by() else { return Err(items) };
        if !items.iter().all(|i| i.write().is_some()) {
            return Err(items);
        }
        let timeout = cluster.request_timeout();
        let deadline = Instant::now() + timeout;
        // Requests that wait for acknowledgements differently are proposed apart, so that one
        // client's wait for its acknowledgements holds up no other client's answers.
        let demand = |i: &Item| (i.request.min_acks, i.request.ack_timeout_ms, i.request.wait_acks);
        let mut groups: Vec<Vec<Item>> = Vec::new();
        for item in items {
            match groups.iter_mut().find(|g| demand(&g[0]) == demand(&item)) {
                Some(group) => group.push(item),
                None => groups.push(vec![item]),
            }
        }
        let me = cluster.id();
        let held = Arc::new(held);
        let mut proposed_any = false;
        let mut groups = groups.into_iter();
        while let Some(group) = groups.next() {
            let writes = group.iter().filter_map(Item::plain_write_to_propose).collect();
            let run: Vec<&Item> = group.iter().collect();
            let acks = executor::ack_wait(&run, timeout);
            let Some(proposed) = cluster.propose_now(writes, acks, deadline).await else {
                if !proposed_any {
                    // Nothing proposed: the batch runs the usual way. (Its groups' order differs
                    // from the batch's only between different clients' requests.)
                    return Err(group.into_iter().chain(groups.flatten()).collect());
                }
                // Leadership went while proposing: the rest was not proposed, for the follower
                // to retry at the next leader.
                let not_leader = executor::not_leader(me, by);
                let answers = group.iter().map(|i| i.answer(not_leader.clone())).collect();
                self.batches.push(Box::pin(std::future::ready(answers)));
                continue;
            };
            proposed_any = true;
            let held = held.clone();
            self.batches.push(Box::pin(async move {
                let run: Vec<&Item> = group.iter().collect();
                let outcomes = executor::written_answers(me, &run, proposed.await);
                drop(held);
                let not_leader = executor::not_leader(me, by);
                outcomes
                    .into_iter()
                    .zip(&group)
                    .map(|(outcome, item)| {
                        outcome.settled(item.request.id).unwrap_or_else(|| item.answer(not_leader.clone()))
                    })
                    .collect()
            }));
        }
        Ok(())
    }

    /// Sends `answers`, and those of any later batch that are known already, in one flush.
    pub async fn send(&mut self, answers: Vec<Response>, writer: &mut Answers<'_>) -> Result<(), ReadError> {
        let mut answers = Some(answers);
        while let Some(batch) = answers.take().or_else(|| self.batches.next().now_or_never().flatten()) {
            for response in &batch {
                writer.feed(response).await?;
            }
        }
        writer.flush().await
    }

    /// Waits for and sends the answers of every batch proposed ahead.
    pub async fn answer_all(&mut self, writer: &mut Answers<'_>) -> Result<(), ReadError> {
        while let Some(answers) = self.batches.next().await {
            self.send(answers, writer).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{self, FrameReader, FrameWriter};
    use crate::protocol::PROTOCOL_VERSION;
    use crate::protocol::frame::DEFAULT_MAX_FRAME_BYTES;
    use crate::protocol::message::{Hello, HelloReply};
    use serde_bytes::ByteBuf;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    /// Bounds every wait, so that a hang fails the test instead.
    const BOUND: Duration = Duration::from_secs(30);

    fn request(id: u64, word: &str) -> Request {
        let args = vec![ByteBuf::from(word.as_bytes().to_vec())];
        Request::new(id, args)
    }

    fn value(word: &str) -> Reply {
        Reply::Bulk { value: ByteBuf::from(word.as_bytes().to_vec()) }
    }

    /// The word a request carries.
    fn word(request: &Request) -> String {
        String::from_utf8_lossy(&request.args[0]).into_owned()
    }

    /// A stand-in leader (node 2) on a free loopback port: it accepts connections one after
    /// another, checks that each is node 1 forwarding, and hands it to `serve` with its number
    /// (0 for the first). Returns the address and a count of the connections accepted.
    async fn leader<F, Fut>(serve: F) -> (String, Arc<AtomicUsize>)
    where
        F: Fn(usize, FrameReader, FrameWriter) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let number = count.fetch_add(1, Ordering::SeqCst);
                let (mut reader, mut writer) = connection::split(stream, DEFAULT_MAX_FRAME_BYTES);
                let hello: Hello = reader.read().await.unwrap().unwrap();
                assert_eq!(hello.forwarded_by, Some(1));
                let welcome = HelloReply::Welcome {
                    version: PROTOCOL_VERSION,
                    node_id: 2,
                    max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u64,
                };
                writer.send(&welcome).await.unwrap();
                tokio::spawn(serve(number, reader, writer));
            }
        });
        (addr, accepted)
    }

    /// Answers every request with its own word, except `not-leader`, answered `NOT_LEADER`.
    async fn answer_all(mut reader: FrameReader, mut writer: FrameWriter) {
        while let Ok(Some(request)) = reader.read::<Request>().await {
            let reply = match word(&request).as_str() {
                "not-leader" => Reply::error(ErrorCode::NotLeader, "elsewhere"),
                word => value(word),
            };
            if writer.send(&Response::new(request.id, reply)).await.is_err() {
                return;
            }
        }
    }

    /// Forwards `requests` to node 2 at `addr`; each answer as its client gets it, or `None`
    /// when it was not applied and is left to retry.
    async fn forward(forwarding: &Forwarding, addr: &str, requests: &[Request]) -> Vec<Option<Response>> {
        let refs: Vec<&Request> = requests.iter().collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        let forwarded = forwarding.forward(2, addr, &refs, deadline, std::future::pending());
        let outcomes = tokio::time::timeout(BOUND, forwarded).await.expect("in time");
        outcomes.into_iter().zip(requests).map(|(outcome, request)| outcome.settled(request.id)).collect()
    }

    fn replies(answers: Vec<Option<Response>>) -> Vec<Option<(u64, Reply)>> {
        answers.into_iter().map(|a| a.map(|r| (r.id, r.reply))).collect()
    }

    fn code(answer: &Option<Response>) -> Option<ErrorCode> {
        match answer {
            Some(Response { reply: Reply::Error { code, .. }, .. }) => Some(*code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn many_clients_share_one_connection_and_each_gets_its_own_answers() {
        let (addr, accepted) = leader(|_, reader, writer| answer_all(reader, writer)).await;
        let forwarding = Forwarding::new(Dialer::new(1, None));
        let clients = (0..20u64).map(|client| {
            let (forwarding, addr) = (&forwarding, &addr);
            async move {
                // Every client numbers its requests from 1, as real clients do.
                let words: Vec<String> = (0..3).map(|i| format!("c{client}-{i}")).collect();
                let requests: Vec<Request> =
                    words.iter().enumerate().map(|(i, w)| request(i as u64 + 1, w)).collect();
                let got = replies(forward(forwarding, addr, &requests).await);
                let expected: Vec<_> =
                    words.iter().enumerate().map(|(i, w)| Some((i as u64 + 1, value(w)))).collect();
                assert_eq!(got, expected);
            }
        });
        futures::future::join_all(clients).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection carried every client");
    }

    #[tokio::test]
    async fn a_not_leader_answer_leaves_only_that_request_to_retry() {
        let (addr, _) = leader(|_, reader, writer| answer_all(reader, writer)).await;
        let forwarding = Forwarding::new(Dialer::new(1, None));
        let requests = [request(7, "a"), request(8, "not-leader"), request(9, "b")];
        let got = replies(forward(&forwarding, &addr, &requests).await);
        assert_eq!(got, vec![Some((7, value("a"))), None, Some((9, value("b")))]);
    }

    /// The first connection answers one of two requests and breaks: the other may have been
    /// applied. The next forward connects again.
    #[tokio::test]
    async fn a_link_lost_after_sending_answers_unknown_and_the_next_forward_reconnects() {
        let (addr, accepted) = leader(|number, mut reader, mut writer| async move {
            if number > 0 {
                return answer_all(reader, writer).await;
            }
            let first: Request = reader.read().await.unwrap().unwrap();
            let _second: Request = reader.read().await.unwrap().unwrap();
            writer.send(&Response::new(first.id, value(&word(&first)))).await.unwrap();
        })
        .await;
        let forwarding = Forwarding::new(Dialer::new(1, None));
        let got = forward(&forwarding, &addr, &[request(1, "a"), request(2, "b")]).await;
        assert_eq!(got[0].as_ref().map(|r| (r.id, r.reply.clone())), Some((1, value("a"))));
        assert_eq!(code(&got[1]), Some(ErrorCode::OutcomeUnknown));
        assert_eq!(got[1].as_ref().unwrap().id, 2);
        let again = replies(forward(&forwarding, &addr, &[request(3, "c")]).await);
        assert_eq!(again, vec![Some((3, value("c")))]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A leader that says it is going away applied nothing it left unanswered: retry all of it.
    #[tokio::test]
    async fn a_going_away_notice_leaves_the_unanswered_requests_to_retry() {
        let (addr, _) = leader(|_, mut reader, mut writer| async move {
            let first: Request = reader.read().await.unwrap().unwrap();
            let _second: Request = reader.read().await.unwrap().unwrap();
            writer.send(&Response::new(first.id, value(&word(&first)))).await.unwrap();
            let notice = Reply::error(ErrorCode::ShuttingDown, "node 2 is shutting down");
            writer.send(&Response::new(0, notice)).await.unwrap();
        })
        .await;
        let forwarding = Forwarding::new(Dialer::new(1, None));
        let got = replies(forward(&forwarding, &addr, &[request(1, "a"), request(2, "b")]).await);
        assert_eq!(got, vec![Some((1, value("a"))), None]);
    }

    /// The leader hangs up while the link is idle, and the next batch reaches the link's writer
    /// before its reader has been woken for the hang-up: the batch is not sent, so it is left to
    /// retry, not reported unknown. The forward after it connects again.
    #[tokio::test]
    async fn a_batch_for_a_leader_that_hung_up_while_the_link_was_idle_is_left_to_retry() {
        // The stand-in leader runs on a runtime of its own, so that this test can wait for the
        // hang-up by blocking its own (single) thread: then nothing here, the link's reader
        // included, runs between the hang-up and the next forward.
        let (hung_up, hang_up_seen) = std::sync::mpsc::channel();
        let hang_up = Arc::new(tokio::sync::Notify::new());
        let told = hang_up.clone();
        let other = tokio::runtime::Runtime::new().unwrap();
        let started = other.spawn(leader(move |number, mut reader, mut writer| {
            let (hung_up, told) = (hung_up.clone(), told.clone());
            async move {
                if number > 0 {
                    return answer_all(reader, writer).await;
                }
                let first: Request = reader.read().await.unwrap().unwrap();
                writer.send(&Response::new(first.id, value(&word(&first)))).await.unwrap();
                told.notified().await;
                drop((reader, writer));
                hung_up.send(()).unwrap();
            }
        }));
        let (addr, accepted) = tokio::time::timeout(BOUND, started).await.unwrap().unwrap();
        let forwarding = Forwarding::new(Dialer::new(1, None));
        let first = replies(forward(&forwarding, &addr, &[request(1, "a")]).await);
        assert_eq!(first, vec![Some((1, value("a")))]);
        // The link is idle now, its reader waiting for the socket to become readable.
        hang_up.notify_one();
        hang_up_seen.recv_timeout(BOUND).expect("the leader hangs up");
        assert_eq!(replies(forward(&forwarding, &addr, &[request(2, "b")]).await), vec![None]);
        let again = replies(forward(&forwarding, &addr, &[request(3, "c")]).await);
        assert_eq!(again, vec![Some((3, value("c")))]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        other.shutdown_background();
    }

    /// The leader may answer one client's batch before another's: the link matches answers to
    /// requests by their numbers, not their order.
    #[tokio::test]
    async fn answers_out_of_order_reach_their_own_clients() {
        let (addr, _) = leader(|_, mut reader, mut writer| async move {
            let mut requests = Vec::new();
            while requests.len() < 3 {
                requests.push(reader.read::<Request>().await.unwrap().unwrap());
            }
            // The last first, then the others.
            for request in [&requests[2], &requests[0], &requests[1]] {
                writer.send(&Response::new(request.id, value(&word(request)))).await.unwrap();
            }
            while let Ok(Some(_)) = reader.read::<Request>().await {}
        })
        .await;
        let forwarding = Forwarding::new(Dialer::new(1, None));
        let (a, b) = ([request(1, "a1"), request(2, "a2")], [request(1, "b1")]);
        let (first, second) = tokio::join!(forward(&forwarding, &addr, &a), async {
            // Written after the first client's batch.
            tokio::time::sleep(Duration::from_millis(50)).await;
            forward(&forwarding, &addr, &b).await
        });
        assert_eq!(replies(first), vec![Some((1, value("a1"))), Some((2, value("a2")))]);
        assert_eq!(replies(second), vec![Some((1, value("b1")))]);
    }

    /// A leader that takes requests and never answers (cut off, or stopped) while another one
    /// is elected: the link fails as soon as the replacement is known, not at the timeout. What
    /// was sent may have been applied.
    #[tokio::test]
    async fn a_link_to_a_replaced_leader_is_failed_at_once() {
        let (addr, _) = leader(|_, mut reader, writer| async move {
            let _silent = writer;
            while let Ok(Some(_)) = reader.read::<Request>().await {}
        })
        .await;
        let forwarding = Forwarding::new(Dialer::new(1, None));
        let requests = [request(1, "a")];
        let refs: Vec<&Request> = requests.iter().collect();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        let replaced = tokio::time::sleep(Duration::from_millis(100));
        let outcomes = tokio::time::timeout(BOUND, forwarding.forward(2, &addr, &refs, deadline, replaced))
            .await
            .expect("in time");
        assert!(started.elapsed() < Duration::from_secs(5), "failed at once: {:?}", started.elapsed());
        assert!(matches!(&outcomes[..], [Outcome::Unknown(why)] if why.contains("another leader took over")));
    }

    #[tokio::test]
    async fn nothing_is_applied_when_the_leader_cannot_be_reached() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let forwarding = Forwarding::new(Dialer::new(1, None));
        assert_eq!(replies(forward(&forwarding, &addr, &[request(1, "a")]).await), vec![None]);
    }
}
