//! How a key's value and metadata are laid out in the store: one record per key, a fixed header
//! then the value, so that a read finds both with one lookup and a value is never copied to
//! reach its metadata.
//!
//! | bytes | field |
//! |-------|-------|
//! | 0..8  | `create_revision`, little-endian |
//! | 8..16 | `mod_revision` |
//! | 16..24 | `version` |
//! | 24..  | the value |
//!
//! A record shorter than its header is corruption, reported as such, never a panic.

use crate::protocol::message::KeyValue;
use bytes::{BufMut, Bytes, BytesMut};
use serde_bytes::ByteBuf;

const HEADER_BYTES: usize = 24;

/// A key's metadata (etcd's, with the same meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// The revision of the write that created the key (since it last did not exist).
    pub create_revision: u64,
    /// The revision of the write that last changed it.
    pub mod_revision: u64,
    /// How many writes changed it since it was created: 1 after creation.
    pub version: u64,
}

impl Meta {
    /// The metadata of a key written at `revision`, given what it had before, if it existed.
    pub fn next(before: Option<Meta>, revision: u64) -> Meta {
        match before {
            Some(before) => Meta { mod_revision: revision, version: before.version + 1, ..before },
            None => Meta { create_revision: revision, mod_revision: revision, version: 1 },
        }
    }
}

/// A stored record that is too short to hold its header.
#[derive(Debug, thiserror::Error)]
#[error("a stored record of {0} bytes is shorter than its {HEADER_BYTES}-byte header")]
pub struct Corrupt(usize);

impl From<Corrupt> for redb::StorageError {
    fn from(e: Corrupt) -> Self {
        redb::StorageError::Corrupted(e.to_string())
    }
}

/// Lays out a record.
pub fn encode(meta: Meta, value: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_BYTES + value.len());
    out.put_u64_le(meta.create_revision);
    out.put_u64_le(meta.mod_revision);
    out.put_u64_le(meta.version);
    out.put_slice(value);
    out.freeze()
}

/// A record's metadata and value.
pub fn decode(record: &[u8]) -> Result<(Meta, &[u8]), Corrupt> {
    if record.len() < HEADER_BYTES {
        return Err(Corrupt(record.len()));
    }
    let word = |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().expect("8 bytes"));
    let meta = Meta { create_revision: word(0), mod_revision: word(8), version: word(16) };
    Ok((meta, &record[HEADER_BYTES..]))
}

/// A key and its record as the wire shows them; the value left out if `with_value` is false.
pub fn key_value(key: &[u8], record: &[u8], with_value: bool) -> Result<KeyValue, Corrupt> {
    let (meta, value) = decode(record)?;
    Ok(KeyValue {
        key: ByteBuf::from(key),
        value: with_value.then(|| ByteBuf::from(value)),
        create_revision: meta.create_revision,
        mod_revision: meta.mod_revision,
        version: meta.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_short_one_is_corrupt() {
        let meta = Meta { create_revision: 3, mod_revision: u64::MAX, version: 7 };
        let record = encode(meta, b"\0value");
        assert_eq!(decode(&record).unwrap(), (meta, b"\0value".as_slice()));
        assert_eq!(decode(&encode(meta, b"")).unwrap().1, b"");
        assert!(decode(&record[..23]).is_err());
    }

    #[test]
    fn metadata_follows_creation_and_changes() {
        let created = Meta::next(None, 5);
        assert_eq!(created, Meta { create_revision: 5, mod_revision: 5, version: 1 });
        assert_eq!(Meta::next(Some(created), 9), Meta { create_revision: 5, mod_revision: 9, version: 2 });
    }
}
