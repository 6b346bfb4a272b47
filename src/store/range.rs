//! Reading a key range in order across the layers a key can live in: a transaction's own staged
//! writes, the applied writes not yet flushed, and the database. A higher layer's entry for a
//! key (a record, or a deletion) hides the lower ones'; the system's keys never show.
//!
//! One page stops at its limit or its byte budget and says where the next one starts, so the
//! memory an answer holds is bounded whatever the range holds. `COUNT` walks the whole range and
//! keeps nothing.

use super::View;
use super::record;
use crate::command::{Scan, ScanShape};
use crate::protocol::message::{KeyValue, Reply};
use bytes::Bytes;
use redb::{AccessGuard, StorageError};
use serde_bytes::ByteBuf;
use std::ops::Bound;

/// A record as found: in memory, or in the database (not copied until it is answered).
pub(super) enum Found {
    Memory(Bytes),
    Disk(AccessGuard<'static, &'static [u8]>),
}

impl Found {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Found::Memory(bytes) => bytes,
            Found::Disk(guard) => guard.value(),
        }
    }
}

/// One layer's entries in the range, in scan order: a record, or `None` for a deletion.
type Layer<'a> = Box<dyn Iterator<Item = Result<(Bytes, Option<Found>), StorageError>> + 'a>;

/// The entries in `scan`'s range of each of `view`'s layers, newest first, then the database's.
pub(super) fn layers<'a>(view: View<'a>, scan: &'a Scan) -> Result<Vec<Layer<'a>>, StorageError> {
    let View { layers: memory, flushed } = view;
    let start = Bound::Included(scan.range.start.as_ref());
    let end = scan.range.end.as_ref().map_or(Bound::Unbounded, |e| Bound::Excluded(e.as_ref()));
    let mut layers: Vec<Layer<'a>> = Vec::with_capacity(memory.len() + 1);
    for (depth, map) in memory.iter().enumerate() {
        let entries = map.range::<[u8], _>((start, end));
        let beneath = &memory[depth + 1..];
        let entries = entries.map(move |(k, v)| {
            let record = v.record(|| super::pending::meta_in(beneath, flushed, k))?;
            Ok((k.clone(), record.map(Found::Memory)))
        });
        layers.push(if scan.reverse { Box::new(entries.rev()) } else { Box::new(entries) });
    }
    let entries = flushed.range::<&[u8]>((start, end))?;
    let entries =
        entries.map(|item| item.map(|(k, v)| (Bytes::copy_from_slice(k.value()), Some(Found::Disk(v)))));
    layers.push(if scan.reverse { Box::new(entries.rev()) } else { Box::new(entries) });
    Ok(layers)
}

/// The live keys of `layers` in scan order, each with its record from the highest layer that
/// has it.
struct Merged<'a> {
    layers: Vec<std::iter::Peekable<Layer<'a>>>,
    reverse: bool,
}

impl Iterator for Merged<'_> {
    type Item = Result<(Bytes, Found), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // The next key in scan order, and the highest layer that holds it.
            let mut best: Option<(usize, Bytes)> = None;
            for (n, layer) in self.layers.iter_mut().enumerate() {
                match layer.peek() {
                    None => continue,
                    Some(Err(_)) => {
                        let Some(Err(e)) = layer.next() else { unreachable!("peeked an error") };
                        return Some(Err(e));
                    }
                    Some(Ok((key, _))) => {
                        let before = match &best {
                            None => true,
                            Some((_, b)) if self.reverse => key > b,
                            Some((_, b)) => key < b,
                        };
                        if before {
                            best = Some((n, key.clone()));
                        }
                    }
                }
            }
            let (top, key) = best?;
            let mut found = None;
            for (n, layer) in self.layers.iter_mut().enumerate() {
                if matches!(layer.peek(), Some(Ok((k, _))) if *k == key) {
                    let Some(Ok((_, record))) = layer.next() else { unreachable!("peeked an entry") };
                    if n == top {
                        found = record;
                    }
                }
            }
            match found {
                Some(record) if !crate::auth::is_system_key(&key) => return Some(Ok((key, record))),
                // Deleted, or the system's.
                _ => continue,
            }
        }
    }
}

/// Answers `scan` from `layers`: a page of at most `scan.limit` keys whose keys and values stop
/// once they come to `budget` bytes (though a page holds at least one key), or the count.
pub(super) fn page(layers: Vec<Layer<'_>>, scan: &Scan, budget: usize) -> Result<Reply, StorageError> {
    let merged =
        Merged { layers: layers.into_iter().map(Iterator::peekable).collect(), reverse: scan.reverse };
    if scan.shape == ScanShape::Count {
        let mut count = 0i64;
        for item in merged {
            item?;
            count += 1;
        }
        return Ok(Reply::Integer { value: count });
    }
    let with_values = scan.shape == ScanShape::Entries;
    let mut entries: Vec<KeyValue> = Vec::new();
    let mut bytes = 0;
    let mut more = false;
    for item in merged {
        let (key, found) = item?;
        let size = key.len() + if with_values { found.bytes().len() } else { 24 };
        if entries.len() == scan.limit as usize || (!entries.is_empty() && bytes + size > budget) {
            more = true;
            break;
        }
        bytes += size;
        entries.push(record::key_value(&key, found.bytes(), with_values)?);
    }
    let next = entries.last().filter(|_| more).map(|last| {
        let mut next = last.key.to_vec();
        if !scan.reverse {
            // The first key after the last one answered.
            next.push(0);
        }
        ByteBuf::from(next)
    });
    Ok(Reply::Entries { entries, more, next })
}
