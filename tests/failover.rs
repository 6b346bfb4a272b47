//! Failover without waiting out the request timeout: when the leader stops answering, a
//! follower's clients are served again about an election timeout later.

mod common;

use common::TestCluster;
use common::network::Network;
use kv::client::Client;
use kv::protocol::message::{ErrorCode, Reply};
use nix::sys::signal::{Signal, kill};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    let (mut client, _) = runtime
        .block_on(Client::connect(&addr, Duration::from_secs(30), &kv::client::Transport::default()))
        .unwrap();

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

/// One answered request of a [`Looping`] client.
#[derive(Debug, Clone)]
struct Answered {
    sent: Instant,
    answered: Instant,
    /// The answer, or why there was none.
    reply: Result<Reply, String>,
}

impl Answered {
    fn succeeded(&self) -> bool {
        matches!(self.reply, Ok(Reply::Status { .. } | Reply::Bulk { .. } | Reply::Nil))
    }
}

/// A client that sends one command after another to one node, on its own connection, and
/// records every answer; reconnects when the connection fails.
struct Looping {
    answers: Arc<Mutex<Vec<Answered>>>,
}

/// The most requests one [`Looping`] client sends.
const LOOPING_MAX_REQUESTS: usize = 100_000;

impl Looping {
    /// `command(i)` is the client's `i`th command.
    fn start(
        runtime: &tokio::runtime::Runtime,
        addr: String,
        stop: Arc<AtomicBool>,
        command: impl Fn(usize) -> Vec<String> + Send + 'static,
    ) -> Looping {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let record = answers.clone();
        runtime.spawn(async move {
            let mut client = None;
            for i in 0..LOOPING_MAX_REQUESTS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = Instant::now();
                let reply = match &mut client {
                    Some(connected) => {
                        let args = command(i).into_iter().map(String::into_bytes).collect();
                        Client::call(connected, args).await.map(|r| r.reply).map_err(|e| e.to_string())
                    }
                    None => match Client::connect(
                        &addr,
                        Duration::from_secs(30),
                        &kv::client::Transport::default(),
                    )
                    .await
                    {
                        Ok((connected, _)) => {
                            client = Some(connected);
                            continue;
                        }
                        Err(e) => Err(e.to_string()),
                    },
                };
                if reply.is_err() {
                    client = None;
                }
                record.lock().unwrap().push(Answered { sent, answered: Instant::now(), reply });
            }
        });
        Looping { answers }
    }

    fn answers(&self) -> Vec<Answered> {
        self.answers.lock().unwrap().clone()
    }

    fn succeeded_after(&self, moment: Instant) -> bool {
        self.answers().iter().any(|a| a.succeeded() && a.sent > moment)
    }
}

/// A real partition: the leader is cut off from the other two nodes by the proxies between them,
/// while its own clients stay connected to it. Clients of both followers write and read
/// throughout. Whatever they had in flight to the old leader is settled, and they are served
/// again, about an election timeout after the cut, not a request timeout. The cut-off leader
/// acknowledges nothing the others do not have.
#[test]
fn the_majoritys_clients_are_served_again_soon_after_the_leader_is_cut_off() {
    let network = Network::new(3);
    let cluster = TestCluster::start_behind(&network, &[]);
    let leader = cluster.wait_for_a_leader();
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let addr = |id: u64| cluster.nodes[id as usize - 1].addr.to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut majority = Vec::new();
    for follower in &followers {
        for writer in 0..2 {
            let prefix = format!("n{follower}w{writer}-");
            majority.push(Looping::start(&runtime, addr(*follower), stop.clone(), move |i| {
                vec!["SET".into(), format!("{prefix}{i}"), i.to_string()]
            }));
        }
        majority.push(Looping::start(&runtime, addr(*follower), stop.clone(), |_| {
            vec!["GET".into(), "n-probe".into()]
        }));
    }
    let minority = Looping::start(&runtime, addr(leader), stop.clone(), |i| {
        vec!["SET".into(), format!("old-leader-{i}"), i.to_string()]
    });
    let started = Instant::now();
    common::wait_until("every client to be served", Duration::from_secs(20), || {
        majority.iter().chain([&minority]).all(|c| c.succeeded_after(started))
    });

    network.isolate(leader);
    let cut = Instant::now();
    common::wait_until("the majority's clients to be served again", Duration::from_secs(30), || {
        majority.iter().all(|c| c.succeeded_after(cut))
    });
    // The others have a new leader: the old one must commit nothing sent from now on.
    let others_lead = Instant::now();
    let probe = call_node(&addr(followers[0]), &["SET", "n-probe", "after-the-cut"]);
    assert_eq!(probe, Reply::ok());
    let old_leaders_read = call_node(&addr(leader), &["GET", "n-probe"]);
    assert!(
        matches!(old_leaders_read, Reply::Error { .. }),
        "the cut-off leader answered {old_leaders_read:?}"
    );

    network.heal();
    let healed = Instant::now();
    common::wait_until("every client to be served after the heal", Duration::from_secs(30), || {
        majority.iter().chain([&minority]).all(|c| c.succeeded_after(healed))
    });
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        call_node(&addr(leader), &["GET", "n-probe"]),
        Reply::Bulk { value: serde_bytes::ByteBuf::from(b"after-the-cut".to_vec()) }
    );

    let minority = minority.answers();
    let committed_alone: Vec<_> =
        minority.iter().filter(|a| a.succeeded() && a.sent > others_lead && a.answered < healed).collect();
    assert!(committed_alone.is_empty(), "the cut-off leader acknowledged {committed_alone:?}");
    let mut in_flight_at_the_cut = 0;
    for client in &majority {
        let answers = client.answers();
        in_flight_at_the_cut += answers.iter().filter(|a| a.sent < cut && a.answered > cut).count();
        // Every request answered within the bound of when it was sent or of the cut.
        let slowest = answers
            .iter()
            .filter(|a| a.answered > cut && a.answered < healed)
            .max_by_key(|a| a.answered - a.sent.max(cut))
            .expect("answers after the cut");
        let waited = slowest.answered - slowest.sent.max(cut);
        assert!(waited < FAILOVER_BOUND, "a majority client waited {waited:?} for {slowest:?}");
        let first_success = answers.iter().find(|a| a.succeeded() && a.sent > cut).expect("a success");
        let served_again = first_success.answered - cut;
        assert!(served_again < FAILOVER_BOUND, "a majority client was served again after {served_again:?}");
        eprintln!(
            "a majority client: slowest answer {waited:?} after the cut, served again after {served_again:?}"
        );
    }
    assert!(in_flight_at_the_cut > 0, "no request was in flight at the cut");
}

/// One command to one node, on a connection of its own.
fn call_node(addr: &str, args: &[&str]) -> Reply {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (mut client, _) =
            Client::connect(addr, Duration::from_secs(20), &kv::client::Transport::default())
                .await
                .expect("the node accepts");
        client
            .call(args.iter().map(|a| a.as_bytes().to_vec()).collect())
            .await
            .expect("the node answers")
            .reply
    })
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
