//! The newest Raft log entries, kept decoded in memory in front of the entries file.
//!
//! Two kinds of entry live here. Entries appended but not yet durable must be here: openraft
//! reads them the moment `append` returns, before the writer thread has synced them. The most
//! recent durable entries stay too, up to [`KEEP_DURABLE_ENTRIES`] and [`KEEP_DURABLE_BYTES`]:
//! replication and apply read near the end of the log, and without them every such read cost a
//! `pread` and a MessagePack decode, a visible share of a busy leader's CPU (docs/BENCHMARKS.md).
//!
//! The tail is always a run of consecutive indexes reaching to the last entry appended, so a
//! reader takes everything from [`Tail::first_index`] on from here and only what lies before it
//! from the file. Only durable entries at the front are ever dropped, and only by the writer
//! after the file holds them.

use super::TypeConfig;
use openraft::entry::RaftEntry;
use openraft::type_config::alias::{EntryOf, LogIdOf};
use std::collections::VecDeque;
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

/// The entries from index `first` on, one per index: a ring, so that finding an entry by index
/// is a subtraction, not a tree walk (the writer marks every entry durable by its index).
#[derive(Default)]
pub struct Tail {
    entries: VecDeque<Cached>,
    /// The index of `entries[0]`; meaningless while `entries` is empty.
    first: u64,
    durable_entries: usize,
    durable_bytes: usize,
}

impl Tail {
    /// Adds an appended entry, not yet durable, after every entry already here.
    pub fn push(&mut self, entry: Entry, size: usize) {
        let index = entry.index();
        if self.entries.is_empty() {
            self.first = index;
        }
        debug_assert_eq!(index, self.end(), "the tail is a run of consecutive indexes");
        self.entries.push_back(Cached { entry, size, durable: false });
    }

    /// Notes that the file now holds `log_id` (if it is still the entry at its index: a truncate
    /// and a new append may have replaced it), then drops the oldest durable entries beyond what
    /// is kept.
    pub fn mark_durable(&mut self, log_ids: impl IntoIterator<Item = LogId>) {
        for log_id in log_ids {
            let Some(offset) = self.offset(log_id.index()) else { continue };
            let cached = &mut self.entries[offset];
            if !cached.durable && cached.entry.log_id() == log_id {
                cached.durable = true;
                self.durable_entries += 1;
                self.durable_bytes += cached.size;
            }
        }
        while self.durable_entries > KEEP_DURABLE_ENTRIES || self.durable_bytes > KEEP_DURABLE_BYTES {
            if !self.entries.front().is_some_and(|first| first.durable) {
                break;
            }
            self.drop_first();
        }
    }

    /// Drops every entry from index `from` on.
    pub fn truncate_from(&mut self, from: u64) {
        let kept = usize::try_from(from.saturating_sub(self.first)).unwrap_or(usize::MAX);
        if kept < self.entries.len() {
            let dropped = self.entries.split_off(kept);
            dropped.into_iter().for_each(|cached| self.forget(cached));
        }
    }

    /// Drops every entry up to and including index `upto`.
    pub fn purge_upto(&mut self, upto: u64) {
        while !self.entries.is_empty() && self.first <= upto {
            self.drop_first();
        }
    }

    fn drop_first(&mut self) {
        if let Some(cached) = self.entries.pop_front() {
            self.first += 1;
            self.forget(cached);
        }
    }

    fn forget(&mut self, cached: Cached) {
        if cached.durable {
            self.durable_entries -= 1;
            self.durable_bytes -= cached.size;
        }
    }

    /// Where the entry at `index` sits in `entries`, if it is here.
    fn offset(&self, index: u64) -> Option<usize> {
        let offset = usize::try_from(index.checked_sub(self.first)?).ok()?;
        (offset < self.entries.len()).then_some(offset)
    }

    /// The index after the last entry here.
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// The first index held here: every entry of the log from it on is here.
    pub fn first_index(&self) -> Option<u64> {
        (!self.entries.is_empty()).then_some(self.first)
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries.back().map(|cached| cached.entry.log_id())
    }

    /// Copies of the entries here within `range` (cheap: payloads are shared `Bytes`).
    pub fn read(&self, range: Range<u64>) -> Vec<Entry> {
        let (start, end) = (range.start.max(self.first), range.end.min(self.end()));
        if self.entries.is_empty() || start >= end {
            return Vec::new();
        }
        let offsets = (start - self.first) as usize..(end - self.first) as usize;
        self.entries.range(offsets).map(|cached| cached.entry.clone()).collect()
    }

    /// Whether nothing is waiting to become durable.
    #[cfg(test)]
    pub fn all_durable(&self) -> bool {
        self.entries.iter().all(|cached| cached.durable)
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
        // Appending to an empty tail starts the run again at the appended index.
        tail.push(blank_ent::<TypeConfig>(1, 1, 8), 10);
        tail.push(blank_ent::<TypeConfig>(1, 1, 9), 10);
        assert_eq!(tail.first_index(), Some(8));
        assert_eq!(indexes(&tail.read(0..100)), [8, 9]);
        tail.mark_durable([log_id::<TypeConfig>(1, 1, 9)]);
        assert_eq!((tail.durable_entries, tail.durable_bytes), (1, 10));
    }
}
