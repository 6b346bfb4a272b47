//! What each write does to the keys, and what it answers: deterministic, as the replicated log
//! needs (every node computes the same state and answers from the same entries).
//!
//! A write runs against [`Staged`]: a view of the applied state with the write's own changes on
//! top. Nothing reaches the applied state until the write has run to the end, so a write that
//! fails part-way (an `INCR` on text, say) changes nothing, and a `TXN` is all or nothing. If the
//! write changed any key, it takes the next revision: every key it changed carries that
//! revision as its `mod_revision`, and the change log gets one entry for it.
//!
//! Multi-key answers (`GET`s and `SCAN`s in a `TXN`) share a byte budget ([`ANSWER_BYTES`]); an
//! operation past it answers `TOO_LARGE`, so no answer outgrows a frame.

use super::pending::Pending;
use super::range;
use super::record::{self, Meta};
use super::{FlushedTable, Unflushed, View};
use crate::command::{Compare, SetCondition, Target, Txn, TxnOp, Write};
use crate::protocol::message::{ErrorCode, Reply};
use bytes::Bytes;
use redb::StorageError;
use serde_bytes::ByteBuf;

/// The most bytes of keys and values a multi-key answer carries (one value may run past it).
pub const ANSWER_BYTES: usize = crate::command::scan::PAGE_BYTES;

/// A key's change, for the change log: its new record, or `None` if it was deleted.
pub type Change = (Bytes, Option<Bytes>);

/// The applied state as one write sees it, with its own changes on top.
pub(super) struct Staged<'a> {
    /// The writes in memory beneath this one's, newest first.
    beneath: [&'a Unflushed; 2],
    flushed: &'a FlushedTable,
    /// The revision the write takes if it changes anything.
    revision: u64,
    /// The write's changes by key: a record, or `None` for a deletion.
    overlay: Unflushed,
    /// The same changes, in the order made.
    changes: Vec<Change>,
}

impl<'a> Staged<'a> {
    /// A view for the write after `revision`.
    pub fn new(beneath: [&'a Unflushed; 2], flushed: &'a FlushedTable, revision: u64) -> Staged<'a> {
        Staged { beneath, flushed, revision: revision + 1, overlay: Unflushed::new(), changes: Vec::new() }
    }

    /// Every layer of writes in memory, this one's first.
    fn layers(&self) -> [&Unflushed; 3] {
        [&self.overlay, self.beneath[0], self.beneath[1]]
    }

    /// The write's changes: by key, and in order. Empty if it changed nothing.
    pub fn finish(self) -> (Unflushed, Vec<Change>) {
        (self.overlay, self.changes)
    }

    /// Runs `f` on `key`'s metadata and value, if it exists.
    fn with<T>(&self, key: &[u8], f: impl FnOnce(Option<(Meta, &[u8])>) -> T) -> Result<T, StorageError> {
        let layers = self.layers();
        let view = View { layers: &layers, flushed: self.flushed };
        let mut f = Some(f);
        let found = super::with_record(view, key, |record| {
            let decoded = record::decode(record)?;
            Ok::<_, StorageError>(f.take().expect("called once")(Some(decoded)))
        })?;
        match found {
            Some(answer) => answer,
            None => Ok(f.take().expect("not called")(None)),
        }
    }

    fn meta(&self, key: &[u8]) -> Result<Option<Meta>, StorageError> {
        super::pending::meta_in(&self.layers(), self.flushed, key)
    }

    fn put(&mut self, key: &Bytes, value: &[u8]) -> Result<(), StorageError> {
        let meta = Meta::next(self.meta(key)?, self.revision);
        let record = record::encode(meta, value);
        self.overlay.insert(key.clone(), Pending::Record(Some(record.clone())));
        self.changes.push((key.clone(), Some(record)));
        Ok(())
    }

    /// Deletes `key`; whether it existed.
    fn delete(&mut self, key: &Bytes) -> Result<bool, StorageError> {
        if self.meta(key)?.is_none() {
            return Ok(false);
        }
        self.overlay.insert(key.clone(), Pending::Record(None));
        self.changes.push((key.clone(), None));
        Ok(true)
    }

    /// Applies one (non-system) write and answers it.
    pub fn apply(&mut self, write: &Write) -> Result<Reply, StorageError> {
        Ok(match write {
            Write::Set { key, value, only_if } => {
                let meta = self.meta(key)?;
                let holds = match only_if {
                    None => true,
                    Some(SetCondition::Absent) => meta.is_none(),
                    Some(SetCondition::Present) => meta.is_some(),
                    Some(SetCondition::ModRevision(r)) => meta.map_or(0, |m| m.mod_revision) == *r,
                };
                if !holds {
                    return Ok(Reply::Nil);
                }
                self.put(key, value)?;
                Reply::ok()
            }
            Write::Del { keys, if_revision } => {
                if let (Some(r), [key]) = (if_revision, keys.as_slice())
                    && self.meta(key)?.map_or(0, |m| m.mod_revision) != *r
                {
                    return Ok(Reply::Integer { value: 0 });
                }
                let mut removed = 0;
                for key in keys {
                    removed += i64::from(self.delete(key)?);
                }
                Reply::Integer { value: removed }
            }
            Write::MSet { pairs } => {
                for (key, value) in pairs {
                    self.put(key, value)?;
                }
                Reply::ok()
            }
            Write::Cas { key, expected, value } => {
                if !self.with(key, |found| found.is_some_and(|(_, v)| v == expected.as_ref()))? {
                    return Ok(Reply::Integer { value: 0 });
                }
                self.put(key, value)?;
                Reply::Integer { value: 1 }
            }
            Write::Incr { key, by } => {
                let current = self.with(key, |found| found.map(|(_, v)| parse_integer(v)))?;
                let Ok(current) = current.unwrap_or(Ok(0)) else {
                    return Ok(Reply::error(ErrorCode::NotInteger, "the value is not a 64-bit integer"));
                };
                let Some(new) = current.checked_add(*by) else {
                    return Ok(Reply::error(
                        ErrorCode::Overflow,
                        format!("{current} + {by} overflows a 64-bit integer; the value was not changed"),
                    ));
                };
                self.put(key, new.to_string().as_bytes())?;
                Reply::Integer { value: new }
            }
            Write::Txn(txn) => self.transaction(txn)?,
            Write::System(_) | Write::Once { .. } => {
                unreachable!("system writes and sessions are the store's, not a key's")
            }
        })
    }

    fn holds(&self, compare: &Compare) -> Result<bool, StorageError> {
        let op = compare.op;
        self.with(&compare.key, |found| match (&compare.target, found) {
            // etcd's rule: a missing key has no value to compare.
            (Target::Value(_), None) => false,
            (Target::Value(operand), Some((_, value))) => op.holds(value, operand.as_ref()),
            (Target::Version(n), found) => op.holds(&found.map_or(0, |(m, _)| m.version), n),
            (Target::CreateRevision(n), found) => op.holds(&found.map_or(0, |(m, _)| m.create_revision), n),
            (Target::ModRevision(n), found) => op.holds(&found.map_or(0, |(m, _)| m.mod_revision), n),
        })
    }

    fn transaction(&mut self, txn: &Txn) -> Result<Reply, StorageError> {
        let mut succeeded = true;
        for compare in &txn.compares {
            succeeded &= self.holds(compare)?;
        }
        let branch = if succeeded { &txn.then } else { &txn.otherwise };
        let mut budget = ANSWER_BYTES;
        let mut results = Vec::with_capacity(branch.len());
        for op in branch {
            results.push(match op {
                TxnOp::Set { key, value } => {
                    self.put(key, value)?;
                    Reply::ok()
                }
                TxnOp::Del { key } => Reply::Integer { value: i64::from(self.delete(key)?) },
                TxnOp::Get { key } => {
                    let value = self.with(key, |found| found.map(|(_, v)| ByteBuf::from(v)))?;
                    match value {
                        Some(value) if value.len() > budget => over_budget(),
                        Some(value) => {
                            budget -= value.len();
                            Reply::Bulk { value }
                        }
                        None => Reply::Nil,
                    }
                }
                TxnOp::Scan(_) if budget == 0 => over_budget(),
                TxnOp::Scan(scan) => {
                    let layers = self.layers();
                    let layers = range::layers(View { layers: &layers, flushed: self.flushed }, scan)?;
                    let page = range::page(layers, scan, budget)?;
                    budget = budget.saturating_sub(answer_bytes(&page));
                    page
                }
            });
        }
        Ok(Reply::Txn { succeeded, results })
    }
}

/// The answer to a read past a multi-key answer's byte budget.
pub fn over_budget() -> Reply {
    Reply::error(
        ErrorCode::TooLarge,
        format!("the answer would carry over {ANSWER_BYTES} bytes of keys and values; read fewer keys"),
    )
}

/// Roughly the bytes of keys and values an answer carries.
pub fn answer_bytes(reply: &Reply) -> usize {
    match reply {
        Reply::Bulk { value } => value.len(),
        Reply::Entries { entries, .. } => {
            entries.iter().map(|e| e.key.len() + e.value.as_ref().map_or(24, |v| v.len())).sum()
        }
        Reply::Array { items } => items.iter().map(answer_bytes).sum(),
        _ => 0,
    }
}

/// A value as `INCR` reads it: decimal, optionally signed, nothing else (Redis's rule).
fn parse_integer(value: &[u8]) -> Result<i64, ()> {
    std::str::from_utf8(value).ok().filter(|s| !s.starts_with('+')).and_then(|s| s.parse().ok()).ok_or(())
}
