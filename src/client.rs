//! The client library: connect to a node, say hello, send commands and read their answers.
//!
//! [`Client::call`] is one request and its answer. For pipelining, [`Client::split`] gives a
//! sender and a receiver that can run side by side: the sender numbers requests, the receiver
//! hands answers back in the order the node sends them, which is request order.
//!
//! Addresses are tried in the order given and the first node that completes the hello wins, so a
//! caller with the whole cluster's addresses survives any one node being down.
//!
//! [`RequestOptions`] apply to every request of a connection: local (possibly stale) reads, and
//! how many peer acknowledgements a write should wait for.
//!
//! With a [`ClientSession`], every write is numbered in the session, so that a write whose answer
//! was lost can be sent again, to any node, and is applied at most once (the node answers a
//! repeat with the first answer). The session outlives connections: a client that reconnects
//! keeps it, and resends with the same numbers.

use crate::connection::{self, FrameReader, FrameWriter, ReadError, Stream};
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::frame::DEFAULT_MAX_FRAME_BYTES;
use crate::protocol::message::{ErrorCode, Hello, HelloReply, Once, Reply, Request, Response};
use crate::tls::ClientTls;
use serde_bytes::ByteBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("no node answered ({0})")]
    NoNodeAnswered(String),
    #[error("{addr} refused the connection: {code} {message}")]
    Refused { addr: String, code: ErrorCode, message: String },
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The node is shutting down and executes nothing more on this connection: every request not
    /// answered yet was not applied, and may be sent to another node.
    #[error("the node is going away: {0}")]
    GoingAway(String),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Lost(e.to_string())
    }
}

impl From<ReadError> for ClientError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => ClientError::Lost(e.to_string()),
            ReadError::Truncated => ClientError::Lost(e.to_string()),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// Per-request settings a client applies to everything it sends; see [`Request`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Reads from the connected node's own state, possibly stale.
    pub local: bool,
    /// Writes wait for this many peer acknowledgements...
    pub min_acks: Option<u32>,
    /// ...for up to this long.
    pub ack_timeout: Option<Duration>,
    /// Writes wait briefly for every healthy peer, so that their replication picture is complete.
    pub wait_acks: bool,
}

/// A client's session for writes applied exactly once: a random id, the next write number, and
/// the numbers sent but not answered yet (each write tells the cluster the lowest, so that it
/// forgets the writes answered before it and keeps only those a client may still send again).
#[derive(Debug)]
pub struct ClientSession {
    id: u64,
    next_seq: AtomicU64,
    unanswered: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

impl ClientSession {
    /// A new session with a random id (64 random bits: two clients never share one in practice).
    pub fn new() -> std::io::Result<Arc<ClientSession>> {
        let id = getrandom::u64().map_err(std::io::Error::other)?;
        Ok(Arc::new(ClientSession {
            id,
            next_seq: AtomicU64::new(1),
            unanswered: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        }))
    }

    fn unanswered(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<u64>> {
        self.unanswered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number for the next write.
    fn next(&self) -> Once {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut unanswered = self.unanswered();
        unanswered.insert(seq);
        let answered_below = unanswered.first().copied().unwrap_or(seq);
        Once { session: self.id, seq, answered_below }
    }

    /// The write numbered `once` got its final answer: it will not be sent again.
    pub fn answered(&self, once: Option<Once>) {
        if let Some(once) = once.filter(|o| o.session == self.id) {
            self.unanswered().remove(&once.seq);
        }
    }
}

/// Whether a request with these arguments is a write the node numbers in a session: anything
/// that changes data or accounts (not a membership change, which is not a replicated write).
fn numbered(args: &[Vec<u8>]) -> bool {
    crate::command::changes_state(args) && !args[0].eq_ignore_ascii_case(b"CLUSTER")
}

/// A connection to one node, after a successful hello.
pub struct Client {
    sender: RequestSender,
    receiver: ResponseReceiver,
    timeout: Duration,
    /// The address connected to, as given.
    addr: String,
}

/// Facts the node told us in its welcome.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The address we connected to, as the user wrote it.
    pub addr: String,
    pub node_id: u64,
}

/// How a client reaches nodes: plain TCP, or TLS that checks each node's certificate against a
/// CA (and may present the client's own).
#[derive(Debug, Clone, Default)]
pub struct Transport {
    tls: Option<ClientTls>,
}

impl Transport {
    /// Plain TCP.
    pub fn plain() -> Transport {
        Transport { tls: None }
    }

    /// TLS with `tls`.
    pub fn tls(tls: ClientTls) -> Transport {
        Transport { tls: Some(tls) }
    }

    /// Opens a connection to `addr`, with its TLS handshake if any.
    async fn dial(&self, addr: &str) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect(addr).await?;
        match &self.tls {
            Some(tls) => Ok(tls.connect(tcp).await?.into()),
            None => Ok(tcp.into()),
        }
    }
}

impl Client {
    /// Connects to the first of `addrs` that completes the hello within `timeout`.
    pub async fn connect_any(
        addrs: &[String],
        timeout: Duration,
        transport: &Transport,
    ) -> Result<(Client, NodeInfo), ClientError> {
        Client::connect_any_from(addrs, 0, timeout, transport).await
    }

    /// Like [`Client::connect_any`], but starts with `addrs[first]` and wraps around: after a
    /// node fails, the next attempt starts with the one after it.
    pub async fn connect_any_from(
        addrs: &[String],
        first: usize,
        timeout: Duration,
        transport: &Transport,
    ) -> Result<(Client, NodeInfo), ClientError> {
        let mut failures = Vec::new();
        let n = addrs.len();
        for addr in (0..n).map(|i| &addrs[(first + i) % n]) {
            match Client::connect(addr, timeout, transport).await {
                Ok(connected) => return Ok(connected),
                Err(e @ ClientError::Refused { code: ErrorCode::VersionMismatch, .. }) => return Err(e),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(ClientError::NoNodeAnswered(failures.join("; ")))
    }

    /// Connects to one node and says hello.
    pub async fn connect(
        addr: &str,
        timeout: Duration,
        transport: &Transport,
    ) -> Result<(Client, NodeInfo), ClientError> {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            client: "kv-cli".to_string(),
            peer: None,
            forwarded_by: None,
            cluster: None,
        };
        Client::connect_with(addr, timeout, hello, transport.dial(addr)).await
    }

    /// Says `hello` (a forwarding node's says so) on the connection `dial` opens to `addr`.
    pub(crate) async fn connect_with(
        addr: &str,
        timeout: Duration,
        hello: Hello,
        dial: impl Future<Output = std::io::Result<Stream>>,
    ) -> Result<(Client, NodeInfo), ClientError> {
        let connect_error = |reason: String| ClientError::Connect { addr: addr.to_string(), reason };
        let stream = tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| connect_error(format!("timed out after {timeout:?}")))?
            .map_err(|e| connect_error(e.to_string()))?;
        let (mut reader, mut writer) = connection::split(stream, DEFAULT_MAX_FRAME_BYTES);
        let welcome = async {
            writer.send(&hello).await?;
            reader.read::<HelloReply>().await?.ok_or_else(|| ClientError::Lost("closed during hello".into()))
        };
        let welcome = tokio::time::timeout(timeout, welcome)
            .await
            .map_err(|_| connect_error(format!("no hello from the node within {timeout:?}")))?
            .map_err(|e| connect_error(e.to_string()))?;
        match welcome {
            HelloReply::Welcome { node_id, max_frame_bytes, .. } => {
                // Answers can be as large as what the node accepts, plus room for the envelope.
                let limit = usize::try_from(max_frame_bytes).unwrap_or(usize::MAX);
                reader.set_max_frame_bytes(limit.saturating_add(64 * 1024).max(DEFAULT_MAX_FRAME_BYTES));
                let client = Client {
                    sender: RequestSender {
                        writer,
                        next_id: 1,
                        options: RequestOptions::default(),
                        session: None,
                    },
                    receiver: ResponseReceiver { reader },
                    timeout,
                    addr: addr.to_string(),
                };
                Ok((client, NodeInfo { addr: addr.to_string(), node_id }))
            }
            HelloReply::Refused { code, message } => {
                Err(ClientError::Refused { addr: addr.to_string(), code, message })
            }
        }
    }

    /// Applies `options` to every request sent from now on.
    pub fn set_options(&mut self, options: RequestOptions) {
        self.sender.options = options;
    }

    /// The request for a command, as [`RequestSender::prepare`] makes it.
    pub fn prepare(&self, args: Vec<Vec<u8>>) -> Request {
        self.sender.prepare(args)
    }

    /// Numbers every write sent from now on in `session`.
    pub fn set_session(&mut self, session: Arc<ClientSession>) {
        self.sender.session = Some(session);
    }

    /// Sends `request` (its id replaced) and waits for its answer: to send again a request first
    /// made by [`RequestSender::prepare`] on another connection.
    pub async fn call_request(&mut self, request: Request) -> Result<Response, ClientError> {
        let once = request.once;
        let id = self.sender.send_request(request).await?;
        self.sender.flush().await?;
        let response = tokio::time::timeout(self.timeout, self.receiver.next())
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        let response = expect_id(response, id)?;
        if !matches!(response.reply, Reply::Error { code: ErrorCode::OutcomeUnknown, .. }) {
            self.sender.answered(once);
        }
        Ok(response)
    }

    /// Sends one command and waits for its answer.
    pub async fn call(&mut self, args: Vec<Vec<u8>>) -> Result<Response, ClientError> {
        let request = self.sender.prepare(args);
        self.call_request(request).await
    }

    /// Logs the connection in as `user` (`AUTH`); the node's refusal is an error.
    pub async fn log_in(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        let auth = ["AUTH", user, password].map(|a| a.as_bytes().to_vec()).to_vec();
        match self.call(auth).await?.reply {
            Reply::Error { code, message } => {
                Err(ClientError::Refused { addr: self.addr.clone(), code, message })
            }
            _ => Ok(()),
        }
    }

    /// With no request outstanding: whether the node has already closed the connection or said it
    /// is going away. Checking before sending tells "the node was gone before we sent" (certainly
    /// not applied) from "the connection broke after" (unknown).
    pub fn gone_while_idle(&mut self) -> bool {
        self.receiver.gone_while_idle()
    }

    /// Splits the client for pipelining.
    pub fn split(self) -> (RequestSender, ResponseReceiver) {
        (self.sender, self.receiver)
    }
}

/// Checks that an answer is for the request we expected.
pub fn expect_id(response: Response, id: u64) -> Result<Response, ClientError> {
    if response.id == id {
        return Ok(response);
    }
    match response.reply {
        // Id 0 is the node telling us why it is closing the connection.
        crate::protocol::message::Reply::Error { code: ErrorCode::ShuttingDown, message }
            if response.id == 0 =>
        {
            Err(ClientError::GoingAway(message))
        }
        crate::protocol::message::Reply::Error { code, message } if response.id == 0 => {
            Err(ClientError::Protocol(format!("{code} {message}")))
        }
        _ => Err(ClientError::Protocol(format!("answer for request {} while waiting for {id}", response.id))),
    }
}

/// The sending half of a pipelined client.
pub struct RequestSender {
    writer: FrameWriter,
    next_id: u64,
    options: RequestOptions,
    session: Option<Arc<ClientSession>>,
}

impl RequestSender {
    /// The request for a command, with the connection's options, numbered in the session if it
    /// is a write. Keep it to send it again elsewhere ([`Self::send_request`]).
    pub fn prepare(&self, args: Vec<Vec<u8>>) -> Request {
        let once = self.session.as_ref().filter(|_| numbered(&args)).map(|s| s.next());
        Request {
            id: 0,
            args: args.into_iter().map(ByteBuf::from).collect(),
            local: self.options.local,
            min_acks: self.options.min_acks,
            ack_timeout_ms: self.options.ack_timeout.map(|t| t.as_millis() as u64),
            wait_acks: self.options.wait_acks,
            once,
        }
    }

    /// Tells the session that the write numbered `once` got its final answer (see
    /// [`ClientSession::answered`]); [`Client::call`] does it itself.
    pub fn answered(&self, once: Option<Once>) {
        if let Some(session) = &self.session {
            session.answered(once);
        }
    }

    /// Queues a command with the connection's options; returns the id its answer will carry.
    /// Call [`Self::flush`] to send.
    pub async fn send(&mut self, args: Vec<Vec<u8>>) -> Result<u64, ClientError> {
        let request = self.prepare(args);
        self.send_request(request).await
    }

    /// Queues a request as it is, except for its id; returns that id.
    pub async fn send_request(&mut self, mut request: Request) -> Result<u64, ClientError> {
        request.id = self.next_id;
        self.next_id += 1;
        self.writer.feed(&request).await?;
        Ok(request.id)
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(self.writer.flush().await?)
    }

    /// The connection's TCP socket, for a look at its state (see `server::forward`).
    pub(crate) fn socket(&self) -> std::os::fd::RawFd {
        self.writer.socket()
    }
}

/// The receiving half of a pipelined client.
pub struct ResponseReceiver {
    reader: FrameReader,
}

impl ResponseReceiver {
    /// With no request outstanding: whether the node has already closed the connection (or said
    /// it is going away), so that a request sent now would never be executed.
    pub fn gone_while_idle(&mut self) -> bool {
        self.reader.gone_while_idle()
    }

    /// The next answer; an error if the connection ends.
    pub async fn next(&mut self) -> Result<Response, ClientError> {
        self.reader
            .read_decoded(crate::protocol::response::decode_response)
            .await?
            .map(|(response, _)| response)
            .ok_or_else(|| ClientError::Lost("the node closed the connection".into()))
    }
}
