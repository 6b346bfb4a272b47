//! Transactions under failure: clients move money between accounts with `TXN` (compare both
//! balances, then set both) while nodes are killed with -9 and restarted. Every read of all the
//! accounts, at one revision (`MGET`), must see the same total: a transfer applies whole or not
//! at all, and never twice.

mod common;

use common::TestCluster;
use kv::client::{Client, ClientSession};
use kv::protocol::message::Reply;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ACCOUNTS: usize = 4;
const START_BALANCE: i64 = 100;
const CLIENTS: usize = 3;
/// The most transfers one client tries.
const MAX_TRANSFERS: usize = 300;

fn account(n: usize) -> String {
    format!("acct/{n}")
}

/// Every balance, read at one revision; `None` if the read failed.
fn balances(client: &mut Client, runtime: &tokio::runtime::Runtime) -> Option<Vec<i64>> {
    let mut args = vec![b"MGET".to_vec()];
    args.extend((0..ACCOUNTS).map(|n| account(n).into_bytes()));
    let Reply::Array { items } = runtime.block_on(client.call(args)).ok()?.reply else { return None };
    items
        .iter()
        .map(|item| match item {
            Reply::Bulk { value } => std::str::from_utf8(value).ok()?.parse().ok(),
            _ => None,
        })
        .collect()
}

/// One client: transfers between random accounts until told to stop. Returns the totals it saw
/// and how many transfers went through.
fn client(worker: usize, addrs: Vec<String>, stop: Arc<AtomicBool>) -> (Vec<i64>, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let session = ClientSession::new().unwrap();
    let mut rng = fastrand::Rng::with_seed(worker as u64 + 1);
    let mut connection: Option<Client> = None;
    let mut next_addr = worker;
    let plain = kv::client::Transport::default();
    let (mut totals, mut transferred) = (Vec::new(), 0);
    for _ in 0..MAX_TRANSFERS {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if connection.is_none() {
            let connect = Client::connect_any_from(&addrs, next_addr, Duration::from_secs(1), &plain);
            match runtime.block_on(connect) {
                Ok((mut client, _)) => {
                    client.set_session(session.clone());
                    connection = Some(client);
                }
                Err(_) => {
                    next_addr += 1;
                    continue;
                }
            }
        }
        let client = connection.as_mut().unwrap();
        let Some(before) = balances(client, &runtime) else {
            connection = None;
            next_addr += 1;
            continue;
        };
        totals.push(before.iter().sum());
        let from = rng.usize(0..ACCOUNTS);
        let to = (from + 1 + rng.usize(0..ACCOUNTS - 1)) % ACCOUNTS;
        let amount = rng.i64(1..=10);
        let txn = format!(
            "TXN VALUE {a} = {va} VALUE {b} = {vb} THEN SET {a} {na} SET {b} {nb}",
            a = account(from),
            b = account(to),
            va = before[from],
            vb = before[to],
            na = before[from] - amount,
            nb = before[to] + amount,
        );
        let args = txn.split_whitespace().map(|w| w.as_bytes().to_vec()).collect();
        match runtime.block_on(client.call(args)).map(|r| r.reply) {
            Ok(Reply::Txn { succeeded: true, .. }) => transferred += 1,
            // A compare failed (another client moved first), no quorum, or an unknown outcome:
            // the total must hold whatever happened.
            Ok(_) => {}
            Err(_) => {
                connection = None;
                next_addr += 1;
            }
        }
    }
    (totals, transferred)
}

#[test]
fn concurrent_transfers_keep_the_total_while_nodes_are_killed_and_restarted() {
    let mut cluster = TestCluster::start(3, &[]);
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    let setup: Vec<String> = (0..ACCOUNTS).map(|n| format!("{} {START_BALANCE}", account(n))).collect();
    let out = cluster.cli(&["-c", &format!("MSET {}", setup.join(" "))]);
    assert_eq!(out.code, 0, "{out:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|worker| {
            let (addrs, stop) = (addrs.clone(), stop.clone());
            std::thread::spawn(move || client(worker, addrs, stop))
        })
        .collect();
    // The nemesis: every node in turn is killed mid-traffic, then restarted.
    let mut rng = fastrand::Rng::with_seed(7);
    for id in [1, 2, 3] {
        std::thread::sleep(Duration::from_millis(300 + rng.u64(0..500)));
        cluster.node(id).kill9();
        std::thread::sleep(Duration::from_millis(300 + rng.u64(0..700)));
        cluster.node(id).restart();
    }
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected = START_BALANCE * ACCOUNTS as i64;
    let mut transferred = 0;
    for worker in workers {
        assert!(Instant::now() < deadline, "the clients did not stop");
        let (totals, done) = worker.join().expect("a client panicked");
        assert!(totals.iter().all(|t| *t == expected), "a read saw money appear or vanish: {totals:?}");
        transferred += done;
    }
    assert!(transferred >= 20, "too few transfers went through to tell: {transferred}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut client, _) = runtime
        .block_on(Client::connect_any(&addrs, Duration::from_secs(10), &kv::client::Transport::default()))
        .unwrap();
    let last = balances(&mut client, &runtime).expect("the balances");
    assert_eq!(last.iter().sum::<i64>(), expected, "{last:?} after {transferred} transfers");
}
