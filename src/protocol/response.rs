//! A [`Response`] by hand, in the named form every answer takes: from a node to its clients, and
//! from a leader to each follower that forwards its clients' writes.
//!
//! serde reads a [`Reply`] (an internally tagged enum: its variant is a `type` field beside the
//! others) by first decoding the whole map into a tree of generic values, then decoding the
//! variant from that; with the replication picture that follows it, decoding an answer cost a
//! follower several times what the write's own log entry did (docs/BENCHMARKS.md). So:
//!
//! - [`encode_response`] writes byte for byte what `rmp_serde::encode::write_named` writes (the
//!   tests compare every shape), with the usual replies (`status`, `nil`, `integer`, `bulk`) and
//!   the replication picture by hand, and any other reply handed to serde in place.
//! - [`decode_response`] reads exactly that shape, fields in that order, and hands anything else
//!   to serde: what is accepted and what it decodes to are serde's.
//!
//! Not done: the other replies (errors, tables, arrays, scans, transactions) by hand; they are
//! rarer than a write's `OK` or a read's value.

use super::frame::{self, DecodeError};
use super::message::{AckState, PeerAck, Replication, Reply, Response};
use super::msgpack::{self, EncodeError};
use bytes::BufMut;
use serde_bytes::ByteBuf;

/// Writes `response` as `rmp_serde::encode::write_named` would.
pub fn encode_response(response: &Response, out: &mut impl BufMut) -> Result<(), EncodeError> {
    let Response { id, reply, leader, replication, revision } = response;
    let fields = 2
        + usize::from(leader.is_some())
        + usize::from(replication.is_some())
        + usize::from(revision.is_some());
    msgpack::put_map_len(out, fields)?;
    msgpack::put_str(out, "id")?;
    msgpack::put_uint(out, *id);
    msgpack::put_str(out, "reply")?;
    put_reply(out, reply)?;
    if let Some(leader) = leader {
        msgpack::put_str(out, "leader")?;
        msgpack::put_uint(out, *leader);
    }
    if let Some(replication) = replication {
        msgpack::put_str(out, "replication")?;
        put_replication(out, replication)?;
    }
    if let Some(revision) = revision {
        msgpack::put_str(out, "revision")?;
        msgpack::put_uint(out, *revision);
    }
    Ok(())
}

fn put_reply(out: &mut impl BufMut, reply: &Reply) -> Result<(), EncodeError> {
    match reply {
        Reply::Status { value } => {
            put_tag(out, 2, "status")?;
            msgpack::put_str(out, "value")?;
            msgpack::put_str(out, value)?;
        }
        Reply::Nil => put_tag(out, 1, "nil")?,
        Reply::Integer { value } => {
            put_tag(out, 2, "integer")?;
            msgpack::put_str(out, "value")?;
            msgpack::put_sint(out, *value);
        }
        Reply::Bulk { value } => {
            put_tag(out, 2, "bulk")?;
            msgpack::put_str(out, "value")?;
            msgpack::put_bin(out, value)?;
        }
        other => msgpack::serde_in_place(other, out, true)?,
    }
    Ok(())
}

/// A reply's map of `fields` (the tag among them), up to its tag.
fn put_tag(out: &mut impl BufMut, fields: usize, tag: &str) -> Result<(), EncodeError> {
    msgpack::put_map_len(out, fields)?;
    msgpack::put_str(out, "type")?;
    msgpack::put_str(out, tag)?;
    Ok(())
}

fn put_replication(out: &mut impl BufMut, replication: &Replication) -> Result<(), EncodeError> {
    msgpack::put_map_len(out, 3)?;
    msgpack::put_str(out, "term")?;
    msgpack::put_uint(out, replication.term);
    msgpack::put_str(out, "index")?;
    msgpack::put_uint(out, replication.index);
    msgpack::put_str(out, "peers")?;
    msgpack::put_array_len(out, replication.peers.len())?;
    for peer in &replication.peers {
        msgpack::put_map_len(out, 2 + usize::from(peer.ms.is_some()))?;
        msgpack::put_str(out, "node")?;
        msgpack::put_uint(out, peer.node);
        msgpack::put_str(out, "state")?;
        msgpack::put_str(out, state_name(peer.state))?;
        if let Some(ms) = peer.ms {
            msgpack::put_str(out, "ms")?;
            msgpack::put_f64(out, ms);
        }
    }
    Ok(())
}

fn state_name(state: AckState) -> &'static str {
    match state {
        AckState::Acked => "acked",
        AckState::Pending => "pending",
        AckState::Unreachable => "unreachable",
    }
}

/// Decodes a response payload.
pub fn decode_response(payload: &[u8]) -> Result<Response, DecodeError> {
    let mut input = payload;
    match response(&mut input) {
        Some(response) if input.is_empty() => Ok(response),
        _ => frame::decode(payload),
    }
}

/// The response at the front of `input`, if it is exactly in the shape [`encode_response`]
/// writes with a reply it writes by hand.
fn response(input: &mut &[u8]) -> Option<Response> {
    let fields = msgpack::map_len(input)?;
    if !(2..=5).contains(&fields) || msgpack::string(input)? != b"id" {
        return None;
    }
    let id = msgpack::uint(input)?;
    if msgpack::string(input)? != b"reply" {
        return None;
    }
    let mut response = Response::new(id, reply(input)?);
    // The optional fields, each at most once and in order.
    let mut next = 0;
    for _ in 2..fields {
        let name = msgpack::string(input)?;
        let at = ["leader", "replication", "revision"].iter().position(|n| n.as_bytes() == name)?;
        if at < next {
            return None;
        }
        next = at + 1;
        match at {
            0 => response.leader = Some(msgpack::uint(input)?),
            1 => response.replication = Some(replication(input)?),
            _ => response.revision = Some(msgpack::uint(input)?),
        }
    }
    Some(response)
}

fn reply(input: &mut &[u8]) -> Option<Reply> {
    let fields = msgpack::map_len(input)?;
    if msgpack::string(input)? != b"type" {
        return None;
    }
    let tag = msgpack::string(input)?;
    if tag == b"nil" {
        return (fields == 1).then_some(Reply::Nil);
    }
    if fields != 2 || msgpack::string(input)? != b"value" {
        return None;
    }
    match tag {
        b"status" => {
            let text = std::str::from_utf8(msgpack::string(input)?).ok()?;
            Some(Reply::Status { value: text.to_owned().into() })
        }
        b"integer" => Some(Reply::Integer { value: msgpack::sint(input)? }),
        b"bulk" => Some(Reply::Bulk { value: ByteBuf::from(msgpack::bin(input)?) }),
        _ => None,
    }
}

fn replication(input: &mut &[u8]) -> Option<Replication> {
    if msgpack::map_len(input)? != 3 || msgpack::string(input)? != b"term" {
        return None;
    }
    let term = msgpack::uint(input)?;
    if msgpack::string(input)? != b"index" {
        return None;
    }
    let index = msgpack::uint(input)?;
    if msgpack::string(input)? != b"peers" {
        return None;
    }
    let count = msgpack::array_len(input)?;
    let mut peers = Vec::with_capacity(count.min(input.len()));
    for _ in 0..count {
        let fields = msgpack::map_len(input)?;
        if !(2..=3).contains(&fields) || msgpack::string(input)? != b"node" {
            return None;
        }
        let node = msgpack::uint(input)?;
        if msgpack::string(input)? != b"state" {
            return None;
        }
        let state = match msgpack::string(input)? {
            b"acked" => AckState::Acked,
            b"pending" => AckState::Pending,
            b"unreachable" => AckState::Unreachable,
            _ => return None,
        };
        let ms = if fields == 3 {
            if msgpack::string(input)? != b"ms" {
                return None;
            }
            Some(msgpack::float(input)?)
        } else {
            None
        };
        peers.push(PeerAck { node, state, ms });
    }
    Some(Replication { term, index, peers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{ErrorCode, KeyValue};

    fn replies() -> Vec<Reply> {
        vec![
            Reply::ok(),
            Reply::Status { value: "PONG".into() },
            Reply::Status { value: "é".repeat(40).into() },
            Reply::Nil,
            Reply::Integer { value: 0 },
            Reply::Integer { value: -33 },
            Reply::Integer { value: i64::MIN },
            Reply::Integer { value: i64::MAX },
            Reply::Bulk { value: ByteBuf::from(vec![0u8, 255]) },
            Reply::Bulk { value: ByteBuf::from(vec![7u8; 70_000]) },
            Reply::error(ErrorCode::OutcomeUnknown, "lost"),
            Reply::Array { items: vec![Reply::Nil, Reply::ok()] },
            Reply::Entries {
                entries: vec![KeyValue {
                    key: ByteBuf::from("k"),
                    value: None,
                    create_revision: 1,
                    mod_revision: 2,
                    version: 1,
                }],
                more: true,
                next: Some(ByteBuf::from("l")),
            },
        ]
    }

    fn responses() -> Vec<Response> {
        let replication = Replication {
            term: 3,
            index: 1 << 40,
            peers: vec![
                PeerAck { node: 1, state: AckState::Acked, ms: Some(0.25) },
                PeerAck { node: 2, state: AckState::Pending, ms: None },
                PeerAck { node: 300, state: AckState::Unreachable, ms: None },
            ],
        };
        let mut all = Vec::new();
        for (i, reply) in replies().into_iter().enumerate() {
            all.push(Response::new(i as u64, reply.clone()));
            let mut full = Response::new(u64::MAX - i as u64, reply);
            full.leader = Some(2);
            full.replication = Some(replication.clone());
            full.revision = Some(i as u64 * 1000);
            all.push(full.clone());
            all.push(Response { leader: None, replication: None, ..full.clone() });
            all.push(Response {
                replication: Some(Replication { peers: vec![], ..replication.clone() }),
                ..full
            });
        }
        all
    }

    #[test]
    fn responses_are_written_byte_for_byte_as_serde_writes_them_and_read_back() {
        for response in responses() {
            let mut ours = Vec::new();
            encode_response(&response, &mut ours).unwrap();
            assert_eq!(ours, rmp_serde::to_vec_named(&response).unwrap(), "{response:?}");
            assert_eq!(decode_response(&ours).unwrap(), response);
        }
    }

    #[test]
    fn usual_replies_take_the_fast_path() {
        for response in responses()
            .into_iter()
            .filter(|r| !matches!(r.reply, Reply::Error { .. } | Reply::Array { .. } | Reply::Entries { .. }))
        {
            let bytes = rmp_serde::to_vec_named(&response).unwrap();
            let mut input = &bytes[..];
            assert_eq!(self::response(&mut input), Some(response));
            assert!(input.is_empty());
        }
    }

    #[test]
    fn other_shapes_are_left_to_serde() {
        let response = Response::new(7, Reply::ok());
        let cases = [
            // The compact form.
            rmp_serde::to_vec(&response).unwrap(),
            // Bytes after it.
            [rmp_serde::to_vec_named(&response).unwrap(), vec![0xc0]].concat(),
            // A status that is not UTF-8.
            vec![
                0x82, 0xa2, b'i', b'd', 0x01, 0xa5, b'r', b'e', b'p', b'l', b'y', 0x82, 0xa4, b't', b'y',
                b'p', b'e', 0xa6, b's', b't', b'a', b't', b'u', b's', 0xa5, b'v', b'a', b'l', b'u', b'e',
                0xa1, 0xff,
            ],
        ];
        for payload in cases {
            let serde = frame::decode::<Response>(&payload).map_err(|e| e.to_string());
            let mut input = &payload[..];
            assert!(self::response(&mut input).is_none() || !input.is_empty());
            assert_eq!(decode_response(&payload).map_err(|e| e.to_string()), serde);
        }
    }

    proptest::proptest! {
        /// Whatever the bytes, the fast path answers only where serde gives the same response.
        #[test]
        fn the_fast_path_agrees_with_serde_on_mutated_responses(
            which in 0usize..52,
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..4),
        ) {
            let mut bytes = rmp_serde::to_vec_named(&responses()[which]).unwrap();
            for (at, byte) in flips {
                let len = bytes.len();
                bytes[at % len] ^= byte;
            }
            let mut input = &bytes[..];
            if let Some(fast) = response(&mut input).filter(|_| input.is_empty()) {
                proptest::prop_assert_eq!(Ok(fast), frame::decode::<Response>(&bytes).map_err(|e| e.to_string()));
            }
        }
    }
}
