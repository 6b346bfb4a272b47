//! Network fuzzing: for a bounded time and number of connections, random and mutated frames
//! (client hellos, peer hellos, truncated and oversize frames, valid-looking requests with
//! absurd fields) against a running 3-node cluster on loopback. No node may panic or exit, and
//! the cluster must answer correctly afterwards.

mod common;

use common::TestCluster;
use kv::protocol::PROTOCOL_VERSION;
use kv::protocol::frame::encode;
use kv::protocol::message::{Hello, Request};
use serde_bytes::ByteBuf;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long the fuzzing runs, and how many connections it opens at the most.
const FUZZ_TIME: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 3000;
/// How long one connection waits on a node before moving on.
const IO_TIMEOUT: Duration = Duration::from_millis(50);

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let len = rng.usize(0..=max);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Flips a few bytes of `bytes`.
fn mutate(rng: &mut fastrand::Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(..bytes.len());
        bytes[at] ^= rng.u8(1..);
    }
    bytes
}

fn hello(rng: &mut fastrand::Rng) -> Vec<u8> {
    let peer = rng.bool().then(|| rng.u64(..));
    let forwarded_by = rng.bool().then(|| rng.u64(..));
    let version = if rng.u8(..10) == 0 { rng.u32(..) } else { PROTOCOL_VERSION };
    encode(&Hello { version, client: "fuzz".into(), peer, forwarded_by, cluster: None }).to_vec()
}

/// A request that decodes but asks for absurd things.
fn absurd_request(rng: &mut fastrand::Rng) -> Vec<u8> {
    let names = ["SET", "GET", "DEL", "EXISTS", "PING", "CLUSTER", "ADD-LEARNER", "REMOVE", "x"];
    let args: Vec<ByteBuf> = (0..rng.usize(0..6))
        .map(|_| {
            if rng.bool() {
                ByteBuf::from(names[rng.usize(..names.len())])
            } else {
                ByteBuf::from(random_bytes(rng, 24))
            }
        })
        .collect();
    let mut request = Request::new(rng.u64(..), args);
    request.local = rng.bool();
    request.min_acks = rng.bool().then(|| rng.u32(..));
    request.ack_timeout_ms = rng.bool().then(|| rng.u64(..));
    request.wait_acks = rng.bool();
    encode(&request).to_vec()
}

/// One connection's worth of hostile input.
fn fuzz_one(rng: &mut fastrand::Rng, addr: SocketAddr) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, IO_TIMEOUT) else { return };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut wire = Vec::new();
    match rng.u8(..6) {
        // Garbage from the first byte.
        0 => wire.extend(random_bytes(rng, 256)),
        // A length prefix far over any limit.
        1 => wire.extend(u32::MAX.to_be_bytes()),
        // A hello cut short.
        2 => {
            let full = frame(&hello(rng));
            wire.extend(&full[..rng.usize(..full.len())]);
        }
        // A (possibly peer) hello, then mutated or random frames.
        3 => {
            wire.extend(frame(&hello(rng)));
            for _ in 0..rng.usize(1..8) {
                let payload = if rng.bool() {
                    let request = absurd_request(rng);
                    mutate(rng, request)
                } else {
                    random_bytes(rng, 128)
                };
                wire.extend(frame(&payload));
            }
        }
        // A client hello, then valid-looking requests with absurd fields.
        4 => {
            let plain = Hello {
                version: PROTOCOL_VERSION,
                client: "fuzz".into(),
                peer: None,
                forwarded_by: None,
                cluster: None,
            };
            wire.extend(frame(&encode(&plain)));
            for _ in 0..rng.usize(1..16) {
                wire.extend(frame(&absurd_request(rng)));
            }
        }
        // A good hello and a frame whose length says more than ever comes.
        _ => {
            wire.extend(frame(&hello(rng)));
            wire.extend(&1000u32.to_be_bytes());
            wire.extend(random_bytes(rng, 100));
        }
    }
    let _ = stream.write_all(&wire);
    // Read a little of whatever comes back, then hang up.
    let mut sink = [0u8; 4096];
    let _ = stream.read(&mut sink);
}

#[test]
fn random_and_mutated_frames_harm_no_node() {
    let cluster = TestCluster::start(3, &[]);
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.addr).collect();
    let mut rng = fastrand::Rng::with_seed(0x6b76_6675_7a7a);
    let started = Instant::now();
    let mut connections = 0;
    while connections < MAX_CONNECTIONS && started.elapsed() < FUZZ_TIME {
        fuzz_one(&mut rng, addrs[connections % addrs.len()]);
        connections += 1;
    }
    assert!(connections > 100, "the fuzzing ran ({connections} connections)");
    for node in &cluster.nodes {
        let log = node.log_text();
        assert!(!log.contains("panicked"), "a node panicked:\n{log}");
    }
    // Every node is still up, and the cluster still commits and reads what it committed.
    cluster.wait_for_a_leader();
    let out = cluster.cli(&["-c", "SET after-fuzz yes", "-c", "GET after-fuzz"]);
    assert_eq!(out.stdout, "OK\nyes\n", "{out:?}");
    for node in &cluster.nodes {
        let ping = node.cli(&["-c", "PING"]);
        assert_eq!(ping.stdout, "PONG\n", "node on {} answers: {ping:?}", node.addr);
    }
}
