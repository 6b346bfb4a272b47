//! Hardening: what a client sends is bounded before it can reach the Raft log, whichever node it
//! reaches, and the cluster goes on serving everyone else meanwhile.

mod common;

use common::{TestCluster, WritingClient};
use kv::connection;
use kv::protocol::PROTOCOL_VERSION;
use kv::protocol::message::{ErrorCode, Hello, HelloReply, Reply, Response};
use serde::Serialize;
use std::time::Duration;

/// How long one oversized request may take to be answered.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

/// A request whose arguments are MessagePack strings, as a client in another language may send
/// them: one byte for an empty key, where kv-cli's byte strings take two.
#[derive(Serialize)]
struct TextRequest {
    id: u64,
    args: Vec<String>,
}

/// Sends `DEL` with `keys` to the node at `addr` over a raw connection, and returns its answer.
fn send_del(addr: &str, keys: Vec<String>) -> Response {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut reader, mut writer) = connection::split(stream, 1 << 20);
            let hello = Hello {
                version: PROTOCOL_VERSION,
                client: "test".into(),
                peer: None,
                forwarded_by: None,
                cluster: None,
            };
            writer.send(&hello).await.unwrap();
            let welcome: HelloReply = reader.read().await.unwrap().unwrap();
            assert!(matches!(welcome, HelloReply::Welcome { .. }), "{welcome:?}");
            let args = std::iter::once("DEL".to_string()).chain(keys).collect();
            writer.send(&TextRequest { id: 1, args }).await.unwrap();
            reader.read::<Response>().await.unwrap().expect("an answer")
        };
        tokio::time::timeout(ANSWER_DEADLINE, exchange).await.expect("an answer in time")
    })
}

fn assert_too_large(response: &Response, why: &str) {
    match &response.reply {
        Reply::Error { code: ErrorCode::TooLarge, message } => assert!(message.contains(why), "{message}"),
        other => panic!("expected TOO_LARGE ({why}), got {other:?}"),
    }
}

/// The measurement: a `DEL` of 2,100,000 empty keys is a 2.1 MB frame, under the 4 MiB
/// limit. Appended, it could not be sent to any follower, and every write after it hung. Now it is
/// refused before it is proposed, at the leader and at a follower alike; so is a `DEL` within the
/// key count whose log entry could not travel between nodes; and a client writing meanwhile sees
/// every write succeed.
#[test]
fn oversized_deletes_are_refused_before_the_log_and_other_writes_go_on() {
    let cluster = TestCluster::start(3, &["--max-keys-per-command", "2000000"]);
    let leader = cluster.wait_for_a_leader();
    let follower = if leader == 1 { 2 } else { 1 };
    let writer = WritingClient::start(&cluster.addrs(), "during-");
    for id in [leader, follower] {
        let addr = cluster.nodes[id as usize - 1].addr.to_string();
        let answer = send_del(&addr, vec![String::new(); 2_100_000]);
        assert_too_large(&answer, "names 2100000 keys, over the limit of 2000000");
        // 1,300,000 one-byte keys: a 2.6 MB frame, within the key count, but a log entry of up to
        // 11.7 MB.
        let answer = send_del(&addr, vec!["k".to_string(); 1_300_000]);
        assert_too_large(&answer, "log entry of up to");
    }
    let (out, sent) = writer.finish();
    assert_eq!(out.code, 0, "every write meanwhile succeeded: {out:?}");
    assert_eq!(out.stdout.lines().filter(|l| *l == "OK").count(), sent, "{out:?}");
    // And the cluster still commits.
    let after = cluster.cli(&["-c", "SET after yes", "-c", "GET after"]);
    assert_eq!(after.stdout, "OK\nyes\n", "{after:?}");
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// One frame: a 4-byte big-endian length, then the payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// A connection that says hello, then sends `count` pipelined `GET key` and never reads an
/// answer. Returns once the node stops taking its requests (its socket stays full for a
/// second) or all are sent.
fn greedy_reader(addr: std::net::SocketAddr, key: &str, count: usize) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        client: "greedy".into(),
        peer: None,
        forwarded_by: None,
        cluster: None,
    };
    stream.write_all(&frame(&kv::protocol::frame::encode(&hello))).unwrap();
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).unwrap();
    let mut welcome = vec![0; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut welcome).unwrap();
    let mut requests = Vec::new();
    for id in 1..=count as u64 {
        let request = kv::protocol::message::Request::new(
            id,
            vec![serde_bytes::ByteBuf::from("GET"), serde_bytes::ByteBuf::from(key)],
        );
        requests.extend(frame(&kv::protocol::frame::encode(&request)));
    }
    stream.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    // A full socket that stays full is the node no longer reading: backpressure.
    let _ = stream.write_all(&requests);
    stream
}

/// The measurement: 20 connections that each pipelined 3,000 `GET`s of a 1 MiB value
/// and never read took a node to 5.5 GB. Here 10 connections pipeline 3,000 `GET`s of a 256 KiB
/// value (unbounded, 2.5 GB of answers): the node stops reading them once each has its answer
/// budget waiting, stays under a stated bound, serves another client throughout, and drops
/// them once they have read nothing for the write timeout.
#[test]
fn clients_that_never_read_their_answers_are_bounded_and_then_disconnected() {
    const BOUND: u64 = 400 * 1024 * 1024;
    let node = common::TestNode::start(&["--write-timeout-ms", "3000"]);
    let addrs = vec![node.addr.to_string()];
    let value = "v".repeat(256 * 1024);
    let set = common::call(&addrs, &["SET", "big", &value]).expect("an answer");
    assert_eq!(set.reply, Reply::ok());
    let readers: Vec<_> = (0..10).map(|_| greedy_reader(node.addr, "big", 3000)).collect();
    let mut peak = 0;
    common::wait_until("every greedy reader to be disconnected", Duration::from_secs(60), || {
        peak = peak.max(rss(node.pid()));
        let served = common::call(&addrs, &["SET", "other", "yes"]).expect("another client is served");
        assert_eq!(served.reply, Reply::ok());
        node.log_text().matches("read nothing for 3000 ms").count() >= readers.len()
    });
    assert!(peak < BOUND, "the node's RSS peaked at {} MiB", peak / 1024 / 1024);
    drop(readers);
}

/// A plain client connection to `addr`, waiting up to `timeout` for it and for each answer.
async fn connect(addr: &str, timeout: Duration) -> Result<kv::client::Client, kv::client::ClientError> {
    let transport = kv::client::Transport::plain();
    kv::client::Client::connect(addr, timeout, &transport).await.map(|(client, _)| client)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Clients fill every node's `max_connections` and sit idle; the leader dies. Members'
/// connections are counted apart from clients', so the others still reach each other, elect a
/// leader and commit.
#[test]
fn clients_filling_every_slot_cannot_keep_the_cluster_from_electing_and_committing() {
    let mut cluster = TestCluster::start(3, &["--max-connections", "4"]);
    let leader = cluster.wait_for_a_leader();
    let runtime = runtime();
    let mut held = Vec::new();
    for node in &cluster.nodes {
        let addr = node.addr.to_string();
        // The harness's own probes may hold a slot for a moment.
        common::wait_until("every client slot to be taken", Duration::from_secs(20), || {
            if let Ok(client) = runtime.block_on(connect(&addr, Duration::from_secs(5))) {
                held.push((node.addr, client));
            }
            held.iter().filter(|(a, _)| *a == node.addr).count() == 4
        });
    }
    let busy = cluster.nodes[0].cli(&["-c", "PING"]);
    assert!(busy.stderr.contains("BUSY"), "every slot is taken: {busy:?}");
    let leader_addr = cluster.nodes[leader as usize - 1].addr;
    cluster.node(leader).kill9();
    // Write through a connection already held on a survivor: its node must find the new leader.
    let (_, client) = held.iter_mut().find(|(addr, _)| *addr != leader_addr).unwrap();
    let mut committed = false;
    for _ in 0..5 {
        let answer =
            runtime.block_on(client.call(vec![b"SET".to_vec(), b"after".to_vec(), b"kill".to_vec()]));
        if answer.is_ok_and(|a| a.reply == Reply::ok()) {
            committed = true;
            break;
        }
    }
    assert!(committed, "the survivors elected a leader and committed");
}

/// A client that sends nothing for `idle_timeout_ms` is disconnected; one that keeps talking is
/// not.
#[test]
fn idle_clients_are_disconnected() {
    let node = common::TestNode::start(&["--idle-timeout-ms", "300"]);
    let runtime = runtime();
    let addr = node.addr.to_string();
    let started = std::time::Instant::now();
    let mut idle = runtime.block_on(connect(&addr, Duration::from_secs(5))).unwrap();
    let mut busy = runtime.block_on(connect(&addr, Duration::from_secs(5))).unwrap();
    common::wait_until("the idle connection to be closed", Duration::from_secs(10), || {
        let ping = runtime.block_on(busy.call(vec![b"PING".to_vec()]));
        assert!(ping.is_ok(), "a client that keeps talking stays connected: {ping:?}");
        idle.gone_while_idle()
    });
    assert!(started.elapsed() >= Duration::from_millis(300), "not before the timeout");
}

/// The leader's term, as the leader reports it in `CLUSTER`.
fn leader_term(cluster: &TestCluster, via: u64) -> u64 {
    let rows = cluster.status(via);
    let leader = rows.iter().find(|row| row["role"] == "leader").expect("a leader");
    leader["term"].as_u64().unwrap()
}

/// With one worker thread per node, nothing a request or the log's upkeep does may hold the
/// thread long enough to miss heartbeats: `DEL`s of the most keys allowed, and snapshots with log
/// compaction under a steady write load, cause no election.
#[test]
fn big_deletes_and_compaction_under_load_cause_no_election() {
    let flags = ["--worker-threads", "1", "--snapshot-entries", "2000", "--keep-log-entries", "100"];
    let cluster = TestCluster::start(3, &flags);
    let leader = cluster.wait_for_a_leader();
    let term = leader_term(&cluster, leader);
    let addrs = cluster.addrs();
    let load = {
        let addrs = addrs.clone();
        std::thread::spawn(move || {
            let args =
                ["--addr", &addrs, "bench", "--duration", "6", "--clients", "4", "--value-size", "1024"];
            common::run_cli(&args, None, &[])
        })
    };
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    for round in 0..6 {
        // The bench's own keys: `key:` and five digits for its default keyspace of 100,000.
        let keys: Vec<String> = (0..10_000).map(|i| format!("key:{:05}", round * 10_000 + i)).collect();
        let mut args = vec!["DEL"];
        args.extend(keys.iter().map(String::as_str));
        let answer =
            common::call(&nodes[round % nodes.len()..=round % nodes.len()], &args).expect("an answer");
        assert!(matches!(answer.reply, Reply::Integer { .. }), "{:?}", answer.reply);
    }
    let load = load.join().unwrap();
    assert_eq!(load.code, 0, "{load:?}");
    // More load until the log has been compacted under it, however slow this machine is.
    let compacted = || cluster.status(leader).iter().any(|row| row["purged"].as_u64().is_some_and(|p| p > 0));
    for _ in 0..20 {
        if compacted() {
            break;
        }
        let args = ["--addr", &addrs, "bench", "--duration", "3", "--clients", "4", "--value-size", "1024"];
        let more = common::run_cli(&args, None, &[]);
        assert_eq!(more.code, 0, "{more:?}");
    }
    assert!(compacted(), "the log was compacted during the load");
    assert_eq!(leader_term(&cluster, leader), term, "no election happened");
}

/// Two clients of one follower share its link to the leader. One asks each write to wait for
/// two peers' acknowledgements, which cannot come with a node down, so the leader holds its
/// answer up to its ack timeout; the other client's writes are answered meanwhile.
#[test]
fn one_clients_acknowledgement_wait_delays_no_other_client_on_a_shared_link() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_a_leader();
    let mut others = (1..=3).filter(|id| *id != leader);
    let (follower, down) = (others.next().unwrap(), others.next().unwrap());
    cluster.node(down).kill9();
    let addr = cluster.nodes[follower as usize - 1].addr.to_string();
    let waiting = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let runtime = runtime();
            let mut client = runtime.block_on(connect(&addr, Duration::from_secs(30))).unwrap();
            client.set_options(kv::client::RequestOptions {
                min_acks: Some(2),
                ack_timeout: Some(Duration::from_secs(4)),
                ..Default::default()
            });
            let started = std::time::Instant::now();
            let answer =
                runtime.block_on(client.call(vec![b"SET".to_vec(), b"patient".to_vec(), b"1".to_vec()]));
            (answer.map(|a| a.reply), started.elapsed())
        })
    };
    let runtime = runtime();
    let mut client = runtime.block_on(connect(&addr, Duration::from_secs(30))).unwrap();
    // Give the patient write time to reach the leader first.
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    for i in 0..5 {
        let answer = runtime.block_on(client.call(vec![
            b"SET".to_vec(),
            format!("quick{i}").into_bytes(),
            b"1".to_vec(),
        ]));
        assert_eq!(answer.unwrap().reply, Reply::ok());
    }
    let quick = started.elapsed();
    let (patient, waited) = waiting.join().unwrap();
    assert_eq!(patient.unwrap(), Reply::ok());
    assert!(
        waited >= Duration::from_secs(3),
        "the patient write waited for its acknowledgements: {waited:?}"
    );
    assert!(quick < Duration::from_secs(2), "the other client's writes took {quick:?}");
}

/// A member given smaller frames than the leader cannot take an entry the leader admitted: the
/// leader does not send it again and again, and `CLUSTER` says which member is stuck and why.
/// `CLUSTER` itself opens no new connections to the members once it has one to each.
#[test]
fn an_entry_a_member_cannot_take_shows_in_cluster_and_cluster_reuses_its_links() {
    let mut cluster = TestCluster::start(3, &[]);
    let small = ["--max-frame-bytes", "262144", "--max-value-bytes", "131072"];
    let node3 = cluster.node(3);
    assert!(node3.terminate().success());
    node3.flags.extend(small.iter().map(|f| f.to_string()));
    node3.restart();
    let mut leader = cluster.wait_for_a_leader();
    if leader == 3 {
        assert_eq!(cluster.nodes[0].cli(&["-c", "CLUSTER TRANSFER-LEADER 1"]).code, 0);
        leader = 1;
    }
    let value = "v".repeat(300 * 1024);
    let set = common::call(&[cluster.nodes[leader as usize - 1].addr.to_string()], &["SET", "big", &value]);
    assert_eq!(set.expect("an answer").reply, Reply::ok(), "a quorum of large-frame members commits it");
    common::wait_until("CLUSTER to name the stuck member", Duration::from_secs(30), || {
        cluster.status(leader).iter().any(|row| {
            row["id"] == 3 && row["problem"].as_str().is_some_and(|p| p.contains("cannot be sent to node 3"))
        })
    });
    // Ten more tables through the leader: no new connection reaches another member.
    let follower = if leader == 1 { 2 } else { 1 };
    let connects = || cluster.nodes[follower as usize - 1].log_text().matches("peer connected").count();
    let before = connects();
    for _ in 0..10 {
        cluster.status(leader);
    }
    assert_eq!(connects(), before, "CLUSTER reused its connections");
}
