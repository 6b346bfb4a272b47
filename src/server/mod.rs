//! The node: storage, the Raft member, the accept loop, the connection cap and graceful shutdown.
//!
//! [`run`] opens the node's storage, starts its Raft member, forms the cluster on first start,
//! and serves until its `shutdown` future completes. Then it stops accepting, lets every
//! connection finish the batch it is executing (so no answer is cut off), waits for them up to
//! [`DRAIN_TIMEOUT`], and stops Raft.
//!
//! Forming the cluster: a node whose Raft state is empty calls `initialize` with the configured
//! membership (itself plus its peers). Every node of a cluster has the same membership in its
//! configuration, and openraft accepts identical initializations on several nodes (the vote
//! decides who leads), so the nodes may start in any order and the cluster forms as soon as a
//! majority is up. A node that has state never initializes again, so restarts cannot split it.
//! Before initializing, it asks its peers whether they have seen it before: if so its data was
//! lost and it refuses to start. A node started with `join` instead asks a member to add it.
//!
//! Stopping a leader first hands its leadership to another voter, so that the cluster does not
//! wait an election timeout for a new one; connections are then told the node is going away.
//!
//! The modules, in the order a request meets them:
//!
//! - `handler`: one connection: the hello, then client batches (or, for a peer, `control`).
//! - `executor`: runs a batch, routing each request here, through the leader, or to it, and
//!   deciding from each step's `outcome::Outcome` what is retried. It reaches the cluster only
//!   through the `cluster::Cluster` trait, which `Node` implements.
//! - `forward`: both halves of forwarding (the follower's link to the leader, and the leader's
//!   proposing ahead on such a link); `reads`: read-index checks and lease reads; `acks`: who
//!   acknowledged each write; `membership`: membership changes, joining, removal.
//! - `control`: what members ask each other besides Raft, and the serving side of peer
//!   connections; `seen`: the peers seen holding entries, behind lost-data detection; `status`:
//!   the members' reports behind the `CLUSTER` table; `http`: the HTTP port (`/health`,
//!   `/ready`, `/metrics`, the console); `console`: what the console streams; `browser`: one
//!   browser's console session; `console_assets`: the console's embedded files.

mod acks;
mod browser;
mod cluster;
mod console;
mod console_assets;
pub mod control;
pub use browser::DEMO_CONTROL_ENV;
mod executor;
mod forward;
mod handler;
mod http;
mod membership;
mod outcome;
mod reads;
mod seen;
mod session;
mod status;

use crate::config::NodeConfig;
use crate::peer::Dialer;
use crate::raft::log_store::LogStore;
use crate::raft::network::{PeerNetwork, SnapshotInbox, Unsendable};
use crate::raft::state_machine::{StateMachine, request_snapshots};
use crate::raft::{KvRaft, leader_lease, raft_config};
use crate::store::{Store, StoreError};
use crate::tls::{NodeTls, TlsError};
use acks::AckTracker;
use openraft::BasicNode;
use openraft::async_runtime::WatchReceiver;
use seen::SeenMembers;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for open connections to finish their current batch.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot open the Raft log: {0}")]
    Log(#[from] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("invalid Raft timing: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("cannot start Raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Refused(#[from] membership::Refusal),
    #[error("{0}")]
    DataDir(String),
    #[error("the Raft core stopped: {0}")]
    RaftFailed(String),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    RootPassword(String),
}

/// What every connection of a node shares.
struct Node {
    config: NodeConfig,
    /// How connections are served and other members dialled over TLS; `None`: plain TCP.
    tls: Option<Arc<NodeTls>>,
    /// Opens this node's connections to other members.
    dialer: Dialer,
    store: Arc<Store>,
    /// The peers this node has seen hold log entries.
    seen: Arc<SeenMembers>,
    raft: KvRaft,
    acks: AckTracker,
    /// What `/metrics` serves.
    metrics: Arc<crate::metrics::NodeMetrics>,
    /// What the browser console streams.
    console: console::ConsoleFeed,
    /// Linearizable reads share their read-index checks through it.
    reads: reads::ReadBarrier,
    /// The leader's lease, for lease reads.
    lease: reads::LeaderLease,
    /// A follower's connection to the leader for read-index checks.
    leader_link: reads::LeaderLink,
    /// A follower's connection to the leader for its clients' writes.
    forwarding: forward::Forwarding,
    /// Membership changes run one at a time.
    membership_lock: tokio::sync::Mutex<()>,
    /// Held (shared) by every proposal in flight; taken exclusively while handing leadership
    /// over, so that no write is appended to a log the successor has not seen (it would be
    /// discarded, and its client told its outcome is unknown).
    proposing: tokio::sync::RwLock<()>,
    /// Where snapshots sent by the leader are received.
    snapshots: SnapshotInbox,
    /// Peers this node, leading, holds an entry for that their frames cannot carry.
    unsendable: Arc<Unsendable>,
    /// Connections to the members for `CLUSTER`, kept between calls.
    status_links: status::StatusLinks,
    /// Client connections' slots (`max_connections`).
    client_slots: Arc<Semaphore>,
    /// Other members' connections' slots, apart from clients'.
    member_slots: Arc<Semaphore>,
    /// Request bytes read and not yet answered, over all connections, in KiB; and how many KiB
    /// there are in all.
    inflight: Arc<Semaphore>,
    inflight_kib: u32,
    /// Cancelled when the node must stop by itself (it was removed, or could not join).
    stop: CancellationToken,
    /// Why the node stopped by itself, when that is a failure.
    failure: std::sync::Mutex<Option<ServerError>>,
}

impl Node {
    /// Whether node `id` may talk to this one as a member: it is in the membership this node
    /// holds (voter or learner, in either half of a joint change). A node that holds no
    /// membership yet knows its configured peers, or, joining, anyone its CA certified: it has
    /// nothing to protect yet and must hear from the leader that adds it.
    fn knows_member(&self, id: u64) -> bool {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        if membership.nodes().next().is_some() {
            return membership.nodes().any(|(member, _)| *member == id);
        }
        self.config.join.is_some() || self.config.peers.iter().any(|peer| peer.id == id)
    }

    /// The cluster's id, once this node has applied it.
    fn cluster_id(&self) -> Option<String> {
        if let Some(id) = self.dialer.cluster() {
            return Some(id);
        }
        let id = self.store.cluster_id().ok().flatten()?;
        self.dialer.learn_cluster(id.clone());
        Some(id)
    }

    /// Stops the node by itself because of `failure`, which `run` then returns.
    fn fail(&self, failure: ServerError) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
        self.stop.cancel();
    }

    /// Asks openraft to hand this node's leadership to `successor`; false if it refused. Lease
    /// reads are suspended first (see [`reads::LeaderLease`]), which is why every transfer goes
    /// through here.
    async fn transfer_leadership(&self, successor: u64) -> bool {
        self.lease.hand_over();
        self.raft.trigger().transfer_leader(successor).await.is_ok()
    }
}

/// Opens the node's storage, starts Raft, binds the configured address and serves until
/// `shutdown` completes.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    membership::check_not_removed(&config.data_dir)?;
    let store = Arc::new(Store::open(&config.data_dir)?);
    check_state_has_its_log(&config.data_dir, &store)?;
    let log = LogStore::open(&config.data_dir)?;
    let state_machine = StateMachine::open(store.clone(), config.snapshot_entries)?;
    let snapshot_due = state_machine.snapshot_due();
    let raft_settings = Arc::new(raft_config(&config)?);
    let tls = config.tls_files().map(NodeTls::load).transpose()?.map(Arc::new);
    let dialer = Dialer::new(config.id, tls.clone());
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let http_listener = match config.http_listen {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.map_err(|source| ServerError::Listen { addr, source })?)
        }
        None => None,
    };
    let round_trips = crate::metrics::PeerRoundTrips::default();
    let metrics = Arc::new(crate::metrics::NodeMetrics::new(
        log.write_durations(),
        store.flush_durations(),
        round_trips.clone(),
        Duration::from_millis(config.election_timeout_ms),
    ));
    let unsendable = Arc::new(Unsendable::default());
    let network = PeerNetwork { dialer: dialer.clone(), unsendable: unsendable.clone(), round_trips };
    let raft = KvRaft::new(config.id, raft_settings, network, log.clone(), state_machine)
        .await
        .map_err(|e| ServerError::Raft(e.to_string()))?;
    let fresh = !raft.is_initialized().await.map_err(|e| ServerError::Raft(e.to_string()))?;
    if fresh
        && config.join.is_none()
        && let Err(refusal) = form_cluster(&raft, &config, &dialer).await
    {
        let _ = raft.shutdown().await;
        return Err(refusal);
    }
    // Only a node that may lead a new cluster first needs root's password; others get root
    // from the log. A node of a cluster that stopped before any leader created root takes it
    // from the file if it still has one, so that such a cluster is not locked out for good.
    let may_lead = config.auth && config.join.is_none();
    let no_root_yet = may_lead && !fresh && store.accounts().is_ok_and(|a| a.users.is_empty());
    let file_left = config.root_password_file.as_ref().is_some_and(|f| f.exists());
    let root_password = if (may_lead && fresh) || (no_root_yet && file_left) {
        Some(root_password_hash(&config).await?)
    } else {
        if no_root_yet {
            tracing::warn!("auth is on and no user exists yet: a node with root_password_file creates root");
        }
        None
    };
    let acks = AckTracker::start(&raft, Duration::from_millis(config.election_timeout_ms));
    let seen = Arc::new(SeenMembers::load(log.clone()));
    seen.watch(&raft);
    metrics.watch_leader(&raft);
    tracing::info!(
        id = config.id,
        addr = %config.listen,
        advertised = %config.advertised(),
        data_dir = %config.data_dir.display(),
        peers = config.peers.len(),
        tls = tls.is_some(),
        "serving"
    );

    let id = config.id;
    let lease = reads::LeaderLease::new(id, config.lease_reads, leader_lease(&config));
    let config_max_connections = config.max_connections;
    let snapshots = SnapshotInbox { dir: config.data_dir.clone(), max_bytes: config.max_snapshot_bytes };
    let inflight_kib = u32::try_from(config.max_inflight_request_bytes / 1024).unwrap_or(u32::MAX).max(1);
    if let Some(tls) = &tls {
        tokio::spawn(reload_tls_on_hangup(tls.clone()));
    }
    let node = Arc::new(Node {
        config,
        tls,
        dialer: dialer.clone(),
        store,
        seen,
        raft,
        acks,
        metrics,
        console: console::ConsoleFeed::new(),
        reads: reads::ReadBarrier::new(),
        lease,
        leader_link: reads::LeaderLink::new(dialer.clone()),
        forwarding: forward::Forwarding::new(dialer),
        membership_lock: tokio::sync::Mutex::new(()),
        proposing: tokio::sync::RwLock::new(()),
        snapshots,
        unsendable,
        status_links: Default::default(),
        client_slots: Arc::new(Semaphore::new(config_max_connections)),
        member_slots: Arc::new(Semaphore::new(handler::MAX_MEMBER_CONNECTIONS)),
        inflight: Arc::new(Semaphore::new(inflight_kib as usize)),
        inflight_kib,
        stop: CancellationToken::new(),
        failure: std::sync::Mutex::new(None),
    });
    tokio::spawn(complete_system_records(node.clone(), root_password));
    if let (true, Some(through)) = (fresh, node.config.join) {
        tokio::spawn(membership::join(node.clone(), through));
    }
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::spawn(request_snapshots(node.raft.clone(), snapshot_due, token.clone()));
    if let Some(http_listener) = http_listener {
        tokio::spawn(http::serve(http_listener, node.clone(), token.clone()));
        tokio::spawn(console::sample(node.clone(), token.clone()));
    }
    // Held until the end if leadership could not be handed over: the node proposes nothing more.
    let _no_more_proposals = {
        let accepting = accept_loop(&listener, &node, &token, &tracker);
        tokio::pin!(accepting);
        tokio::select! {
            () = &mut accepting => {}
            () = shutdown => tracing::info!("shutting down"),
            () = node.stop.cancelled() => tracing::info!("stopping"),
            why = raft_core_failed(&node.raft) => {
                // Serving on would answer every request with errors it cannot recover from.
                tracing::error!(error = %why, "the Raft core stopped; the node exits");
                node.fail(ServerError::RaftFailed(why));
            }
        }
        // Still accepting: the successor's vote request and heartbeats must reach this node, or
        // it would go on believing it leads.
        tokio::select! {
            () = &mut accepting => None,
            quiet = hand_over_leadership(&node) => quiet,
        }
    };
    drop(listener);
    token.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        // A write cut short here was never acknowledged to its client; the Raft log decides its fate.
        tracing::warn!("connections still busy after {DRAIN_TIMEOUT:?}; closing them");
    }
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!(error = %e, "Raft did not stop cleanly");
    }
    tracing::info!("stopped");
    match node.failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// Root's password for a new cluster with auth, hashed: the first line of `root_password_file`,
/// or typed at the terminal. Never a default.
async fn root_password_hash(config: &NodeConfig) -> Result<String, ServerError> {
    let password = match &config.root_password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ServerError::RootPassword(format!("cannot read root_password_file {}: {e}", path.display()))
            })?;
            text.lines().next().unwrap_or_default().to_string()
        }
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            rpassword::prompt_password("root's password for the new cluster: ")
                .map_err(|e| ServerError::RootPassword(format!("cannot read root's password: {e}")))?
        }
        None => {
            return Err(ServerError::RootPassword(
                "auth is on and this node may start a new cluster, which needs root's password: give \
                 root_password_file (or start it on a terminal to type it)"
                    .into(),
            ));
        }
    };
    if password.is_empty() {
        return Err(ServerError::RootPassword("root's password must not be empty".into()));
    }
    tokio::task::spawn_blocking(move || crate::auth::hash_password(password.as_bytes()))
        .await
        .map_err(|e| ServerError::RootPassword(e.to_string()))
}

/// How often a node looks whether the cluster still lacks its id (or, with auth, root).
const SYSTEM_RECORDS_CHECK: Duration = Duration::from_secs(1);

/// Gives a new cluster what every cluster has: an id, and with auth, `root`. Whichever node
/// leads proposes what is missing (each change applies only once, so two leaders in turn
/// cannot both apply theirs); the task ends once this node has applied both.
async fn complete_system_records(node: Arc<Node>, root_password: Option<String>) {
    use crate::auth::SystemWrite;
    use crate::command::Write;
    let mut tick = tokio::time::interval(SYSTEM_RECORDS_CHECK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = node.stop.cancelled() => return,
        }
        let has_root = !node.config.auth || node.store.accounts().is_ok_and(|a| !a.users.is_empty());
        let has_id = node.cluster_id().is_some();
        if has_id && has_root {
            return;
        }
        if node.raft.metrics().borrow_watched().current_leader != Some(node.config.id) {
            continue;
        }
        let mut missing = Vec::new();
        if !has_id {
            let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            missing.push(Write::System(SystemWrite::ClusterId { id }));
        }
        if let (false, Some(hash)) = (has_root, &root_password) {
            missing.push(Write::System(SystemWrite::Bootstrap { root_password: hash.clone() }));
        }
        for write in missing {
            if let Err(e) = node.raft.client_write(write).await {
                tracing::debug!(error = %e, "could not propose a system record yet");
            }
        }
    }
}

/// Reads the TLS files again on every `SIGHUP`, so that certificates rotate without a restart.
/// Connections opened from then on use the new ones; a file that cannot be used is reported and
/// the old certificates stay.
async fn reload_tls_on_hangup(tls: Arc<NodeTls>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch for SIGHUP; certificates are read at start only");
        return;
    };
    while hangups.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: certificates read again"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: keeping the certificates in use"),
        }
    }
}

/// Refuses a data dir whose applied state survived but whose Raft log (with the vote) did not:
/// the node could vote twice in a term. (A first start cut short after creating the store and
/// before the log has applied nothing, and starts.)
fn check_state_has_its_log(data_dir: &std::path::Path, store: &Store) -> Result<(), ServerError> {
    let log = data_dir.join(crate::raft::log_store::LOG_FILE);
    if !log.exists() && crate::raft::state_machine::has_applied(store)? {
        return Err(ServerError::DataDir(format!(
            "{} is missing but {} holds applied entries: refusing to start, since without its vote the \
             node could vote twice in a term. Restore the file, or remove the node from the cluster and \
             join a fresh one in its place",
            log.display(),
            data_dir.join(crate::store::STATE_FILE).display()
        )));
    }
    Ok(())
}

/// Completes, with why, when openraft's core has stopped on a fatal error (a storage failure,
/// for instance).
async fn raft_core_failed(raft: &KvRaft) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_watched().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "its metrics ended".to_string();
        }
    }
}

/// Forms the configured cluster on a node that has never been part of one, unless a peer knew
/// it (then its data was lost) or the others have formed it already.
///
/// openraft starts an election at once on every node it initializes, without a pre-vote. A member
/// started after the others had elected a leader would campaign in that leader's term, and the
/// leader, finding that vote in its way, would step down: no leader until the next election
/// timeout, and a leadership transfer asked for meanwhile lost. Such a late member is in the
/// membership the others hold, so their leader brings it the log; it needs no initializing.
async fn form_cluster(raft: &KvRaft, config: &NodeConfig, dialer: &Dialer) -> Result<(), ServerError> {
    if membership::formed_without_me(config, dialer).await? {
        tracing::info!("first start: the other members have formed the cluster; waiting for its leader");
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> =
        config.members().map(|(id, addr)| (id, BasicNode::new(addr.to_string()))).collect();
    tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "first start: initializing the cluster");
    raft.initialize(members).await.map_err(|e| ServerError::Raft(e.to_string()))
}

/// If this node leads, asks the most up-to-date voter to take over and waits (up to a few
/// election timeouts) for it to, so that clients see a new leader at once instead of after an
/// election timeout. Proposals in flight finish first and new ones are held back meanwhile; if
/// the transfer fails, the hold is returned, to be kept until the node has stopped.
async fn hand_over_leadership(node: &Node) -> Option<tokio::sync::RwLockWriteGuard<'_, ()>> {
    let metrics = node.raft.metrics().borrow_watched().clone();
    if metrics.current_leader != Some(node.config.id) {
        return None;
    }
    let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
    let successor = metrics
        .replication
        .iter()
        .flatten()
        .filter(|(id, _)| **id != node.config.id && voters.contains(id))
        .max_by_key(|(_, matched)| matched.map(|m| m.index))
        .map(|(id, _)| *id);
    let successor = successor?;
    // Let the proposals in flight finish, and hold new ones back (they go to the successor).
    let wait = Duration::from_millis(node.config.request_timeout_ms);
    let quiet = tokio::time::timeout(wait, node.proposing.write()).await.ok();
    tracing::info!(successor, "handing leadership over before stopping");
    if !node.transfer_leadership(successor).await {
        return quiet;
    }
    let wait = Duration::from_millis(node.config.election_timeout_ms * 4);
    let handed = node
        .raft
        .wait(Some(wait))
        .metrics(|m| m.current_leader.is_some_and(|l| l != node.config.id), "another leader")
        .await;
    if handed.is_err() {
        // Still the leader: keep proposals held back, so that nothing is appended that the
        // shutdown would leave of unknown outcome. Waiting requests fail as not applied.
        tracing::warn!(successor, "leadership was not taken over in {wait:?}; stopping anyway");
        return quiet;
    }
    // Proposals held back now find this node a follower and go to the new leader.
    None
}

/// Connections accepted that have not said what they are yet, at most: each holds a slot for
/// [`handler::HELLO_TIMEOUT`] at the longest.
const MAX_HANDSHAKES: usize = 256;

async fn accept_loop(
    listener: &TcpListener,
    node: &Arc<Node>,
    token: &CancellationToken,
    tracker: &TaskTracker,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                // Usually out of file descriptors: wait for some to be released instead of exiting.
                tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(handshaking) = handshakes.clone().try_acquire_owned() else {
            // Closed at once: a flood of silent connections costs no task and no memory.
            tracing::debug!(%peer, "too many connections saying hello at once; closed");
            continue;
        };
        let node = node.clone();
        let token = token.clone();
        tracker.spawn(async move { handler::serve(stream, peer, &node, &token, handshaking).await });
    }
}
