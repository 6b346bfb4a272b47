//! A TCP connection that carries typed messages in frames.
//!
//! The read and write halves are separate types so that a pipelining client can send from one
//! task while it reads answers in another; the node uses both from one task.
//!
//! Reads distinguish a clean end of stream (`Ok(None)`, between frames) from one inside a frame,
//! an oversize length prefix and an undecodable payload, because a server answers each of those
//! differently.

use crate::protocol::frame::{self, DecodeError};
use futures::{FutureExt, SinkExt, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use std::io;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("frame of more than {max} bytes")]
    FrameTooLarge { max: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    #[error(transparent)]
    Io(io::Error),
}

impl ReadError {
    /// Whether the peer sent bytes we could not make sense of, as opposed to the connection
    /// failing under us. Only then is it worth telling the peer before closing.
    pub fn is_protocol_violation(&self) -> bool {
        matches!(self, ReadError::FrameTooLarge { .. } | ReadError::Malformed(_))
    }
}

/// Receives messages.
pub struct FrameReader {
    inner: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
}

/// Sends messages. `feed` buffers, `flush` writes what is buffered in as few syscalls as it can.
pub struct FrameWriter {
    inner: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
}

/// Splits a stream into typed frame halves, with `max_frame_bytes` as the limit for reading.
pub fn split(stream: TcpStream, max_frame_bytes: usize) -> (FrameReader, FrameWriter) {
    // Requests and answers are small and latency-bound; Nagle would hold them back.
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    (
        FrameReader { inner: FramedRead::new(read, frame::codec(max_frame_bytes)) },
        // Our own writes are bounded by what we choose to send, not by the peer's limit.
        FrameWriter { inner: FramedWrite::new(write, frame::codec(u32::MAX as usize)) },
    )
}

impl FrameReader {
    /// Reads the next message: `Ok(None)` at a clean end of stream.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Ok(payload)) => Ok(Some(frame::decode(&payload)?)),
            Some(Err(e)) => Err(classify(e, self.inner.decoder().max_frame_length())),
        }
    }

    /// Reads a message only if one can be had without waiting: `None` if not. Used to gather the
    /// requests a client has pipelined into one batch.
    pub fn read_ready<T: DeserializeOwned>(&mut self) -> Option<Result<Option<T>, ReadError>> {
        self.read().now_or_never()
    }

    /// On a request/response connection with nothing outstanding, whether the other side has
    /// already hung up (or sent something unasked, such as a going-away notice): then nothing
    /// sent now would be executed. Consumes whatever was waiting.
    pub fn gone_while_idle(&mut self) -> bool {
        self.inner.next().now_or_never().is_some()
    }

    /// Raises or lowers the largest frame this side accepts.
    pub fn set_max_frame_bytes(&mut self, max: usize) {
        self.inner.decoder_mut().set_max_frame_length(max);
    }
}

fn classify(e: io::Error, max: usize) -> ReadError {
    if e.get_ref().is_some_and(|inner| inner.is::<LengthDelimitedCodecError>()) {
        ReadError::FrameTooLarge { max }
    } else if e.kind() == io::ErrorKind::Other && e.to_string().contains("bytes remaining") {
        // tokio-util's wording for an end of stream inside a frame.
        ReadError::Truncated
    } else {
        ReadError::Io(e)
    }
}

impl FrameWriter {
    /// Queues a message without writing it yet.
    pub async fn feed<T: Serialize>(&mut self, message: &T) -> io::Result<()> {
        self.inner.feed(frame::encode(message)).await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        SinkExt::<bytes::Bytes>::flush(&mut self.inner).await
    }

    /// Sends one message now.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> io::Result<()> {
        self.inner.send(frame::encode(message)).await
    }

    /// Sends one message now, without field names ([`frame::encode_compact`]).
    pub async fn send_compact<T: Serialize>(&mut self, message: &T) -> io::Result<()> {
        self.inner.send(frame::encode_compact(message)).await
    }

    /// The socket under this half.
    pub(crate) fn socket(&self) -> &TcpStream {
        self.inner.get_ref().as_ref()
    }
}
