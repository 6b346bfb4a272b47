//! The Raft log's entries, in an append-only file of checksummed records.
//!
//! Why not a redb table: a durable redb commit rewrites the B-tree pages, allocator state and
//! header it touched, then syncs, and that bounded both write latency and throughput
//! (docs/BENCHMARKS.md). Appending records and calling `fdatasync` costs
//! one write and one sync. Everything else about the log (vote, purge point, committed index)
//! stays in redb, where it is written rarely.
//!
//! A record is `u32 payload length | u32 CRC-32 of (index, payload) | u64 index | payload`,
//! little-endian. Indexes increase along the file. Opening the file scans it and keeps an
//! in-memory map from index to record. A record cut short or failing its checksum with nothing
//! valid after it ends the log there (a crash during an append that was never acknowledged), and
//! the file is cut back to it. One with a valid record after it is damage, not a crash: opening
//! fails and nothing is cut, since cutting would drop entries that were acknowledged. (A power
//! loss that persisted a batch's later pages but not its earlier ones looks the same; the node
//! then refuses to start rather than guess.)
//!
//! Truncating cuts the file. Purging only forgets records; the dead prefix is dropped by
//! rewriting the live records into a new file, renamed over the old one, once it outweighs them.
//!
//! The file is grown ahead of its records, [`GROW_BY`] at a time, with zeros written out: a sync
//! after a write past the end of a file must also write the inode (its size changed), while a
//! sync after a write over blocks already on disk flushes only the data, which makes an append
//! and its sync cheaper in wall time and CPU (docs/BENCHMARKS.md). So the records end where the first all-zero header is; opening keeps the
//! zeros after the records, and cuts anything else found there as a torn tail.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: usize = 16;
/// How far past the records the file is grown at a time.
const GROW_BY: u64 = 256 * 1024;
/// A dead prefix smaller than this is never worth a rewrite.
const MIN_DEAD_TO_COMPACT: u64 = 1024 * 1024;

/// Where a record sits in the file.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    offset: u64,
    payload_len: u32,
}

/// A rewrite of the file without its purged prefix, ready to switch to.
pub struct Rewritten {
    file: File,
    placed: Vec<(u64, Location)>,
    len: u64,
}

/// The entries file and its index.
pub struct EntryFile {
    path: PathBuf,
    file: File,
    index: BTreeMap<u64, Location>,
    /// Where the next record goes.
    end: u64,
    /// The file's length: from `end` up to here it holds zeros.
    allocated: u64,
}

impl EntryFile {
    /// Opens (or creates) the file, indexes its records and cuts off a torn tail. A record that
    /// fails its checksum with a valid record after it is not a torn tail but damage: then the
    /// file is left as it is and opening fails, naming the file and the record's offset.
    pub fn open(path: &Path) -> io::Result<EntryFile> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len();
        let mut index = BTreeMap::new();
        let mut offset = 0;
        let mut header = [0u8; HEADER];
        while offset + HEADER as u64 <= len {
            file.read_exact_at(&mut header, offset)?;
            if header == [0; HEADER] {
                break;
            }
            let payload_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let entry_index = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            let record_end = offset + HEADER as u64 + u64::from(payload_len);
            if record_end > len {
                break;
            }
            let mut payload = vec![0; payload_len as usize];
            file.read_exact_at(&mut payload, offset + HEADER as u64)?;
            let follows = index.last_key_value().is_none_or(|(last, _)| entry_index > *last);
            if checksum(entry_index, &payload) != crc || !follows {
                break;
            }
            index.insert(entry_index, Location { offset, payload_len });
            offset = record_end;
        }
        let mut allocated = len;
        if offset < len && !zeros(&file, offset, len)? {
            let last = index.last_key_value().map(|(last, _)| *last);
            if let Some((found, entry)) = valid_record_after(&file, offset, len, last)? {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the record at byte offset {offset} (after entry {}) is damaged, but a valid \
                         record (entry {entry}) follows at offset {found}: the log is corrupt, not cut short \
                         by a crash. Nothing was truncated. Restore this data dir from a backup, or remove the \
                         node from the cluster and join a fresh one in its place",
                        path.display(),
                        last.map_or("none".to_string(), |l| l.to_string()),
                    ),
                ));
            }
            tracing::warn!(
                path = %path.display(),
                kept = offset,
                dropped = len - offset,
                "the Raft log ends in an incomplete record (a crash during an unacknowledged append); cutting it off"
            );
            file.set_len(offset)?;
            file.sync_data()?;
            allocated = offset;
        }
        Ok(EntryFile { path: path.to_path_buf(), file, index, end: offset, allocated })
    }

    /// A second handle on the file, for the writer to append through without holding the lock
    /// that readers take.
    pub fn handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Where the next record goes.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// How long the file is: records up to [`Self::end`], zeros after.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    pub fn last_index(&self) -> Option<u64> {
        self.index.last_key_value().map(|(index, _)| *index)
    }

    /// Encodes records for `(index, payload)` pairs into `buf`, as they will sit in the file from
    /// `start` on; returns where each one went.
    pub fn encode(start: u64, records: &[(u64, &[u8])], buf: &mut Vec<u8>) -> Vec<(u64, Location)> {
        let mut placed = Vec::with_capacity(records.len());
        for (index, payload) in records {
            let offset = start + buf.len() as u64;
            let payload_len = u32::try_from(payload.len()).expect("entries are far below 4 GiB");
            buf.extend_from_slice(&payload_len.to_le_bytes());
            buf.extend_from_slice(&checksum(*index, payload).to_le_bytes());
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(payload);
            placed.push((*index, Location { offset, payload_len }));
        }
        placed
    }

    /// Writes encoded records through `file` at `end`, in a file grown with zeros up to
    /// `allocated`; first grows it by [`GROW_BY`] past them if they would not fit. Returns the
    /// file's length after. The caller syncs.
    pub fn write_at_end(file: &File, buf: &[u8], end: u64, allocated: u64) -> io::Result<u64> {
        let new_end = end + buf.len() as u64;
        file.write_all_at(buf, end)?;
        if new_end <= allocated {
            return Ok(allocated);
        }
        let grown = new_end + GROW_BY;
        file.write_all_at(&vec![0; (grown - new_end) as usize], new_end)?;
        Ok(grown)
    }

    /// Records that bytes written (and synced) through [`Self::handle`] at [`Self::end`] now
    /// hold these records, and that the file is now `allocated` long.
    pub fn appended(&mut self, placed: Vec<(u64, Location)>, new_end: u64, allocated: u64) {
        self.index.extend(placed);
        self.end = new_end;
        self.allocated = allocated;
    }

    /// Writes records at the end and indexes them; the caller syncs.
    pub fn append_now(&mut self, records: &[(u64, &[u8])]) -> io::Result<()> {
        let mut buf = Vec::new();
        let placed = EntryFile::encode(self.end, records, &mut buf);
        let allocated = EntryFile::write_at_end(&self.file, &buf, self.end, self.allocated)?;
        let new_end = self.end + buf.len() as u64;
        self.appended(placed, new_end, allocated);
        Ok(())
    }

    /// The payloads of the records in `range`, in index order.
    pub fn read(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<(u64, Vec<u8>)>> {
        self.index
            .range(range)
            .map(|(index, at)| {
                let mut payload = vec![0; at.payload_len as usize];
                self.file.read_exact_at(&mut payload, at.offset + HEADER as u64)?;
                Ok((*index, payload))
            })
            .collect()
    }

    /// Removes every record with an index of at least `from`; the caller syncs.
    pub fn truncate_from(&mut self, from: u64) -> io::Result<()> {
        let Some(cut) = self.index.range(from..).next().map(|(_, at)| at.offset) else { return Ok(()) };
        self.file.set_len(cut)?;
        self.index.split_off(&from);
        self.end = cut;
        self.allocated = cut;
        Ok(())
    }

    /// Forgets every record up to and including `upto`, and rewrites the file once the dead
    /// prefix outweighs the live records. The rewrite is durable when this returns.
    pub fn purge_upto(&mut self, upto: u64) {
        self.index = self.index.split_off(&(upto + 1));
    }

    /// Whether the purged prefix now outweighs the live records enough to rewrite the file
    /// without it ([`Self::rewrite`], then [`Self::install`]).
    pub fn compaction_due(&self) -> bool {
        let dead = self.index.first_key_value().map_or(self.end, |(_, at)| at.offset);
        dead >= MIN_DEAD_TO_COMPACT && dead >= self.end - dead
    }

    /// Writes the live records into a new file and renames it over this one. Takes `&self`, so
    /// that readers may go on meanwhile (they read the old file through its open handle, at the
    /// offsets of the old index); only the writer changes the file, so nothing is appended
    /// in between. Nothing changes for readers until [`Self::install`].
    pub fn rewrite(&self) -> io::Result<Rewritten> {
        let live = self.read(..)?;
        let records: Vec<(u64, &[u8])> = live.iter().map(|(i, p)| (*i, p.as_slice())).collect();
        let mut buf = Vec::new();
        let placed = EntryFile::encode(0, &records, &mut buf);
        let fresh_path = self.path.with_extension("compacting");
        let fresh =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&fresh_path)?;
        fresh.write_all_at(&buf, 0)?;
        fresh.sync_all()?;
        std::fs::rename(&fresh_path, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(Rewritten { file: fresh, placed, len: buf.len() as u64 })
    }

    /// Switches to a rewritten file.
    pub fn install(&mut self, rewritten: Rewritten) {
        self.file = rewritten.file;
        self.index = rewritten.placed.into_iter().collect();
        self.end = rewritten.len;
        self.allocated = self.end;
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Whether the file holds nothing but zeros from `from` to `to`.
fn zeros(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = chunk.len().min((to - at) as usize);
        file.read_exact_at(&mut chunk[..n], at)?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// The first valid record (its offset and entry index) after `from`, up to `len`: one whose
/// checksum holds, for an entry after `last`. Looked for at every byte, since the damaged
/// record's length cannot be trusted; only when the log does not end cleanly.
fn valid_record_after(file: &File, from: u64, len: u64, last: Option<u64>) -> io::Result<Option<(u64, u64)>> {
    let mut rest = vec![0; (len - from) as usize];
    file.read_exact_at(&mut rest, from)?;
    let last = last.unwrap_or(0);
    for start in 1..rest.len().saturating_sub(HEADER) {
        let header = &rest[start..start + HEADER];
        let entry = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        // Entries are numbered upwards from the last good one: anything far off is not a header.
        if entry <= last || entry - last > 1 << 40 {
            continue;
        }
        let payload_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let Some(payload) = rest.get(start + HEADER..start + HEADER + payload_len) else { continue };
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if checksum(entry, payload) == crc {
            return Ok(Some((from + start as u64, entry)));
        }
    }
    Ok(None)
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(file: &EntryFile) -> Vec<(u64, Vec<u8>)> {
        file.read(..).unwrap()
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = EntryFile::open(&path).unwrap();
        file.append_now(&[(1, b"one"), (2, b"two"), (3, b"three")]).unwrap();
        file.sync().unwrap();
        let whole = file.end();
        drop(file);
        // A crash in the middle of a fourth record.
        let raw = OpenOptions::new().write(true).open(&path).unwrap();
        raw.write_all_at(&[9, 0, 0, 0, 1, 2], whole).unwrap();
        let file = EntryFile::open(&path).unwrap();
        assert_eq!(file.end(), whole);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        assert_eq!(payloads(&file), [(1, b"one".to_vec()), (2, b"two".to_vec()), (3, b"three".to_vec())]);
    }

    #[test]
    fn the_file_is_grown_with_zeros_ahead_of_its_records_and_they_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = EntryFile::open(&path).unwrap();
        file.append_now(&[(1, b"one"), (2, b"two")]).unwrap();
        file.sync().unwrap();
        let end = file.end();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end + GROW_BY);
        drop(file);
        let mut file = EntryFile::open(&path).unwrap();
        assert_eq!((file.end(), file.allocated()), (end, end + GROW_BY), "the zeros are kept, not records");
        file.append_now(&[(3, b"three")]).unwrap();
        assert_eq!(file.allocated(), end + GROW_BY, "fits in what was grown");
        drop(file);
        let file = EntryFile::open(&path).unwrap();
        assert_eq!(payloads(&file), [(1, b"one".to_vec()), (2, b"two".to_vec()), (3, b"three".to_vec())]);
    }

    #[test]
    fn records_past_the_grown_space_grow_the_file_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = EntryFile::open(&path).unwrap();
        let big = vec![7u8; GROW_BY as usize];
        file.append_now(&[(1, b"one")]).unwrap();
        file.append_now(&[(2, big.as_slice())]).unwrap();
        assert_eq!(file.allocated(), file.end() + GROW_BY);
        drop(file);
        let file = EntryFile::open(&path).unwrap();
        assert_eq!(file.last_index(), Some(2));
        assert_eq!(payloads(&file)[1].1, big);
    }

    #[test]
    fn anything_but_zeros_after_the_records_is_cut_off_as_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = EntryFile::open(&path).unwrap();
        file.append_now(&[(1, b"one")]).unwrap();
        let end = file.end();
        drop(file);
        // The tail of a batch that was cut short: its first bytes never reached the disk.
        let raw = OpenOptions::new().write(true).open(&path).unwrap();
        raw.write_all_at(b"stray", end + 100).unwrap();
        let mut file = EntryFile::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
        file.append_now(&[(2, b"two")]).unwrap();
        drop(file);
        let file = EntryFile::open(&path).unwrap();
        assert_eq!(payloads(&file), [(1, b"one".to_vec()), (2, b"two".to_vec())]);
    }

    #[test]
    fn a_damaged_record_with_valid_records_after_it_is_corruption_and_nothing_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = EntryFile::open(&path).unwrap();
        file.append_now(&[(1, b"one"), (2, b"two"), (3, b"three")]).unwrap();
        let (second, third) = (file.index[&2].offset, file.index[&3].offset);
        drop(file);
        let raw = OpenOptions::new().write(true).open(&path).unwrap();
        raw.write_all_at(b"TWO", second + HEADER as u64).unwrap();
        let before = std::fs::read(&path).unwrap();
        let error = EntryFile::open(&path).err().expect("opening fails").to_string();
        assert!(error.contains(&format!("byte offset {second} (after entry 1)")), "{error}");
        assert!(error.contains(&format!("(entry 3) follows at offset {third}")), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was truncated");
    }

    #[test]
    fn a_damaged_last_record_is_a_torn_tail_and_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = EntryFile::open(&path).unwrap();
        file.append_now(&[(1, b"one"), (2, b"two"), (3, b"three")]).unwrap();
        let third = file.index[&3].offset;
        drop(file);
        let raw = OpenOptions::new().write(true).open(&path).unwrap();
        raw.write_all_at(b"THREE", third + HEADER as u64).unwrap();
        let file = EntryFile::open(&path).unwrap();
        assert_eq!(payloads(&file), [(1, b"one".to_vec()), (2, b"two".to_vec())]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), third);
    }

    #[test]
    fn truncation_cuts_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = EntryFile::open(&path).unwrap();
        file.append_now(&[(1, b"a"), (2, b"b"), (3, b"c")]).unwrap();
        file.truncate_from(2).unwrap();
        file.append_now(&[(2, b"B")]).unwrap();
        file.truncate_from(9).unwrap();
        drop(file);
        let file = EntryFile::open(&path).unwrap();
        assert_eq!(payloads(&file), [(1, b"a".to_vec()), (2, b"B".to_vec())]);
        assert_eq!(file.last_index(), Some(2));
    }

    #[test]
    fn purging_forgets_records_and_compacts_a_large_dead_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = EntryFile::open(&path).unwrap();
        let big = vec![7u8; 64 * 1024];
        let records: Vec<(u64, &[u8])> = (1..=40).map(|i| (i, big.as_slice())).collect();
        file.append_now(&records).unwrap();
        file.purge_upto(5);
        assert!(!file.compaction_due(), "not worth it yet");
        assert_eq!(file.end(), 40 * (64 * 1024 + HEADER as u64));
        file.purge_upto(30);
        assert!(file.compaction_due());
        let rewritten = file.rewrite().unwrap();
        assert_eq!(file.read(31..=31).unwrap()[0].1, big, "the old file still reads until the switch");
        file.install(rewritten);
        assert_eq!(file.end(), 10 * (64 * 1024 + HEADER as u64), "rewritten");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            file.end(),
            "a rewritten file is not grown ahead"
        );
        file.append_now(&[(41, b"after")]).unwrap();
        drop(file);
        let file = EntryFile::open(&path).unwrap();
        let kept: Vec<u64> = payloads(&file).into_iter().map(|(i, _)| i).collect();
        assert_eq!(kept, (31..=41).collect::<Vec<_>>());
    }
}
