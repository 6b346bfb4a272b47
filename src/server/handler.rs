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
//! Errors in a command are answers (the connection stays usable). Errors in the byte stream are
//! not: a frame over the limit, an undecodable payload, or a stream cut inside a frame closes this
//! connection, after an error frame where the peer can still read one. Nothing a client sends
//! can affect another connection.

use super::Node;
use super::cluster::Cluster;
use super::control::serve_peer;
use super::executor::Executor;
use super::forward::Ahead;
use crate::connection::{self, FrameReader, FrameWriter, ReadError};
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::message::{ErrorCode, Hello, HelloReply, Reply, Request, Response};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A client must say hello this soon after connecting, so that silent sockets cannot hold one of
/// the node's connection slots forever.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most requests executed as one batch; more stay buffered for the next one.
const MAX_BATCH: usize = 1024;
/// After telling a client the node is going away, how long to wait for it to hang up before
/// closing (closing on unread data would reset the connection and could destroy the notice).
const LINGER: Duration = Duration::from_secs(1);

pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, node: &Node, token: &CancellationToken) {
    let (mut reader, mut writer) = connection::split(stream, node.config.max_frame_bytes);
    let hello = match handshake(&mut reader, &mut writer, node).await {
        Ok(hello) => hello,
        Err(reason) => {
            tracing::debug!(%peer, reason, "connection refused at hello");
            return;
        }
    };
    if let Some(member) = hello.peer {
        tracing::debug!(%peer, member, "peer connected");
        // Raft traffic ends with the connection or the node, whichever comes first.
        tokio::select! {
            () = token.cancelled() => {}
            outcome = serve_peer(reader, writer, node) => {
                if let Err(e) = outcome {
                    tracing::debug!(%peer, member, error = %e, "peer connection ended");
                }
            }
        }
        return;
    }
    tracing::debug!(%peer, client = hello.client, forwarded_by = hello.forwarded_by, "client connected");
    let mut executor = Executor::new(node, hello.forwarded_by, node.config.limits());
    let outcome = serve_requests(&mut reader, &mut writer, &mut executor, token).await;
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

/// Reads the hello and answers it. `Err` carries why the connection is being dropped.
async fn handshake(reader: &mut FrameReader, writer: &mut FrameWriter, node: &Node) -> Result<Hello, String> {
    let refusal = match tokio::time::timeout(HELLO_TIMEOUT, reader.read::<Hello>()).await {
        Err(_) => Some((ErrorCode::Protocol, format!("no hello within {HELLO_TIMEOUT:?}"))),
        Ok(Ok(None)) => return Err("closed before hello".into()),
        Ok(Err(e)) if !e.is_protocol_violation() => return Err(e.to_string()),
        Ok(Err(e)) => Some((ErrorCode::Protocol, format!("expected a hello frame: {e}"))),
        Ok(Ok(Some(hello))) if hello.version != PROTOCOL_VERSION => Some((
            ErrorCode::VersionMismatch,
            format!(
                "this node speaks protocol version {PROTOCOL_VERSION}, the client asked for {}",
                hello.version
            ),
        )),
        Ok(Ok(Some(hello))) => {
            let welcome = HelloReply::Welcome {
                version: PROTOCOL_VERSION,
                node_id: node.config.id,
                max_frame_bytes: node.config.max_frame_bytes as u64,
            };
            writer.send(&welcome).await.map_err(|e| e.to_string())?;
            return Ok(hello);
        }
    };
    let (code, message) = refusal.expect("every other arm returns");
    let _ = writer.send(&HelloReply::Refused { code, message: message.clone() }).await;
    Err(message)
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
    writer: &mut FrameWriter,
    executor: &mut Executor<'_, C>,
    token: &CancellationToken,
) -> Result<(), ReadError> {
    let mut ahead = Ahead::new();
    loop {
        let first = tokio::select! {
            () = token.cancelled() => {
                ahead.answer_all(writer).await?;
                return going_away(reader, writer, executor.cluster().id()).await;
            }
            answers = ahead.next() => {
                ahead.send(answers, writer).await?;
                continue;
            }
            read = reader.read::<Request>(), if ahead.has_room() => read,
        };
        let Some(first) = first? else {
            ahead.answer_all(writer).await?;
            return Ok(());
        };
        let mut batch = vec![first];
        // A protocol error behind good requests still lets those be answered first.
        let mut broken = None;
        while batch.len() < MAX_BATCH {
            match reader.read_ready::<Request>() {
                Some(Ok(Some(request))) => batch.push(request),
                Some(Err(e)) => {
                    broken = Some(e);
                    break;
                }
                Some(Ok(None)) | None => break,
            }
        }
        let items = executor.parse(batch);
        if let Err(items) = ahead.propose(executor, items).await {
            // Everything else runs after what was proposed ahead, as the client sent it.
            ahead.answer_all(writer).await?;
            for response in executor.execute(items).await {
                writer.feed(&response).await.map_err(ReadError::Io)?;
            }
            writer.flush().await.map_err(ReadError::Io)?;
        }
        if let Some(e) = broken {
            ahead.answer_all(writer).await?;
            return Err(e);
        }
    }
}
