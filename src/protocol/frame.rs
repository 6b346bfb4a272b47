//! Framing and payload encoding.
//!
//! A frame is `u32` big-endian payload length, then the payload. The length counts the payload only.
//! Frames longer than the receiver's limit are rejected by the codec *before* their payload is
//! buffered, so a hostile length prefix cannot make us allocate.
//!
//! Payloads are MessagePack with structs encoded as maps keyed by field name
//! (`rmp_serde::to_vec_named`): self-describing, so a field added later is ignored by older
//! readers, and decodable by any MessagePack library.
//!
//! Raft's messages between nodes are the exception ([`Outgoing::Compact`]): they carry log entries
//! by the thousand, for which field names were much of the bytes and most of the encoding time
//! (docs/BENCHMARKS.md), and they only ever pass between nodes of this crate. [`decode`] reads both forms.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::codec::{Encoder, LengthDelimitedCodec};

/// Default upper bound of one frame's payload, for both directions.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Room a frame between nodes keeps for everything around the log entries of an append, or the
/// bytes of a snapshot chunk: the vote, log ids, the snapshot's membership, encoding overhead.
pub const PEER_FRAME_MARGIN: usize = 16 * 1024;

/// Room a log entry takes around its write: its log id and payload tag, encoded.
pub const ENTRY_OVERHEAD: usize = 64;

/// The largest write (by [`crate::command::Write::encoded_len_estimate`]) whose log entry still
/// fits an append to a peer that accepts frames of `max_frame_bytes`.
pub const fn max_write_bytes(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_sub(PEER_FRAME_MARGIN + ENTRY_OVERHEAD)
}

/// Builds the length-delimited codec used on every connection.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .big_endian()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// A payload that is not a valid message of the expected type.
#[derive(Debug, thiserror::Error)]
#[error("malformed payload: {0}")]
pub struct DecodeError(String);

/// Encodes a message as a frame payload.
pub fn encode<T: Serialize>(message: &T) -> Bytes {
    // Serializing our own message types into a Vec cannot fail: they hold no maps with non-string
    // keys and no types MessagePack lacks. A failure would be a bug in this crate, not bad input.
    Bytes::from(rmp_serde::to_vec_named(message).expect("protocol messages always serialize"))
}

/// A message to send, in one of the two forms.
pub enum Outgoing<'a, T> {
    /// With field names ([`encode`]).
    Named(&'a T),
    /// With structs as arrays, without field names: for messages between nodes only.
    Compact(&'a T),
    /// Written by a function of its own, in the compact form (`raft::wire`); `T` is unused.
    Encoded(&'a EncodeFn<'a>),
}

/// Writes a message's payload at the end of a buffer, or says why it cannot.
pub type EncodeFn<'a> = dyn Fn(&mut BytesMut) -> Result<(), String> + Sync + 'a;

/// Writes messages as frames straight into a connection's write buffer: serialized in place
/// behind a length prefix filled in after, rather than into a payload of their own that the
/// buffer then copies. A payload grown from empty was reallocated several times per answer, and
/// that, with its copy, cost a node more than any other part of sending one.
#[derive(Debug, Default)]
pub struct MessageEncoder;

impl<T: Serialize> Encoder<Outgoing<'_, T>> for MessageEncoder {
    type Error = std::io::Error;

    fn encode(&mut self, message: Outgoing<'_, T>, buffer: &mut BytesMut) -> std::io::Result<()> {
        let start = buffer.len();
        buffer.put_u32(0);
        let written = match message {
            Outgoing::Named(message) => rmp_serde::encode::write_named(&mut (&mut *buffer).writer(), message)
                .map_err(|e| e.to_string()),
            Outgoing::Compact(message) => {
                rmp_serde::encode::write(&mut (&mut *buffer).writer(), message).map_err(|e| e.to_string())
            }
            Outgoing::Encoded(write) => write(buffer),
        };
        let length = buffer.len() - start - 4;
        let length = match (written, u32::try_from(length)) {
            (Ok(()), Ok(length)) => length,
            (written, _) => {
                buffer.truncate(start);
                let why = written.err().unwrap_or_else(|| format!("a payload of {length} bytes"));
                return Err(std::io::Error::other(format!("cannot frame a message: {why}")));
            }
        };
        buffer[start..start + 4].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }
}

/// Decodes a frame payload, in either form.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(payload).map_err(|e| DecodeError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    fn framed(payloads: &[&[u8]]) -> BytesMut {
        let mut c = codec(64);
        let mut buf = BytesMut::new();
        for p in payloads {
            c.encode(Bytes::copy_from_slice(p), &mut buf).unwrap();
        }
        buf
    }

    #[test]
    fn length_prefix_is_u32_big_endian_of_payload_only() {
        assert_eq!(&framed(&[b"abc"])[..], b"\x00\x00\x00\x03abc");
    }

    #[test]
    fn merged_frames_decode_one_by_one() {
        let mut buf = framed(&[b"one", b"", b"three"]);
        let mut c = codec(64);
        assert_eq!(&c.decode(&mut buf).unwrap().unwrap()[..], b"one");
        assert_eq!(&c.decode(&mut buf).unwrap().unwrap()[..], b"");
        assert_eq!(&c.decode(&mut buf).unwrap().unwrap()[..], b"three");
        assert!(c.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn split_frame_waits_for_the_rest_at_every_split_point() {
        let whole = framed(&[b"hello world"]);
        for cut in 0..whole.len() {
            let mut c = codec(64);
            let mut buf = BytesMut::from(&whole[..cut]);
            assert!(c.decode(&mut buf).unwrap().is_none(), "cut at {cut}");
            buf.put_slice(&whole[cut..]);
            assert_eq!(&c.decode(&mut buf).unwrap().unwrap()[..], b"hello world");
        }
    }

    #[test]
    fn oversize_length_is_rejected_before_the_payload_arrives() {
        let mut c = codec(64);
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x41"[..]); // 65 > 64, no payload sent yet
        assert!(c.decode(&mut buf).is_err());
        // A frame of exactly the limit is fine.
        let mut small = codec(4);
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x04abcd"[..]);
        assert_eq!(&small.decode(&mut buf).unwrap().unwrap()[..], b"abcd");
    }

    #[test]
    fn eof_inside_a_frame_is_an_error() {
        let mut c = codec(64);
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x05ab"[..]);
        assert!(c.decode_eof(&mut buf).is_err());
    }

    #[test]
    fn the_encoder_frames_messages_as_the_codec_reads_them() {
        let args = vec![serde_bytes::ByteBuf::from("GET"), serde_bytes::ByteBuf::from("k")];
        let request = crate::protocol::message::Request::new(7, args);
        let mut buffer = BytesMut::from(&b"before"[..]);
        MessageEncoder.encode(Outgoing::Named(&request), &mut buffer).unwrap();
        MessageEncoder.encode(Outgoing::Compact(&request), &mut buffer).unwrap();
        assert_eq!(&buffer.split_to(6)[..], b"before");
        let mut c = codec(1024);
        let named = c.decode(&mut buffer).unwrap().unwrap();
        assert_eq!(named, encode(&request));
        let compact = c.decode(&mut buffer).unwrap().unwrap();
        assert_eq!(compact, rmp_serde::to_vec(&request).unwrap());
        assert_eq!(decode::<crate::protocol::message::Request>(&compact).unwrap(), request);
        assert!(buffer.is_empty());
    }

    #[test]
    fn garbage_payload_is_a_decode_error_not_a_panic() {
        let r: Result<crate::protocol::message::Request, _> = decode(b"\xc1\xff\x00garbage");
        assert!(r.is_err());
    }

    proptest::proptest! {
        /// Whatever bytes arrive, the codec yields frames within its limit or an error, never a
        /// panic and never a frame over the limit.
        #[test]
        fn arbitrary_bytes_never_yield_a_frame_over_the_limit(
            wire in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            max in 1usize..64,
        ) {
            use tokio_util::codec::Decoder;
            let mut c = codec(max);
            let mut buf = bytes::BytesMut::from(wire.as_slice());
            while let Ok(Some(frame)) = c.decode(&mut buf) {
                proptest::prop_assert!(frame.len() <= max);
            }
        }

        #[test]
        fn any_payloads_round_trip_through_any_chunking(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..80), 0..8),
            chunk in 1usize..17,
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let wire = {
                let mut c = codec(100);
                let mut buf = BytesMut::new();
                for p in &refs { c.encode(Bytes::copy_from_slice(p), &mut buf).unwrap(); }
                buf
            };
            let mut c = codec(100);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.put_slice(piece);
                while let Some(frame) = c.decode(&mut buf).unwrap() { out.push(frame.to_vec()); }
            }
            proptest::prop_assert_eq!(out, payloads);
        }
    }
}
