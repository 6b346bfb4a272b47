//! Failover without waiting out the request timeout: when the leader stops answering, a
//! follower's clients are served again about an election timeout later.

mod common;

use common::TestCluster;
use kv::client::Client;
use kv::protocol::message::{ErrorCode, Reply};
use nix::sys::signal::{Signal, kill};
use std::time::{Duration, Instant};

/// How long the follower's client may go without a successful write after the leader freezes:
/// an election (timeouts of 500–1,000 ms, a pre-vote and a vote), the grace given the old
/// leader, and a round trip. Before, it waited out the request timeout (5 s) and then some.
const FAILOVER_BOUND: Duration = Duration::from_millis(3500);

/// The leader is frozen (SIGSTOP): its connections stay open and silent, as if cut off by the
/// network. A client of a follower writes throughout; its writes in flight to the frozen leader
/// are settled once the others have elected a new one, and the next ones go there.
#[test]
fn a_followers_clients_are_served_again_soon_after_the_leader_goes_silent() {
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_a_leader();
    let follower = if leader == 1 { 2 } else { 1 };
    let leader_pid = cluster.nodes[leader as usize - 1].pid();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let addr = cluster.nodes[follower as usize - 1].addr.to_string();
    let (mut client, _) = runtime.block_on(Client::connect(&addr, Duration::from_secs(30))).unwrap();

    // Writes succeed before the freeze.
    let mut write = |i: usize| {
        runtime.block_on(client.call(vec![b"SET".to_vec(), format!("k{i}").into_bytes(), b"v".to_vec()]))
    };
    assert_eq!(write(0).unwrap().reply, Reply::ok());
    kill(leader_pid, Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    let mut served_again = None;
    let mut answers = Vec::new();
    for i in 1..1000 {
        let answer = write(i).expect("the follower answers");
        let elapsed = frozen.elapsed();
        match &answer.reply {
            Reply::Status { .. } => {
                served_again = Some(elapsed);
                break;
            }
            Reply::Error { code: ErrorCode::OutcomeUnknown | ErrorCode::NoQuorum, .. } => {
                answers.push((elapsed, answer.reply.clone()))
            }
            other => panic!("unexpected answer {other:?}"),
        }
        if elapsed > Duration::from_secs(30) {
            break;
        }
    }
    kill(leader_pid, Signal::SIGCONT).unwrap();
    let served_again = served_again.expect("writes succeed again");
    assert!(
        served_again < FAILOVER_BOUND,
        "the follower's client waited {served_again:?} for a successful write (answers meanwhile: {answers:?})"
    );
    // The old leader rejoins as a follower, and the cluster still commits.
    cluster.wait_for_a_leader();
}

/// A node cut off from the others campaigns on and on; it says so once in a while, not on every
/// tick (openraft logs its election timeout every few milliseconds while a pre-vote is out).
#[test]
fn a_cut_off_node_does_not_flood_its_log() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_a_leader();
    let survivor = if leader == 1 { 2 } else { 1 };
    for id in (1..=3).filter(|id| *id != survivor) {
        cluster.node(id).kill9();
    }
    let node = &cluster.nodes[survivor as usize - 1];
    let campaigns = || node.log_text().matches("election timeout expired").count();
    common::wait_until("the survivor to campaign", Duration::from_secs(20), || campaigns() > 0);
    // A window to count in: without the limit, hundreds of lines.
    let before = campaigns();
    std::thread::sleep(Duration::from_secs(3));
    let during = campaigns() - before;
    assert!(during <= 1, "{during} election timeout lines in 3 s");
}
