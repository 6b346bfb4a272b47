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
            let hello =
                Hello { version: PROTOCOL_VERSION, client: "test".into(), peer: None, forwarded_by: None };
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
