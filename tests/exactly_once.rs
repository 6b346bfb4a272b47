//! Writes applied exactly once: clients whose writes are cut off by a leader's death send them
//! again, to another node, and the cluster applies each once.

mod common;

use common::{TestCluster, WritingClient, call, wait_until};
use kv::protocol::message::Reply;
use std::collections::BTreeSet;
use std::time::Duration;

/// The counter's value, read through any node; `None` while no node answers it.
fn counter(addrs: &[String]) -> Option<i64> {
    match call(addrs, &["GET", "counter"])?.reply {
        Reply::Bulk { value } => std::str::from_utf8(&value).ok()?.parse().ok(),
        Reply::Nil => Some(0),
        _ => None,
    }
}

/// Three kv-cli clients `INCR` one counter while the leader is killed (`kill -9`) and restarted,
/// three times. Each increment a client saw acknowledged is in the counter exactly once: none is
/// lost, none applied twice by a resend, and no client gives up with an unknown outcome. Every
/// answer is a distinct value of the counter, as it would be had nothing failed.
#[test]
fn increments_sent_again_after_leader_kills_are_applied_exactly_once() {
    let mut cluster = TestCluster::start(3, &[]);
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    let clients: Vec<WritingClient> = (0..3)
        .map(|_| WritingClient::start_lines(&cluster.addrs(), |_| "INCR counter".to_string()))
        .collect();
    let grows = |from: i64| {
        wait_until("the counter to grow by 200", Duration::from_secs(60), || {
            counter(&addrs).is_some_and(|now| now >= from + 200)
        });
    };
    for _ in 0..3 {
        grows(counter(&addrs).unwrap_or(0));
        let leader = cluster.wait_for_a_leader();
        let before = counter(&addrs).unwrap_or(0);
        cluster.node(leader).kill9();
        // A new leader takes the writes, the clients of the dead node among them.
        grows(before);
        cluster.node(leader).restart();
    }
    let mut acknowledged = Vec::new();
    for client in clients {
        let (out, sent) = client.finish();
        assert_eq!(out.code, 0, "a client gave up ({sent} sent): {}", out.stderr);
        let answers: Vec<i64> = out.lines().iter().map(|l| l.parse().expect("an INCR answer")).collect();
        assert_eq!(answers.len(), sent, "every increment was answered");
        acknowledged.extend(answers);
    }
    let total = counter(&addrs).expect("the counter");
    assert_eq!(total as usize, acknowledged.len(), "the counter holds each acknowledged increment once");
    let distinct: BTreeSet<i64> = acknowledged.iter().copied().collect();
    assert_eq!(distinct.len(), acknowledged.len(), "no increment was answered twice");
    assert_eq!(distinct, (1..=total).collect::<BTreeSet<_>>());
}
