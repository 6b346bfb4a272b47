//! Disk faults: a node whose files were damaged or lost either survives what a crash can leave
//! (a torn tail) or refuses to start with one clear line, truncating nothing, and never panics.

mod common;

use common::TestNode;
use std::os::unix::fs::FileExt;
use std::path::Path;

const ENTRIES_FILE: &str = "raft-log.entries";
const VOTE_FILE: &str = "raft-log.redb";
const STATE_FILE: &str = "state.redb";

/// A stopped single node that has committed `writes` writes, each its own log entry.
fn node_with_writes(writes: usize) -> TestNode {
    let mut node = TestNode::start(&[]);
    for i in 0..writes {
        let out = node.cli(&["-c", &format!("SET key{i} value{i}")]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    assert!(node.terminate().success());
    node
}

/// The byte offset of every record in an entries file: `u32 length | u32 crc | u64 index |
/// payload`, up to the zeros it is grown with.
fn record_offsets(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + 16 <= bytes.len() && bytes[at..at + 16] != [0; 16] {
        offsets.push(at as u64);
        at += 16 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    offsets
}

/// Flips a payload byte of the record at `offset`.
fn damage(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset + 16).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], offset + 16).unwrap();
}

fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "the node panicked:\n{log}");
}

#[test]
fn a_damaged_record_in_the_middle_of_the_log_stops_the_node_and_nothing_is_cut() {
    let mut node = node_with_writes(10);
    let path = node.data_dir.join(ENTRIES_FILE);
    let offsets = record_offsets(&path);
    assert!(offsets.len() >= 10, "one record per write at least: {offsets:?}");
    let middle = offsets[offsets.len() / 2];
    damage(&path, middle);
    let before = std::fs::read(&path).unwrap();
    let log = node.boot_refused();
    assert!(log.contains(&format!("byte offset {middle}")) && log.contains("is damaged"), "{log}");
    assert!(log.contains(ENTRIES_FILE), "the file is named: {log}");
    assert_no_panic(&log);
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was truncated");
}

#[test]
fn a_damaged_last_record_is_a_torn_tail_cut_at_start() {
    let mut node = node_with_writes(10);
    let path = node.data_dir.join(ENTRIES_FILE);
    let offsets = record_offsets(&path);
    damage(&path, *offsets.last().unwrap());
    node.restart();
    assert!(node.log_text().contains("cutting it off"), "{}", node.log_text());
    // The entries before it are all there, and the node goes on committing.
    assert_eq!(node.cli(&["-c", "GET key0"]).stdout, "value0\n");
    assert_eq!(node.cli(&["-c", "SET after yes"]).code, 0);
}

#[test]
fn a_missing_vote_file_stops_the_node() {
    let mut node = node_with_writes(3);
    std::fs::remove_file(node.data_dir.join(VOTE_FILE)).unwrap();
    let log = node.boot_refused();
    assert!(log.contains(VOTE_FILE) && log.contains("is missing"), "{log}");
    assert!(log.contains("vote twice"), "{log}");
    assert_no_panic(&log);
}

#[test]
fn a_missing_entries_file_stops_the_node() {
    let mut node = node_with_writes(3);
    std::fs::remove_file(node.data_dir.join(ENTRIES_FILE)).unwrap();
    let log = node.boot_refused();
    assert!(log.contains(ENTRIES_FILE) && log.contains("is missing"), "{log}");
    assert_no_panic(&log);
}

#[test]
fn a_truncated_database_is_a_clear_error_not_a_panic() {
    let mut node = node_with_writes(3);
    let path = node.data_dir.join(STATE_FILE);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 3).unwrap();
    let log = node.boot_refused();
    assert!(log.contains(STATE_FILE), "the file is named: {log}");
    assert_no_panic(&log);
}

/// A tmpfs mounted on a directory for as long as it lives: a disk that fills up.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` (such as `8m`) on `dir`; `None` unless running as root, which
    /// mounting needs.
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        // /proc/self belongs to the process's effective user.
        if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) != 0 {
            eprintln!("skipped: mounting a small disk needs root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        Some(SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A node whose disk fills up cannot append to its log: openraft's core stops, and the node
/// exits non-zero saying why instead of accepting connections it can no longer serve.
#[test]
fn a_node_whose_raft_core_fails_exits_instead_of_serving_on() {
    let mut node = TestNode::stopped_with(&[]);
    let Some(_disk) = SmallDisk::mount(&node.data_dir, "8m") else { return };
    assert!(node.boot(), "{}", node.log_text());
    let addr = vec![node.addr.to_string()];
    let value = "v".repeat(100 * 1024);
    let mut failed = false;
    for i in 0..1000 {
        let answer = common::call(&addr, &["SET", &format!("key{i}"), &value]);
        if !answer.is_some_and(|a| a.reply == kv::protocol::message::Reply::ok()) {
            failed = true;
            break;
        }
    }
    assert!(failed, "8 MiB cannot hold 100 MB of writes");
    let status = node.wait_for_exit(std::time::Duration::from_secs(30));
    let log = node.log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("the Raft core stopped"), "{log}");
    assert_no_panic(&log);
}
