//! Snapshots and log compaction end to end: the log stays bounded under steady writes, and nodes
//! that need more than the kept log catch up through snapshots streamed in chunks.

mod common;

use common::{TestCluster, TestNode, script, wait_until};
use std::path::Path;
use std::time::Duration;

/// The most a node's data dir may hold after 100,000 writes to 100 keys with a snapshot every
/// 2,000 entries. The entries file alone may reach 1.3 MiB: its purged prefix is dropped once it
/// reaches 1 MiB, and the file is grown 256 KiB ahead of its records. The store's change log
/// keeps at least the last 10,000 revisions, here about 0.6 MiB, which redb's copy-on-write
/// pages can double in the file (measured: 0.75–1.1 MiB in all before the change log, 2.5–3.2
/// MiB with it; a log that never dropped anything would hold over 5 MiB by itself).
const DISK_BOUND: u64 = 4 << 20;

/// How long catching up may take here (a snapshot of 100,000 keys, on a loaded machine).
const CONVERGE: Duration = Duration::from_secs(60);

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() { dir_bytes(&entry.path()) } else { meta.len() }
        })
        .sum()
}

/// Waits until every member, as `via` sees it, has applied everything the leader has.
fn wait_converged(via: &TestNode) {
    wait_until("every member to catch up", CONVERGE, || {
        via.status().iter().all(|row| row["lag"] == 0 && row["applied"] == row["last_index"])
    });
}

#[test]
fn the_data_dir_stays_bounded_under_100k_writes_to_a_few_keys() {
    let cluster = TestCluster::start(3, &["--snapshot-entries", "2000", "--keep-log-entries", "500"]);
    let writes = script(100_000, |i| format!("SET key{} {i:08}", i % 100));
    let out = cluster.cli_piped(&[], &writes);
    assert_eq!(out.code, 0, "{}", out.stderr);
    wait_converged(&cluster.nodes[0]);
    // Every node compacted recently: its latest snapshot is within the policy of its log's end.
    wait_until("every node to snapshot", CONVERGE, || {
        cluster.status(1).iter().all(|row| {
            let last = row["last_index"].as_u64().unwrap_or(0);
            row["snapshot"].as_u64().is_some_and(|s| last - s <= 2000)
        })
    });
    for node in &cluster.nodes {
        let bytes = dir_bytes(&node.data_dir);
        eprintln!("data dir of {}: {bytes} bytes", node.addr);
        assert!(
            bytes < DISK_BOUND,
            "{} holds {bytes} bytes after 100,000 writes to 100 keys",
            node.data_dir.display()
        );
    }
    assert_eq!(cluster.cli(&["-c", "GET key99"]).lines(), ["00099999"]);
}

/// A cluster whose nodes 1 and 2 compacted away the log that node 3, stopped meanwhile, needs.
fn cluster_with_node_3_behind_the_compacted_log() -> TestCluster {
    let mut cluster = TestCluster::start(3, &["--snapshot-entries", "200", "--keep-log-entries", "50"]);
    cluster.node(3).terminate();
    // Distinct keys: a snapshot is due once the log since the last one holds as many entries as
    // it held keys, so each comes at most twice as far in as the one before, and the last of
    // 3,000 writes past 1,500.
    let writes = script(3000, |i| format!("SET missed{i} {i}"));
    let out = common::run_cli(&["--addr", &cluster.live_addrs()], Some(&writes), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    wait_until("the live nodes to compact their logs", CONVERGE, || {
        cluster.status(1).iter().filter(|row| row["id"] != 3).all(|row| row["purged"].as_u64() > Some(1000))
    });
    cluster
}

/// Restarts node 3 and checks that it caught up through a snapshot, with every write.
fn node_3_catches_up_by_snapshot(cluster: &mut TestCluster) {
    cluster.node(3).restart();
    wait_converged(&cluster.nodes[0]);
    let log = cluster.nodes[2].log_text();
    assert!(log.contains("installed a snapshot from the leader"), "{log}");
    let out = cluster.nodes[2].cli(&["--local", "-c", "GET missed0", "-c", "GET missed2999"]);
    assert_eq!(out.lines(), ["0", "2999"]);
}

#[test]
fn a_node_that_missed_the_compacted_log_catches_up_by_snapshot() {
    let mut cluster = cluster_with_node_3_behind_the_compacted_log();
    node_3_catches_up_by_snapshot(&mut cluster);
}

/// No snapshot is kept over a restart, and snapshots come only when the state machine's schedule
/// asks: nodes whose log was compacted must still build one when they start again (openraft's
/// storage helper does), or a peer that needs the compacted entries could never be sent them.
#[test]
fn a_node_that_missed_the_compacted_log_catches_up_after_the_others_restarted() {
    let mut cluster = cluster_with_node_3_behind_the_compacted_log();
    for id in [1, 2] {
        cluster.node(id).terminate();
        cluster.node(id).restart();
    }
    node_3_catches_up_by_snapshot(&mut cluster);
}

#[test]
fn a_new_node_receives_100k_keys_through_a_chunked_snapshot() {
    // A small frame limit, so the snapshot needs many chunks.
    let limits = ["--max-frame-bytes", "262144", "--max-value-bytes", "131072"];
    let cluster = TestCluster::start(3, &limits);
    let writes = script(100_000, |i| format!("SET key{i} value{i}"));
    let out = cluster.cli_piped(&[], &writes);
    assert_eq!(out.code, 0, "{}", out.stderr);
    wait_until("the leader to compact the log of the first 50,000 writes", CONVERGE, || {
        cluster.status(1).iter().any(|row| row["role"] == "leader" && row["purged"].as_u64() >= Some(50_000))
    });

    let through = cluster.nodes[0].addr.to_string();
    let mut flags = vec!["--id", "4", "--join", &through];
    flags.extend_from_slice(&limits);
    let joined = TestNode::start(&flags);
    wait_until("node 4 to catch up", CONVERGE, || {
        cluster.nodes[0].row(4).is_some_and(|row| row["lag"] == 0 && row["applied"] == row["last_index"])
    });
    let log = joined.log_text();
    let installed = log.lines().find(|l| l.contains("installed a snapshot from the leader")).expect(&log);
    let chunks: usize = installed.split("chunks=").nth(1).unwrap().trim().parse().unwrap();
    assert!(chunks > 1, "the snapshot came in chunks: {installed}");

    // Every key is there: EXISTS over all of them, 1,000 per command, from node 4's own state.
    let exists = script(100, |line| {
        let keys: Vec<String> = (line * 1000..(line + 1) * 1000).map(|i| format!("key{i}")).collect();
        format!("EXISTS {}", keys.join(" "))
    });
    let out = joined.cli_piped(&["--local"], &exists);
    let total: u64 = out.lines().iter().map(|l| l.parse::<u64>().unwrap()).sum();
    assert_eq!(total, 100_000, "{}", out.stderr);
    assert_eq!(joined.cli(&["--local", "-c", "GET key99999"]).lines(), ["value99999"]);
}
