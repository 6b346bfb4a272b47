//! Replication end to end: three real kv-node processes, driven through kv-cli, failing in the
//! ways a cluster fails (kill -9 of the leader, of one node, of two, of all).

mod common;

use common::{TestCluster, script, wait_until};
use std::time::{Duration, Instant};

/// How long catching up or electing may take in these tests (a few election timeouts, with room
/// for a loaded machine).
const CONVERGE: Duration = Duration::from_secs(30);

fn json(out: &common::CliOutput) -> Vec<serde_json::Value> {
    out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The role each node reports, by id.
fn roles(cluster: &TestCluster, via: u64) -> Vec<String> {
    cluster.status(via).iter().map(|row| row["role"].as_str().unwrap_or("-").to_string()).collect()
}

#[test]
fn a_write_through_any_node_is_read_through_every_node() {
    let cluster = TestCluster::start(3, &[]);
    let via2 = cluster.nodes[1].cli(&["--acks", "-c", "SET color blue"]);
    assert_eq!(via2.code, 0, "{via2:?}");
    let lines = via2.lines();
    assert_eq!(lines[0], "OK");
    // The picture names the leader and both peers; a commit needs at least one peer's ack (the
    // other may still be pending on a loaded machine).
    assert!(lines[1].starts_with("leader="), "{via2:?}");
    let peers = lines[1].split(' ').filter(|t| t.starts_with('n') && t.contains('=')).count();
    assert_eq!(peers, 2, "{via2:?}");
    assert!(lines[1].contains("=acked:"), "{via2:?}");

    // Linearizable reads through the other two see it at once: they ask the leader.
    for node in [&cluster.nodes[0], &cluster.nodes[2]] {
        let out = node.cli(&["--json", "-c", "GET color"]);
        let answer = &json(&out)[0];
        assert_eq!(answer["value"], "blue", "{out:?}");
        assert!(answer["leader"].as_u64().is_some(), "the answer says who led: {out:?}");
    }
    // A local read answers from the node's own state, once it has applied the write.
    for node in &cluster.nodes {
        wait_until("the write to be applied locally", CONVERGE, || {
            node.cli(&["--local", "-c", "GET color"]).lines() == ["blue"]
        });
        let out = node.cli(&["--local", "--json", "-c", "GET color"]);
        assert!(json(&out)[0].get("leader").is_none(), "a local read involves no leader: {out:?}");
    }

    let table = cluster.status(3);
    assert_eq!(table.len(), 3);
    let mut roles: Vec<&str> = table.iter().map(|r| r["role"].as_str().unwrap()).collect();
    roles.sort();
    assert_eq!(roles, ["follower", "follower", "leader"], "{table:?}");
    for row in &table {
        assert_eq!(row["lag"], 0, "{table:?}");
        assert!(row["term"].as_u64().unwrap() >= 1);
    }
}

/// A follower answers linearizable reads from its own state, once it has applied through a read
/// index from the leader: it sees the writes it just forwarded, and without a leader it refuses
/// to answer rather than answer from a state that may be stale. Several clients at once, so that
/// their writes share the follower's link to the leader, which proposes them ahead.
#[test]
fn a_follower_reads_what_was_just_written_and_refuses_without_a_leader() {
    let timeout_ms = 1000;
    let mut cluster = TestCluster::start(3, &["--request-timeout-ms", "1000"]);
    let leader = cluster.wait_for_a_leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let n = 100;
    let node = &cluster.nodes[follower as usize - 1];
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|c| {
                scope.spawn(move || {
                    let pairs = script(2 * n, |i| {
                        if i % 2 == 0 { format!("SET k{c} v{}", i / 2) } else { format!("GET k{c}") }
                    });
                    node.cli_piped(&["--json"], &pairs)
                })
            })
            .collect();
        for client in clients {
            let out = client.join().unwrap();
            assert_eq!(out.code, 0, "{out:?}");
            let answers = json(&out);
            for i in 0..n {
                let read = &answers[2 * i + 1];
                assert_eq!(read["value"], format!("v{i}"), "read {i} after its write: {read}");
                assert_eq!(read["leader"], leader, "the leader confirmed the read: {read}");
            }
        }
    });
    let last = format!("v{}", n - 1);

    for id in (1..=3).filter(|id| *id != follower) {
        cluster.node(id).kill9();
    }
    let started = Instant::now();
    let out = cluster.node(follower).cli(&["--json", "-c", "GET k0"]);
    assert_eq!(json(&out)[0]["code"], "NO_QUORUM", "no leader, no linearizable read: {out:?}");
    assert!(started.elapsed() < Duration::from_millis(timeout_ms) * 5, "bounded wait");
    let out = cluster.node(follower).cli(&["--local", "-c", "GET k0"]);
    assert_eq!(out.lines(), [last], "a local read still answers: {out:?}");
}

/// With lease reads, the leader confirms reads by its lease instead of a quorum round per check.
/// Followers' reads still see what was just written, and a leader cut off from its quorum stops
/// answering linearizable reads once its lease lapses (after which another node could lead).
#[test]
fn with_lease_reads_a_leader_cut_off_from_its_quorum_stops_answering_reads() {
    let mut cluster = TestCluster::start(3, &["--lease-reads", "--request-timeout-ms", "1000"]);
    let leader = cluster.wait_for_a_leader();
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for (i, id) in followers.iter().enumerate() {
        let out = cluster.node(*id).cli_commands(&["--json"], &[&format!("SET k v{i}"), "GET k"]);
        let answers = json(&out);
        assert_eq!(answers[1]["value"], format!("v{i}"), "a follower reads its own write: {out:?}");
        assert_eq!(answers[1]["leader"], leader, "{out:?}");
    }
    assert_eq!(cluster.node(leader).cli(&["-c", "GET k"]).lines(), ["v1"]);

    for id in &followers {
        cluster.node(*id).kill9();
    }
    // Within its lease the leader may still answer (no other node can lead yet); then it must not.
    wait_until("the cut-off leader to refuse linearizable reads", CONVERGE, || {
        json(&cluster.node(leader).cli(&["--json", "-c", "GET k"]))[0]["code"] == "NO_QUORUM"
    });
    assert_eq!(cluster.node(leader).cli(&["--local", "-c", "GET k"]).lines(), ["v1"]);
}

#[test]
fn killing_the_leader_elects_another_and_keeps_acknowledged_writes() {
    let mut cluster = TestCluster::start(3, &[]);
    let out = cluster.cli_piped(&[], &script(50, |i| format!("SET before{i} v{i}")));
    assert_eq!(out.code, 0, "{out:?}");
    let old_leader = cluster.wait_for_a_leader();
    cluster.node(old_leader).kill9();

    // A script whose first address is the dead node carries on through the others.
    let dead = cluster.node(old_leader).addr.to_string();
    let addrs = format!("{dead},{}", cluster.live_addrs());
    let reads = script(50, |i| format!("GET before{i}"));
    let out = common::run_cli(&["--addr", &addrs], Some(&reads), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), (0..50).map(|i| format!("v{i}")).collect::<Vec<_>>());

    let new_leader = cluster.wait_for_a_leader();
    assert_ne!(new_leader, old_leader);
    let out = common::run_cli(&["--addr", &addrs, "--acks", "-c", "SET after yes"], None, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.lines()[1].contains(&format!("n{old_leader}=unreachable")), "{out:?}");

    // The old leader comes back as a follower and catches up.
    cluster.node(old_leader).restart();
    wait_until("the old leader to catch up", CONVERGE, || {
        cluster.node(old_leader).cli(&["--local", "-c", "GET after"]).lines() == ["yes"]
    });
    let roles = roles(&cluster, old_leader);
    assert_eq!(roles.iter().filter(|r| *r == "leader").count(), 1, "{roles:?}");
}

#[test]
fn killing_every_node_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3, &[]);
    let n = 300;
    let out = cluster.cli_piped(&[], &script(n, |i| format!("SET k{i} value-{i}")));
    assert_eq!(out.code, 0, "every write was acknowledged: {out:?}");
    for id in 1..=3 {
        cluster.node(id).kill9();
    }
    for id in [3, 1, 2] {
        cluster.node(id).restart();
    }
    cluster.wait_for_a_leader();
    let gets = script(n, |i| format!("GET k{i}"));
    let want: Vec<String> = (0..n).map(|i| format!("value-{i}")).collect();
    let out = cluster.cli_piped(&[], &gets);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), want);
    for node in &cluster.nodes {
        wait_until("every node to hold every write", CONVERGE, || {
            node.cli_piped(&["--local"], &gets).lines() == want
        });
    }
}

#[test]
fn with_one_node_down_writes_succeed_and_it_catches_up() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_a_leader();
    let down = (1..=3).find(|id| *id != leader).unwrap();
    cluster.node(down).kill9();

    // Writes keep succeeding; once the leader has missed the node for an election timeout, the
    // picture calls it unreachable instead of pending.
    wait_until("the leader to report the node unreachable", CONVERGE, || {
        let out = cluster.cli(&["--acks", "-c", "SET while-down 1"]);
        assert_eq!(out.code, 0, "{out:?}");
        out.lines()[1].contains(&format!("n{down}=unreachable"))
    });
    // Only one peer can acknowledge now: asking for two is its own exit status.
    let out = cluster.cli(&["--min-acks", "2", "--ack-timeout", "0.3", "-c", "SET strict 1"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("TOO_FEW_ACKS"), "{out:?}");
    let out = cluster.cli(&["--min-acks", "1", "-c", "SET lenient 1"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = cluster.cli_piped(&[], &script(200, |i| format!("SET missed{i} {i}")));
    assert_eq!(out.code, 0, "{out:?}");

    cluster.node(down).restart();
    let gets = script(200, |i| format!("GET missed{i}"));
    let on_leader = cluster.node(leader).cli_piped(&["--local"], &gets);
    assert_eq!(on_leader.lines().len(), 200);
    wait_until("the restarted node to converge with the leader", CONVERGE, || {
        cluster.node(down).cli_piped(&["--local"], &gets).stdout == on_leader.stdout
    });
    let out = cluster.node(down).cli(&["--local", "-c", "EXISTS while-down strict lenient"]);
    assert_eq!(out.lines(), ["3"], "{out:?}");
}

#[test]
fn with_two_nodes_down_writes_fail_with_no_quorum_and_resume_when_one_returns() {
    let timeout_ms = 1000;
    let mut cluster = TestCluster::start(3, &["--request-timeout-ms", "1000"]);
    let leader = cluster.wait_for_a_leader();
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &others {
        cluster.node(*id).kill9();
    }

    // Writes proposed before the leader noticed may end as OUTCOME_UNKNOWN; after that, every
    // write is refused with NO_QUORUM within the request timeout, never half-applied.
    let mut refused = Vec::new();
    for attempt in 0..20 {
        let key = format!("nq{attempt}");
        let started = Instant::now();
        let out = cluster.node(leader).cli(&["--json", "-c", &format!("SET {key} x")]);
        let took = started.elapsed();
        let answer = &json(&out)[0];
        match answer["code"].as_str() {
            Some("NO_QUORUM") => {
                assert_eq!(out.code, 1, "{out:?}");
                assert!(took < Duration::from_millis(timeout_ms) * 5, "bounded wait, took {took:?}");
                refused.push(key);
            }
            Some("OUTCOME_UNKNOWN") => assert_eq!(out.code, 4, "{out:?}"),
            _ => panic!("a write without a quorum must fail: {out:?}"),
        }
        if refused.len() == 3 {
            break;
        }
    }
    assert_eq!(refused.len(), 3, "writes were refused with NO_QUORUM");
    let out = cluster.node(leader).cli(&["--json", "-c", "GET nq0"]);
    assert_eq!(json(&out)[0]["code"], "NO_QUORUM", "reads need a quorum too: {out:?}");

    cluster.node(others[0]).restart();
    cluster.wait_for_a_leader();
    let out = cluster.cli(&["-c", "SET back yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    for key in refused {
        let out = cluster.cli(&["-c", &format!("EXISTS {key}")]);
        assert_eq!(out.lines(), ["0"], "a refused write must not appear later: {key} {out:?}");
    }
}

#[test]
fn a_rolling_restart_loses_no_write_and_shows_the_client_no_error() {
    let mut cluster = TestCluster::start(3, &[]);
    // Nodes that started together may still contest the first term; a write caught in such an
    // election has an unknown outcome whatever the restarts do. Start once all agree.
    wait_until("the nodes to agree on one leader and term", CONVERGE, || {
        let rows = cluster.status(1);
        rows.iter().filter(|row| row["role"] == "leader").count() == 1
            && rows.iter().all(|row| row["term"] == rows[0]["term"] && row["lag"] == 0)
    });
    let writer = common::WritingClient::start(&cluster.addrs(), "roll-");
    for id in 1..=3 {
        let status = cluster.node(id).terminate();
        assert!(status.success(), "node {id} stops cleanly: {status}");
        cluster.node(id).restart();
        // The next node goes down only once this one is back in step, as an operator would do.
        let other = if id == 1 { 2 } else { 1 };
        wait_until(&format!("node {id} to catch up"), CONVERGE, || {
            cluster.status(other).iter().all(|row| row["lag"] == 0 && row["role"] != "unreachable")
        });
    }
    let (out, sent) = writer.finish();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("(error)"), "no error reached the client: {}", out.stderr);
    assert_eq!(out.lines().len(), sent);
    assert!(out.lines().iter().all(|l| *l == "OK"), "{out:?}");
    assert!(sent > 100, "the client kept writing throughout ({sent} writes)");
    // Every acknowledged write is there, read linearizably.
    let reads = script(sent, |i| format!("GET roll-{i}"));
    let out = cluster.cli_piped(&[], &reads);
    let want: Vec<String> = (0..sent).map(|i| i.to_string()).collect();
    assert_eq!(out.lines(), want);
}
