//! Log entries in MessagePack by hand, where every write pays for them: in the entries file
//! ([`super::log_store`]), and in the `AppendEntries` a leader sends each follower
//! ([`super::network`]).
//!
//! serde's derived code reaches each field, variant name and integer through a call into
//! `rmp_serde`, and a numbered write nests one enum in another (`Normal`, `Once`, then the
//! write itself), each with its name as a string. Per write, the leader encoded it three times,
//! each follower twice and decoded it once, and that came to about a tenth of the three nodes'
//! instructions (docs/BENCHMARKS.md). Here the usual entries go straight between bytes and
//! values:
//!
//! - [`encode_entry`] and [`encode_append_entries`] write byte for byte what serde writes
//!   (structs as arrays, enums as a one-entry map from the variant's name), so the entries file
//!   and the peers' messages keep their format: the tests compare with serde for every shape.
//!   A write other than a plain `SET`, or another payload, is handed to serde in place, since
//!   MessagePack values simply follow one another.
//! - [`decode_entry`] and [`decode_incoming`] read that form, and hand to serde each entry or
//!   write they do not know, and the whole message whenever anything else is not exactly as
//!   they expect (the named form older files hold, integers sent signed, byte strings sent as
//!   `str`). What is accepted and what it decodes to are serde's; the fast path only gets there
//!   sooner.
//!
//! Not done: the other messages between nodes (votes, snapshots, the control plane), which are
//! not per write.

use super::TypeConfig;
use super::network::RaftRequest;
use crate::command::Write;
use crate::peer::PeerMessage;
use crate::protocol::frame::{self, DecodeError};
use crate::protocol::msgpack::{self, EncodeError, serde_value};
use bytes::{BufMut, Bytes};
use openraft::impls::leader_id_adv::LeaderId;
use openraft::raft::AppendEntriesRequest;
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{EntryPayload, LogId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

type Entry = EntryOf<TypeConfig>;

fn serde_in_place(value: &impl Serialize, out: &mut impl BufMut) -> Result<(), EncodeError> {
    msgpack::serde_in_place(value, out, false)
}

/// Writes `entry` as `rmp_serde::encode::write` would.
pub fn encode_entry(entry: &Entry, out: &mut impl BufMut) -> Result<(), EncodeError> {
    msgpack::put_array_len(out, 2)?;
    put_log_id(out, &entry.log_id);
    match &entry.payload {
        EntryPayload::Normal(write) => {
            msgpack::put_map_len(out, 1)?;
            msgpack::put_str(out, "Normal")?;
            put_write(out, write)
        }
        EntryPayload::Blank => Ok(msgpack::put_str(out, "Blank")?),
        membership => serde_in_place(membership, out),
    }
}

/// Writes `PeerMessage::Raft(RaftRequest::AppendEntries(rpc))` as `rmp_serde::encode::write`
/// would.
pub fn encode_append_entries(
    rpc: &AppendEntriesRequest<TypeConfig>,
    out: &mut impl BufMut,
) -> Result<(), EncodeError> {
    msgpack::put_map_len(out, 1)?;
    msgpack::put_str(out, "Raft")?;
    msgpack::put_map_len(out, 1)?;
    msgpack::put_str(out, "AppendEntries")?;
    msgpack::put_array_len(out, 4)?;
    msgpack::put_array_len(out, 2)?;
    put_leader_id(out, &rpc.vote.leader_id);
    msgpack::put_bool(out, rpc.vote.committed);
    put_optional_log_id(out, rpc.prev_log_id.as_ref());
    msgpack::put_array_len(out, rpc.entries.len())?;
    for entry in &rpc.entries {
        encode_entry(entry, out)?;
    }
    put_optional_log_id(out, rpc.leader_commit.as_ref());
    Ok(())
}

fn put_leader_id(out: &mut impl BufMut, leader_id: &LeaderId<u64, u64>) {
    // Two elements: a fixed-size array header.
    out.put_u8(0x92);
    msgpack::put_uint(out, leader_id.term);
    msgpack::put_uint(out, leader_id.node_id);
}

fn put_log_id(out: &mut impl BufMut, log_id: &LogIdOf<TypeConfig>) {
    out.put_u8(0x92);
    put_leader_id(out, &log_id.leader_id);
    msgpack::put_uint(out, log_id.index);
}

fn put_optional_log_id(out: &mut impl BufMut, log_id: Option<&LogIdOf<TypeConfig>>) {
    match log_id {
        Some(log_id) => put_log_id(out, log_id),
        None => msgpack::put_nil(out),
    }
}

fn put_write(out: &mut impl BufMut, write: &Write) -> Result<(), EncodeError> {
    match write {
        Write::Set { key, value, only_if: None } => {
            msgpack::put_map_len(out, 1)?;
            msgpack::put_str(out, "Set")?;
            // `only_if` is left out when unset.
            msgpack::put_array_len(out, 2)?;
            msgpack::put_bin(out, key)?;
            msgpack::put_bin(out, value)?;
            Ok(())
        }
        Write::Once { session, seq, answered_below, write } => {
            msgpack::put_map_len(out, 1)?;
            msgpack::put_str(out, "Once")?;
            msgpack::put_array_len(out, 4)?;
            msgpack::put_uint(out, *session);
            msgpack::put_uint(out, *seq);
            msgpack::put_uint(out, *answered_below);
            put_write(out, write)
        }
        other => serde_in_place(other, out),
    }
}

/// Decodes an entry as the entries file holds it (any form serde reads).
pub fn decode_entry_record(record: &[u8]) -> Result<Entry, DecodeError> {
    let mut input = record;
    match decode_entry(&mut input) {
        Some(entry) if input.is_empty() => Ok(entry),
        _ => frame::decode(record),
    }
}

/// An entry from the front of `input`, if it is one: by hand in the form [`encode_entry`]
/// writes, else by serde.
pub fn decode_entry(input: &mut &[u8]) -> Option<Entry> {
    let start = *input;
    if let Some(entry) = entry_by_hand(input) {
        return Some(entry);
    }
    *input = start;
    serde_value(input)
}

fn entry_by_hand(input: &mut &[u8]) -> Option<Entry> {
    if msgpack::array_len(input)? != 2 {
        return None;
    }
    let log_id = log_id(input)?;
    let payload = if input.first() == Some(&0x81) {
        *input = &input[1..];
        if msgpack::string(input)? != b"Normal" {
            return None;
        }
        EntryPayload::Normal(write(input, 0)?)
    } else if msgpack::string(input)? == b"Blank" {
        EntryPayload::Blank
    } else {
        return None;
    };
    Some(Entry { log_id, payload })
}

fn leader_id(input: &mut &[u8]) -> Option<LeaderId<u64, u64>> {
    if msgpack::array_len(input)? != 2 {
        return None;
    }
    Some(LeaderId { term: msgpack::uint(input)?, node_id: msgpack::uint(input)? })
}

fn log_id(input: &mut &[u8]) -> Option<LogIdOf<TypeConfig>> {
    if msgpack::array_len(input)? != 2 {
        return None;
    }
    Some(LogId { leader_id: leader_id(input)?, index: msgpack::uint(input)? })
}

/// A write: a plain `SET` or a session's wrapper (`nested` deep) by hand, anything else by serde.
fn write(input: &mut &[u8], nested: usize) -> Option<Write> {
    let start = *input;
    if let Some(write) = write_by_hand(input, nested) {
        return Some(write);
    }
    *input = start;
    serde_value(input)
}

fn write_by_hand(input: &mut &[u8], nested: usize) -> Option<Write> {
    if msgpack::map_len(input)? != 1 {
        return None;
    }
    match msgpack::string(input)? {
        b"Set" => {
            if msgpack::array_len(input)? != 2 {
                return None;
            }
            let key = Bytes::copy_from_slice(msgpack::bin(input)?);
            let value = Bytes::copy_from_slice(msgpack::bin(input)?);
            Some(Write::Set { key, value, only_if: None })
        }
        // A wrapper in a wrapper is serde's, which bounds how deep values nest.
        b"Once" if nested == 0 => {
            if msgpack::array_len(input)? != 4 {
                return None;
            }
            let (session, seq, answered_below) =
                (msgpack::uint(input)?, msgpack::uint(input)?, msgpack::uint(input)?);
            let write = Arc::new(write(input, nested + 1)?);
            Some(Write::Once { session, seq, answered_below, write })
        }
        _ => None,
    }
}

/// Decodes a message from a peer: an `AppendEntries` by hand, anything else by serde.
pub fn decode_incoming<C: DeserializeOwned>(
    payload: &[u8],
) -> Result<PeerMessage<RaftRequest, C>, DecodeError> {
    let mut input = payload;
    match append_entries(&mut input) {
        Some(rpc) if input.is_empty() => Ok(PeerMessage::Raft(RaftRequest::AppendEntries(rpc))),
        _ => frame::decode(payload),
    }
}

fn append_entries(input: &mut &[u8]) -> Option<AppendEntriesRequest<TypeConfig>> {
    if msgpack::map_len(input)? != 1 || msgpack::string(input)? != b"Raft" {
        return None;
    }
    if msgpack::map_len(input)? != 1 || msgpack::string(input)? != b"AppendEntries" {
        return None;
    }
    if msgpack::array_len(input)? != 4 || msgpack::array_len(input)? != 2 {
        return None;
    }
    let vote: VoteOf<TypeConfig> =
        openraft::impls::Vote { leader_id: leader_id(input)?, committed: msgpack::boolean(input)? };
    let prev_log_id = msgpack::optional(input, log_id)?;
    let count = msgpack::array_len(input)?;
    // Each takes a few bytes at least: a count the input cannot hold reserves nothing.
    let mut entries = Vec::with_capacity(count.min(input.len() / 4));
    for _ in 0..count {
        entries.push(decode_entry(input)?);
    }
    let leader_commit = msgpack::optional(input, log_id)?;
    Some(AppendEntriesRequest { vote, prev_log_id, entries, leader_commit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::SetCondition;
    use crate::server::control::ControlRequest;
    use openraft::Membership;
    use std::collections::{BTreeMap, BTreeSet};

    fn log_id(term: u64, node_id: u64, index: u64) -> LogIdOf<TypeConfig> {
        LogId { leader_id: LeaderId { term, node_id }, index }
    }

    fn once(session: u64, seq: u64, write: Write) -> Write {
        Write::Once { session, seq, answered_below: seq.saturating_sub(3), write: Arc::new(write) }
    }

    /// One entry of every shape: by hand, by hand around serde, and serde's alone; with numbers
    /// and byte strings at the edges of their encodings.
    fn entries() -> Vec<Entry> {
        let big = Bytes::from(vec![7u8; 70_000]);
        let writes = vec![
            Write::set("k", "v"),
            Write::set("", ""),
            Write::set(vec![1u8; 255], big.clone()),
            Write::set(vec![2u8; 256], vec![3u8; 65_536]),
            Write::Set { key: "k".into(), value: "v".into(), only_if: Some(SetCondition::Absent) },
            once(1, 1, Write::set("k", "v")),
            once(u64::MAX, 1 << 40, Write::set("key", big)),
            once(127, 128, Write::Incr { key: "n".into(), by: -1 }),
            once(5, 6, Write::Del { keys: vec!["a".into(), "b".into()], if_revision: Some(3) }),
            once(5, 7, once(5, 8, Write::set("deep", "x"))),
            Write::MSet { pairs: vec![("a".into(), "1".into())] },
            Write::Del { keys: vec!["a".into()], if_revision: None },
        ];
        let mut entries: Vec<Entry> = writes
            .into_iter()
            .enumerate()
            .map(|(i, write)| Entry {
                log_id: log_id(3, 2, 1 << (i * 5)),
                payload: EntryPayload::Normal(write),
            })
            .collect();
        entries.push(Entry { log_id: log_id(u64::MAX, 0, 0), payload: EntryPayload::Blank });
        let nodes: BTreeMap<u64, openraft::BasicNode> =
            (1..=3).map(|id| (id, openraft::BasicNode::new(format!("127.0.0.1:{id}")))).collect();
        let voters = vec![BTreeSet::from([1, 2, 3])];
        let membership = Membership::new(voters, nodes).unwrap();
        entries.push(Entry { log_id: log_id(9, 1, 77), payload: EntryPayload::Membership(membership) });
        entries
    }

    fn requests() -> Vec<AppendEntriesRequest<TypeConfig>> {
        let vote = |term, node_id, committed| openraft::impls::Vote {
            leader_id: LeaderId { term, node_id },
            committed,
        };
        vec![
            AppendEntriesRequest {
                vote: vote(1, 1, true),
                prev_log_id: None,
                entries: vec![],
                leader_commit: None,
            },
            AppendEntriesRequest {
                vote: vote(300, 70_000, false),
                prev_log_id: Some(log_id(299, 2, 1 << 33)),
                entries: entries(),
                leader_commit: Some(log_id(299, 2, 1 << 33)),
            },
            AppendEntriesRequest {
                vote: vote(2, 3, true),
                prev_log_id: Some(log_id(2, 3, 5)),
                entries: (0..20).map(|i| entries()[i % 3].clone()).collect(),
                leader_commit: None,
            },
        ]
    }

    type Incoming = PeerMessage<RaftRequest, ControlRequest>;

    fn by_serde(rpc: &AppendEntriesRequest<TypeConfig>) -> Vec<u8> {
        rmp_serde::to_vec(&PeerMessage::<_, ControlRequest>::Raft(RaftRequest::AppendEntries(rpc.clone())))
            .unwrap()
    }

    #[test]
    fn entries_are_written_byte_for_byte_as_serde_writes_them_and_read_back() {
        for entry in entries() {
            let mut ours = Vec::new();
            encode_entry(&entry, &mut ours).unwrap();
            assert_eq!(ours, rmp_serde::to_vec(&entry).unwrap(), "{entry:?}");
            let mut input = &ours[..];
            assert_eq!(decode_entry(&mut input).as_ref(), Some(&entry));
            assert!(input.is_empty());
            assert_eq!(decode_entry_record(&ours).unwrap(), entry);
        }
    }

    #[test]
    fn usual_entries_take_the_fast_path() {
        for entry in &entries()[..4] {
            let bytes = rmp_serde::to_vec(entry).unwrap();
            assert_eq!(entry_by_hand(&mut &bytes[..]).as_ref(), Some(entry));
        }
        let numbered = &entries()[5];
        assert!(entry_by_hand(&mut &rmp_serde::to_vec(numbered).unwrap()[..]).is_some());
    }

    #[test]
    fn entries_in_the_named_form_are_read_by_serde() {
        for entry in entries() {
            let named = rmp_serde::to_vec_named(&entry).unwrap();
            assert_eq!(decode_entry_record(&named).unwrap(), entry);
        }
    }

    #[test]
    fn append_entries_are_written_as_serde_writes_them_and_read_back() {
        for rpc in requests() {
            let mut ours = bytes::BytesMut::new();
            encode_append_entries(&rpc, &mut ours).unwrap();
            let theirs = by_serde(&rpc);
            assert_eq!(&ours[..], &theirs[..]);
            let Ok(PeerMessage::Raft(RaftRequest::AppendEntries(decoded))) =
                decode_incoming::<ControlRequest>(&ours)
            else {
                panic!("not an AppendEntries")
            };
            assert_eq!(format!("{decoded:?}"), format!("{rpc:?}"));
            assert_eq!(decoded.entries, rpc.entries);
            assert!(append_entries(&mut &ours[..]).is_some(), "took the fast path");
        }
    }

    #[test]
    fn other_messages_and_bytes_after_one_are_left_to_serde() {
        let vote: Incoming = PeerMessage::Raft(RaftRequest::Vote(openraft::raft::VoteRequest {
            vote: openraft::impls::Vote { leader_id: LeaderId { term: 1, node_id: 1 }, committed: false },
            last_log_id: None,
            leadership_transfer: false,
        }));
        let bytes = rmp_serde::to_vec(&vote).unwrap();
        assert!(matches!(
            decode_incoming::<ControlRequest>(&bytes),
            Ok(PeerMessage::Raft(RaftRequest::Vote(_)))
        ));
        let status: Incoming = PeerMessage::Control(ControlRequest::Status);
        let bytes = rmp_serde::to_vec(&status).unwrap();
        assert!(matches!(
            decode_incoming::<ControlRequest>(&bytes),
            Ok(PeerMessage::Control(ControlRequest::Status))
        ));
        let mut trailing = by_serde(&requests()[0]);
        trailing.push(0xc0);
        let mut input = &trailing[..];
        assert!(append_entries(&mut input).is_some() && !input.is_empty());
        let ours = decode_incoming::<ControlRequest>(&trailing).map_err(|e| e.to_string());
        let theirs = frame::decode::<Incoming>(&trailing).map_err(|e| e.to_string());
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
    }

    proptest::proptest! {
        /// Whatever the bytes, the fast path answers only where serde gives the same message.
        #[test]
        fn the_fast_path_agrees_with_serde_on_mutated_messages(
            which in 0usize..3,
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..4),
        ) {
            let mut bytes = by_serde(&requests()[which]);
            for (at, byte) in flips {
                let len = bytes.len();
                bytes[at % len] ^= byte;
            }
            let mut input = &bytes[..];
            if let Some(fast) = append_entries(&mut input).filter(|_| input.is_empty()) {
                let Ok(PeerMessage::Raft(RaftRequest::AppendEntries(serde))) = frame::decode::<Incoming>(&bytes) else {
                    return Err(proptest::test_runner::TestCaseError::fail("serde refused what the fast path took"));
                };
                proptest::prop_assert_eq!(format!("{fast:?}"), format!("{serde:?}"));
                proptest::prop_assert_eq!(fast.entries, serde.entries);
            }
        }
    }
}
