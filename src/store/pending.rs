//! The applied writes not yet flushed into the database, key by key.
//!
//! A key's record holds its metadata (create revision and version) as well as its value, and a
//! write's metadata follows from the record before it. Looking that record up in the database on
//! every `SET` was the largest cost the metadata added to the write path: a flush rewrites most
//! pages, and redb drops them from its cache, so the lookups missed. A plain `SET` on a key with
//! nothing unflushed therefore records only what it knows ([`Pending::Sets`]): its value, its
//! revision, and how many such `SET`s came since the last flush. The create revision and
//! version follow from the database's record whenever they are needed (a flush, a `WITHMETA`, a
//! scan, a conditional write, the change log), all of which are rarer than `SET`s and either
//! read the database anyway or walk it in key order.
//!
//! Not done: resolving a key's pending `SET`s in place once looked up, since a read only holds
//! the store's read lock.

use super::record::{self, Meta};
use bytes::Bytes;
use redb::{ReadableTable, StorageError};

/// One key's applied state since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pending {
    /// Its record, or `None`: deleted.
    Record(Option<Bytes>),
    /// Only plain `SET`s on top of what the database holds for the key: `count` of them, the
    /// first at revision `first`, the last at `revision` with `value`.
    Sets { first: u64, count: u64, revision: u64, value: Bytes },
}

impl Pending {
    /// The state after a plain `SET` of `value` at `revision` on top of `before` (`None`: the
    /// key has nothing unflushed).
    pub fn set(before: Option<&Pending>, value: &Bytes, revision: u64) -> Result<Pending, StorageError> {
        Ok(match before {
            None => Pending::Sets { first: revision, count: 1, revision, value: value.clone() },
            Some(Pending::Sets { first, count, .. }) => {
                Pending::Sets { first: *first, count: count + 1, revision, value: value.clone() }
            }
            Some(Pending::Record(record)) => {
                let meta = record.as_deref().map(record::decode).transpose()?.map(|(meta, _)| meta);
                Pending::Record(Some(record::encode(Meta::next(meta, revision), value)))
            }
        })
    }

    /// The value, if the key exists; needs no lookup.
    pub fn value(&self) -> Result<Option<&[u8]>, record::Corrupt> {
        match self {
            Pending::Record(record) => Ok(record.as_deref().map(record::decode).transpose()?.map(|(_, v)| v)),
            Pending::Sets { value, .. } => Ok(Some(value)),
        }
    }

    /// The record (`None`: deleted), looking up the metadata of `key` beneath this layer with
    /// `beneath` if it depends on it.
    pub fn record(
        &self,
        beneath: impl FnOnce() -> Result<Option<Meta>, StorageError>,
    ) -> Result<Option<Bytes>, StorageError> {
        match self {
            Pending::Record(record) => Ok(record.clone()),
            Pending::Sets { .. } => Ok(self.record_on(beneath()?)),
        }
    }

    /// The record (`None`: deleted), given the metadata of the key's flushed record.
    pub fn record_on(&self, flushed: Option<Meta>) -> Option<Bytes> {
        match self {
            Pending::Record(record) => record.clone(),
            Pending::Sets { .. } => self.as_sets().map(|sets| sets.record_on(flushed)),
        }
    }

    /// Its plain `SET`s, if that is what it is.
    pub fn as_sets(&self) -> Option<Sets<'_>> {
        match self {
            Pending::Sets { first, count, revision, value } => {
                Some(Sets { first: *first, count: *count, revision: *revision, value })
            }
            Pending::Record(_) => None,
        }
    }
}

/// A key's plain `SET`s since the last flush ([`Pending::Sets`]), whose record depends on the
/// flushed one.
pub(super) struct Sets<'a> {
    first: u64,
    count: u64,
    revision: u64,
    value: &'a Bytes,
}

impl Sets<'_> {
    /// The record they leave, given the metadata of the key's flushed record.
    pub fn record_on(&self, flushed: Option<Meta>) -> Bytes {
        let Sets { first, count, revision, value } = *self;
        let meta = match flushed {
            Some(before) => Meta { mod_revision: revision, version: before.version + count, ..before },
            None => Meta { create_revision: first, mod_revision: revision, version: count },
        };
        record::encode(meta, value)
    }
}

/// The metadata of `key`'s record in `flushed` (a view of the database as last flushed, or the
/// flush's own table before it writes `key`), if it has one.
pub fn flushed_meta(
    key: &[u8],
    flushed: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Result<Option<Meta>, StorageError> {
    match flushed.get(key)? {
        Some(record) => Ok(Some(record::decode(record.value())?.0)),
        None => Ok(None),
    }
}

/// The metadata of `key` in `layers` (top first) over `flushed`, if it exists.
pub fn meta_in(
    layers: &[&super::Unflushed],
    flushed: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Meta>, StorageError> {
    match layers.split_first() {
        None => flushed_meta(key, flushed),
        Some((top, beneath)) => match top.get(key) {
            None => meta_in(beneath, flushed, key),
            Some(pending) => {
                let record = pending.record(|| meta_in(beneath, flushed, key))?;
                Ok(record.as_deref().map(record::decode).transpose()?.map(|(meta, _)| meta))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_on_a_known_record_keep_it_known() {
        let created = Pending::set(Some(&Pending::Record(None)), &Bytes::from("a"), 5).unwrap();
        let again = Pending::set(Some(&created), &Bytes::from("b"), 7).unwrap();
        let Pending::Record(Some(record)) = again else { panic!("known: {again:?}") };
        let (meta, value) = record::decode(&record).unwrap();
        assert_eq!((meta, value), (Meta { create_revision: 5, mod_revision: 7, version: 2 }, &b"b"[..]));
    }

    #[test]
    fn sets_on_nothing_unflushed_count_without_a_lookup() {
        let first = Pending::set(None, &Bytes::from("a"), 5).unwrap();
        let second = Pending::set(Some(&first), &Bytes::from("b"), 9).unwrap();
        assert_eq!(second, Pending::Sets { first: 5, count: 2, revision: 9, value: Bytes::from("b") });
        assert_eq!(second.value().unwrap(), Some(&b"b"[..]));
    }
}
