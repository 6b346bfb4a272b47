//! The commands the store understands: their table (names, arguments, help) and the parser that
//! turns a request's byte-string arguments into a typed [`Command`].
//!
//! The table is shared: the node uses it to validate requests, the shell uses it for `HELP`, tab
//! completion and argument hints, so the three can never disagree.
//!
//! Commands are split by what they need from the node: a [`Write`] changes state and is what the
//! replicated log carries; a [`Read`] only looks; `PING` and `CLUSTER` touch no data, while
//! `CLUSTER`'s subcommands ([`Admin`]) change who is in the cluster.

pub mod scan;
pub mod split;
pub mod txn;

use crate::auth::{Access, Grant, Needs, SystemWrite};
use crate::protocol::message::{ErrorCode, Reply};
use bytes::Bytes;
pub use scan::{KeyRange, Scan, ScanShape};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
pub use txn::{Compare, CompareOp, Target, Txn, TxnOp};

/// How many arguments a command takes after its name.
#[derive(Debug, Clone, Copy)]
pub struct Arity {
    pub min: usize,
    /// `None` for variadic commands.
    pub max: Option<usize>,
}

/// One entry of the command table.
#[derive(Debug)]
pub struct CommandSpec {
    pub name: &'static str,
    /// The arguments as shown in help and in the shell's inline hint.
    pub args: &'static str,
    pub summary: &'static str,
    pub arity: Arity,
    /// Whether the command changes the store: a client must not resend it after losing its
    /// answer, since it may have been applied.
    pub writes: bool,
}

const fn spec(
    name: &'static str,
    args: &'static str,
    summary: &'static str,
    min: usize,
    max: Option<usize>,
) -> CommandSpec {
    let writes = matches!(
        name.as_bytes(),
        b"SET" | b"DEL" | b"MSET" | b"CAS" | b"INCR" | b"INCRBY" | b"DECRBY" | b"TXN" | b"USER" | b"ROLE"
    );
    CommandSpec { name, args, summary, arity: Arity { min, max }, writes }
}

/// Every command a node accepts.
pub const COMMANDS: &[CommandSpec] = &[
    spec(
        "SET",
        "key value [NX | XX | IFREV rev]",
        "Set key to hold value. NX: only if it does not exist; XX: only if it does; IFREV: only if \
         it was last changed at revision rev (0: does not exist). (nil) when the condition failed.",
        2,
        Some(4),
    ),
    spec(
        "GET",
        "key [WITHMETA]",
        "Get the value of key; (nil) when it does not exist. WITHMETA adds its create and mod \
         revisions and version.",
        1,
        Some(2),
    ),
    spec(
        "DEL",
        "key [key ...] | key IFREV rev",
        "Delete keys; answers how many existed. With IFREV, only if key was last changed at rev.",
        1,
        None,
    ),
    spec("MGET", "key [key ...]", "Get the values of keys, read at one revision.", 1, None),
    spec("MSET", "key value [key value ...]", "Set several keys at once: one write, one revision.", 2, None),
    spec(
        "CAS",
        "key expected new",
        "Set key to new only if it holds expected; answers 1 if it did, 0 if not.",
        3,
        Some(3),
    ),
    spec(
        "INCR",
        "key",
        "Add 1 to the integer in key (a missing key counts as 0); answers the new value.",
        1,
        Some(1),
    ),
    spec("INCRBY", "key n", "Add n to the integer in key; answers the new value.", 2, Some(2)),
    spec("DECRBY", "key n", "Subtract n from the integer in key; answers the new value.", 2, Some(2)),
    spec(
        "SCAN",
        "start [end] [LIMIT n] [REVERSE] [KEYSONLY | COUNT] | PREFIX p [LIMIT n] [REVERSE] [KEYSONLY | COUNT]",
        "Read keys in order from start up to end (exclusive; \"\" for none), or those beginning with \
         p, a page of LIMIT (default 100, at most 10000) at a time; COUNT counts them.",
        1,
        Some(7),
    ),
    spec(
        "TXN",
        "[compare ...] THEN [op ...] [ELSE op ...]",
        "If every compare holds (VALUE|VERSION|CREATE|MOD key =|!=|<|> x, EXISTS key, MISSING key), \
         run the THEN operations, else the ELSE ones (SET, DEL, GET, SCAN): one write, atomic.",
        1,
        None,
    ),
    spec(
        "EXISTS",
        "key [key ...]",
        "Count how many of the keys exist (a key named twice counts twice).",
        1,
        None,
    ),
    spec("PING", "[message]", "Answer PONG, or echo message; checks the connection.", 0, Some(1)),
    spec("AUTH", "user password", "Log this connection in as user.", 2, Some(2)),
    spec(
        "USER",
        "[ADD user password | DEL user | PASSWD user password | GRANT user role | REVOKE user role | LIST]",
        "Manage users (admin; PASSWD also for oneself): add, delete, set a password, grant or \
         revoke a role, list users and their roles.",
        1,
        Some(3),
    ),
    spec(
        "ROLE",
        "[ADD role | DEL role | GRANT role read|readwrite prefix | GRANT role admin | REVOKE role ... | LIST]",
        "Manage roles (admin): add, delete, grant or revoke read or readwrite on a key prefix (\"\" for \
         every key) or admin, list roles and their permissions.",
        1,
        Some(4),
    ),
    spec(
        "CLUSTER",
        "[ADD-LEARNER id addr | ADD-VOTER id | REMOVE id | TRANSFER-LEADER id]",
        "Show every node (role, term, log and applied index, lag, last contact), or change the \
         membership: add a learner, promote it to voter, remove a node, move the leadership.",
        0,
        Some(3),
    ),
];

/// `CLUSTER`'s subcommands: their names and how many arguments each takes.
pub const CLUSTER_SUBCOMMANDS: &[(&str, &str)] =
    &[("ADD-LEARNER", "id addr"), ("ADD-VOTER", "id"), ("REMOVE", "id"), ("TRANSFER-LEADER", "id")];

/// `USER`'s and `ROLE`'s subcommands, and their arguments.
pub const USER_SUBCOMMANDS: &[(&str, &str)] = &[
    ("ADD", "user password"),
    ("DEL", "user"),
    ("PASSWD", "user password"),
    ("GRANT", "user role"),
    ("REVOKE", "user role"),
    ("LIST", ""),
];
pub const ROLE_SUBCOMMANDS: &[(&str, &str)] = &[
    ("ADD", "role"),
    ("DEL", "role"),
    ("GRANT", "role read|readwrite|admin [prefix]"),
    ("REVOKE", "role read|readwrite|admin [prefix]"),
    ("LIST", ""),
];

/// The subcommands of `command` (ignoring case), for those that have them.
pub fn subcommands(command: &str) -> Option<&'static [(&'static str, &'static str)]> {
    match command.to_ascii_uppercase().as_str() {
        "CLUSTER" => Some(CLUSTER_SUBCOMMANDS),
        "USER" => Some(USER_SUBCOMMANDS),
        "ROLE" => Some(ROLE_SUBCOMMANDS),
        _ => None,
    }
}

/// Whether a request with these arguments (name first) changes state: a write, or a membership
/// change. A client must not resend such a request after losing its answer.
pub fn changes_state(args: &[impl AsRef<[u8]>]) -> bool {
    match args.first().and_then(|name| lookup(name.as_ref())) {
        Some(spec) if spec.name == "CLUSTER" => args.len() > 1,
        Some(spec) if spec.name == "USER" || spec.name == "ROLE" => {
            args.get(1).is_some_and(|sub| !sub.as_ref().eq_ignore_ascii_case(b"LIST"))
        }
        Some(spec) => spec.writes,
        None => false,
    }
}

/// Looks a command up by name, ignoring ASCII case.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Size limits that a command's arguments must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// The most keys one command may name.
    pub max_keys: usize,
    /// The largest a write may be, by [`Write::encoded_len_estimate`], so that its log entry fits
    /// a frame between nodes ([`crate::protocol::frame::max_write_bytes`]).
    pub max_write_bytes: usize,
}

/// A command that changes the store. This is what the replicated log carries, so its encoding
/// is part of the on-disk format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    Set {
        key: Bytes,
        value: Bytes,
        /// Set only if this holds (`NX`, `XX`, `IFREV`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        only_if: Option<SetCondition>,
    },
    Del {
        keys: Vec<Bytes>,
        /// Delete (the one key) only if it was last changed at this revision.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_revision: Option<u64>,
    },
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
    },
    Cas {
        key: Bytes,
        expected: Bytes,
        value: Bytes,
    },
    /// `INCR`, `INCRBY` and `DECRBY`.
    Incr {
        key: Bytes,
        by: i64,
    },
    Txn(Txn),
    /// A change to users, roles or the cluster's id ([`crate::auth`]).
    System(SystemWrite),
    /// `write`, applied only if this session's write `seq` was not applied before
    /// ([`crate::store`]'s sessions).
    Once {
        session: u64,
        seq: u64,
        /// The client has had the answers of the session's writes numbered below this.
        #[serde(default)]
        answered_below: u64,
        /// Shared, not boxed: the log's entries are cloned for each follower they are sent to.
        #[serde(deserialize_with = "shared")]
        write: std::sync::Arc<Write>,
    },
}

/// Decodes a write straight into its `Arc` (serde's own decodes into a `Box`, then moves it).
fn shared<'de, D: serde::Deserializer<'de>>(decoder: D) -> Result<std::sync::Arc<Write>, D::Error> {
    Write::deserialize(decoder).map(std::sync::Arc::new)
}

/// When a `SET` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCondition {
    /// `NX`: the key does not exist.
    Absent,
    /// `XX`: the key exists.
    Present,
    /// `IFREV r`: the key was last changed at revision `r` (0: it does not exist).
    ModRevision(u64),
}

impl Write {
    /// A plain `SET`.
    pub fn set(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Write {
        Write::Set { key: key.into(), value: value.into(), only_if: None }
    }

    /// A plain `DEL`.
    pub fn del(keys: Vec<Bytes>) -> Write {
        Write::Del { keys, if_revision: None }
    }

    /// At most how many bytes the write takes encoded (MessagePack, named or compact): its keys
    /// and value, plus room for their headers and the variant's.
    pub fn encoded_len_estimate(&self) -> usize {
        match self {
            Write::Set { key, value, .. } => key.len() + value.len() + 32,
            Write::Del { keys, .. } => keys.iter().map(|k| k.len() + 8).sum::<usize>() + 24,
            Write::MSet { pairs } => pairs.iter().map(|(k, v)| k.len() + v.len() + 12).sum::<usize>() + 16,
            Write::Cas { key, expected, value } => key.len() + expected.len() + value.len() + 24,
            Write::Incr { key, .. } => key.len() + 24,
            Write::Txn(txn) => txn.encoded_len_estimate(),
            Write::System(change) => change.encoded_len_estimate(),
            Write::Once { write, .. } => write.encoded_len_estimate() + 40,
        }
    }
}

/// A short description for logs; never the value, which may be large or private.
impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::Set { key, value, .. } => write!(f, "SET {} ({} bytes)", shown(key), value.len()),
            Write::Del { keys, .. } => write!(f, "DEL ({} keys)", keys.len()),
            Write::MSet { pairs } => write!(f, "MSET ({} keys)", pairs.len()),
            Write::Cas { key, .. } => write!(f, "CAS {}", shown(key)),
            Write::Incr { key, by } => write!(f, "INCRBY {} {by}", shown(key)),
            Write::Txn(txn) => write!(
                f,
                "TXN ({} compares, {} + {} operations)",
                txn.compares.len(),
                txn.then.len(),
                txn.otherwise.len()
            ),
            // Never a password hash.
            Write::System(change) => write!(f, "{}", system_name(change)),
            Write::Once { write, .. } => write.fmt(f),
        }
    }
}

/// What a system change is called in logs.
fn system_name(change: &SystemWrite) -> &'static str {
    match change {
        SystemWrite::ClusterId { .. } => "naming the cluster",
        SystemWrite::Bootstrap { .. } => "creating root",
        SystemWrite::UserAdd { .. } => "USER ADD",
        SystemWrite::UserDel { .. } => "USER DEL",
        SystemWrite::UserPasswd { .. } => "USER PASSWD",
        SystemWrite::UserGrant { .. } => "USER GRANT",
        SystemWrite::UserRevoke { .. } => "USER REVOKE",
        SystemWrite::RoleAdd { .. } => "ROLE ADD",
        SystemWrite::RoleDel { .. } => "ROLE DEL",
        SystemWrite::RoleGrant { .. } => "ROLE GRANT",
        SystemWrite::RoleRevoke { .. } => "ROLE REVOKE",
    }
}

/// A command that only reads the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Get {
        key: Bytes,
        /// `WITHMETA`: answer with the key's metadata too.
        with_meta: bool,
    },
    MGet {
        keys: Vec<Bytes>,
    },
    Exists {
        keys: Vec<Bytes>,
    },
    Scan(Scan),
    /// The `USER LIST` table.
    Users,
    /// The `ROLE LIST` table.
    Roles,
}

impl Read {
    /// A plain `GET`.
    pub fn get(key: impl Into<Bytes>) -> Read {
        Read::Get { key: key.into(), with_meta: false }
    }

    /// Whether it reads keys (rather than the users or roles).
    pub fn is_of_keys(&self) -> bool {
        !matches!(self, Read::Users | Read::Roles)
    }
}

/// A change to an account that carries a password: the node that proposes it hashes the
/// password first, off the async threads, so that only the hash is ever logged.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordChange {
    Add { name: String, password: Bytes },
    Passwd { name: String, password: Bytes },
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordChange::Add { name, .. } => write!(f, "USER ADD {name} <password>"),
            PasswordChange::Passwd { name, .. } => write!(f, "USER PASSWD {name} <password>"),
        }
    }
}

impl PasswordChange {
    /// The user whose password it sets.
    pub fn user(&self) -> &str {
        match self {
            PasswordChange::Add { name, .. } | PasswordChange::Passwd { name, .. } => name,
        }
    }

    /// The write to log: the password hashed (slow; off the async threads).
    pub fn hashed(&self) -> Write {
        Write::System(match self {
            PasswordChange::Add { name, password } => {
                SystemWrite::UserAdd { name: name.clone(), password: crate::auth::hash_password(password) }
            }
            PasswordChange::Passwd { name, password } => {
                SystemWrite::UserPasswd { name: name.clone(), password: crate::auth::hash_password(password) }
            }
        })
    }
}

/// A change to the cluster's membership or leadership (`CLUSTER` with a subcommand). Only the
/// leader can make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// Add a non-voting member that receives the log (how a new node joins).
    AddLearner { id: u64, addr: String },
    /// Make a caught-up learner a voter.
    AddVoter { id: u64 },
    /// Take a voter or learner out of the cluster.
    Remove { id: u64 },
    /// Hand the leadership to another voter.
    TransferLeader { id: u64 },
}

/// A parsed, validated command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ping {
        message: Option<Bytes>,
    },
    /// The cluster status table.
    Cluster,
    Admin(Admin),
    Read(Read),
    Write(Write),
    /// `USER ADD` or `USER PASSWD`: a write once its password is hashed.
    Password(PasswordChange),
    /// Log the connection in.
    Auth {
        user: String,
        password: Bytes,
    },
}

impl Command {
    /// What a user must be allowed to run this command.
    pub fn needs(&self) -> Needs<'_> {
        fn keys<'k>(access: Access, keys: impl IntoIterator<Item = &'k Bytes>) -> Needs<'k> {
            Needs::Keys { access, keys: keys.into_iter().map(|k| k.as_ref()).collect() }
        }
        match self {
            Command::Ping { .. } | Command::Auth { .. } => Needs::Nothing,
            Command::Cluster => Needs::Login,
            Command::Admin(_) | Command::Read(Read::Users | Read::Roles) => Needs::Admin,
            Command::Read(Read::Get { key, .. }) => keys(Access::Read, [key]),
            Command::Read(Read::Exists { keys: k } | Read::MGet { keys: k }) => keys(Access::Read, k),
            Command::Read(Read::Scan(scan)) => Needs::Range { access: Access::Read, range: &scan.range },
            Command::Write(Write::Set { key, .. } | Write::Cas { key, .. } | Write::Incr { key, .. }) => {
                keys(Access::ReadWrite, [key])
            }
            Command::Write(Write::Del { keys: k, .. }) => keys(Access::ReadWrite, k),
            Command::Write(Write::MSet { pairs }) => keys(Access::ReadWrite, pairs.iter().map(|(k, _)| k)),
            Command::Write(Write::Txn(txn)) => {
                let mut each: Vec<Needs<'_>> = txn
                    .keys()
                    .map(|(key, writes)| {
                        let access = if writes { Access::ReadWrite } else { Access::Read };
                        Needs::Keys { access, keys: vec![key.as_ref()] }
                    })
                    .collect();
                each.extend(
                    txn.scans().map(|scan| Needs::Range { access: Access::Read, range: &scan.range }),
                );
                Needs::Each(each)
            }
            // No client sends `Once`: the node wraps what it proposes.
            Command::Write(Write::System(_) | Write::Once { .. })
            | Command::Password(PasswordChange::Add { .. }) => Needs::Admin,
            Command::Password(change @ PasswordChange::Passwd { .. }) => Needs::AdminOrSelf(change.user()),
        }
    }
}

/// Why a request's arguments are not a valid command. Each maps to an error reply; the
/// connection stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error("unknown command '{0}'")]
    Unknown(String),
    #[error("wrong number of arguments for '{name}': expected {expected}, got {got}")]
    WrongArity { name: &'static str, expected: String, got: usize },
    #[error("{what} is {len} bytes, over the limit of {max} bytes")]
    TooLarge { what: &'static str, len: usize, max: usize },
    #[error("{name} names {count} keys, over the limit of {max} (max_keys_per_command)")]
    TooManyKeys { name: &'static str, count: usize, max: usize },
    #[error(
        "the write would make a log entry of up to {len} bytes, over the {max} bytes a frame between \
         nodes carries (max_frame_bytes); split it"
    )]
    EntryTooLarge { len: usize, max: usize },
    #[error("{0}")]
    BadArgument(String),
}

impl CommandError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::Empty => ErrorCode::BadRequest,
            CommandError::Unknown(_) => ErrorCode::UnknownCommand,
            CommandError::WrongArity { .. } => ErrorCode::WrongArity,
            CommandError::TooLarge { .. }
            | CommandError::TooManyKeys { .. }
            | CommandError::EntryTooLarge { .. } => ErrorCode::TooLarge,
            CommandError::BadArgument(_) => ErrorCode::BadRequest,
        }
    }

    pub fn to_reply(&self) -> Reply {
        Reply::error(self.code(), self.to_string())
    }
}

impl Command {
    /// Parses a request's arguments (name first) into a command, checking arity and sizes.
    pub fn parse(args: Vec<ByteBuf>, limits: &Limits) -> Result<Command, CommandError> {
        let mut args: Vec<Bytes> = args.into_iter().map(|a| Bytes::from(a.into_vec())).collect();
        if args.is_empty() {
            return Err(CommandError::Empty);
        }
        let name = args.remove(0);
        let spec = lookup(&name).ok_or_else(|| {
            // Quote the name as typed, but never echo an unbounded blob back.
            CommandError::Unknown(String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned())
        })?;
        check_arity(spec, args.len())?;
        // A TXN's parts are bounded by `txn::MAX_TXN_OPS` instead.
        let named_keys = match spec.name {
            "MSET" => args.len() / 2,
            "TXN" => 0,
            _ => args.len(),
        };
        if spec.arity.max.is_none() && named_keys > limits.max_keys {
            return Err(CommandError::TooManyKeys {
                name: spec.name,
                count: named_keys,
                max: limits.max_keys,
            });
        }
        let key = |k: &Bytes| {
            if crate::auth::is_system_key(k) {
                return Err(CommandError::BadArgument(
                    "keys that begin with \"\\0kv/\" are reserved for the system".to_string(),
                ));
            }
            check_size("key", k, limits.max_key_bytes)
        };
        let keys = |ks: &[Bytes]| ks.iter().map(key).collect::<Result<Vec<_>, _>>();
        let value = |v: &Bytes| check_size("value", v, limits.max_value_bytes);
        let command = match (spec.name, args.as_slice()) {
            ("SET", [k, v, condition @ ..]) => Command::Write(Write::Set {
                key: key(k)?,
                value: value(v)?,
                only_if: set_condition(condition)?,
            }),
            ("GET", [k]) => Command::Read(Read::Get { key: key(k)?, with_meta: false }),
            ("GET", [k, option]) if option.eq_ignore_ascii_case(b"WITHMETA") => {
                Command::Read(Read::Get { key: key(k)?, with_meta: true })
            }
            ("GET", [_, option]) => {
                return Err(CommandError::BadArgument(format!(
                    "unexpected '{}': GET takes WITHMETA after the key",
                    shown(option)
                )));
            }
            ("DEL", [k, word, revision]) if word.eq_ignore_ascii_case(b"IFREV") => {
                Command::Write(Write::Del {
                    keys: vec![key(k)?],
                    if_revision: Some(parse_u64("revision", revision)?),
                })
            }
            // A conditional delete with a revision missing or one word too many must not turn
            // into an unconditional delete of several keys.
            ("DEL", [_, word, ..]) if word.eq_ignore_ascii_case(b"IFREV") => {
                return Err(CommandError::BadArgument(
                    "DEL key IFREV rev takes one key and one revision".to_string(),
                ));
            }
            ("DEL", ks) => Command::Write(Write::Del { keys: keys(ks)?, if_revision: None }),
            ("EXISTS", ks) => Command::Read(Read::Exists { keys: keys(ks)? }),
            ("MGET", ks) => Command::Read(Read::MGet { keys: keys(ks)? }),
            ("MSET", kvs) if kvs.len() % 2 == 1 => {
                return Err(CommandError::WrongArity {
                    name: "MSET",
                    expected: "pairs (key value [key value ...])".to_string(),
                    got: kvs.len(),
                });
            }
            ("MSET", kvs) => Command::Write(Write::MSet {
                pairs: kvs
                    .chunks(2)
                    .map(|kv| Ok((key(&kv[0])?, value(&kv[1])?)))
                    .collect::<Result<_, _>>()?,
            }),
            ("CAS", [k, expected, new]) => {
                Command::Write(Write::Cas { key: key(k)?, expected: value(expected)?, value: value(new)? })
            }
            ("INCR", [k]) => Command::Write(Write::Incr { key: key(k)?, by: 1 }),
            ("INCRBY", [k, n]) => Command::Write(Write::Incr { key: key(k)?, by: parse_i64(n)? }),
            ("DECRBY", [k, n]) => {
                let by = parse_i64(n)?.checked_neg().ok_or_else(|| {
                    CommandError::BadArgument("DECRBY by the smallest integer would overflow".into())
                })?;
                Command::Write(Write::Incr { key: key(k)?, by })
            }
            ("SCAN", args) => Command::Read(Read::Scan(scan::parse(args, limits.max_key_bytes)?)),
            ("TXN", args) => Command::Write(Write::Txn(txn::parse(
                args,
                &key,
                limits.max_value_bytes,
                limits.max_key_bytes,
            )?)),
            ("PING", []) => Command::Ping { message: None },
            ("PING", [m]) => Command::Ping { message: Some(m.clone()) },
            ("CLUSTER", []) => Command::Cluster,
            ("CLUSTER", [sub, rest @ ..]) => Command::Admin(parse_admin(sub, rest)?),
            ("AUTH", [user, password]) => {
                Command::Auth { user: text("user", user)?, password: password.clone() }
            }
            ("USER", [sub, rest @ ..]) => parse_user(sub, rest)?,
            ("ROLE", [sub, rest @ ..]) => parse_role(sub, rest)?,
            // Unreachable while the table and this match agree (a unit test checks that); answering
            // with an arity error rather than panicking keeps a client from ever crashing the node.
            (name, rest) => return Err(arity_error(spec, name, rest.len())),
        };
        if let Command::Password(
            PasswordChange::Add { password, .. } | PasswordChange::Passwd { password, .. },
        ) = &command
            && password.len() > MAX_PASSWORD_BYTES
        {
            return Err(CommandError::TooLarge {
                what: "password",
                len: password.len(),
                max: MAX_PASSWORD_BYTES,
            });
        }
        if let Command::Write(write) = &command {
            let len = write.encoded_len_estimate();
            if len > limits.max_write_bytes {
                return Err(CommandError::EntryTooLarge { len, max: limits.max_write_bytes });
            }
        }
        Ok(command)
    }
}

/// Parses `SET`'s condition words.
fn set_condition(words: &[Bytes]) -> Result<Option<SetCondition>, CommandError> {
    let upper: Vec<Vec<u8>> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    match (upper.as_slice(), words) {
        ([], _) => Ok(None),
        ([nx], _) if nx == b"NX" => Ok(Some(SetCondition::Absent)),
        ([xx], _) if xx == b"XX" => Ok(Some(SetCondition::Present)),
        ([ifrev, _], [_, revision]) if ifrev == b"IFREV" => {
            Ok(Some(SetCondition::ModRevision(parse_u64("revision", revision)?)))
        }
        _ => {
            Err(CommandError::BadArgument("SET takes one of NX, XX or IFREV rev after the value".to_string()))
        }
    }
}

/// An argument as error messages quote it: its first 64 bytes, as text.
pub(crate) fn shown(arg: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&arg[..arg.len().min(64)])
}

/// A non-negative integer argument.
pub(crate) fn parse_u64(what: &str, arg: &[u8]) -> Result<u64, CommandError> {
    std::str::from_utf8(arg).ok().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
        CommandError::BadArgument(format!("bad {what} '{}': expected a non-negative integer", shown(arg)))
    })
}

/// An integer argument of `INCRBY` or `DECRBY`.
fn parse_i64(arg: &[u8]) -> Result<i64, CommandError> {
    std::str::from_utf8(arg).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| {
        CommandError::BadArgument(format!("bad increment '{}': expected a 64-bit integer", shown(arg)))
    })
}

/// The longest password accepted.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A user or role name: 1 to [`crate::auth::MAX_NAME_BYTES`] letters, digits, `.`, `_`, `-`
/// or `@`.
fn text(what: &str, arg: &Bytes) -> Result<String, CommandError> {
    let fits = !arg.is_empty()
        && arg.len() <= crate::auth::MAX_NAME_BYTES
        && arg.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if !fits {
        return Err(CommandError::BadArgument(format!(
            "bad {what} name '{}': use 1-{} letters, digits, '.', '_', '-' or '@'",
            String::from_utf8_lossy(&arg[..arg.len().min(64)]),
            crate::auth::MAX_NAME_BYTES
        )));
    }
    Ok(String::from_utf8_lossy(arg).into_owned())
}

/// Finds a subcommand of `command` in `table` and checks its arity. `bare` says what the
/// command does with no subcommand, if it does anything.
fn subcommand(
    command: &'static str,
    table: &[(&'static str, &'static str)],
    bare: Option<&str>,
    sub: &Bytes,
    args: &[Bytes],
) -> Result<&'static str, CommandError> {
    let Some(&(name, synopsis)) = table.iter().find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(sub)) else {
        let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        let or_none = bare.map(|what| format!(", or none for {what}")).unwrap_or_default();
        return Err(CommandError::BadArgument(format!(
            "unknown {command} subcommand '{}'; expected one of {}{or_none}",
            String::from_utf8_lossy(&sub[..sub.len().min(64)]),
            names.join(", ")
        )));
    };
    let words = synopsis.split_whitespace();
    let (min, max) = (words.clone().filter(|w| !w.starts_with('[')).count(), words.count());
    if args.len() < min || args.len() > max {
        let expected =
            if min == max { format!("{}", min + 1) } else { format!("{} to {}", min + 1, max + 1) };
        return Err(CommandError::WrongArity {
            name: command,
            expected: format!("{expected} ({name} {synopsis})").trim_end_matches(' ').replace(" )", ")"),
            got: args.len() + 1,
        });
    }
    Ok(name)
}

/// Parses `USER <subcommand> <args>`.
fn parse_user(sub: &Bytes, args: &[Bytes]) -> Result<Command, CommandError> {
    let name = subcommand("USER", USER_SUBCOMMANDS, None, sub, args)?;
    if name == "LIST" {
        return Ok(Command::Read(Read::Users));
    }
    let user = text("user", &args[0])?;
    let system = |change| Ok(Command::Write(Write::System(change)));
    match name {
        "ADD" => Ok(Command::Password(PasswordChange::Add { name: user, password: args[1].clone() })),
        "PASSWD" => Ok(Command::Password(PasswordChange::Passwd { name: user, password: args[1].clone() })),
        "DEL" => system(SystemWrite::UserDel { name: user }),
        "GRANT" => system(SystemWrite::UserGrant { name: user, role: text("role", &args[1])? }),
        _ => system(SystemWrite::UserRevoke { name: user, role: text("role", &args[1])? }),
    }
}

/// Parses `ROLE <subcommand> <args>`.
fn parse_role(sub: &Bytes, args: &[Bytes]) -> Result<Command, CommandError> {
    let name = subcommand("ROLE", ROLE_SUBCOMMANDS, None, sub, args)?;
    if name == "LIST" {
        return Ok(Command::Read(Read::Roles));
    }
    let role = text("role", &args[0])?;
    let grant = || -> Result<Grant, CommandError> {
        let permission = args.get(1).map(|p| p.to_ascii_lowercase());
        match (permission.as_deref(), args.get(2)) {
            (Some(b"admin"), None) => Ok(Grant::Admin),
            (Some(b"read" | b"readwrite"), Some(prefix)) if prefix.len() > crate::auth::MAX_PREFIX_BYTES => {
                Err(CommandError::TooLarge {
                    what: "prefix",
                    len: prefix.len(),
                    max: crate::auth::MAX_PREFIX_BYTES,
                })
            }
            (Some(b"read"), Some(prefix)) => Ok(Grant::Keys { access: Access::Read, prefix: prefix.clone() }),
            (Some(b"readwrite"), Some(prefix)) => {
                Ok(Grant::Keys { access: Access::ReadWrite, prefix: prefix.clone() })
            }
            _ => Err(CommandError::BadArgument(
                "expected 'admin', or 'read' or 'readwrite' and a key prefix (\"\" for every key)"
                    .to_string(),
            )),
        }
    };
    let change = match name {
        "ADD" => SystemWrite::RoleAdd { name: role },
        "DEL" => SystemWrite::RoleDel { name: role },
        "GRANT" => SystemWrite::RoleGrant { name: role, grant: grant()? },
        _ => SystemWrite::RoleRevoke { name: role, grant: grant()? },
    };
    Ok(Command::Write(Write::System(change)))
}

/// Parses `CLUSTER <subcommand> <args>`.
fn parse_admin(sub: &Bytes, args: &[Bytes]) -> Result<Admin, CommandError> {
    let name = subcommand("CLUSTER", CLUSTER_SUBCOMMANDS, Some("the status table"), sub, args)?;
    let id = parse_node_id(&args[0])?;
    Ok(match name {
        "ADD-LEARNER" => {
            let addr = std::str::from_utf8(&args[1])
                .ok()
                .and_then(|a| crate::addr::parse_addr(a).ok())
                .ok_or_else(|| {
                    CommandError::BadArgument(format!(
                        "bad address '{}': expected IP:PORT",
                        String::from_utf8_lossy(&args[1][..args[1].len().min(64)])
                    ))
                })?;
            Admin::AddLearner { id, addr: addr.to_string() }
        }
        "ADD-VOTER" => Admin::AddVoter { id },
        "REMOVE" => Admin::Remove { id },
        _ => Admin::TransferLeader { id },
    })
}

fn parse_node_id(arg: &Bytes) -> Result<u64, CommandError> {
    std::str::from_utf8(arg).ok().and_then(|s| s.parse::<u64>().ok()).filter(|id| *id > 0).ok_or_else(|| {
        CommandError::BadArgument(format!(
            "bad node id '{}': expected a positive integer",
            String::from_utf8_lossy(&arg[..arg.len().min(64)])
        ))
    })
}

fn check_arity(spec: &'static CommandSpec, got: usize) -> Result<(), CommandError> {
    let Arity { min, max } = spec.arity;
    if got < min || max.is_some_and(|max| got > max) {
        return Err(arity_error(spec, spec.name, got));
    }
    Ok(())
}

fn arity_error(spec: &'static CommandSpec, name: &'static str, got: usize) -> CommandError {
    let expected = match spec.arity {
        Arity { min: 0, max: Some(0) } => "none".to_string(),
        Arity { min, max: Some(max) } if min == max => format!("{min} ({})", spec.args),
        Arity { min, max: Some(max) } => format!("{min} to {max} ({})", spec.args),
        Arity { min, max: None } => format!("at least {min} ({})", spec.args),
    };
    CommandError::WrongArity { name, expected, got }
}

fn check_size(what: &'static str, bytes: &Bytes, max: usize) -> Result<Bytes, CommandError> {
    if bytes.len() > max {
        return Err(CommandError::TooLarge { what, len: bytes.len(), max });
    }
    Ok(bytes.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_key_bytes: 8, max_value_bytes: 16, max_keys: 4, max_write_bytes: 64 };

    fn parse(words: &[&str]) -> Result<Command, CommandError> {
        Command::parse(words.iter().map(|w| ByteBuf::from(w.as_bytes())).collect(), &LIMITS)
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn valid_commands_parse_case_insensitively() {
        let cases: &[(&[&str], Command)] = &[
            (&["set", "k", "v"], Command::Write(Write::set(b("k"), b("v")))),
            (&["GET", "k"], Command::Read(Read::get(b("k")))),
            (&["Del", "a", "b"], Command::Write(Write::del(vec![b("a"), b("b")]))),
            (&["EXISTS", "a", "a"], Command::Read(Read::Exists { keys: vec![b("a"), b("a")] })),
            (&["ping"], Command::Ping { message: None }),
            (&["PING", "hi"], Command::Ping { message: Some(b("hi")) }),
            (&["cluster"], Command::Cluster),
            (
                &["cluster", "add-learner", "4", "127.0.0.1:7004"],
                Command::Admin(Admin::AddLearner { id: 4, addr: "127.0.0.1:7004".into() }),
            ),
            (&["CLUSTER", "ADD-VOTER", "4"], Command::Admin(Admin::AddVoter { id: 4 })),
            (&["CLUSTER", "REMOVE", "2"], Command::Admin(Admin::Remove { id: 2 })),
            (&["CLUSTER", "TRANSFER-LEADER", "3"], Command::Admin(Admin::TransferLeader { id: 3 })),
        ];
        for (words, want) in cases {
            assert_eq!(parse(words).as_ref(), Ok(want), "{words:?}");
        }
    }

    #[test]
    fn bad_commands_get_the_right_error() {
        let cases: &[(&[&str], ErrorCode, &str)] = &[
            (&[], ErrorCode::BadRequest, "empty command"),
            (&["FLY", "x"], ErrorCode::UnknownCommand, "unknown command 'FLY'"),
            (
                &["SET", "k"],
                ErrorCode::WrongArity,
                "for 'SET': expected 2 to 4 (key value [NX | XX | IFREV rev]), got 1",
            ),
            (&["SET", "k", "v", "NX", "XX"], ErrorCode::BadRequest, "one of NX, XX or IFREV rev"),
            (&["SET", "k", "v", "IFREV", "-1"], ErrorCode::BadRequest, "bad revision '-1'"),
            (&["GET", "k", "META"], ErrorCode::BadRequest, "GET takes WITHMETA"),
            (&["DEL", "k", "IFREV", "x"], ErrorCode::BadRequest, "bad revision 'x'"),
            (
                &["DEL", "k", "IFREV"],
                ErrorCode::BadRequest,
                "DEL key IFREV rev takes one key and one revision",
            ),
            (&["DEL", "k", "ifrev", "1", "2"], ErrorCode::BadRequest, "takes one key and one revision"),
            (&["SCAN", "PREFIX"], ErrorCode::BadRequest, "SCAN PREFIX needs a prefix"),
            (&["MSET", "a", "1", "b"], ErrorCode::WrongArity, "expected pairs"),
            (
                &["MSET", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5"],
                ErrorCode::TooLarge,
                "MSET names 5 keys",
            ),
            (&["MGET", "a", "b", "c", "d", "e"], ErrorCode::TooLarge, "MGET names 5 keys"),
            (&["CAS", "k", "old"], ErrorCode::WrongArity, "expected 3 (key expected new)"),
            (&["INCRBY", "k", "1.5"], ErrorCode::BadRequest, "bad increment '1.5'"),
            (&["DECRBY", "k", "-9223372036854775808"], ErrorCode::BadRequest, "would overflow"),
            (&["SCAN", "a", "LIMIT", "x"], ErrorCode::BadRequest, "bad LIMIT 'x'"),
            (&["TXN", "SET", "a", "1"], ErrorCode::BadRequest, "expected a compare"),
            (&["GET"], ErrorCode::WrongArity, "expected 1 to 2 (key [WITHMETA]), got 0"),
            (&["DEL"], ErrorCode::WrongArity, "expected at least 1 (key [key ...] | key IFREV rev), got 0"),
            (&["PING", "a", "b"], ErrorCode::WrongArity, "expected 0 to 1 ([message]), got 2"),
            (&["SET", "123456789", "v"], ErrorCode::TooLarge, "key is 9 bytes, over the limit of 8"),
            (&["SET", "k", "0123456789abcdefg"], ErrorCode::TooLarge, "value is 17 bytes"),
            (&["DEL", "ok", "123456789"], ErrorCode::TooLarge, "key is 9 bytes"),
            (&["DEL", "a", "b", "c", "d", "e"], ErrorCode::TooLarge, "DEL names 5 keys, over the limit of 4"),
            (&["EXISTS", "a", "b", "c", "d", "e"], ErrorCode::TooLarge, "EXISTS names 5 keys"),
            (
                &["DEL", "12345678", "12345678", "12345678", "12345678"],
                ErrorCode::TooLarge,
                "a log entry of up to 88 bytes, over the 64 bytes",
            ),
            (&["CLUSTER", "FLY"], ErrorCode::BadRequest, "unknown CLUSTER subcommand 'FLY'"),
            (&["CLUSTER", "REMOVE"], ErrorCode::WrongArity, "expected 2 (REMOVE id), got 1"),
            (&["CLUSTER", "ADD-VOTER", "0"], ErrorCode::BadRequest, "bad node id '0'"),
            (&["CLUSTER", "ADD-LEARNER", "4", "nowhere"], ErrorCode::BadRequest, "bad address 'nowhere'"),
            (&["CLUSTER", "a", "b", "c", "d"], ErrorCode::WrongArity, "expected 0 to 3"),
        ];
        for (words, code, text) in cases {
            let err = parse(words).unwrap_err();
            assert_eq!(err.code(), *code, "{words:?}");
            assert!(err.to_string().contains(text), "{words:?}: {err}");
        }
    }

    #[test]
    fn every_table_entry_parses_at_its_minimum_and_maximum_arity() {
        // Commands with subcommands have tests of their own.
        let samples: &[&[&str]] = &[
            &["SET", "k", "v"],
            &["SET", "k", "v", "IFREV", "3"],
            &["SET", "k", "v", "nx"],
            &["GET", "k"],
            &["GET", "k", "withmeta"],
            &["DEL", "k"],
            &["DEL", "k", "IFREV", "2"],
            &["DEL", "a", "b", "c", "d"],
            &["EXISTS", "k"],
            &["EXISTS", "a", "b", "c", "d"],
            &["PING"],
            &["PING", "m"],
            &["AUTH", "alice", "pw"],
            &["MGET", "k"],
            &["MGET", "a", "b", "c", "d"],
            &["MSET", "k", "v"],
            &["MSET", "a", "1", "b", "2", "c", "3"],
            &["CAS", "k", "old", "new"],
            &["INCR", "k"],
            &["INCRBY", "k", "-5"],
            &["DECRBY", "k", "5"],
            &["SCAN", "a"],
            &["SCAN", "a", "z", "LIMIT", "5", "REVERSE", "KEYSONLY"],
            &["TXN", "THEN"],
            &["TXN", "EXISTS", "a", "THEN", "SET", "a", "1", "ELSE", "GET", "a"],
        ];
        for spec in COMMANDS.iter().filter(|c| !matches!(c.name, "CLUSTER" | "USER" | "ROLE")) {
            let mine: Vec<&&[&str]> = samples.iter().filter(|s| s[0] == spec.name).collect();
            let counts: Vec<usize> = mine.iter().map(|s| s.len() - 1).collect();
            assert!(counts.contains(&spec.arity.min), "{} has no sample at its minimum arity", spec.name);
            for words in mine {
                let args = words.iter().map(|w| ByteBuf::from(w.as_bytes())).collect();
                let roomy = Limits { max_write_bytes: 4096, ..LIMITS };
                let command = Command::parse(args, &roomy).unwrap_or_else(|e| panic!("{words:?}: {e}"));
                let expected = if spec.name == "AUTH" { false } else { spec.writes };
                assert_eq!(matches!(command, Command::Write(_)), expected, "{}", spec.name);
            }
        }
    }

    #[test]
    fn user_and_role_commands_parse_into_changes_that_never_log_a_password() {
        let add = parse(&["user", "add", "alice", "pw"]).unwrap();
        assert_eq!(add, Command::Password(PasswordChange::Add { name: "alice".into(), password: b("pw") }));
        assert!(!format!("{add:?}").contains("pw"), "{add:?}");
        let Write::System(SystemWrite::UserAdd { password, .. }) = (match &add {
            Command::Password(change) => change.hashed(),
            _ => unreachable!(),
        }) else {
            panic!("USER ADD hashes into a UserAdd");
        };
        assert!(password.starts_with("$argon2id$"));
        assert_eq!(parse(&["USER", "LIST"]).unwrap(), Command::Read(Read::Users));
        assert_eq!(
            parse(&["ROLE", "GRANT", "app", "READ", "app/"]).unwrap(),
            Command::Write(Write::System(SystemWrite::RoleGrant {
                name: "app".into(),
                grant: Grant::Keys { access: Access::Read, prefix: b("app/") }
            }))
        );
        assert_eq!(
            parse(&["ROLE", "GRANT", "ops", "admin"]).unwrap(),
            Command::Write(Write::System(SystemWrite::RoleGrant { name: "ops".into(), grant: Grant::Admin }))
        );
        let cases: &[(&[&str], ErrorCode, &str)] = &[
            (&["USER", "ADD", "alice"], ErrorCode::WrongArity, "expected 3 (ADD user password)"),
            (&["USER", "ADD", "../x", "pw"], ErrorCode::BadRequest, "bad user name"),
            (&["USER", "FLY"], ErrorCode::BadRequest, "unknown USER subcommand 'FLY'"),
            (&["ROLE", "GRANT", "app", "write", "x/"], ErrorCode::BadRequest, "expected 'admin'"),
            (&["ROLE", "GRANT", "app", "read"], ErrorCode::BadRequest, "a key prefix"),
            (&["AUTH", "bad name", "pw"], ErrorCode::BadRequest, "bad user name"),
            (&["GET", "\0kv/users"], ErrorCode::BadRequest, "reserved for the system"),
            (&["ROLE", "GRANT", "app", "read", &"p".repeat(300)], ErrorCode::TooLarge, "prefix is 300 bytes"),
        ];
        for (words, code, text) in cases {
            let err = parse(words).unwrap_err();
            assert_eq!(err.code(), *code, "{words:?}");
            assert!(err.to_string().contains(text), "{words:?}: {err}");
        }
    }

    #[test]
    fn writes_and_membership_changes_change_state() {
        assert!(changes_state(&["set", "k", "v"]));
        assert!(changes_state(&["CLUSTER", "REMOVE", "2"]));
        assert!(!changes_state(&["cluster"]));
        assert!(!changes_state(&["GET", "k"]));
        assert!(!changes_state(&["NOPE"]));
        for (name, synopsis) in CLUSTER_SUBCOMMANDS {
            let mut words = vec!["CLUSTER", name, "4"];
            if synopsis.contains("addr") {
                words.push("127.0.0.1:1");
            }
            assert!(matches!(parse(&words), Ok(Command::Admin(_))), "{words:?}");
        }
    }

    proptest::proptest! {
        /// Any arguments, under any command name the table knows or none, parse into a command
        /// within the limits or into an error; never a panic.
        #[test]
        fn parsing_arbitrary_arguments_never_panics_and_respects_the_limits(
            name in proptest::sample::select(vec!["SET", "GET", "DEL", "EXISTS", "PING", "CLUSTER", "cluster", "NOPE", ""]),
            sub in proptest::sample::select(vec!["ADD-LEARNER", "ADD-VOTER", "REMOVE", "TRANSFER-LEADER", "x", ""]),
            args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20), 0..8),
        ) {
            let mut words = vec![ByteBuf::from(name.as_bytes().to_vec())];
            if name.eq_ignore_ascii_case("CLUSTER") {
                words.push(ByteBuf::from(sub.as_bytes().to_vec()));
            }
            words.extend(args.into_iter().map(ByteBuf::from));
            if let Ok(Command::Write(write)) = Command::parse(words, &LIMITS) {
                proptest::prop_assert!(write.encoded_len_estimate() <= LIMITS.max_write_bytes);
            }
        }
    }
}
