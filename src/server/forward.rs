//! Forwarding a client's writes and membership changes from a follower to the leader, so that a
//! client may talk to any node. (Linearizable reads are not forwarded: a follower answers them
//! behind a read index, see [`super::reads`].)
//!
//! A follower keeps one connection to the leader for all of its clients, opened on first use:
//! a *link*. Whatever its clients' connections hand it while it is writing goes out in the next
//! write, so the leader reads many clients' writes at once and proposes them together, and its
//! answers come back the same way. (One connection per client made every forwarded write cost
//! the leader a read, a proposal and a write of its own, and the follower two more syscalls: a
//! third more CPU per write than at the leader.) The leader keeps proposing a link's batches
//! while earlier ones commit ([`super::executor::Executor::propose_ahead`]), and answers in the
//! order the requests came, which is how the link matches answers to requests.
//!
//! A client's own requests keep their order: its connection hands the link one batch at a time
//! and waits for the answers before the next. The leader knows the link for a forwarding one
//! from its hello and never forwards again; if it is no longer the leader it answers
//! `NOT_LEADER`, which means "not applied": only those requests are retried, at whichever node
//! leads next.
//!
//! When the link fails, what a request's client is told depends on how far it got:
//! - not written to the link yet (no connection, or queued behind the failure): not applied,
//!   retried;
//! - written, and unanswered: it may have been applied, so it is answered `OUTCOME_UNKNOWN` and
//!   never re-sent (that could apply it twice);
//! - unless the leader said it is going away (`SHUTTING_DOWN` notice): then nothing it left
//!   unanswered was applied, and everything is retried at the next leader.
//!
//! A link that fails is replaced by a new connection on the next use. So is one whose answers
//! stop coming for longer than the leader's own request timeout allows.

use crate::client::{Client, ClientError, RequestSender, ResponseReceiver, expect_id};
use crate::protocol::message::{ErrorCode, Reply, Request, Response};
use std::collections::VecDeque;
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

/// A follower's way to the leader, shared by all of its client connections.
pub(super) struct Forwarding {
    me: u64,
    link: tokio::sync::Mutex<Option<Link>>,
}

impl Forwarding {
    pub fn new(me: u64) -> Forwarding {
        Forwarding { me, link: tokio::sync::Mutex::new(None) }
    }

    /// Forwards `requests` in order to node `leader` at `addr`. Returns, for each, its answer, or
    /// `None` when it was certainly not applied and should be tried again.
    pub async fn forward(
        &self,
        leader: u64,
        addr: &str,
        requests: &[&Request],
        deadline: Instant,
    ) -> Vec<Option<Response>> {
        let Some(link) = self.link_to(leader, addr, deadline).await else {
            return requests.iter().map(|_| None).collect();
        };
        let (answer, mut answers) = oneshot::channel();
        let job = Job { requests: requests.iter().map(|r| (*r).clone()).collect(), answer };
        if link.jobs.send(job).is_err() {
            // The link has stopped taking jobs: this one was never sent.
            return requests.iter().map(|_| None).collect();
        }
        match tokio::time::timeout_at(deadline + ANSWER_MARGIN, &mut answers).await {
            Ok(Ok(answers)) => answers,
            // The link ended without a word for this job; it may have been sent.
            Ok(Err(_)) => unknown_for(requests, leader, "the link to the leader ended"),
            Err(_) => {
                // The leader answers within its request timeout; a link this late is broken.
                link.shared.fail(leader, "no answer in time", false);
                // Failing the link answered the job: its answers so far, the rest unknown.
                answers.try_recv().unwrap_or_else(|_| unknown_for(requests, leader, "no answer in time"))
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
        let client = match Client::connect_forwarding(addr, timeout, self.me).await {
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

/// One connection to the leader, shared by the follower's clients.
#[derive(Clone)]
struct Link {
    leader: u64,
    /// To the task that writes; the link retires when every sender is gone.
    jobs: mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
}

/// One client connection's batch, and where its answers go.
struct Job {
    requests: Vec<Request>,
    answer: oneshot::Sender<Vec<Option<Response>>>,
}

/// What the writing and the reading task share.
struct Shared {
    state: Mutex<State>,
    /// Cancelled when the link fails, or has retired and has nothing left to answer.
    stop: CancellationToken,
}

struct State {
    /// Jobs written (or being written), oldest first: answers arrive in this order.
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
    answers: Vec<Option<Response>>,
    /// How many answers arrived (a `NOT_LEADER` leaves its slot empty).
    received: usize,
    answer: oneshot::Sender<Vec<Option<Response>>>,
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

    /// Ends the link: every written job gets the answers it has, and for the rest `None` when the
    /// leader said it is going away (`not_applied`), else `OUTCOME_UNKNOWN`.
    fn fail(&self, leader: u64, why: &str, not_applied: bool) {
        let mut state = self.lock();
        if !state.closed || !state.sent.is_empty() {
            tracing::warn!(leader, error = why, "the link to the leader failed");
        }
        state.closed = true;
        self.stop.cancel();
        for sent in state.sent.drain(..) {
            let Sent { client_ids, mut answers, answer, .. } = sent;
            if !not_applied {
                for (slot, id) in answers.iter_mut().zip(client_ids) {
                    if slot.is_none() {
                        *slot = Some(unknown(id, leader, why));
                    }
                }
            }
            let _ = answer.send(answers);
        }
    }

    /// Hands an answer to the job it belongs to. `Err` says why the link must end, and whether
    /// what is unanswered is certainly not applied.
    fn deliver(&self, response: Response) -> Result<(), (String, bool)> {
        let mut state = self.lock();
        // With nothing sent, the next id is one no answer may carry yet.
        let expected = state.sent.front().map_or(state.next_id, |sent| sent.first_id + sent.received as u64);
        let response = expect_id(response, expected).map_err(link_ended)?;
        let Some(sent) = state.sent.front_mut() else {
            return Err((format!("an answer to request {expected}, which was never sent"), false));
        };
        let slot = sent.received;
        sent.received += 1;
        if !matches!(response.reply, Reply::Error { code: ErrorCode::NotLeader, .. }) {
            sent.answers[slot] = Some(Response { id: sent.client_ids[slot], ..response });
        }
        if sent.received == sent.answers.len() {
            let done = state.sent.pop_front().expect("the front job");
            let _ = done.answer.send(done.answers);
            if state.closed && state.sent.is_empty() {
                self.stop.cancel();
            }
        }
        Ok(())
    }
}

/// Writes the jobs handed to the link, each batch of them in one flush, until the link fails or
/// every handle to it is gone. Jobs it never wrote are answered "not applied".
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
            if state.sent.is_empty() && sender.gone_while_idle() {
                drop(state);
                not_sent(batch);
                shared.fail(leader, "the leader closed the link while it was idle", true);
                break;
            }
            for job in batch {
                let first_id = state.next_id;
                state.next_id += job.requests.len() as u64;
                let client_ids = job.requests.iter().map(|r| r.id).collect();
                let answers = job.requests.iter().map(|_| None).collect();
                state.sent.push_back(Sent { first_id, client_ids, answers, received: 0, answer: job.answer });
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
        let _ = job.answer.send(job.requests.iter().map(|_| None).collect());
    }
}

fn unknown(id: u64, leader: u64, why: &str) -> Response {
    let message = format!(
        "the connection to leader {leader} failed ({why}) after the write was sent: it may or may not \
         have been applied"
    );
    Response::new(id, Reply::error(ErrorCode::OutcomeUnknown, message))
}

fn unknown_for(requests: &[&Request], leader: u64, why: &str) -> Vec<Option<Response>> {
    requests.iter().map(|r| Some(unknown(r.id, leader, why))).collect()
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
        Request { id, args, local: false, min_acks: None, ack_timeout_ms: None, wait_acks: false }
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

    async fn forward(forwarding: &Forwarding, addr: &str, requests: &[Request]) -> Vec<Option<Response>> {
        let requests: Vec<&Request> = requests.iter().collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        tokio::time::timeout(BOUND, forwarding.forward(2, addr, &requests, deadline)).await.expect("in time")
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
        let forwarding = Forwarding::new(1);
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
        let forwarding = Forwarding::new(1);
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
        let forwarding = Forwarding::new(1);
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
        let forwarding = Forwarding::new(1);
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
        let forwarding = Forwarding::new(1);
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

    #[tokio::test]
    async fn nothing_is_applied_when_the_leader_cannot_be_reached() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let forwarding = Forwarding::new(1);
        assert_eq!(replies(forward(&forwarding, &addr, &[request(1, "a")]).await), vec![None]);
    }
}
