//! Decoding a client's [`Request`], the one message every command pays for.
//!
//! serde's derived decoder finds each field of a named struct by handing its name to a visitor,
//! and decodes `once`, a struct inside it, the same way; at the node a client talks to, that was
//! one of the larger costs the exactly-once numbering added to a write (docs/BENCHMARKS.md).
//! [`decode_request`] reads the shape kv-cli and most clients send (a map of the known field
//! names, each at most once, with the expected MessagePack types, and nothing after it) with
//! plain byte reads, and hands anything else to serde: the compact (array) form, unknown
//! fields, repeated fields, integers sent signed, byte strings sent as arrays of numbers. What
//! is accepted, what it decodes to and what an error says are serde's in every case; the
//! fast path only gets there sooner.
//!
//! Not done: a fast path for the compact form, which kv-cli does not send.

use super::frame::{self, DecodeError};
use super::message::{Once, Request};
use super::msgpack::{array_len, bin_or_str, boolean, map_len, optional, string, uint};
use serde_bytes::ByteBuf;

/// Decodes a request payload.
pub fn decode_request(payload: &[u8]) -> Result<Request, DecodeError> {
    match named(&mut &payload[..]) {
        Some(request) => Ok(request),
        None => frame::decode(payload),
    }
}

/// The request if `input` is exactly one in the usual named shape; `None` otherwise.
fn named(input: &mut &[u8]) -> Option<Request> {
    let mut request = Request::new(0, Vec::new());
    let mut seen = Fields::default();
    for _ in 0..map_len(input)? {
        match string(input)? {
            b"id" => request.id = seen.first(Fields::ID).then(|| uint(input))??,
            b"args" => request.args = seen.first(Fields::ARGS).then(|| byte_strings(input))??,
            b"local" => request.local = seen.first(Fields::LOCAL).then(|| boolean(input))??,
            b"min_acks" => {
                request.min_acks = seen
                    .first(Fields::MIN_ACKS)
                    .then(|| optional(input, |i| u32::try_from(uint(i)?).ok()))??
            }
            b"ack_timeout_ms" => {
                request.ack_timeout_ms = seen.first(Fields::ACK_TIMEOUT).then(|| optional(input, uint))??
            }
            b"once" => request.once = seen.first(Fields::ONCE).then(|| optional(input, once))??,
            b"wait_acks" => request.wait_acks = seen.first(Fields::WAIT_ACKS).then(|| boolean(input))??,
            _ => return None,
        }
    }
    (seen.has(Fields::ID) && seen.has(Fields::ARGS) && input.is_empty()).then_some(request)
}

/// A session's numbering, in the named shape.
fn once(input: &mut &[u8]) -> Option<Once> {
    let (mut session, mut seq, mut answered_below) = (None, None, None);
    for _ in 0..map_len(input)? {
        let slot = match string(input)? {
            b"session" => &mut session,
            b"seq" => &mut seq,
            b"answered_below" => &mut answered_below,
            _ => return None,
        };
        if slot.replace(uint(input)?).is_some() {
            return None;
        }
    }
    Some(Once { session: session?, seq: seq?, answered_below: answered_below.unwrap_or(0) })
}

/// Which of a request's fields have been read.
#[derive(Default)]
struct Fields(u8);

impl Fields {
    const ID: u8 = 1;
    const ARGS: u8 = 1 << 1;
    const LOCAL: u8 = 1 << 2;
    const MIN_ACKS: u8 = 1 << 3;
    const ACK_TIMEOUT: u8 = 1 << 4;
    const ONCE: u8 = 1 << 5;
    const WAIT_ACKS: u8 = 1 << 6;

    /// Marks `field` read: `false` if it already was.
    fn first(&mut self, field: u8) -> bool {
        let first = !self.has(field);
        self.0 |= field;
        first
    }

    fn has(&self, field: u8) -> bool {
        self.0 & field != 0
    }
}

/// An array of byte strings, each a `bin` or a `str`.
fn byte_strings(input: &mut &[u8]) -> Option<Vec<ByteBuf>> {
    let count = array_len(input)?;
    // Each takes at least a byte: a count the input cannot hold reserves nothing.
    let mut args = Vec::with_capacity(count.min(input.len()));
    for _ in 0..count {
        args.push(ByteBuf::from(bin_or_str(input)?));
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn named_bytes(value: &serde_json::Value) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }

    /// Both decoders' answers to `payload`, errors as text.
    fn both(payload: &[u8]) -> (Option<Request>, Result<Request, String>) {
        let serde = frame::decode::<Request>(payload).map_err(|e| e.to_string());
        (named(&mut &payload[..]), serde)
    }

    #[test]
    fn the_usual_shape_takes_the_fast_path_and_matches_serde() {
        let mut request =
            Request::new(7, vec![ByteBuf::from("SET"), ByteBuf::from("k"), ByteBuf::from(vec![0, 255])]);
        request.once = Some(Once { session: u64::MAX, seq: 300, answered_below: 299 });
        request.min_acks = Some(2);
        request.ack_timeout_ms = Some(70_000);
        request.local = true;
        request.wait_acks = true;
        for request in [request.clone(), Request::new(0, vec![]), Request { once: None, ..request }] {
            let payload = rmp_serde::to_vec_named(&request).unwrap();
            let (fast, serde) = both(&payload);
            assert_eq!(fast.as_ref(), Some(&request));
            assert_eq!(serde, Ok(request));
        }
    }

    #[test]
    fn byte_strings_sent_as_str_match_serde_even_when_not_utf8() {
        // {"id": 1, "args": [str "PING", str 0xff 0xfe]}
        let mut payload = vec![0x82, 0xa2, b'i', b'd', 0x01, 0xa4, b'a', b'r', b'g', b's', 0x92];
        payload.extend([0xa4, b'P', b'I', b'N', b'G', 0xa2, 0xff, 0xfe]);
        let (fast, serde) = both(&payload);
        assert_eq!(fast.map(Ok), Some(serde));
    }

    #[test]
    fn other_shapes_are_left_to_serde() {
        let cases = [
            // The compact form.
            rmp_serde::to_vec(&Request::new(1, vec![ByteBuf::from("PING")])).unwrap(),
            named_bytes(&json!({"id": 1, "args": ["PING"], "added_later": 1})),
            named_bytes(&json!({"id": -1, "args": []})),
            named_bytes(&json!({"id": 1, "args": [[80, 73]]})),
            named_bytes(&json!({"id": 1})),
            named_bytes(&json!({"id": 1, "args": [], "min_acks": 4_294_967_296u64})),
            named_bytes(&json!({"id": 1, "args": [], "once": {"session": 1}})),
            named_bytes(&json!({"id": 1, "args": [], "once": {"session": 1, "seq": 2, "other": 3}})),
            named_bytes(&json!({"id": 1, "args": [], "local": 1})),
            // A field twice: {"id": 1, "args": [], "id": 2}.
            vec![0x83, 0xa2, b'i', b'd', 0x01, 0xa4, b'a', b'r', b'g', b's', 0x90, 0xa2, b'i', b'd', 0x02],
            // Bytes after the request.
            [named_bytes(&json!({"id": 1, "args": []})), vec![0xc0]].concat(),
        ];
        for payload in cases {
            let (fast, serde) = both(&payload);
            assert_eq!(fast, None, "{payload:?} took the fast path (serde: {serde:?})");
            assert_eq!(decode_request(&payload).map_err(|e| e.to_string()), serde);
        }
    }

    proptest::proptest! {
        /// Whatever the bytes, the fast path answers only where serde gives the same request.
        #[test]
        fn the_fast_path_agrees_with_serde_on_mutated_requests(
            args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..5),
            numbered in proptest::bool::ANY,
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 0..4),
        ) {
            let mut request = Request::new(7, args.into_iter().map(ByteBuf::from).collect());
            if numbered {
                request.once = Some(Once { session: 1 << 40, seq: 9, answered_below: 3 });
            }
            let mut payload = rmp_serde::to_vec_named(&request).unwrap();
            for (at, byte) in flips {
                let len = payload.len();
                payload[at % len] ^= byte;
            }
            let (fast, serde) = both(&payload);
            if let Some(fast) = fast {
                proptest::prop_assert_eq!(Ok(fast), serde);
            }
        }
    }
}
