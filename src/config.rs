//! The node's configuration: a TOML file, overridden key by key by command-line flags.
//!
//! Every setting has a default, so `kv-node` with no file and no flags runs a single node on
//! 127.0.0.1:7001 with its data in `./data/node1`. A bad setting stops the node before it touches
//! anything, with one line that says what is wrong and where (`file:line:column` for the file,
//! the flag's name for flags).

use crate::command::Limits;
use crate::protocol::frame::DEFAULT_MAX_FRAME_BYTES;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// One other member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub addr: SocketAddr,
}

/// A node's complete, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster and never reused. Default 1.
    pub id: u64,
    /// The one address the node serves clients (and, with replication, peers) on. Default
    /// 127.0.0.1:7001.
    pub listen: SocketAddr,
    /// Where the node keeps its state. Default `data/node{id}`, relative to the working directory.
    pub data_dir: PathBuf,
    /// The other members of the cluster. Default none.
    pub peers: Vec<Peer>,
    /// Largest frame payload accepted from a connection; a larger one closes it. Default 4 MiB.
    pub max_frame_bytes: usize,
    /// Largest key accepted. Default 64 KiB.
    pub max_key_bytes: usize,
    /// Largest value accepted. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Connections served at once; more are refused with a `BUSY` error. Default 1024.
    pub max_connections: usize,
    /// How often the leader sends heartbeats, in milliseconds. Default 100.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing from a leader for a random time between this and twice this
    /// (milliseconds) starts an election. At least three heartbeats. Default 500.
    pub election_timeout_ms: u64,
    /// How long a request may wait for a leader with a quorum before it fails with `NO_QUORUM`
    /// (or, once handed to a leader, `OUTCOME_UNKNOWN`), in milliseconds. Default 5000.
    pub request_timeout_ms: u64,
    /// A member of a running cluster to join through, instead of forming one with `peers`. Only
    /// used on first start (empty data dir). Default none.
    pub join: Option<SocketAddr>,
    /// With `join`: stay a non-voting learner instead of asking to become a voter once caught
    /// up. Default false.
    pub learner: bool,
    /// Take a snapshot (and compact the log) after at least this many log entries since the last
    /// one, and at least as many as the last one held keys. Default 10000.
    pub snapshot_entries: u64,
    /// Log entries kept behind the latest snapshot, so that a briefly lagging member can catch up
    /// from the log instead of a snapshot. Default 1000.
    pub keep_log_entries: u64,
    /// The leader confirms linearizable reads (its own and followers' read-index requests) by its
    /// leader lease while the lease holds, instead of by a heartbeat round to a quorum for each
    /// check. Faster, but it relies on clocks advancing at nearly the same rate on every node
    /// and on no node pausing mid-read for longer than the election timeout. Default false.
    pub lease_reads: bool,
    /// Threads that run the node's connections and its Raft core. Several nodes sharing a small
    /// machine do better with fewer: on two cores, three nodes with one thread each answered a
    /// third more lease reads at the leader than with two each, and with tokio's current-thread
    /// scheduler (which 1 selects) a sixth more writes (docs/BENCHMARKS.md). Default: one per CPU.
    pub worker_threads: usize,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7001";
pub const DEFAULT_MAX_KEY_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_HEARTBEAT_MS: usize = 100;
pub const DEFAULT_ELECTION_TIMEOUT_MS: usize = 500;
pub const DEFAULT_REQUEST_TIMEOUT_MS: usize = 5000;
pub const DEFAULT_SNAPSHOT_ENTRIES: usize = 10_000;
pub const DEFAULT_KEEP_LOG_ENTRIES: usize = 1000;
/// More worker threads than this is a mistake, not a tuning.
const MAX_WORKER_THREADS: usize = 1024;
/// Room in a frame for everything but the key and the value of a `SET`.
const FRAME_OVERHEAD_BYTES: usize = 1024;

impl NodeConfig {
    pub fn limits(&self) -> Limits {
        Limits { max_key_bytes: self.max_key_bytes, max_value_bytes: self.max_value_bytes }
    }

    /// The configured cluster: this node and its peers, by id and address.
    pub fn members(&self) -> impl Iterator<Item = (u64, SocketAddr)> + '_ {
        std::iter::once((self.id, self.listen)).chain(self.peers.iter().map(|p| (p.id, p.addr)))
    }
}

/// Command-line flags of `kv-node`. Each overrides the config file's key of the same name.
#[derive(Debug, Default, clap::Parser)]
#[command(name = "kv-node", version, about = "A member of a kv cluster")]
pub struct NodeArgs {
    /// TOML config file; flags override its keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id (a positive integer, unique in the cluster) [default: 1].
    #[arg(long, value_name = "ID")]
    pub id: Option<u64>,
    /// Address to serve on [default: 127.0.0.1:7001].
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: data/nodeID, e.g. data/node1].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Another cluster member; repeat for each. Replaces the file's peer list.
    #[arg(long = "peer", value_name = "ID=IP:PORT", value_parser = parse_peer)]
    pub peers: Vec<Peer>,
    /// Largest frame payload accepted, in bytes [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Largest key accepted, in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Largest value accepted, in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Connections served at once [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Leader heartbeat interval in milliseconds [default: 100].
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<usize>,
    /// Election timeout in milliseconds; each node picks a random time between this and twice
    /// this [default: 500].
    #[arg(long, value_name = "MS")]
    pub election_timeout_ms: Option<usize>,
    /// How long a request waits for a leader with a quorum, in milliseconds [default: 5000].
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<usize>,
    /// Join the running cluster that this member belongs to (first start only; no --peer).
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    pub join: Option<SocketAddr>,
    /// With --join: stay a non-voting learner (a read replica) instead of becoming a voter.
    #[arg(long)]
    pub learner: bool,
    /// Snapshot and compact the log after at least this many entries, and at least as many as the last snapshot held keys [default: 10000].
    #[arg(long, value_name = "N")]
    pub snapshot_entries: Option<usize>,
    /// Log entries kept behind the latest snapshot [default: 1000].
    #[arg(long, value_name = "N")]
    pub keep_log_entries: Option<usize>,
    /// Confirm linearizable reads by the leader's lease instead of a quorum round per check
    /// (faster; assumes bounded clock drift and no long pauses).
    #[arg(long)]
    pub lease_reads: bool,
    /// Threads that run connections and the Raft core; give nodes that share a machine fewer
    /// [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<usize>,
}

/// The config file's shape. Unknown keys are an error: a typo must not be silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<Spanned<u64>>,
    listen: Option<Spanned<String>>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    peers: Vec<FilePeer>,
    max_frame_bytes: Option<Spanned<usize>>,
    max_key_bytes: Option<Spanned<usize>>,
    max_value_bytes: Option<Spanned<usize>>,
    max_connections: Option<Spanned<usize>>,
    heartbeat_ms: Option<Spanned<usize>>,
    election_timeout_ms: Option<Spanned<usize>>,
    request_timeout_ms: Option<Spanned<usize>>,
    join: Option<Spanned<String>>,
    learner: Option<Spanned<bool>>,
    snapshot_entries: Option<Spanned<usize>>,
    keep_log_entries: Option<Spanned<usize>>,
    lease_reads: Option<bool>,
    worker_threads: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeer {
    id: Spanned<u64>,
    addr: Spanned<String>,
}

/// A configuration that cannot be used. Its `Display` is the one line the node prints.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Something wrong at a known place: `file:line:column` or a flag's name.
    #[error("{place}: {message}")]
    Invalid { place: String, message: String },
}

/// Where a value came from, for error messages.
enum Origin<'a> {
    File { path: &'a Path, text: &'a str, span: Range<usize> },
    Flag(&'static str),
    Default,
}

impl Origin<'_> {
    fn error(&self, message: impl Into<String>) -> ConfigError {
        let place = match self {
            Origin::File { path, text, span } => {
                let (line, column) = line_column(text, span.start);
                format!("{}:{line}:{column}", path.display())
            }
            Origin::Flag(flag) => flag.to_string(),
            Origin::Default => "default configuration".to_string(),
        };
        ConfigError::Invalid { place, message: message.into() }
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Builds the configuration from the flags and the file they name (if any).
pub fn load(args: NodeArgs) -> Result<NodeConfig, ConfigError> {
    let (file, path, text) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            let file: FileConfig = toml::from_str(&text).map_err(|e| {
                let origin = Origin::File { path, text: &text, span: e.span().unwrap_or(0..0) };
                origin.error(e.message().trim().replace('\n', " "))
            })?;
            (file, path.clone(), text)
        }
        None => (FileConfig::default(), PathBuf::new(), String::new()),
    };
    let at = |span: Range<usize>| Origin::File { path: &path, text: &text, span };

    // A flag wins over the file; the file wins over the default. Each value keeps its origin so
    // that a bad one is reported where it was written.
    let pick =
        |flag: Option<usize>, name: &'static str, key: &Option<Spanned<usize>>, default| match (flag, key) {
            (Some(v), _) => (v, Origin::Flag(name)),
            (None, Some(v)) => (*v.get_ref(), at(v.span())),
            (None, None) => (default, Origin::Default),
        };

    let (id, id_origin) = match (args.id, &file.id) {
        (Some(id), _) => (id, Origin::Flag("--id")),
        (None, Some(id)) => (*id.get_ref(), at(id.span())),
        (None, None) => (1, Origin::Default),
    };
    if id == 0 {
        return Err(id_origin.error("node id must be a positive integer"));
    }
    let listen = match (args.listen, &file.listen) {
        (Some(addr), _) => addr,
        (None, Some(s)) => parse_addr(s.get_ref()).map_err(|m| at(s.span()).error(m))?,
        (None, None) => DEFAULT_LISTEN.parse().expect("default address is valid"),
    };
    let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(format!("data/node{id}")));

    let peers: Vec<(Peer, Origin)> = if args.peers.is_empty() {
        file.peers
            .iter()
            .map(|p| {
                let addr = parse_addr(p.addr.get_ref()).map_err(|m| at(p.addr.span()).error(m))?;
                Ok((Peer { id: *p.id.get_ref(), addr }, at(p.id.span())))
            })
            .collect::<Result<_, ConfigError>>()?
    } else {
        args.peers.into_iter().map(|p| (p, Origin::Flag("--peer"))).collect()
    };
    let mut ids = BTreeSet::from([id]);
    for (peer, origin) in &peers {
        if peer.id == 0 {
            return Err(origin.error("peer id must be a positive integer"));
        }
        if !ids.insert(peer.id) {
            let whose = if peer.id == id { "this node's own id" } else { "another peer's id" };
            return Err(origin.error(format!("duplicate id {}: it is {whose}", peer.id)));
        }
        if peer.addr == listen {
            return Err(origin.error(format!("peer {} has this node's own address {listen}", peer.id)));
        }
    }

    let (max_frame_bytes, frame_origin) =
        pick(args.max_frame_bytes, "--max-frame-bytes", &file.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
    let (max_key_bytes, key_origin) =
        pick(args.max_key_bytes, "--max-key-bytes", &file.max_key_bytes, DEFAULT_MAX_KEY_BYTES);
    let (max_value_bytes, value_origin) =
        pick(args.max_value_bytes, "--max-value-bytes", &file.max_value_bytes, DEFAULT_MAX_VALUE_BYTES);
    let (max_connections, conn_origin) =
        pick(args.max_connections, "--max-connections", &file.max_connections, DEFAULT_MAX_CONNECTIONS);
    let (heartbeat_ms, heartbeat_origin) =
        pick(args.heartbeat_ms, "--heartbeat-ms", &file.heartbeat_ms, DEFAULT_HEARTBEAT_MS);
    let (election_timeout_ms, election_origin) = pick(
        args.election_timeout_ms,
        "--election-timeout-ms",
        &file.election_timeout_ms,
        DEFAULT_ELECTION_TIMEOUT_MS,
    );
    let (request_timeout_ms, request_origin) = pick(
        args.request_timeout_ms,
        "--request-timeout-ms",
        &file.request_timeout_ms,
        DEFAULT_REQUEST_TIMEOUT_MS,
    );
    let (snapshot_entries, snapshot_origin) =
        pick(args.snapshot_entries, "--snapshot-entries", &file.snapshot_entries, DEFAULT_SNAPSHOT_ENTRIES);
    let (keep_log_entries, _) =
        pick(args.keep_log_entries, "--keep-log-entries", &file.keep_log_entries, DEFAULT_KEEP_LOG_ENTRIES);
    let (join, join_origin) = match (args.join, &file.join) {
        (Some(addr), _) => (Some(addr), Origin::Flag("--join")),
        (None, Some(s)) => (Some(parse_addr(s.get_ref()).map_err(|m| at(s.span()).error(m))?), at(s.span())),
        (None, None) => (None, Origin::Default),
    };
    let (learner, learner_origin) = match (args.learner, &file.learner) {
        (true, _) => (true, Origin::Flag("--learner")),
        (false, Some(v)) => (*v.get_ref(), at(v.span())),
        (false, None) => (false, Origin::Default),
    };
    let lease_reads = args.lease_reads || file.lease_reads.unwrap_or(false);
    let (worker_threads, workers_origin) =
        pick(args.worker_threads, "--worker-threads", &file.worker_threads, available_cpus());
    if join.is_some() && !peers.is_empty() {
        return Err(join_origin
            .error("join and peers exclude each other: a joining node learns its peers from the cluster"));
    }
    if join == Some(listen) {
        return Err(join_origin.error(format!("cannot join through this node's own address {listen}")));
    }
    if learner && join.is_none() {
        return Err(learner_origin.error("learner only applies to a node that joins (give join)"));
    }
    for (value, origin, what) in [
        (max_key_bytes, &key_origin, "max_key_bytes"),
        (max_value_bytes, &value_origin, "max_value_bytes"),
        (max_connections, &conn_origin, "max_connections"),
        (heartbeat_ms, &heartbeat_origin, "heartbeat_ms"),
        (request_timeout_ms, &request_origin, "request_timeout_ms"),
        (snapshot_entries, &snapshot_origin, "snapshot_entries"),
        (worker_threads, &workers_origin, "worker_threads"),
    ] {
        if value == 0 {
            return Err(origin.error(format!("{what} must be at least 1")));
        }
    }
    if election_timeout_ms < 3 * heartbeat_ms {
        return Err(election_origin.error(format!(
            "election_timeout_ms is {election_timeout_ms}, but must be at least three heartbeats \
             (3 x heartbeat_ms = {}), or followers would start elections against a healthy leader",
            3 * heartbeat_ms
        )));
    }
    if worker_threads > MAX_WORKER_THREADS {
        return Err(workers_origin
            .error(format!("worker_threads is {worker_threads}, more than {MAX_WORKER_THREADS}")));
    }
    if max_frame_bytes > u32::MAX as usize {
        return Err(frame_origin.error("max_frame_bytes must fit a 32-bit length prefix"));
    }
    let needed = max_key_bytes + max_value_bytes + FRAME_OVERHEAD_BYTES;
    if max_frame_bytes < needed {
        return Err(frame_origin.error(format!(
            "max_frame_bytes is {max_frame_bytes}, too small for the largest SET \
             (max_key_bytes + max_value_bytes + {FRAME_OVERHEAD_BYTES} = {needed})"
        )));
    }

    Ok(NodeConfig {
        id,
        listen,
        data_dir,
        peers: peers.into_iter().map(|(p, _)| p).collect(),
        max_frame_bytes,
        max_key_bytes,
        max_value_bytes,
        max_connections,
        heartbeat_ms: heartbeat_ms as u64,
        election_timeout_ms: election_timeout_ms as u64,
        request_timeout_ms: request_timeout_ms as u64,
        join,
        learner,
        snapshot_entries: snapshot_entries as u64,
        keep_log_entries: keep_log_entries as u64,
        lease_reads,
        worker_threads,
    })
}

/// How many CPUs this process may run on: the default for `worker_threads`.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses `IP:PORT` (or `localhost:PORT`).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let bad = || format!("bad address '{s}': expected IP:PORT, such as 127.0.0.1:7001");
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| bad())
}

/// Parses `ID=IP:PORT`.
pub fn parse_peer(s: &str) -> Result<Peer, String> {
    let (id, addr) = s.split_once('=').ok_or_else(|| format!("bad peer '{s}': expected ID=IP:PORT"))?;
    let id = id.trim().parse().map_err(|_| format!("bad peer id '{id}': expected a positive integer"))?;
    Ok(Peer { id, addr: parse_addr(addr.trim())? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn load_with(toml: &str, flags: &[&str]) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, toml).unwrap();
        let mut argv = vec!["kv-node", "--config", path.to_str().unwrap()];
        argv.extend_from_slice(flags);
        load(NodeArgs::try_parse_from(argv).unwrap())
    }

    fn error_of(toml: &str, flags: &[&str]) -> String {
        let msg = load_with(toml, flags).unwrap_err().to_string();
        assert!(!msg.contains('\n'), "error must be one line: {msg}");
        msg
    }

    #[test]
    fn no_file_and_no_flags_gives_the_documented_defaults() {
        let config = load(NodeArgs::default()).unwrap();
        assert_eq!(config.id, 1);
        assert_eq!(config.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(config.data_dir, PathBuf::from("data/node1"));
        assert!(config.peers.is_empty());
        assert_eq!(config.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
        assert!(!config.lease_reads, "reads take a quorum round unless asked otherwise");
        assert_eq!(config.worker_threads, available_cpus());
    }

    #[test]
    fn worker_threads_come_from_file_or_flag() {
        assert_eq!(load_with("worker_threads = 1\n", &[]).unwrap().worker_threads, 1);
        assert_eq!(load_with("worker_threads = 1\n", &["--worker-threads", "3"]).unwrap().worker_threads, 3);
        assert_eq!(
            error_of("", &["--worker-threads", "0"]),
            "--worker-threads: worker_threads must be at least 1"
        );
    }

    #[test]
    fn lease_reads_are_asked_for_by_file_or_flag() {
        assert!(load_with("lease_reads = true\n", &[]).unwrap().lease_reads);
        assert!(!load_with("lease_reads = false\n", &[]).unwrap().lease_reads);
        assert!(load_with("", &["--lease-reads"]).unwrap().lease_reads);
        assert!(error_of("lease_reads = \"yes\"\n", &[]).contains(":1:15: invalid type"));
    }

    #[test]
    fn the_example_cluster_configs_are_valid() {
        for n in 1..=3 {
            let path = format!("{}/configs/node{n}.toml", env!("CARGO_MANIFEST_DIR"));
            let args = NodeArgs { config: Some(path.into()), ..NodeArgs::default() };
            let config = load(args).unwrap();
            assert_eq!(config.id, n);
            assert_eq!(config.listen.port(), 7000 + n as u16);
            assert_eq!(config.peers.len(), 2);
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let toml = "id = 2\nlisten = \"127.0.0.1:7002\"\n[[peers]]\nid = 1\naddr = \"127.0.0.1:7001\"\n";
        let config = load_with(toml, &["--listen", "127.0.0.1:9000", "--peer", "5=127.0.0.1:9005"]).unwrap();
        assert_eq!(config.id, 2);
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.data_dir, PathBuf::from("data/node2"));
        assert_eq!(config.peers, vec![Peer { id: 5, addr: "127.0.0.1:9005".parse().unwrap() }]);
    }

    #[test]
    fn bad_files_are_reported_with_file_line_and_column() {
        let cases = [
            ("id = 1\nlistne = \"x\"\n", ":2:1: unknown field `listne`"),
            ("id = 1\nlisten = \"127.0.0.1:99999\"\n", ":2:10: bad address '127.0.0.1:99999'"),
            ("id = \"one\"\n", ":1:6: invalid type"),
            ("id = 0\n", ":1:6: node id must be a positive integer"),
            (
                "id = 1\n[[peers]]\nid = 1\naddr = \"127.0.0.1:7002\"\n",
                ":3:6: duplicate id 1: it is this node's own id",
            ),
            (
                "[[peers]]\nid = 2\naddr = \"127.0.0.1:7002\"\n[[peers]]\nid = 2\naddr = \"127.0.0.1:7003\"\n",
                ":5:6: duplicate id 2: it is another peer's id",
            ),
            ("[[peers]]\nid = 2\n", "missing field `addr`"),
            ("max_frame_bytes = 100\n", ":1:19: max_frame_bytes is 100, too small"),
            ("max_connections = 0\n", "max_connections must be at least 1"),
            ("heartbeat_ms = 100\nelection_timeout_ms = 200\n", ":2:23: election_timeout_ms is 200"),
            ("request_timeout_ms = 0\n", "request_timeout_ms must be at least 1"),
            ("snapshot_entries = 0\n", "snapshot_entries must be at least 1"),
            ("worker_threads = 0\n", ":1:18: worker_threads must be at least 1"),
            ("worker_threads = 5000\n", ":1:18: worker_threads is 5000, more than 1024"),
            (
                "join = \"127.0.0.1:7002\"\n[[peers]]\nid = 3\naddr = \"127.0.0.1:7003\"\n",
                ":1:8: join and peers exclude each other",
            ),
            ("learner = true\n", ":1:11: learner only applies to a node that joins"),
            ("join = \"127.0.0.1:7001\"\n", "cannot join through this node's own address"),
            ("id = [\n", ":1:"),
        ];
        for (toml, want) in cases {
            let msg = error_of(toml, &[]);
            assert!(msg.contains("node.toml") && msg.contains(want), "{toml:?}: {msg}");
        }
    }

    #[test]
    fn bad_flags_name_the_flag() {
        assert_eq!(error_of("", &["--id", "0"]), "--id: node id must be a positive integer");
        let msg = error_of("", &["--peer", "1=127.0.0.1:7002"]);
        assert_eq!(msg, "--peer: duplicate id 1: it is this node's own id");
        assert!(NodeArgs::try_parse_from(["kv-node", "--listen", "nowhere"]).is_err());
        assert!(NodeArgs::try_parse_from(["kv-node", "--peer", "2:127.0.0.1:1"]).is_err());
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let args = NodeArgs { config: Some("/nonexistent/node.toml".into()), ..NodeArgs::default() };
        let msg = load(args).unwrap_err().to_string();
        assert!(msg.starts_with("cannot read config file /nonexistent/node.toml:"), "{msg}");
    }
}
