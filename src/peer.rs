//! Connections between cluster members: the peer hello, then one request and its answer at a
//! time, on the node's one address.
//!
//! Two kinds of traffic share these connections, in one envelope ([`PeerMessage`]): Raft's RPCs
//! (`raft::network`, for openraft) and the node's own control plane (`server::control`: status,
//! read indexes, removal notices). The envelope keeps the two apart without either module
//! knowing the other's messages: each side sends its own variant and the receiving node
//! dispatches on it.
//!
//! A connection is opened on first use and dropped after any failure (the next call opens a new
//! one), so a broken or half-read exchange never poisons the next. Every failure is a typed
//! [`PeerError`] that says whether the peer could not be reached at all (nothing was sent) or
//! the exchange broke.
//!
//! Every connection to another member is opened by the node's [`Dialer`]: over TLS, presenting
//! this node's certificate and accepting only the certificate of the member it meant to reach,
//! when the node has TLS; plain TCP otherwise.
//!
//! Deliberately not here: retries (openraft and the callers decide), and what the messages mean.

use crate::connection::{self, FrameReader, FrameWriter, Stream};
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::frame::{DEFAULT_MAX_FRAME_BYTES, Outgoing};
use crate::protocol::message::{ErrorCode, Hello, HelloReply};
use crate::tls::NodeTls;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How this node opens connections to other members, and, to join a cluster, to an address.
#[derive(Clone)]
pub struct Dialer {
    /// This node's id, announced in every hello.
    pub me: u64,
    tls: Option<Arc<NodeTls>>,
    /// The cluster's id, announced in every hello once this node knows it.
    cluster: Arc<std::sync::OnceLock<String>>,
}

impl Dialer {
    /// Dials as node `me`, over TLS when `tls` is given.
    pub fn new(me: u64, tls: Option<Arc<NodeTls>>) -> Dialer {
        Dialer { me, tls, cluster: Arc::default() }
    }

    /// The cluster's id, if this node knows it yet.
    pub fn cluster(&self) -> Option<String> {
        self.cluster.get().cloned()
    }

    /// Notes the cluster's id (the first one noted stays; a cluster's id never changes).
    pub fn learn_cluster(&self, id: String) {
        let _ = self.cluster.set(id);
    }

    /// Connects to member `id` at `addr`; over TLS, only a certificate naming `id` is accepted.
    pub async fn member(&self, addr: &str, id: u64) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect(addr).await?;
        match &self.tls {
            Some(tls) => Ok(tls.connect_member(tcp, id).await?.into()),
            None => Ok(tcp.into()),
        }
    }

    /// Connects to whichever member answers at `addr`; over TLS, its certificate must name the
    /// address.
    pub async fn address(&self, addr: &str) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect(addr).await?;
        match &self.tls {
            Some(tls) => Ok(tls.connect_address(tcp).await?.into()),
            None => Ok(tcp.into()),
        }
    }
}

/// One frame between peers: a Raft message or a control-plane message.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerMessage<R, C> {
    Raft(R),
    Control(C),
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be opened, or the peer refused it: nothing was sent.
    #[error("node {target} at {addr} cannot be reached: {why}")]
    Unreachable { target: u64, addr: String, why: String },
    /// The address answers as another node.
    #[error("{addr} is node {found}, not node {target}")]
    WrongNode { target: u64, addr: String, found: u64 },
    /// The peer refused the hello.
    #[error("node {target} refused the connection: {code} {message}")]
    Refused { target: u64, code: ErrorCode, message: String },
    /// The exchange broke after the request may have been sent.
    #[error("node {target}: {why}")]
    Broken { target: u64, why: String },
    /// No answer within the time allowed.
    #[error("node {target}: no answer within {after:?}")]
    Timeout { target: u64, after: Duration },
    /// The peer answered with a message of the wrong kind.
    #[error("node {target} answered out of turn: {what}")]
    Unexpected { target: u64, what: String },
}

impl PeerError {
    /// Whether the request certainly never reached the peer.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            PeerError::Unreachable { .. } | PeerError::WrongNode { .. } | PeerError::Refused { .. }
        )
    }
}

/// An open connection and the largest frame the peer accepts on it.
struct Open {
    reader: FrameReader,
    writer: FrameWriter,
    max_frame: usize,
}

/// The connection to one peer, opened on first use and again after a failure.
pub struct PeerConnection {
    dialer: Dialer,
    target: u64,
    addr: String,
    open: Option<Open>,
}

impl PeerConnection {
    /// A connection to node `target` at `addr`, opened by `dialer`.
    pub fn new(dialer: Dialer, target: u64, addr: String) -> PeerConnection {
        PeerConnection { dialer, target, addr, open: None }
    }

    /// The node this connection talks to.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Where it reaches that node.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The largest frame the peer accepts, connecting first if needed.
    pub async fn max_frame(&mut self, timeout: Duration) -> Result<usize, PeerError> {
        if self.open.is_none() {
            self.open = Some(self.connect(timeout).await?);
        }
        Ok(self.open.as_ref().map_or(0, |open| open.max_frame))
    }

    /// Forgets the connection, so that the next call opens a new one (after an exchange that
    /// left it in an unknown state).
    pub fn reset(&mut self) {
        self.open = None;
    }

    /// Sends one request and reads its answer, both within `timeout`.
    pub async fn call<Req, Resp>(&mut self, request: &Req, timeout: Duration) -> Result<Resp, PeerError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.call_as(Outgoing::Compact(request), timeout).await
    }

    /// [`PeerConnection::call`], with the request in a form of its choosing (compact, or
    /// encoded by a function of its own).
    pub async fn call_as<Req, Resp>(
        &mut self,
        request: Outgoing<'_, Req>,
        timeout: Duration,
    ) -> Result<Resp, PeerError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let mut open = match self.open.take() {
            Some(open) => open,
            None => self.connect(timeout).await?,
        };
        let target = self.target;
        let exchange = async {
            let broken = |why: String| PeerError::Broken { target, why };
            open.writer.send_outgoing(request).await.map_err(|e| broken(e.to_string()))?;
            open.reader
                .read::<Resp>()
                .await
                .map_err(|e| broken(e.to_string()))?
                .ok_or_else(|| broken("connection closed".to_string()))
        };
        let response = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| PeerError::Timeout { target, after: timeout })??;
        self.open = Some(open);
        Ok(response)
    }

    async fn connect(&self, timeout: Duration) -> Result<Open, PeerError> {
        let unreachable =
            |why: String| PeerError::Unreachable { target: self.target, addr: self.addr.clone(), why };
        let open = async {
            let stream =
                self.dialer.member(&self.addr, self.target).await.map_err(|e| unreachable(e.to_string()))?;
            // Answers are bounded by what we send (a status, an ack, a vote), never by data.
            let (mut reader, mut writer) = connection::split(stream, DEFAULT_MAX_FRAME_BYTES);
            let hello = Hello {
                version: PROTOCOL_VERSION,
                client: "peer".into(),
                peer: Some(self.dialer.me),
                forwarded_by: None,
                cluster: self.dialer.cluster(),
            };
            writer.send(&hello).await.map_err(|e| unreachable(e.to_string()))?;
            match reader.read::<HelloReply>().await.map_err(|e| unreachable(e.to_string()))? {
                Some(HelloReply::Welcome { node_id, max_frame_bytes, .. }) if node_id == self.target => {
                    Ok(Open {
                        reader,
                        writer,
                        max_frame: usize::try_from(max_frame_bytes).unwrap_or(usize::MAX),
                    })
                }
                Some(HelloReply::Welcome { node_id, .. }) => {
                    Err(PeerError::WrongNode { target: self.target, addr: self.addr.clone(), found: node_id })
                }
                Some(HelloReply::Refused { code, message }) => {
                    Err(PeerError::Refused { target: self.target, code, message })
                }
                None => Err(unreachable("closed during hello".to_string())),
            }
        };
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| unreachable(format!("no hello within {timeout:?}")))?
    }
}
