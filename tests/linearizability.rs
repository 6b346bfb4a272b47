//! Linearizability under failure: concurrent clients read, write, delete and compare-and-set a
//! few keys while nodes are killed with -9 and restarted; the recorded history of each key must
//! be linearizable. The checker and its own tests (which show it rejects a stale read and a wrong
//! CAS result) are in `linearizability/checker.rs`.

#[path = "linearizability/checker.rs"]
mod checker;
mod common;

use checker::{Event, Op, linearizable};
use common::TestCluster;
use kv::client::{Client, ClientError};
use kv::protocol::message::{ErrorCode, Reply};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const KEYS: usize = 3;
const CLIENTS: usize = 4;
/// The most operations one client makes.
const MAX_OPS: usize = 400;
/// The longest any one operation may take before the client gives up on it.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// A small deterministic generator, so that a failing run can be told apart by its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One client's loop: random operations until told to stop, each recorded with its times.
fn client(
    worker: usize,
    addrs: Vec<String>,
    start: Instant,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Vec<(usize, Event)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut rng = Rng(seed + worker as u64 * 7919 + 1);
    let session = kv::client::ClientSession::new().unwrap();
    let mut history = Vec::new();
    let mut connection: Option<Client> = None;
    let mut next_addr = worker;
    // The last value this client saw in each key: what its CASes expect, so that some swap.
    let mut last_seen: Vec<String> = vec![String::new(); KEYS];
    for n in 0..MAX_OPS {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(rng.below(10)));
        let key = rng.below(KEYS as u64) as usize;
        let value = format!("c{worker}-{n}");
        let expected = last_seen[key].clone();
        let (args, kind) = match rng.below(20) {
            0..=7 => (vec!["GET".to_string(), format!("k{key}")], 'g'),
            8..=12 => (vec!["SET".to_string(), format!("k{key}"), value.clone()], 's'),
            13..=17 => (vec!["CAS".to_string(), format!("k{key}"), expected.clone(), value.clone()], 'c'),
            _ => (vec!["DEL".to_string(), format!("k{key}")], 'd'),
        };
        if connection.is_none() {
            match runtime.block_on(Client::connect_any_from(
                &addrs,
                next_addr,
                Duration::from_secs(1),
                &kv::client::Transport::default(),
            )) {
                Ok((mut client, _)) => {
                    // Writes numbered in a session, as kv-cli sends them: the node sends one
                    // whose outcome it lost again, and the state machine applies it once.
                    client.set_session(session.clone());
                    connection = Some(client);
                }
                Err(_) => continue,
            }
        }
        let invoked = start.elapsed().as_nanos();
        let args: Vec<Vec<u8>> = args.into_iter().map(String::into_bytes).collect();
        let outcome = runtime.block_on(connection.as_mut().unwrap().call(args));
        let returned = start.elapsed().as_nanos();
        let unknown = match kind {
            's' => Some(Op::SetUnknown(value.clone())),
            'd' => Some(Op::DelUnknown),
            'c' => Some(Op::CasUnknown { expected: expected.clone(), new: value.clone() }),
            _ => None,
        };
        let op = match outcome.map(|r| r.reply) {
            Ok(Reply::Status { .. }) if kind == 's' => Some((Op::Set(value), true)),
            Ok(Reply::Integer { value }) if kind == 'd' => Some((Op::Del(value), true)),
            Ok(Reply::Bulk { value }) if kind == 'g' => {
                let value = String::from_utf8(value.into_vec()).unwrap();
                last_seen[key] = value.clone();
                Some((Op::Get(Some(value)), true))
            }
            Ok(Reply::Integer { value: swapped }) if kind == 'c' => {
                if swapped == 1 {
                    last_seen[key] = value.clone();
                }
                Some((Op::Cas { expected: expected.clone(), new: value, swapped: swapped == 1 }, true))
            }
            Ok(Reply::Nil) if kind == 'g' => Some((Op::Get(None), true)),
            // Certainly not applied: it did not happen.
            Ok(Reply::Error { code: ErrorCode::NoQuorum, .. }) => None,
            Ok(Reply::Error { code: ErrorCode::OutcomeUnknown, .. }) => unknown.map(|op| (op, false)),
            Ok(other) => panic!("unexpected answer {other:?}"),
            Err(ClientError::Lost(_) | ClientError::Timeout(_) | ClientError::Protocol(_)) => {
                connection = None;
                next_addr += 1;
                unknown.map(|op| (op, false))
            }
            Err(e) => panic!("unexpected client error {e}"),
        };
        if let Some((op, known)) = op {
            history.push((key, Event { op, invoked, returned: known.then_some(returned) }));
        }
    }
    history
}

#[test]
fn histories_stay_linearizable_while_nodes_are_killed_and_restarted() {
    let mut cluster = TestCluster::start(3, &[]);
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("seed {seed}");
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|worker| {
            let (addrs, stop) = (addrs.clone(), stop.clone());
            std::thread::spawn(move || client(worker, addrs, start, stop, seed))
        })
        .collect();

    // The nemesis: every node in turn is killed mid-traffic, then restarted.
    let mut rng = Rng(seed | 1);
    for id in [2, 3, 1] {
        std::thread::sleep(Duration::from_millis(300 + rng.below(500)));
        cluster.node(id).kill9();
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        cluster.node(id).restart();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + MAX_OPS as u32 * OP_TIMEOUT;
    let mut per_key: BTreeMap<usize, Vec<Event>> = BTreeMap::new();
    for worker in workers {
        assert!(Instant::now() < deadline);
        for (key, event) in worker.join().expect("a client panicked") {
            per_key.entry(key).or_default().push(event);
        }
    }
    let completed: usize = per_key.values().flatten().filter(|e| e.returned.is_some()).count();
    assert!(completed >= 100, "too little traffic to check: {completed} operations");
    for (key, history) in &per_key {
        assert!(linearizable(history), "history of k{key} is not linearizable (seed {seed}): {history:#?}");
    }
    let unknown = per_key.values().flatten().filter(|e| e.returned.is_none()).count();
    eprintln!("checked {completed} completed and {unknown} unknown-outcome operations");
}
