//! A layer of applied writes in memory: each key's [`Pending`] state, ordered by key, with a
//! filter in front for point reads.
//!
//! The store's layer of unflushed writes holds up to a flush's worth of keys (tens of thousands).
//! A point read of a key it does not hold, which is most reads between two flushes, walked the
//! whole ordered map down to a leaf, missing the cache at nearly every node on the way: in a
//! profile of linearizable reads after a write load, that walk was about 3% of the nodes' time
//! per read (docs/BENCHMARKS.md). The filter answers most such reads from one cache line: each
//! key sets a few bits of one 64-byte block, chosen by a seeded hash of the key, and a key whose
//! bits are not all set was never inserted. It never says "not here" of a key that is here;
//! it may say "maybe" of one that is not, and the map is then walked as before.
//!
//! The filter has a fixed size, meant for a flush's keys. More keys (writes of many keys each)
//! only make it say "maybe" more often. Its seed is per process, so keys a client picks cannot
//! be aimed at one block.
//!
//! Deliberately not done: a filter for the small layers (a write's own staged keys, the empty
//! layer that stands for no flush under way), which are cheap to walk; and removal, which a
//! layer never needs (a deleted key stays in it as a deletion until the flush).

use super::pending::Pending;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::hash::BuildHasher;

/// Applied writes not yet in the database, by key. Reads through [`std::ops::Deref`] see the
/// map itself (ordered iteration, ranges); writes go through the methods here, which keep the
/// filter in step.
pub(super) struct Unflushed {
    map: BTreeMap<Bytes, Pending>,
    filter: Option<KeyFilter>,
}

impl Unflushed {
    /// A layer without a filter, for a few keys.
    pub const fn new() -> Unflushed {
        Unflushed { map: BTreeMap::new(), filter: None }
    }

    /// A layer with a filter, for a flush's worth of keys.
    pub fn filtered() -> Unflushed {
        Unflushed { map: BTreeMap::new(), filter: Some(KeyFilter::new()) }
    }

    /// The state of `key`, if this layer has one.
    pub fn get(&self, key: &[u8]) -> Option<&Pending> {
        if self.filter.as_ref().is_some_and(|filter| !filter.may_hold(key)) {
            return None;
        }
        self.map.get(key)
    }

    /// The map's entry for `key`, to be filled in: the key counts as held from now on.
    pub fn entry(&mut self, key: Bytes) -> Entry<'_, Bytes, Pending> {
        self.note(&key);
        self.map.entry(key)
    }

    pub fn insert(&mut self, key: Bytes, pending: Pending) {
        self.note(&key);
        self.map.insert(key, pending);
    }

    /// Takes in every key of `newer`, whose states replace this layer's.
    pub fn extend(&mut self, newer: Unflushed) {
        for (key, pending) in newer.map {
            self.insert(key, pending);
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        if let Some(filter) = &mut self.filter {
            filter.clear();
        }
    }

    fn note(&mut self, key: &[u8]) {
        if let Some(filter) = &mut self.filter {
            filter.insert(key);
        }
    }
}

impl std::ops::Deref for Unflushed {
    type Target = BTreeMap<Bytes, Pending>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

/// A blocked Bloom filter of keys: [`BLOCKS`] blocks of 512 bits, [`BITS_PER_KEY`] bits of one
/// block per key.
struct KeyFilter {
    blocks: Box<[[u64; 8]]>,
    hasher: foldhash::fast::RandomState,
}

/// 64 KiB: 16 bits for each of a flush's 32,768 entries' keys, where 4 bits per key make a
/// false "maybe" rare (well under 1% of absent keys; the tests check it stays under 2%).
const BLOCKS: usize = 1024;
const BITS_PER_KEY: u32 = 4;

impl KeyFilter {
    fn new() -> KeyFilter {
        KeyFilter { blocks: vec![[0; 8]; BLOCKS].into_boxed_slice(), hasher: Default::default() }
    }

    /// The block of `key`, and the bits it sets in it (as a word index and a mask each).
    fn locate(&self, key: &[u8]) -> (usize, [(usize, u64); BITS_PER_KEY as usize]) {
        let hash = self.hasher.hash_one(key);
        // The top 28 bits pick the block, the low 36 the bits (9 each, of 512): no bit serves both.
        let block = (((hash >> 36) * BLOCKS as u64) >> 28) as usize;
        let bits = std::array::from_fn(|i| {
            let bit = (hash >> (9 * i)) & 511;
            ((bit >> 6) as usize, 1u64 << (bit & 63))
        });
        (block, bits)
    }

    fn insert(&mut self, key: &[u8]) {
        let (block, bits) = self.locate(key);
        let block = &mut self.blocks[block];
        for (word, mask) in bits {
            block[word] |= mask;
        }
    }

    /// False only if `key` was never inserted since the last [`KeyFilter::clear`].
    fn may_hold(&self, key: &[u8]) -> bool {
        let (block, bits) = self.locate(key);
        let block = &self.blocks[block];
        bits.iter().all(|&(word, mask)| block[word] & mask != 0)
    }

    fn clear(&mut self) {
        self.blocks.fill([0; 8]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> Bytes {
        Bytes::from(format!("key:{n:08}"))
    }

    fn set(value: &'static str) -> Pending {
        Pending::Record(Some(Bytes::from_static(value.as_bytes())))
    }

    #[test]
    fn every_way_in_is_found_and_clear_forgets() {
        let mut layer = Unflushed::filtered();
        layer.insert(key(1), set("a"));
        layer.entry(key(2)).or_insert(set("b"));
        let mut newer = Unflushed::new();
        newer.insert(key(3), set("c"));
        newer.insert(key(1), set("d"));
        layer.extend(newer);
        assert_eq!(layer.get(&key(1)), Some(&set("d")));
        assert_eq!(layer.get(&key(2)), Some(&set("b")));
        assert_eq!(layer.get(&key(3)), Some(&set("c")));
        assert_eq!(layer.get(&key(4)), None);
        assert_eq!(layer.len(), 3);
        layer.clear();
        assert!(layer.is_empty());
        assert!((1..=3).all(|n| layer.get(&key(n)).is_none()));
        assert!(layer.filter.as_ref().is_some_and(|f| (1..=3).all(|n| !f.may_hold(&key(n)))));
    }

    #[test]
    fn no_key_held_is_missed_and_few_absent_ones_pass() {
        let mut layer = Unflushed::filtered();
        // Twice the keys it is sized for: it must still find every one.
        for n in 0..65_536 {
            layer.insert(key(n), set("v"));
        }
        assert!((0..65_536).all(|n| layer.get(&key(n)).is_some()));
        let mut layer = Unflushed::filtered();
        for n in 0..32_768 {
            layer.insert(key(n), set("v"));
        }
        let filter = layer.filter.as_ref().unwrap();
        let passed = (1_000_000..1_100_000).filter(|&n| filter.may_hold(&key(n))).count();
        assert!(passed < 2_000, "{passed} of 100,000 absent keys passed the filter");
    }
}
