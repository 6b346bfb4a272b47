//! Writes applied exactly once: for each client session, which of its numbered writes were
//! applied, and their answers (the Raft dissertation, §6.3).
//!
//! A client that lost the answer to a write sends it again with the same session and sequence
//! number, to any node. The state machine, finding the number among the session's applied writes,
//! answers what it answered the first time and applies nothing. Since this is part of the
//! replicated state, every node decides the same: the table is changed only by applying entries,
//! in log order, and travels in snapshots.
//!
//! Every bound is counted, never timed, so that each node drops the same records at the same entry:
//!
//! - a session remembers its writes the client has not had the answers of (each write says which
//!   it has, `answered_below`), and at most its last [`ANSWERS_PER_SESSION`] (more than kv-cli
//!   keeps in flight); an older number is answered "cannot tell" and not applied, even one never
//!   applied: what bounds a client is the span of its unanswered numbers, not their count (one
//!   slow write among many answered out of order is left behind; kv-cli's answers come in order);
//! - an answer over [`MAX_KEPT_ANSWER_BYTES`] is remembered as applied without its answer;
//! - at most [`MAX_SESSIONS`] sessions are kept, and at most [`MAX_REMEMBERED_WRITES`] writes
//!   across them: past either, the session used least recently is dropped whole.
//!
//! Not done: a write resent for a session already dropped is applied again (it takes thousands of
//! sessions writing in between). Sessions are not registered, so a node cannot tell a dropped
//! session from a new one.

use super::Applied;
use crate::protocol::message::{ErrorCode, Reply};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Writes each session remembers.
pub const ANSWERS_PER_SESSION: usize = 1024;
/// Sessions remembered.
pub const MAX_SESSIONS: usize = 4096;
/// Writes remembered across every session.
pub const MAX_REMEMBERED_WRITES: usize = 1 << 20;
/// The largest answer kept; a larger one (a `TXN` with big reads) is remembered without it.
pub const MAX_KEPT_ANSWER_BYTES: usize = 1024;

/// What one session remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// When it last applied a write, by [`Sessions`]' clock.
    pub used: u64,
    /// Numbers at or below this are no longer remembered.
    pub forgotten_through: u64,
    /// Applied numbers, with their answers (none if too large to keep).
    pub applied: AppliedWrites,
}

/// A session's applied numbers with their answers, in order. A list, not a search tree: a
/// client numbers its writes as it sends them, so a new one nearly always goes at the end and
/// forgotten ones leave from the front, and a session holds a handful (what the client keeps in
/// flight). Stored and carried in snapshots as a map from number to answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedWrites(VecDeque<(u64, Option<Applied>)>);

impl AppliedWrites {
    fn position(&self, seq: u64) -> Result<usize, usize> {
        // Newest first: where nearly every lookup and insertion lands.
        match self.0.back() {
            Some((last, _)) if *last < seq => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&seq, |(at, _)| *at),
        }
    }

    fn get(&self, seq: u64) -> Option<&Option<Applied>> {
        self.position(seq).ok().map(|at| &self.0[at].1)
    }

    /// Records `seq`'s answer; whether it was new.
    fn insert(&mut self, seq: u64, answer: Option<Applied>) -> bool {
        match self.position(seq) {
            Ok(at) => {
                self.0[at].1 = answer;
                false
            }
            Err(at) => {
                self.0.insert(at, (seq, answer));
                true
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The numbers, in order.
    pub fn numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|(seq, _)| *seq)
    }
}

impl Serialize for AppliedWrites {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(seq, answer)| (seq, answer)))
    }
}

impl<'de> Deserialize<'de> for AppliedWrites {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through a map, which also puts the numbers in order.
        let map = BTreeMap::<u64, Option<Applied>>::deserialize(deserializer)?;
        Ok(AppliedWrites(map.into_iter().collect()))
    }
}

/// What is known of a write by its session and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Never applied: apply it.
    New,
    /// Applied before: answer this instead.
    Answered(Applied),
}

/// Every session's record, and what changed since the last flush.
#[derive(Debug, Default)]
pub struct Sessions {
    /// By session id. Hashed with a fast seeded hash: ids are the clients' choice, so they must
    /// not be able to pick colliding ones, but a write pays for two lookups.
    records: foldhash::HashMap<u64, SessionRecord>,
    /// Counts the writes recorded; orders the sessions by use (the least recently used one is
    /// found by a scan, only when one must be dropped: rare, and cheaper than keeping an order
    /// up to date on every write).
    clock: u64,
    /// Writes remembered, all sessions together.
    remembered: usize,
    /// Sessions changed or dropped since the last flush.
    dirty: foldhash::HashSet<u64>,
}

impl Sessions {
    /// The table as a snapshot or the database holds it.
    pub fn load(clock: u64, records: impl IntoIterator<Item = (u64, SessionRecord)>) -> Sessions {
        let mut sessions = Sessions { clock, ..Sessions::default() };
        for (id, record) in records {
            sessions.remembered += record.applied.len();
            sessions.records.insert(id, record);
        }
        sessions
    }

    /// Whether `seq` of `session` was applied, and what it answered; `revision` is the store's
    /// now, for the answers that report none of their own.
    pub fn seen(&self, session: u64, seq: u64, revision: u64) -> Seen {
        let Some(record) = self.records.get(&session) else { return Seen::New };
        match record.applied.get(seq) {
            Some(Some(applied)) => Seen::Answered(applied.clone()),
            Some(None) => Seen::Answered(Applied {
                reply: Reply::error(
                    ErrorCode::AlreadyApplied,
                    format!(
                        "this write was applied when first sent; its answer (over {MAX_KEPT_ANSWER_BYTES} \
                         bytes) was not kept"
                    ),
                ),
                revision,
            }),
            None if seq <= record.forgotten_through => Seen::Answered(Applied {
                reply: Reply::error(
                    ErrorCode::OutcomeUnknown,
                    format!(
                        "write {seq} of this session is older than the {ANSWERS_PER_SESSION} it remembers: \
                         whether it was applied can no longer be told; it was not applied now"
                    ),
                ),
                revision,
            }),
            None => Seen::New,
        }
    }

    /// Records that `seq` of `session` was applied and answered `applied`, and forgets the
    /// session's writes numbered below `answered_below` (their client has had their answers).
    pub fn record(&mut self, session: u64, seq: u64, answered_below: u64, applied: &Applied) {
        self.clock += 1;
        let record = self.records.entry(session).or_default();
        record.used = self.clock;
        let kept = (encoded_len(&applied.reply) <= MAX_KEPT_ANSWER_BYTES).then(|| applied.clone());
        if record.applied.insert(seq, kept) {
            self.remembered += 1;
        }
        while record.applied.len() > ANSWERS_PER_SESSION
            || record.applied.0.front().is_some_and(|(oldest, _)| *oldest < answered_below)
        {
            let (oldest, _) = record.applied.0.pop_front().expect("checked: not empty");
            record.forgotten_through = record.forgotten_through.max(oldest);
            self.remembered -= 1;
        }
        record.forgotten_through = record.forgotten_through.max(answered_below.saturating_sub(1));
        self.dirty.insert(session);
        while self.records.len() > MAX_SESSIONS || self.remembered > MAX_REMEMBERED_WRITES {
            // Clocks are distinct, so every node picks the same one.
            let Some(least) = self.records.iter().min_by_key(|(_, r)| r.used).map(|(id, _)| *id) else {
                break;
            };
            if let Some(dropped) = self.records.remove(&least) {
                self.remembered -= dropped.applied.len();
            }
            self.dirty.insert(least);
        }
    }

    /// The clock, for the database.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The sessions changed since the last call, with their records (none for a dropped one), by
    /// id.
    pub fn take_dirty(&mut self) -> Vec<(u64, Option<&SessionRecord>)> {
        let mut dirty: Vec<u64> = self.dirty.drain().collect();
        dirty.sort_unstable();
        dirty.into_iter().map(|id| (id, self.records.get(&id))).collect()
    }

    /// How many sessions are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.len()
    }
}

/// About how many bytes an answer takes.
fn encoded_len(reply: &Reply) -> usize {
    match reply {
        Reply::Status { value } => value.len() + 16,
        Reply::Nil | Reply::Integer { .. } => 16,
        Reply::Bulk { value } => value.len() + 16,
        Reply::Error { message, .. } => message.len() + 32,
        Reply::Array { items } | Reply::Txn { results: items, .. } => {
            items.iter().map(encoded_len).sum::<usize>() + 16
        }
        Reply::Entries { entries, .. } => {
            entries.iter().map(|e| e.key.len() + e.value.as_ref().map_or(0, |v| v.len()) + 32).sum::<usize>()
        }
        Reply::Table { rows, .. } => rows.len() * 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(revision: u64) -> Applied {
        Applied { reply: Reply::ok(), revision }
    }

    #[test]
    fn an_applied_write_is_answered_again_not_applied_again() {
        let mut sessions = Sessions::default();
        assert_eq!(sessions.seen(7, 1, 0), Seen::New);
        sessions.record(7, 1, 0, &ok(5));
        sessions.record(7, 3, 0, &ok(6));
        assert_eq!(sessions.seen(7, 1, 9), Seen::Answered(ok(5)));
        assert_eq!(sessions.seen(7, 3, 9), Seen::Answered(ok(6)));
        assert_eq!(sessions.seen(7, 2, 9), Seen::New, "a number skipped is not taken as applied");
        assert_eq!(sessions.seen(8, 1, 9), Seen::New, "sessions are apart");
        let big =
            Applied { reply: Reply::Bulk { value: vec![0u8; MAX_KEPT_ANSWER_BYTES].into() }, revision: 7 };
        sessions.record(7, 4, 0, &big);
        let Seen::Answered(Applied { reply: Reply::Error { code, .. }, .. }) = sessions.seen(7, 4, 9) else {
            panic!("remembered as applied")
        };
        assert_eq!(code, ErrorCode::AlreadyApplied);
    }

    #[test]
    fn old_numbers_and_idle_sessions_are_dropped_by_count() {
        let mut sessions = Sessions::default();
        for seq in 1..=ANSWERS_PER_SESSION as u64 + 2 {
            sessions.record(1, seq, 0, &ok(seq));
        }
        let Seen::Answered(Applied { reply: Reply::Error { code, .. }, .. }) = sessions.seen(1, 2, 0) else {
            panic!("too old to tell")
        };
        assert_eq!(code, ErrorCode::OutcomeUnknown);
        assert_eq!(sessions.seen(1, 3, 0), Seen::Answered(ok(3)));
        for session in 2..=MAX_SESSIONS as u64 + 1 {
            sessions.record(session, 1, 0, &ok(1));
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert_eq!(sessions.seen(1, 3, 0), Seen::New, "the least recently used session was dropped");
        assert_eq!(sessions.seen(2, 1, 0), Seen::Answered(ok(1)));
        let dirty = sessions.take_dirty();
        assert!(dirty.contains(&(1, None)), "the drop is flushed too");
        assert!(sessions.take_dirty().is_empty());
    }

    #[test]
    fn a_write_left_behind_by_more_newer_ones_than_are_remembered_is_refused_unapplied() {
        let mut sessions = Sessions::default();
        // Write 1 is slow; the client has every other answer, but must keep 1's open.
        let newest = ANSWERS_PER_SESSION as u64 + 1;
        for seq in 2..=newest {
            sessions.record(1, seq, 1, &ok(seq));
        }
        assert_eq!(sessions.seen(1, 1, 0), Seen::New, "within the span: still applied when it comes");
        sessions.record(1, newest + 1, 1, &ok(newest + 1));
        let Seen::Answered(Applied { reply: Reply::Error { code, .. }, .. }) = sessions.seen(1, 1, 0) else {
            panic!("past the span, it can no longer be told from a forgotten write")
        };
        assert_eq!(code, ErrorCode::OutcomeUnknown);
    }

    #[test]
    fn writes_the_client_has_had_answers_for_are_forgotten() {
        let mut sessions = Sessions::default();
        for seq in 1..=5 {
            sessions.record(1, seq, 0, &ok(seq));
        }
        // Write 6 says the client has had the answers of everything below 4.
        sessions.record(1, 6, 4, &ok(6));
        assert_eq!(sessions.records[&1].applied.numbers().collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(sessions.remembered, 3);
        let Seen::Answered(Applied { reply: Reply::Error { code, .. }, .. }) = sessions.seen(1, 2, 0) else {
            panic!("a forgotten write is not applied again")
        };
        assert_eq!(code, ErrorCode::OutcomeUnknown);
        assert_eq!(sessions.seen(1, 5, 0), Seen::Answered(ok(5)));
    }

    #[test]
    fn numbers_out_of_order_are_kept_in_order_and_stored_as_a_map() {
        let mut sessions = Sessions::default();
        for seq in [5, 2, 9, 7, 2] {
            sessions.record(1, seq, 0, &ok(seq));
        }
        let record = &sessions.records[&1];
        assert_eq!(record.applied.numbers().collect::<Vec<_>>(), [2, 5, 7, 9]);
        assert_eq!(sessions.remembered, 4, "a number recorded again is counted once");
        for seq in [2, 5, 7, 9] {
            assert_eq!(sessions.seen(1, seq, 0), Seen::Answered(ok(seq)));
        }
        assert_eq!(sessions.seen(1, 6, 0), Seen::New);
        // The stored form is the map it always was, so stores and snapshots written before read.
        let map: BTreeMap<u64, Option<Applied>> =
            [2, 5, 7, 9].into_iter().map(|seq| (seq, Some(ok(seq)))).collect();
        let bytes = rmp_serde::to_vec_named(&map).unwrap();
        assert_eq!(rmp_serde::to_vec_named(&record.applied).unwrap(), bytes);
        assert_eq!(rmp_serde::from_slice::<AppliedWrites>(&bytes).unwrap(), record.applied);
    }

    #[test]
    fn a_loaded_table_decides_as_the_one_it_was_saved_from() {
        let mut sessions = Sessions::default();
        sessions.record(1, 1, 0, &ok(1));
        sessions.record(2, 1, 0, &ok(2));
        let saved: Vec<(u64, SessionRecord)> =
            sessions.records.iter().map(|(id, r)| (*id, r.clone())).collect();
        let mut loaded = Sessions::load(sessions.clock(), saved);
        assert_eq!(loaded.seen(1, 1, 0), Seen::Answered(ok(1)));
        loaded.record(3, 1, 0, &ok(3));
        sessions.record(3, 1, 0, &ok(3));
        let used = |s: &Sessions| s.records.iter().map(|(id, r)| (*id, r.used)).collect::<BTreeMap<_, _>>();
        assert_eq!(used(&loaded), used(&sessions));
    }
}
