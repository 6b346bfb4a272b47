//! The node's configuration: a TOML file, overridden key by key by command-line flags.
//!
//! Every setting is declared once, in the `node_settings!` invocation below: its type, default,
//! file key, flag and doc come from that one place, which generates [`NodeConfig`], the flags
//! ([`NodeArgs`]), the file's shape, and [`SETTINGS`] (from which the README's table is made and
//! checked). The cluster's peers, a list with a shape of its own (`[[peers]]` tables in the file,
//! a repeated `--peer ID=IP:PORT` flag), are the one setting written by hand.
//!
//! Every setting has a default, so `kv-node` with no file and no flags runs a single node on
//! 127.0.0.1:7001 with its data in `./data/node1`. A bad setting stops the node before it touches
//! anything, with one line that says what is wrong and where (`file:line:column` for the file,
//! the flag's name for flags): every value keeps where it came from until it is validated.
//!
//! Deliberately not here: environment variables (flags and a file are enough), and reloading a
//! running node's configuration.

use crate::addr::parse_addr;
use crate::command::{Limits, Write};
use crate::protocol::frame::{DEFAULT_MAX_FRAME_BYTES, max_write_bytes};
use crate::tls::TlsFiles;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
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

/// A type a setting can have: how a flag and the file spell its values.
pub trait SettingValue: Sized {
    /// What a flag parses into (for an optional setting, the value inside the `Option`).
    type Flag: Clone + Send + Sync + 'static;
    /// What the file holds.
    type File: DeserializeOwned;
    fn parse_flag(s: &str) -> Result<Self::Flag, String>;
    fn from_flag(flag: Self::Flag) -> Self;
    fn from_file(file: Self::File) -> Result<Self, String>;
}

/// Types that a flag and the file spell the same way.
macro_rules! plain_setting_values {
    ($($ty:ty),*) => {$(
        impl SettingValue for $ty {
            type Flag = $ty;
            type File = $ty;
            fn parse_flag(s: &str) -> Result<$ty, String> {
                s.parse().map_err(|e| format!("bad value '{s}': {e}"))
            }
            fn from_flag(flag: $ty) -> $ty {
                flag
            }
            fn from_file(file: $ty) -> Result<$ty, String> {
                Ok(file)
            }
        }
    )*};
}
plain_setting_values!(u64, usize, bool, PathBuf);

/// Addresses are strings in the file, parsed as flags are.
impl SettingValue for SocketAddr {
    type Flag = SocketAddr;
    type File = String;
    fn parse_flag(s: &str) -> Result<SocketAddr, String> {
        parse_addr(s)
    }
    fn from_flag(flag: SocketAddr) -> SocketAddr {
        flag
    }
    fn from_file(file: String) -> Result<SocketAddr, String> {
        parse_addr(&file)
    }
}

/// A setting with no default value.
impl<T> SettingValue for Option<T>
where
    T: SettingValue<Flag = T> + Clone + Send + Sync + 'static,
{
    type Flag = T;
    type File = T::File;
    fn parse_flag(s: &str) -> Result<T, String> {
        T::parse_flag(s)
    }
    fn from_flag(flag: T) -> Option<T> {
        Some(flag)
    }
    fn from_file(file: T::File) -> Result<Option<T>, String> {
        T::from_file(file).map(Some)
    }
}

/// A setting as documented: the README's table is made from these.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    /// The file's key; the flag is the same with dashes (`max_key_bytes`, `--max-key-bytes`).
    pub key: &'static str,
    /// What the flag's value is called; `None` for a switch, a flag that takes no value.
    pub value_name: Option<&'static str>,
    /// The default, as people read it.
    pub default: &'static str,
    pub doc: &'static str,
}

impl SettingDoc {
    /// The flag, as typed.
    pub fn flag(&self) -> String {
        flag_of(self.key)
    }
}

fn flag_of(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// A value and where it came from.
struct Picked<'a, T> {
    value: T,
    origin: Origin<'a>,
}

/// Declares every setting once. For each: its doc, then
/// `name: Type = default, "the default as shown", "VALUE" [, at_least N] [, at_most N]` or, for a switch (a flag
/// that takes no value, `--learner` meaning true), `..., switch = true`. The default is an expression
/// that may use the settings declared before it (`id.value`).
macro_rules! node_settings {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty = $default:expr, $shown:literal, $value_name:literal
            $(, at_least $min:literal)? $(, at_most $max:literal)? $(, switch = $switch:literal)?;
    )*) => {
        /// A node's complete, validated configuration.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct NodeConfig {
            $( $(#[doc = $doc])+ pub $name: $ty, )*
            /// The other members of the cluster.
            pub peers: Vec<Peer>,
        }

        /// Command-line flags of `kv-node`. Each overrides the config file's key of the same name.
        #[derive(Debug, Default, clap::Parser)]
        #[command(name = "kv-node", version, about = "A member of a kv cluster")]
        pub struct NodeArgs {
            /// TOML config file; flags override its keys.
            #[arg(long, value_name = "FILE")]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $doc])+
                #[arg(long, value_name = $value_name, value_parser = <$ty as SettingValue>::parse_flag
                    $(, num_args = 0..=1, default_missing_value = { let _: bool = $switch; "true" })?)]
                pub $name: Option<<$ty as SettingValue>::Flag>,
            )*
            /// Another cluster member, ID=IP:PORT; repeat for each. Replaces the file's list.
            #[arg(long = "peer", value_name = "ID=IP:PORT", value_parser = parse_peer)]
            pub peers: Vec<Peer>,
        }

        /// The config file's shape. Unknown keys are an error: a typo must not be silently ignored.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileConfig {
            $( $name: Option<Spanned<<$ty as SettingValue>::File>>, )*
            #[serde(default)]
            peers: Vec<FilePeer>,
        }

        /// Every setting but the peers, as documented.
        pub const SETTINGS: &[SettingDoc] = &[$(
            SettingDoc {
                key: stringify!($name),
                value_name: {
                    let value_name = Some($value_name);
                    $( let value_name = if $switch { None } else { value_name }; )?
                    value_name
                },
                default: $shown,
                doc: concat!($($doc),+),
            },
        )*];

        /// Each setting's value, with where it came from.
        struct PickedSettings<'a> {
            $( $name: Picked<'a, $ty>, )*
        }

        /// Picks each setting's value (the flag, else the file, else the default) and checks the
        /// bounds it has on its own.
        fn pick<'a>(
            args: &mut NodeArgs,
            file: &mut FileConfig,
            at: &impl Fn(Range<usize>) -> Origin<'a>,
        ) -> Result<PickedSettings<'a>, ConfigError> {
            $(
                let $name: Picked<$ty> = match (args.$name.take(), file.$name.take()) {
                    (Some(flag), _) => Picked {
                        value: <$ty as SettingValue>::from_flag(flag),
                        origin: Origin::Flag(flag_of(stringify!($name))),
                    },
                    (None, Some(spanned)) => {
                        let origin = at(spanned.span());
                        let value = <$ty as SettingValue>::from_file(spanned.into_inner())
                            .map_err(|message| origin.error(message))?;
                        Picked { value, origin }
                    }
                    (None, None) => Picked { value: $default, origin: Origin::Default },
                };
                $(
                    if $name.value < $min {
                        return Err($name.origin.error(format!(
                            "{} must be at least {}", stringify!($name), $min
                        )));
                    }
                )?
                $(
                    if $name.value > $max {
                        return Err($name.origin.error(format!(
                            "{} is {}, more than {}", stringify!($name), $name.value, $max
                        )));
                    }
                )?
            )*
            Ok(PickedSettings { $($name,)* })
        }
    };
}

node_settings! {
    /// This node's id, a positive integer unique in the cluster and never reused.
    id: u64 = 1, "1", "ID";
    /// The one address the node serves clients and peers on.
    listen: SocketAddr = DEFAULT_LISTEN.parse().expect("the default address is valid"), "127.0.0.1:7001",
        "IP:PORT";
    /// Also serve HTTP here: `/health`, `/ready` and `/metrics` (Prometheus). Over TLS when the
    /// node has TLS; like `listen`, an address other machines can reach needs TLS and auth, or
    /// `insecure`.
    http_listen: Option<SocketAddr> = None, "off", "IP:PORT";
    /// The address the other members and clients are given for this node, when it is not
    /// `listen`: a node reached through a proxy, a NAT or a container's published port, or one
    /// listening on every interface (`0.0.0.0`).
    advertise: Option<SocketAddr> = None, "listen", "IP:PORT";
    /// Where the node keeps its state.
    data_dir: PathBuf = PathBuf::from(format!("data/node{}", id.value)), "data/node<id>", "DIR";
    /// The cluster's CA certificate (PEM). With `tls_cert` and `tls_key`, every connection is
    /// TLS 1.3: clients check the node against it, and members must present a certificate it
    /// issued that names their node id.
    tls_ca: Option<PathBuf> = None, "none", "FILE";
    /// This node's certificate (PEM), issued by the CA, naming `node-<id>` and the addresses
    /// clients reach it at (`kv-cli cert create-node`). Read again on `SIGHUP`.
    tls_cert: Option<PathBuf> = None, "none", "FILE";
    /// The private key of `tls_cert` (PEM). Read again on `SIGHUP`.
    tls_key: Option<PathBuf> = None, "none", "FILE";
    /// Require clients to log in (`AUTH`, or a client certificate naming a user) and check
    /// every command against the user's roles. The first start of a cluster creates `root`.
    auth: bool = false, "false", "BOOL", switch = true;
    /// With `auth`, on the first start of a cluster: the file holding root's password (its
    /// first line). Without it, the node asks on its terminal.
    root_password_file: Option<PathBuf> = None, "none", "FILE";
    /// Serve in the clear on an address other machines can reach. Without it, a node whose
    /// `listen` is not a loopback address refuses to start without TLS.
    insecure: bool = false, "false", "BOOL", switch = true;
    /// The largest frame payload accepted from a connection; a larger one closes it.
    max_frame_bytes: usize = DEFAULT_MAX_FRAME_BYTES, "4194304", "BYTES";
    /// The largest key accepted.
    max_key_bytes: usize = 64 * 1024, "65536", "BYTES", at_least 1;
    /// The largest value accepted.
    max_value_bytes: usize = 1024 * 1024, "1048576", "BYTES", at_least 1;
    /// The most keys one command may name (`DEL`, `EXISTS`); more are refused with `TOO_LARGE`.
    max_keys_per_command: usize = 10_000, "10000", "N", at_least 1, at_most 10_000_000;
    /// Client connections served at once; more are refused with `BUSY`. Other members'
    /// connections are counted apart, so clients can never crowd them out.
    max_connections: usize = 1024, "1024", "N", at_least 1, at_most 1_000_000;
    /// A client connection that sends nothing for this long is closed, in milliseconds (0:
    /// never).
    idle_timeout_ms: u64 = 300_000, "300000", "MS", at_most 86_400_000;
    /// A client that does not read its answers for this long is disconnected, in milliseconds.
    write_timeout_ms: u64 = 30_000, "30000", "MS", at_least 1, at_most 3_600_000;
    /// What one connection may hold, in bytes: requests read and not yet executed, and answers
    /// produced and not yet sent. A client that stops reading stops the node reading its
    /// requests once this much waits for it.
    connection_buffer_bytes: usize = 8 * 1024 * 1024, "8388608", "BYTES", at_least 1;
    /// Request bytes all connections together may have read and not yet answered; past it, the
    /// node reads no more requests until answers go out.
    max_inflight_request_bytes: usize = 256 * 1024 * 1024, "268435456", "BYTES", at_least 1;
    /// How often the leader sends heartbeats, in milliseconds.
    heartbeat_ms: u64 = 100, "100", "MS", at_least 1, at_most 60_000;
    /// A follower that hears no leader for a random time between this and twice this
    /// (milliseconds) starts an election; at least three heartbeats.
    election_timeout_ms: u64 = 500, "500", "MS", at_most 600_000;
    /// How long a request waits for a leader with a quorum before `NO_QUORUM` (or, once handed to
    /// a leader, `OUTCOME_UNKNOWN`), in milliseconds.
    request_timeout_ms: u64 = 5000, "5000", "MS", at_least 1, at_most 3_600_000;
    /// On first start (an empty data dir), join the running cluster through this member instead
    /// of forming one with `peers`.
    join: Option<SocketAddr> = None, "none", "IP:PORT";
    /// With `join`: stay a non-voting learner (a read replica) instead of becoming a voter once
    /// caught up.
    learner: bool = false, "false", "BOOL", switch = true;
    /// Snapshot and compact the log after at least this many entries since the last snapshot,
    /// and at least as many as that snapshot held keys.
    snapshot_entries: u64 = 10_000, "10000", "N", at_least 1;
    /// Log entries kept behind the latest snapshot, so that a briefly lagging member catches up
    /// from the log instead of a snapshot.
    keep_log_entries: u64 = 1000, "1000", "N";
    /// The largest snapshot this node takes from the leader, in bytes; a transfer growing past it
    /// is refused. Received snapshots are written to a file in the data dir, not kept in memory.
    max_snapshot_bytes: u64 = 16 * 1024 * 1024 * 1024, "17179869184", "BYTES", at_least 1;
    /// Confirm linearizable reads by the leader's lease instead of a quorum round per check:
    /// faster, but it assumes clocks advance at nearly the same rate on every node and no node
    /// pauses mid-read for longer than the election timeout (see Consistency in the README).
    lease_reads: bool = false, "false", "BOOL", switch = true;
    /// Threads that run connections and the Raft core (1: everything on one thread, tokio's
    /// current-thread scheduler). Nodes sharing a machine do better with their share of its CPUs.
    worker_threads: usize = available_cpus(), "one per CPU", "N", at_least 1, at_most 1024;
}

const DEFAULT_LISTEN: &str = "127.0.0.1:7001";

impl NodeArgs {
    /// Parses the process's arguments (exiting on a bad one, as clap does); `--help` shows each
    /// setting's default.
    pub fn parse_args() -> NodeArgs {
        let mut command = <NodeArgs as clap::CommandFactory>::command();
        for setting in SETTINGS {
            command = command.mut_arg(setting.key, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {}]", setting.default))
            });
        }
        let matches = command.get_matches();
        <NodeArgs as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

impl NodeConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_keys: self.max_keys_per_command,
            max_write_bytes: max_write_bytes(self.max_frame_bytes),
        }
    }

    /// The files of the node's TLS, if it has TLS.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles { ca: self.tls_ca.clone()?, cert: self.tls_cert.clone()?, key: self.tls_key.clone()? })
    }

    /// The address the other members and clients reach this node at.
    pub fn advertised(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// The configured cluster: this node and its peers, by id and address.
    pub fn members(&self) -> impl Iterator<Item = (u64, SocketAddr)> + '_ {
        std::iter::once((self.id, self.advertised())).chain(self.peers.iter().map(|p| (p.id, p.addr)))
    }
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
    Flag(String),
    Default,
}

impl Origin<'_> {
    fn error(&self, message: impl Into<String>) -> ConfigError {
        let place = match self {
            Origin::File { path, text, span } => {
                let (line, column) = line_column(text, span.start);
                format!("{}:{line}:{column}", path.display())
            }
            Origin::Flag(flag) => flag.clone(),
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
pub fn load(mut args: NodeArgs) -> Result<NodeConfig, ConfigError> {
    let (mut file, path, text) = match &args.config {
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
    let settings = pick(&mut args, &mut file, &at)?;
    let PickedSettings {
        id,
        listen,
        http_listen,
        advertise,
        data_dir,
        tls_ca,
        tls_cert,
        tls_key,
        auth,
        root_password_file,
        insecure,
        max_frame_bytes,
        max_key_bytes,
        max_value_bytes,
        max_keys_per_command,
        max_connections,
        idle_timeout_ms,
        write_timeout_ms,
        connection_buffer_bytes,
        max_inflight_request_bytes,
        heartbeat_ms,
        election_timeout_ms,
        request_timeout_ms,
        join,
        learner,
        snapshot_entries,
        keep_log_entries,
        max_snapshot_bytes,
        lease_reads,
        worker_threads,
    } = settings;
    if id.value == 0 {
        return Err(id.origin.error("node id must be a positive integer"));
    }

    let advertised = advertise.value.unwrap_or(listen.value);
    if advertised.ip().is_unspecified() || advertised.port() == 0 {
        let (origin, what) = match advertise.value {
            Some(_) => (&advertise.origin, "advertise"),
            None => (&listen.origin, "listen"),
        };
        return Err(origin.error(format!(
            "{what} is {advertised}, which other members cannot connect to; give advertise, the \
             address they reach this node at"
        )));
    }

    let tls_given = [tls_ca.value.is_some(), tls_cert.value.is_some(), tls_key.value.is_some()];
    if tls_given.contains(&true) && tls_given.contains(&false) {
        let first =
            [&tls_ca, &tls_cert, &tls_key].into_iter().find(|s| s.value.is_some()).expect("one is given");
        return Err(first.origin.error("tls_ca, tls_cert and tls_key go together: give all three or none"));
    }

    let secured = tls_given.contains(&true) && auth.value;
    if !listen.value.ip().is_loopback() && !secured && !insecure.value {
        return Err(listen.origin.error(format!(
            "listen is {}, which other machines can reach, and this node does not have both TLS \
             and auth: anyone who reaches it could read and change everything. Give tls_ca, \
             tls_cert and tls_key (made with kv-cli cert) and auth, or insecure to serve anyway",
            listen.value
        )));
    }
    if let Some(http) = http_listen.value {
        if !http.ip().is_loopback() && !secured && !insecure.value {
            return Err(http_listen.origin.error(format!(
                "http_listen is {http}, which other machines can reach, and this node does not have \
                 both TLS and auth. Give tls_ca, tls_cert and tls_key and auth, or insecure to serve \
                 anyway"
            )));
        }
        if http == listen.value {
            return Err(http_listen.origin.error("http_listen must differ from listen"));
        }
    }
    if root_password_file.value.is_some() && !auth.value {
        return Err(root_password_file.origin.error("root_password_file only applies with auth"));
    }

    let peers: Vec<(Peer, Origin)> = if args.peers.is_empty() {
        file.peers
            .iter()
            .map(|p| {
                let addr = parse_addr(p.addr.get_ref()).map_err(|m| at(p.addr.span()).error(m))?;
                Ok((Peer { id: *p.id.get_ref(), addr }, at(p.id.span())))
            })
            .collect::<Result<_, ConfigError>>()?
    } else {
        std::mem::take(&mut args.peers).into_iter().map(|p| (p, Origin::Flag("--peer".into()))).collect()
    };
    let mut ids = BTreeSet::from([id.value]);
    for (peer, origin) in &peers {
        if peer.id == 0 {
            return Err(origin.error("peer id must be a positive integer"));
        }
        if !ids.insert(peer.id) {
            let whose = if peer.id == id.value { "this node's own id" } else { "another peer's id" };
            return Err(origin.error(format!("duplicate id {}: it is {whose}", peer.id)));
        }
        if let Some(own) = [listen.value, advertised].into_iter().find(|own| *own == peer.addr) {
            return Err(origin.error(format!("peer {} has this node's own address {own}", peer.id)));
        }
    }

    if join.value.is_some() && !peers.is_empty() {
        return Err(join
            .origin
            .error("join and peers exclude each other: a joining node learns its peers from the cluster"));
    }
    if let Some(own) = [listen.value, advertised].into_iter().find(|own| join.value == Some(*own)) {
        return Err(join.origin.error(format!("cannot join through this node's own address {own}")));
    }
    if learner.value && join.value.is_none() {
        return Err(learner.origin.error("learner only applies to a node that joins (give join)"));
    }
    if election_timeout_ms.value < 3 * heartbeat_ms.value {
        return Err(election_timeout_ms.origin.error(format!(
            "election_timeout_ms is {}, but must be at least three heartbeats \
             (3 x heartbeat_ms = {}), or followers would start elections against a healthy leader",
            election_timeout_ms.value,
            3 * heartbeat_ms.value
        )));
    }
    if max_inflight_request_bytes.value < max_frame_bytes.value {
        return Err(max_inflight_request_bytes.origin.error(format!(
            "max_inflight_request_bytes is {}, less than one frame (max_frame_bytes = {})",
            max_inflight_request_bytes.value, max_frame_bytes.value
        )));
    }
    if max_frame_bytes.value > u32::MAX as usize {
        return Err(max_frame_bytes.origin.error("max_frame_bytes must fit a 32-bit length prefix"));
    }
    // The largest SET must fit a frame between nodes, with its log entry's envelope around it.
    let largest_set = Write::Set { key: Bytes::new(), value: Bytes::new(), only_if: None }
        .encoded_len_estimate()
        + max_key_bytes.value
        + max_value_bytes.value;
    if max_write_bytes(max_frame_bytes.value) < largest_set {
        let needed = max_frame_bytes.value - max_write_bytes(max_frame_bytes.value) + largest_set;
        return Err(max_frame_bytes.origin.error(format!(
            "max_frame_bytes is {}, too small for the largest SET and its log entry \
             (max_key_bytes + max_value_bytes + overhead = {needed})",
            max_frame_bytes.value
        )));
    }

    Ok(NodeConfig {
        id: id.value,
        listen: listen.value,
        http_listen: http_listen.value,
        advertise: advertise.value,
        data_dir: data_dir.value,
        tls_ca: tls_ca.value,
        tls_cert: tls_cert.value,
        tls_key: tls_key.value,
        auth: auth.value,
        root_password_file: root_password_file.value,
        insecure: insecure.value,
        peers: peers.into_iter().map(|(p, _)| p).collect(),
        max_frame_bytes: max_frame_bytes.value,
        max_key_bytes: max_key_bytes.value,
        max_value_bytes: max_value_bytes.value,
        max_keys_per_command: max_keys_per_command.value,
        max_connections: max_connections.value,
        idle_timeout_ms: idle_timeout_ms.value,
        write_timeout_ms: write_timeout_ms.value,
        connection_buffer_bytes: connection_buffer_bytes.value,
        max_inflight_request_bytes: max_inflight_request_bytes.value,
        heartbeat_ms: heartbeat_ms.value,
        election_timeout_ms: election_timeout_ms.value,
        request_timeout_ms: request_timeout_ms.value,
        join: join.value,
        learner: learner.value,
        snapshot_entries: snapshot_entries.value,
        keep_log_entries: keep_log_entries.value,
        max_snapshot_bytes: max_snapshot_bytes.value,
        lease_reads: lease_reads.value,
        worker_threads: worker_threads.value,
    })
}

/// The README's table of settings, made from [`SETTINGS`] (with the peers' row by hand).
pub fn settings_table() -> String {
    let mut table = String::from("| key | flag | default | meaning |\n|---|---|---|---|\n");
    for setting in SETTINGS {
        let flag = match setting.value_name {
            Some(value) => format!("{} {value}", setting.flag()),
            None => setting.flag(),
        };
        table +=
            &format!("| `{}` | `{flag}` | {} | {} |\n", setting.key, setting.default, setting.doc.trim());
        if setting.key == "data_dir" {
            table += "| `[[peers]]` `id`, `addr` | `--peer ID=IP:PORT` (repeatable; replaces the file's \
                      list) | none | The other cluster members; every member must list the same cluster. |\n";
        }
    }
    table
}

/// How many CPUs this process may run on: the default for `worker_threads`.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
            let path = format!("{}/configs/secure/node{n}.toml", env!("CARGO_MANIFEST_DIR"));
            let args = NodeArgs { config: Some(path.into()), ..NodeArgs::default() };
            let secure = load(args).unwrap();
            assert!(secure.auth && secure.tls_files().is_some());
            assert_eq!(secure.tls_cert, Some(PathBuf::from(format!("certs/node-{n}.crt"))));
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
    fn members_reach_a_node_at_its_advertised_address() {
        let toml = "listen = \"0.0.0.0:7001\"\nadvertise = \"10.0.0.1:7001\"\ninsecure = true\n";
        let config = load_with(toml, &["--peer", "2=10.0.0.2:7001"]).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:7001");
        let members: Vec<_> = config.members().map(|(id, addr)| (id, addr.to_string())).collect();
        assert_eq!(members, [(1, "10.0.0.1:7001".to_string()), (2, "10.0.0.2:7001".to_string())]);
        let plain = load_with("", &[]).unwrap();
        assert_eq!(plain.advertised(), plain.listen);
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
                "request_timeout_ms = 99999999999\n",
                ":1:22: request_timeout_ms is 99999999999, more than 3600000",
            ),
            ("heartbeat_ms = 70000\n", ":1:16: heartbeat_ms is 70000, more than 60000"),
            (
                "election_timeout_ms = 18446744073709551615\n",
                "election_timeout_ms is 18446744073709551615, more",
            ),
            ("max_keys_per_command = 0\n", "max_keys_per_command must be at least 1"),
            (
                "join = \"127.0.0.1:7002\"\n[[peers]]\nid = 3\naddr = \"127.0.0.1:7003\"\n",
                ":1:8: join and peers exclude each other",
            ),
            ("learner = true\n", ":1:11: learner only applies to a node that joins"),
            ("join = \"127.0.0.1:7001\"\n", "cannot join through this node's own address"),
            (
                "listen = \"0.0.0.0:7001\"\ninsecure = true\n",
                ":1:10: listen is 0.0.0.0:7001, which other members cannot",
            ),
            (
                "listen = \"10.0.0.1:7001\"\n",
                ":1:10: listen is 10.0.0.1:7001, which other machines can reach",
            ),
            (
                "http_listen = \"0.0.0.0:8080\"\n",
                ":1:15: http_listen is 0.0.0.0:8080, which other machines can reach",
            ),
            ("http_listen = \"127.0.0.1:7001\"\n", ":1:15: http_listen must differ from listen"),
            ("tls_ca = \"ca.crt\"\n", ":1:10: tls_ca, tls_cert and tls_key go together"),
            ("advertise = \"0.0.0.0:7001\"\n", ":1:13: advertise is 0.0.0.0:7001, which"),
            (
                "advertise = \"127.0.0.1:8001\"\n[[peers]]\nid = 2\naddr = \"127.0.0.1:8001\"\n",
                ":3:6: peer 2 has this node's own address 127.0.0.1:8001",
            ),
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

    /// The README's table is the declarations': regenerate it from `settings_table()` (the
    /// assertion prints it) when a setting changes.
    #[test]
    fn the_readme_lists_every_setting_as_declared() {
        let readme = std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let table = settings_table();
        assert!(readme.contains(&table), "README.md's settings table should read:\n{table}");
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let args = NodeArgs { config: Some("/nonexistent/node.toml".into()), ..NodeArgs::default() };
        let msg = load(args).unwrap_err().to_string();
        assert!(msg.starts_with("cannot read config file /nonexistent/node.toml:"), "{msg}");
    }
}
