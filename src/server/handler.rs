//! One connection: the hello, then either Raft traffic (the hello names a peer) or a loop of
//! client batches until the client leaves, breaks the protocol, or the node shuts down.
//!
//! A batch is the first request that arrives plus every further request already buffered on the
//! socket (a pipelining client's burst). The executor runs it in order, so its reads see its
//! writes and its consecutive writes share one Raft proposal. Answers go out in request order
//! with one flush per batch.
//!
//! One exception to one-batch-at-a-time: on a follower's forwarding link to the leader, a batch of
//! nothing but writes is proposed as soon as it is read, and the connection goes on reading
//! while it commits (the leader's half of forwarding, [`super::forward::Ahead`]). Anything else
//! waits until those are answered.
//!
//! What a connection can make the node hold is bounded. Before its hello it holds one of a
//! few handshake slots, for [`HELLO_TIMEOUT`] at most; after it, a client holds one of
//! `max_connections` slots and another member one of [`MAX_MEMBER_CONNECTIONS`], so clients can
//! never crowd out the cluster's own traffic. A batch stops growing at `connection_buffer_bytes`
//! of requests, and holds its bytes of the node-wide `max_inflight_request_bytes` until it is
//! answered; its answers are produced in slices of at most that budget ([`answer_slices`]) and
//! written as they come, so a client that does not read stops the node reading its requests,
//! and one that reads nothing for `write_timeout_ms` is disconnected. A client that sends nothing
//! for `idle_timeout_ms` is disconnected too.
//!
//! Errors in a command are answers (the connection stays usable). Errors in the byte stream are
//! not: a frame over the limit, an undecodable payload, or a stream cut inside a frame closes this
//! connection, after an error frame where the peer can still read one. Nothing a client sends
//! can affect another connection.

use super::Node;
use super::cluster::Cluster;
use super::control::serve_peer;
use super::executor::{Executor, Item};
use super::forward::Ahead;
use super::session::{Segment, Session};
use crate::command::{CommandSpec, Limits};
use crate::connection::{self, FrameReader, FrameWriter, ReadError, Stream};
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::frame::Outgoing;
use crate::protocol::message::{ErrorCode, Hello, HelloReply, Reply, Request, Response};
use crate::protocol::request::decode_request;
use crate::protocol::response::encode_response;
use crate::tls::Certified;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// A client must say hello this soon after connecting, so that silent sockets cannot hold one of
/// the node's connection slots forever.
pub(super) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most requests executed as one batch; more stay buffered for the next one.
const MAX_BATCH: usize = 1024;
/// Connections from other members (Raft, control, forwarding) served at once, apart from
/// clients' `max_connections`.
pub(super) const MAX_MEMBER_CONNECTIONS: usize = 256;
/// After telling a client the node is going away, how long to wait for it to hang up before
/// closing (closing on unread data would reset the connection and could destroy the notice).
const LINGER: Duration = Duration::from_secs(1);

/// Serves one accepted connection. `handshaking` is its handshake slot, given back once it has
/// said what it is.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    node: &Node,
    token: &CancellationToken,
    handshaking: OwnedSemaphorePermit,
) {
    // The TLS handshake and the hello share one deadline.
    let hello_by = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let (stream, certified) = match &node.tls {
        None => (Stream::from(stream), None),
        Some(tls) => match tokio::time::timeout_at(hello_by, tls.accept(stream)).await {
            Ok(Ok(stream)) => {
                let certified = Certified::of(&stream);
                (Stream::from(stream), certified)
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no TLS handshake within {HELLO_TIMEOUT:?}");
                return;
            }
        },
    };
    let (mut reader, mut writer) = connection::split(stream, node.config.max_frame_bytes);
    let (hello, _slot) = match handshake(&mut reader, &mut writer, node, certified.as_ref(), hello_by).await {
        Ok(admitted) => admitted,
        Err(reason) => {
            tracing::debug!(%peer, reason, "connection refused at hello");
            return;
        }
    };
    drop(handshaking);
    if let Some(member) = hello.peer {
        tracing::debug!(%peer, member, "peer connected");
        // Raft traffic ends with the connection or the node, whichever comes first.
        tokio::select! {
            () = token.cancelled() => {}
            outcome = serve_peer(reader, writer, node, member) => {
                if let Err(e) = outcome {
                    tracing::debug!(%peer, member, error = %e, "peer connection ended");
                }
            }
        }
        return;
    }
    tracing::debug!(%peer, client = hello.client, forwarded_by = hello.forwarded_by, "client connected");
    writer.set_write_timeout(Duration::from_millis(node.config.write_timeout_ms));
    // A follower's forwarding link is idle whenever its clients are; it is never closed for it.
    let idle = (hello.forwarded_by.is_none() && node.config.idle_timeout_ms > 0)
        .then(|| Duration::from_millis(node.config.idle_timeout_ms));
    let budget = Budget {
        connection_bytes: node.config.connection_buffer_bytes,
        inflight: node.inflight.clone(),
        inflight_kib: node.inflight_kib,
        limits: node.config.limits(),
        idle,
    };
    let mut executor = Executor::new(node, hello.forwarded_by, node.config.limits());
    let certified = certified.filter(|_| hello.forwarded_by.is_none()).unwrap_or_default();
    let required = node.config.auth && hello.forwarded_by.is_none();
    let mut session = Session::new(required, certified.common_name, certified.node);
    // Requests forwarded by a follower were counted there.
    let counted = hello.forwarded_by.is_none().then_some(node);
    let mut answers = Answers::new(&mut writer, counted);
    let outcome =
        serve_requests(&mut reader, &mut answers, &mut executor, &mut session, &budget, token).await;
    match outcome {
        Ok(()) => tracing::debug!(%peer, "client disconnected"),
        Err(e) if e.is_protocol_violation() => {
            tracing::warn!(%peer, error = %e, "closing connection: protocol violation");
            let reply = Reply::error(ErrorCode::Protocol, format!("{e}; closing the connection"));
            let _ = writer.send(&Response::new(0, reply)).await;
        }
        Err(e) => tracing::debug!(%peer, error = %e, "connection lost"),
    }
}

/// What bounds one client connection.
struct Budget {
    /// Requests gathered into a batch, and answers in a slice, at most (see [`answer_slices`]).
    connection_bytes: usize,
    /// The node's request bytes in flight, in KiB, and how many there are in all.
    inflight: Arc<Semaphore>,
    inflight_kib: u32,
    limits: Limits,
    /// How long the client may send nothing; `None`: forever.
    idle: Option<Duration>,
}

impl Budget {
    /// Takes `bytes` of the node's in-flight request bytes (all of them at most), waiting for
    /// other connections' answers to free them.
    async fn hold(&self, bytes: usize) -> OwnedSemaphorePermit {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.inflight_kib);
        self.inflight.clone().acquire_many_owned(kib).await.expect("the node never closes it")
    }
}

/// Reads the hello, takes a slot for what the connection says it is, and answers. `Err` carries
/// why the connection is being dropped.
async fn handshake(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    node: &Node,
    certified: Option<&Certified>,
    hello_by: tokio::time::Instant,
) -> Result<(Hello, OwnedSemaphorePermit), String> {
    let refusal = match tokio::time::timeout_at(hello_by, reader.read::<Hello>()).await {
        Err(_) => (ErrorCode::Protocol, format!("no hello within {HELLO_TIMEOUT:?}")),
        Ok(Ok(None)) => return Err("closed before hello".into()),
        Ok(Err(e)) if !e.is_protocol_violation() => return Err(e.to_string()),
        Ok(Err(e)) => (ErrorCode::Protocol, format!("expected a hello frame: {e}")),
        Ok(Ok(Some(hello))) if hello.version != PROTOCOL_VERSION => (
            ErrorCode::VersionMismatch,
            format!(
                "this node speaks protocol version {PROTOCOL_VERSION}, the client asked for {}",
                hello.version
            ),
        ),
        Ok(Ok(Some(hello))) if let Some(refusal) = member_refusal(&hello, node, certified) => refusal,
        Ok(Ok(Some(hello))) => {
            let member = hello.peer.is_some() || hello.forwarded_by.is_some();
            let (slots, max, whose) = if member {
                (&node.member_slots, MAX_MEMBER_CONNECTIONS, "connections from other members")
            } else {
                (&node.client_slots, node.config.max_connections, "connections")
            };
            match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let welcome = HelloReply::Welcome {
                        version: PROTOCOL_VERSION,
                        node_id: node.config.id,
                        max_frame_bytes: node.config.max_frame_bytes as u64,
                    };
                    writer.send(&welcome).await.map_err(|e| e.to_string())?;
                    return Ok((hello, slot));
                }
                Err(_) => (
                    ErrorCode::Busy,
                    format!("the node is serving its maximum of {max} {whose}; try again later"),
                ),
            }
        }
    };
    let (code, message) = refusal;
    let _ = writer.send(&HelloReply::Refused { code, message: message.clone() }).await;
    Err(message)
}

/// Why a hello that claims to come from a member is refused, if it is: it must not name another
/// cluster than this node's; over TLS the member must prove its id with a certificate the
/// cluster's CA issued for it, and be a member this node knows of. Plain TCP proves nothing
/// (see docs/SECURITY.md).
fn member_refusal(hello: &Hello, node: &Node, certified: Option<&Certified>) -> Option<(ErrorCode, String)> {
    let claimed = hello.peer.or(hello.forwarded_by)?;
    if let (Some(theirs), Some(ours)) = (&hello.cluster, node.cluster_id())
        && *theirs != ours
    {
        return Some((
            ErrorCode::WrongCluster,
            format!("node {claimed} belongs to cluster {theirs}, this node to cluster {ours}"),
        ));
    }
    node.tls.as_ref()?;
    let proven = certified.and_then(|c| c.node);
    if proven != Some(claimed) {
        let shown = match proven {
            Some(id) => format!("a certificate for node {id}"),
            None => "no member's certificate".to_string(),
        };
        return Some((
            ErrorCode::NoAuth,
            format!("the hello claims node {claimed}, but the connection has {shown}"),
        ));
    }
    if !node.knows_member(claimed) {
        return Some((
            ErrorCode::PermissionDenied,
            format!("node {claimed} is not a member of this cluster"),
        ));
    }
    None
}

/// A client connection's answers on their way out. Each is counted for `/metrics` by its
/// request's command and its outcome as it is sent, which pairs answers with requests by order
/// alone: they are sent in the order the requests came.
pub(super) struct Answers<'w> {
    writer: &'w mut FrameWriter,
    /// The node whose metrics count the answers, and whose console streams its writes'
    /// journeys; `None`: not counted.
    counted: Option<&'w Node>,
    /// The requests read and not answered yet: their command and when they were read. As
    /// bounded as the requests themselves.
    waiting: VecDeque<(Option<&'static CommandSpec>, Instant)>,
}

impl<'w> Answers<'w> {
    /// Answers written to `writer`, counted by `counted` if given.
    fn new(writer: &'w mut FrameWriter, counted: Option<&'w Node>) -> Answers<'w> {
        Answers { writer, counted, waiting: VecDeque::new() }
    }

    /// Notes requests read, in order.
    fn received(&mut self, requests: &[Request]) {
        if self.counted.is_none() {
            return;
        }
        let now = Instant::now();
        for request in requests {
            let spec = request.args.first().and_then(|name| crate::command::lookup(name));
            self.waiting.push_back((spec, now));
        }
    }

    /// Queues the answer to the oldest request not answered yet.
    pub async fn feed(&mut self, response: &Response) -> Result<(), ReadError> {
        if let (Some(node), Some((command, read_at))) = (self.counted, self.waiting.pop_front()) {
            let outcome = match &response.reply {
                Reply::Error { code, .. } => code.as_str(),
                _ => "ok",
            };
            node.metrics.request_answered(command, outcome, read_at.elapsed());
            if let Some(spec) = command.filter(|spec| spec.writes) {
                node.console.write_answered(spec.name, response);
            }
        }
        // Every request's answer: encoded by hand (`protocol::response`).
        let encode =
            |buffer: &mut bytes::BytesMut| encode_response(response, buffer).map_err(|e| e.to_string());
        self.writer.feed_outgoing(Outgoing::<()>::Encoded(&encode)).await.map_err(ReadError::Io)
    }

    pub async fn flush(&mut self) -> Result<(), ReadError> {
        self.writer.flush().await.map_err(ReadError::Io)
    }
}

/// Tells the client this node executes nothing more here, so that it sends whatever it is
/// still waiting for to another node, then waits briefly for it to hang up.
async fn going_away(reader: &mut FrameReader, writer: &mut FrameWriter, me: u64) -> Result<(), ReadError> {
    let message = format!(
        "node {me} is shutting down; requests it has not answered on this connection were not applied \
         and may be sent to another node"
    );
    writer
        .send(&Response::new(0, Reply::error(ErrorCode::ShuttingDown, message)))
        .await
        .map_err(ReadError::Io)?;
    let _ = tokio::time::timeout(LINGER, async {
        // Whatever arrives now is discarded unexecuted, as the notice said.
        while let Ok(Some(_)) = reader.read::<Request>().await {}
    })
    .await;
    Ok(())
}

async fn serve_requests<C: Cluster>(
    reader: &mut FrameReader,
    writer: &mut Answers<'_>,
    executor: &mut Executor<'_, C>,
    session: &mut Session,
    budget: &Budget,
    token: &CancellationToken,
) -> Result<(), ReadError> {
    let mut ahead = Ahead::new();
    let mut idle = budget.idle.map(IdleClock::new);
    loop {
        let first = tokio::select! {
            () = token.cancelled() => {
                ahead.answer_all(writer).await?;
                return going_away(reader, writer.writer, executor.cluster().id()).await;
            }
            answers = ahead.next() => {
                ahead.send(answers, writer).await?;
                continue;
            }
            read = reader.read_decoded(decode_request), if ahead.has_room() => read,
            () = IdleClock::expired(&mut idle) => {
                tracing::debug!("closing a connection idle for {:?}", budget.idle.unwrap_or_default());
                Ok(None)
            }
        };
        if let Some(idle) = &mut idle {
            idle.heard();
        }
        let Some((first, mut bytes)) = first? else {
            ahead.answer_all(writer).await?;
            return Ok(());
        };
        // Room for what a pipelining client usually has in flight, so that gathering its batch
        // does not reallocate it on the way.
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        // A protocol error behind good requests still lets those be answered first.
        let mut broken = None;
        while batch.len() < MAX_BATCH && bytes < budget.connection_bytes {
            match reader.read_ready(decode_request) {
                Some(Ok(Some((request, size)))) => {
                    batch.push(request);
                    bytes += size;
                }
                Some(Err(e)) => {
                    broken = Some(e);
                    break;
                }
                Some(Ok(None)) | None => break,
            }
        }
        let held = budget.hold(bytes).await;
        writer.received(&batch);
        let items = executor.parse(batch);
        executor.new_batch();
        if let Err(items) = ahead.propose(executor, items, held).await {
            // Everything else runs after what was proposed ahead, as the client sent it.
            ahead.answer_all(writer).await?;
            for segment in Session::segments(items) {
                let mut items = match segment {
                    Segment::Items(items) => items,
                    Segment::Auth(item) => {
                        let response = session.login(&item, executor.cluster()).await;
                        writer.feed(&response).await?;
                        continue;
                    }
                };
                session.vet(&mut items, executor.cluster());
                for slice in answer_slices(items, budget.connection_bytes, &budget.limits) {
                    for response in executor.execute(slice).await {
                        writer.feed(&response).await?;
                    }
                }
            }
            writer.flush().await?;
        }
        if let Some(e) = broken {
            ahead.answer_all(writer).await?;
            return Err(e);
        }
    }
}

/// When a client was last heard from, and a timer for when it will have been idle too long.
/// Hearing from it only notes the time; the one timer is moved on when it fires early, so that
/// a busy connection sets no timer per request.
struct IdleClock {
    idle: Duration,
    heard: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleClock {
    fn new(idle: Duration) -> IdleClock {
        let now = tokio::time::Instant::now();
        IdleClock { idle, heard: now, timer: Box::pin(tokio::time::sleep_until(now + idle)) }
    }

    fn heard(&mut self) {
        self.heard = tokio::time::Instant::now();
    }

    /// Completes once the client has been idle too long; never without a clock.
    async fn expired(clock: &mut Option<IdleClock>) {
        let Some(clock) = clock else { return std::future::pending().await };
        loop {
            (&mut clock.timer).await;
            let due = clock.heard + clock.idle;
            if tokio::time::Instant::now() >= due {
                return;
            }
            clock.timer.as_mut().reset(due);
        }
    }
}

/// Cuts a batch into slices whose answers, each at its largest, fit `budget` bytes together, so
/// that a batch of large reads is answered a slice at a time; a slice takes at least one
/// request.
fn answer_slices(items: Vec<Item>, budget: usize, limits: &Limits) -> Vec<Vec<Item>> {
    let mut slices = Vec::new();
    let mut slice = Vec::new();
    let mut used = 0;
    for item in items {
        let bound = item.answer_bound(limits);
        if !slice.is_empty() && used + bound > budget {
            slices.push(std::mem::take(&mut slice));
            used = 0;
        }
        used += bound;
        slice.push(item);
    }
    if !slice.is_empty() {
        slices.push(slice);
    }
    slices
}
