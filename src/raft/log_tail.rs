//! The newest Raft log entries, kept decoded in memory in front of the entries file.
//!
//! Two kinds of entry live here. Entries appended but not yet durable must be here: openraft
//! reads them the moment `append` returns, before the writer thread has synced them. The most
//! recent durable entries stay too, up to [`KEEP_DURABLE_ENTRIES`] and [`KEEP_DURABLE_BYTES`]:
//! replication and apply read near the end of the log, and without them every such read cost a
//! `pread` and a MessagePack decode, about a tenth of a busy leader's CPU (docs/BENCHMARKS.md).
//!
//! The tail is always a run of consecutive indexes reaching to the last entry appended, so a
//! reader takes everything from [`Tail::first_index`] on from here and only what lies before it
//! from the file. Only durable entries at the front are ever dropped, and only by the writer
//! after the file holds them.

use super::TypeConfig;
use openraft::entry::RaftEntry;
use openraft::type_config::alias::{EntryOf, LogIdOf};
use std::collections::BTreeMap;
use std::ops::Range;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;

/// Durable entries kept at most, by count ...
pub const KEEP_DURABLE_ENTRIES: usize = 8192;
/// ... and by encoded size.
pub const KEEP_DURABLE_BYTES: usize = 8 * 1024 * 1024;

struct Cached {
    entry: Entry,
    /// Its encoded size, as a measure of what it holds.
    size: usize,
    durable: bool,
}

#[derive(Default)]
pub struct Tail {
    entries: BTreeMap<u64, Cached>,
    durable_entries: usize,
    durable_bytes: usize,
}

impl Tail {
    /// Adds an appended entry, not yet durable, after every entry already here.
    pub fn push(&mut self, entry: Entry, size: usize) {
        let index = entry.index();
        debug_assert!(self.entries.last_key_value().is_none_or(|(last, _)| *last < index));
        self.entries.insert(index, Cached { entry, size, durable: false });
    }

    /// Notes that the file now holds `log_id` (if it is still the entry at its index: a truncate
    /// and a new append may have replaced it), then drops the oldest durable entries beyond what
    /// is kept.
    pub fn mark_durable(&mut self, log_ids: impl IntoIterator<Item = LogId>) {
        for log_id in log_ids {
            if let Some(cached) = self.entries.get_mut(&log_id.index())
                && !cached.durable
                && cached.entry.log_id() == log_id
            {
                cached.durable = true;
                self.durable_entries += 1;
                self.durable_bytes += cached.size;
            }
        }
        while self.durable_entries > KEEP_DURABLE_ENTRIES || self.durable_bytes > KEEP_DURABLE_BYTES {
            let Some(first) = self.entries.first_entry() else { break };
            if !first.get().durable {
                break;
            }
            let dropped = first.remove();
            self.forget(dropped);
        }
    }

    /// Drops every entry from index `from` on.
    pub fn truncate_from(&mut self, from: u64) {
        let dropped = self.entries.split_off(&from);
        dropped.into_values().for_each(|cached| self.forget(cached));
    }

    /// Drops every entry up to and including index `upto`.
    pub fn purge_upto(&mut self, upto: u64) {
        let kept = self.entries.split_off(&(upto + 1));
        let dropped = std::mem::replace(&mut self.entries, kept);
        dropped.into_values().for_each(|cached| self.forget(cached));
    }

    fn forget(&mut self, cached: Cached) {
        if cached.durable {
            self.durable_entries -= 1;
            self.durable_bytes -= cached.size;
        }
    }

    /// The first index held here: every entry of the log from it on is here.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.first_key_value().map(|(index, _)| *index)
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries.last_key_value().map(|(_, cached)| cached.entry.log_id())
    }

    /// Copies of the entries here within `range` (cheap: payloads are shared `Bytes`).
    pub fn read(&self, range: Range<u64>) -> Vec<Entry> {
        if range.is_empty() {
            return Vec::new();
        }
        self.entries.range(range).map(|(_, cached)| cached.entry.clone()).collect()
    }

    /// Whether nothing is waiting to become durable.
    #[cfg(test)]
    pub fn all_durable(&self) -> bool {
        self.entries.values().all(|cached| cached.durable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{blank_ent, log_id};

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.index()).collect()
    }

    fn filled(count: u64) -> Tail {
        let mut tail = Tail::default();
        for index in 1..=count {
            tail.push(blank_ent::<TypeConfig>(1, 1, index), 10);
        }
        tail
    }

    #[test]
    fn only_durable_entries_beyond_the_limit_are_dropped_oldest_first() {
        let total = KEEP_DURABLE_ENTRIES as u64 + 100;
        let mut tail = filled(total);
        // Nothing durable yet: everything stays, however much there is.
        tail.mark_durable([]);
        assert_eq!(tail.first_index(), Some(1));

        tail.mark_durable((1..=total - 10).map(|i| log_id::<TypeConfig>(1, 1, i)));
        // KEEP_DURABLE_ENTRIES durable ones stay, plus the 10 still pending.
        assert_eq!(tail.first_index(), Some(total - 10 - KEEP_DURABLE_ENTRIES as u64 + 1));
        assert_eq!(tail.last_log_id().map(|id| id.index()), Some(total));
        assert!(!tail.all_durable());
    }

    #[test]
    fn big_entries_are_dropped_by_size() {
        let mut tail = Tail::default();
        let big = KEEP_DURABLE_BYTES / 4;
        for index in 1..=8 {
            tail.push(blank_ent::<TypeConfig>(1, 1, index), big);
        }
        tail.mark_durable((1..=8).map(|i| log_id::<TypeConfig>(1, 1, i)));
        assert_eq!(tail.first_index(), Some(5));
    }

    #[test]
    fn a_replaced_entry_is_not_marked_durable_by_its_predecessor() {
        let mut tail = filled(3);
        tail.truncate_from(3);
        tail.push(blank_ent::<TypeConfig>(2, 1, 3), 10);
        // The writer reports the old entry 3 (term 1) durable: the new one (term 2) is not.
        tail.mark_durable((1..=3).map(|i| log_id::<TypeConfig>(1, 1, i)));
        assert!(!tail.all_durable());
        assert_eq!(indexes(&tail.read(1..10)), [1, 2, 3]);
    }

    #[test]
    fn truncate_and_purge_keep_a_run_of_consecutive_indexes() {
        let mut tail = filled(10);
        tail.mark_durable((1..=10).map(|i| log_id::<TypeConfig>(1, 1, i)));
        tail.purge_upto(3);
        tail.truncate_from(8);
        assert_eq!(tail.first_index(), Some(4));
        assert_eq!(indexes(&tail.read(0..100)), [4, 5, 6, 7]);
        assert_eq!(indexes(&tail.read(5..6)), [5]);
        assert!(tail.read(6..6).is_empty());
        // Counters follow what is dropped: nothing underflows on the way down to empty.
        tail.purge_upto(7);
        assert_eq!(tail.first_index(), None);
        assert_eq!((tail.durable_entries, tail.durable_bytes), (0, 0));
    }
}
