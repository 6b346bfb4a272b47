//! A network between test nodes that a test can partition.
//!
//! Each node advertises the address of its own proxy, so the other members (Raft, forwarded
//! requests, status links) reach it only through that proxy; clients keep connecting to its
//! listen address directly. A proxy reads each connection's hello to learn which member dialled
//! it (`peer` or `forwarded_by`; a client's hello names no member), and forwards the bytes both
//! ways until the test cuts one node off. Then every connection between that node and the
//! others goes silent, open and unanswered, as through a dead switch: nothing is refused or
//! reset, so each side notices only by its own timeouts. New connections across the cut are
//! accepted and then ignored. Healing the cut closes the connections that were held and lets
//! new ones through.
//!
//! Not done: partitions of more than one node, one-way cuts, delay or loss short of a cut.

use kv::protocol::message::Hello;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The largest hello a proxy reads; members' hellos are a few dozen bytes.
const MAX_HELLO_BYTES: usize = 64 * 1024;

/// Proxies in front of `size` nodes, and the switch that cuts one of them off.
pub struct Network {
    /// Where the other members reach node `id`: `proxies[id - 1]`.
    pub proxies: Vec<SocketAddr>,
    /// Where the proxy of node `id` forwards to; set once the node's port is known.
    targets: Vec<watch::Sender<Option<SocketAddr>>>,
    /// The node cut off from the others, if any.
    cut: watch::Sender<Option<u64>>,
    /// Runs the proxies; dropping it closes every proxied connection.
    _runtime: tokio::runtime::Runtime,
}

impl Network {
    /// Opens one proxy per node, on free loopback ports; nothing is cut.
    pub fn new(size: u64) -> Network {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let cut = watch::Sender::new(None);
        let mut proxies = Vec::new();
        let mut targets = Vec::new();
        for id in 1..=size {
            let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
            proxies.push(listener.local_addr().unwrap());
            let target = watch::Sender::new(None);
            runtime.spawn(serve(listener, id, target.subscribe(), cut.subscribe()));
            targets.push(target);
        }
        Network { proxies, targets, cut, _runtime: runtime }
    }

    /// Points node `id`'s proxy at the address the node listens on.
    pub fn route(&self, id: u64, listen: SocketAddr) {
        self.targets[id as usize - 1].send_replace(Some(listen));
    }

    /// Cuts node `id` off from every other node.
    pub fn isolate(&self, id: u64) {
        self.cut.send_replace(Some(id));
    }

    /// Ends the cut: held connections are closed, new ones go through.
    pub fn heal(&self) {
        self.cut.send_replace(None);
    }
}

/// Whether a connection from `from` (a member, or a client if `None`) to member `to` crosses the
/// cut: exactly one end is the node cut off.
fn crosses(cut: Option<u64>, from: Option<u64>, to: u64) -> bool {
    cut.is_some_and(|cut| (from == Some(cut)) != (to == cut))
}

/// Accepts connections for node `id` until the runtime stops.
async fn serve(
    listener: TcpListener,
    id: u64,
    target: watch::Receiver<Option<SocketAddr>>,
    cut: watch::Receiver<Option<u64>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let Some(addr) = *target.borrow() else {
            continue; // The node has not started yet: refused, as a closed port would be.
        };
        tokio::spawn(relay(stream, id, addr, cut.clone()));
    }
}

/// Carries one connection to node `to` at `addr`, until either end closes it or the cut
/// silences it.
async fn relay(mut inbound: TcpStream, to: u64, addr: SocketAddr, mut cut: watch::Receiver<Option<u64>>) {
    let Some((hello, from)) = read_hello(&mut inbound).await else {
        return;
    };
    let through = |cut: &Option<u64>| !crosses(*cut, from, to);
    if !through(&cut.borrow_and_update()) {
        // Accepted, then never answered, until the cut heals.
        let _ = cut.wait_for(through).await;
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(addr).await else {
        return;
    };
    if outbound.write_all(&hello).await.is_err() {
        return;
    }
    let silenced = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
        cut = cut.wait_for(|cut| !through(cut)) => cut.is_ok(),
    };
    if silenced {
        // Silent, with both sockets open, until the cut heals; then closed.
        let _ = cut.wait_for(through).await;
    }
}

/// Reads a connection's first frame, a hello: its bytes as sent, and the member it names.
async fn read_hello(stream: &mut TcpStream) -> Option<(Vec<u8>, Option<u64>)> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.ok()?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_HELLO_BYTES {
        return None;
    }
    let mut frame = prefix.to_vec();
    frame.resize(4 + len, 0);
    stream.read_exact(&mut frame[4..]).await.ok()?;
    let hello: Hello = kv::protocol::frame::decode(&frame[4..]).ok()?;
    Some((frame, hello.peer.or(hello.forwarded_by)))
}
