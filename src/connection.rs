//! A connection (TCP, or TLS over it) that carries typed messages in frames.
//!
//! The read and write halves are separate types so that a pipelining client can send from one
//! task while it reads answers in another; the node uses both from one task.
//!
//! Reads distinguish a clean end of stream (`Ok(None)`, between frames) from one inside a frame,
//! an oversize length prefix and an undecodable payload, because a server answers each of those
//! differently.

use crate::protocol::frame::{self, DecodeError, MessageEncoder, Outgoing};
use crate::tls::TlsStream;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
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

/// A connection's bytes: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The TCP socket under the stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(tcp: TcpStream) -> Stream {
        Stream::Plain(tcp)
    }
}

impl From<TlsStream> for Stream {
    fn from(tls: TlsStream) -> Stream {
        Stream::Tls(Box::new(tls))
    }
}

type ReadHalf = Box<dyn AsyncRead + Send + Sync + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// Receives messages.
pub struct FrameReader {
    inner: FramedRead<ReadHalf, LengthDelimitedCodec>,
}

/// Sends messages. `feed` buffers, `flush` writes what is buffered in as few syscalls as it can.
/// `feed` also writes once enough is buffered, so it waits while the peer is not reading.
pub struct FrameWriter {
    inner: FramedWrite<WriteHalf, MessageEncoder>,
    /// How long one write may wait for the peer to read before it fails; `None`: forever.
    write_timeout: Option<std::time::Duration>,
    /// The TCP socket under the stream, which lives as long as either half.
    socket: RawFd,
}

/// Splits a stream into typed frame halves, with `max_frame_bytes` as the limit for reading.
pub fn split(stream: impl Into<Stream>, max_frame_bytes: usize) -> (FrameReader, FrameWriter) {
    let stream = stream.into();
    // Requests and answers are small and latency-bound; Nagle would hold them back.
    let _ = stream.tcp().set_nodelay(true);
    let socket = stream.tcp().as_raw_fd();
    let (read, write): (ReadHalf, WriteHalf) = match stream {
        Stream::Plain(tcp) => {
            let (read, write) = tcp.into_split();
            (Box::new(read), Box::new(write))
        }
        Stream::Tls(tls) => {
            let (read, write) = tokio::io::split(*tls);
            (Box::new(read), Box::new(write))
        }
    };
    (
        FrameReader { inner: FramedRead::new(read, frame::codec(max_frame_bytes)) },
        // Our own writes are bounded by what we choose to send, not by the peer's limit.
        FrameWriter { inner: FramedWrite::new(write, MessageEncoder), write_timeout: None, socket },
    )
}

impl FrameReader {
    /// Reads the next message: `Ok(None)` at a clean end of stream.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        Ok(self.read_sized().await?.map(|(message, _)| message))
    }

    /// Reads the next message and the size of its frame's payload.
    pub async fn read_sized<T: DeserializeOwned>(&mut self) -> Result<Option<(T, usize)>, ReadError> {
        self.read_decoded(frame::decode).await
    }

    /// Reads the next message with `decode` (for a message with a decoder of its own, such as
    /// [`crate::protocol::request::decode_request`]) and the size of its frame's payload.
    pub async fn read_decoded<T>(
        &mut self,
        decode: fn(&[u8]) -> Result<T, DecodeError>,
    ) -> Result<Option<(T, usize)>, ReadError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Ok(payload)) => Ok(Some((decode(&payload)?, payload.len()))),
            Some(Err(e)) => Err(classify(e, self.inner.decoder().max_frame_length())),
        }
    }

    /// Reads a message with `decode` (and its size) only if one can be had without waiting:
    /// `None` if not. Used to gather the requests a client has pipelined into one batch.
    pub fn read_ready<T>(
        &mut self,
        decode: fn(&[u8]) -> Result<T, DecodeError>,
    ) -> Option<Result<Option<(T, usize)>, ReadError>> {
        self.read_decoded(decode).now_or_never()
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
    /// Fails every later write that waits longer than `timeout` for the peer to read.
    pub fn set_write_timeout(&mut self, timeout: std::time::Duration) {
        self.write_timeout = Some(timeout);
    }

    /// Queues a message, writing what is buffered once there is enough of it.
    pub async fn feed<T: Serialize>(&mut self, message: &T) -> io::Result<()> {
        self.feed_outgoing(Outgoing::Named(message)).await
    }

    /// Queues a message in the form it names.
    pub async fn feed_outgoing<T: Serialize>(&mut self, message: Outgoing<'_, T>) -> io::Result<()> {
        self.bounded(|inner| inner.feed(message)).await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.bounded(|inner| SinkExt::<Outgoing<'_, ()>>::flush(inner)).await
    }

    /// Sends one message now.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> io::Result<()> {
        self.bounded(|inner| inner.send(Outgoing::Named(message))).await
    }

    /// Sends one message now, without field names ([`Outgoing::Compact`]).
    pub async fn send_compact<T: Serialize>(&mut self, message: &T) -> io::Result<()> {
        self.send_outgoing(Outgoing::Compact(message)).await
    }

    /// Sends one message now, in the form it names.
    pub async fn send_outgoing<T: Serialize>(&mut self, message: Outgoing<'_, T>) -> io::Result<()> {
        self.bounded(|inner| inner.send(message)).await
    }

    /// Runs a write within the write timeout, if there is one. A write that completes at once
    /// (the usual case) sets no timer.
    async fn bounded<'a, F, Fut>(&'a mut self, write: F) -> io::Result<()>
    where
        F: FnOnce(&'a mut FramedWrite<WriteHalf, MessageEncoder>) -> Fut,
        Fut: std::future::Future<Output = io::Result<()>> + 'a,
    {
        let timeout = self.write_timeout;
        let write = write(&mut self.inner);
        tokio::pin!(write);
        if let Some(done) = (&mut write).now_or_never() {
            return done;
        }
        match timeout {
            None => write.await,
            Some(timeout) => tokio::time::timeout(timeout, write).await.unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the peer read nothing for {} ms", timeout.as_millis()),
                ))
            }),
        }
    }

    /// The TCP socket under this half, for a look at its state (see `server::forward`); valid
    /// while this half lives.
    pub(crate) fn socket(&self) -> RawFd {
        self.socket
    }
}
