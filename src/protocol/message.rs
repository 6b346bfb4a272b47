//! The messages that travel inside frames.
//!
//! Requests carry a command as an array of byte strings, exactly as the user typed it
//! (`["SET", "k", "v"]`), and the node does the parsing. That keeps clients in any language thin,
//! and it means arity and unknown-command errors come from one place, the node, whatever the client.
//!
//! Replies are modelled on RESP's value kinds (status, nil, integer, bulk, error), which is what a
//! redis-cli user expects to see. Each tagged union carries its tag in a `type` field so that the
//! encoding reads naturally from any MessagePack library.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::fmt;

/// The first frame a client sends on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the client speaks; see [`super::PROTOCOL_VERSION`].
    pub version: u32,
    /// Free-form client name, shown in the node's logs.
    #[serde(default)]
    pub client: String,
    /// Set only by another cluster member, to its own node id: the connection then carries Raft
    /// traffic instead of client requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<u64>,
    /// Set only by another cluster member that forwards its clients' requests to this node, to
    /// its own node id. Such requests are never forwarded again: a node that is not the leader
    /// answers them with [`ErrorCode::NotLeader`] so that the forwarding node re-routes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_by: Option<u64>,
    /// Set only by another cluster member that knows its cluster's id: a node of another
    /// cluster refuses the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// The node's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HelloReply {
    /// The connection is open for requests.
    Welcome {
        /// The protocol version the node speaks (equal to the client's).
        version: u32,
        /// The id of the node that answered.
        node_id: u64,
        /// The largest frame payload the node accepts; larger ones close the connection.
        max_frame_bytes: u64,
    },
    /// The node refuses the connection and will close it.
    Refused { code: ErrorCode, message: String },
}

/// One command from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client and echoed in the [`Response`], so that pipelined requests can be
    /// matched to their answers.
    pub id: u64,
    /// The command name followed by its arguments, each a byte string.
    pub args: Vec<ByteBuf>,
    /// Answer a read from this node's own state, without asking the leader: fast, but possibly
    /// stale (like etcd's serializable reads). Ignored by writes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// For a write: wait until at least this many peers (nodes other than the leader) have
    /// persisted it, for up to `ack_timeout_ms`, before answering. The answer is the same either
    /// way; its `replication` shows how many did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_acks: Option<u32>,
    /// How long a write may wait for `min_acks`, in milliseconds (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_timeout_ms: Option<u64>,
    /// For a write: the client's session and the write's number in it. A write sent again with
    /// the same pair is applied at most once; a repeat gets the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<Once>,
    /// For a write: before answering, wait a few milliseconds for every peer in contact with the
    /// leader to acknowledge it, so that the answer's `replication` is usually complete. For
    /// clients that show the picture to a person; it costs latency, so the default is not to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_acks: bool,
}

impl Request {
    /// A plain request: linearizable, no acknowledgement wait.
    pub fn new(id: u64, args: Vec<ByteBuf>) -> Request {
        Request { id, args, local: false, min_acks: None, ack_timeout_ms: None, wait_acks: false, once: None }
    }
}

/// Identifies a write for exactly-once application: a session the client chose at random, and
/// the write's number in it (distinct for each write of the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Once {
    pub session: u64,
    pub seq: u64,
    /// Every write of the session numbered below this has been answered to the client, which
    /// will not send it again: the cluster forgets them. 0 (or absent) says nothing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub answered_below: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The node's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The id of the request this answers; 0 for a connection-level error sent before closing.
    pub id: u64,
    pub reply: Reply,
    /// The node that led when the command went through the leader (writes and linearizable
    /// reads); absent for local reads, `PING` and errors found before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
    /// For a write that was committed: where it sits in the log and which peers have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    /// The store's revision: for a write, the one it made (or, if it changed nothing, the one it
    /// saw); for a read of keys, the one it read at. Absent where no data was touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

impl Response {
    /// An answer that carries no cluster information.
    pub fn new(id: u64, reply: Reply) -> Response {
        Response { id, reply, leader: None, replication: None, revision: None }
    }
}

/// The replication picture of a committed write at the moment it was answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replication {
    /// The leader's term.
    pub term: u64,
    /// The write's index in the replicated log.
    pub index: u64,
    /// Every member except the leader, by id.
    pub peers: Vec<PeerAck>,
}

impl Replication {
    /// How many peers had persisted the write.
    pub fn acked(&self) -> usize {
        self.peers.iter().filter(|p| p.state == AckState::Acked).count()
    }
}

/// One peer's part in a [`Replication`] picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerAck {
    pub node: u64,
    pub state: AckState,
    /// For `acked`: milliseconds from the leader proposing the write to seeing the peer's ack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckState {
    /// The peer has persisted the write.
    Acked,
    /// The peer is in contact with the leader but had not confirmed the write yet.
    Pending,
    /// The leader has not heard from the peer recently (it is down or cut off).
    Unreachable,
}

/// The value of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// A short status text such as `OK` or `PONG`.
    Status { value: std::borrow::Cow<'static, str> },
    /// No value: a missing key.
    Nil,
    /// A count, such as the number of keys `DEL` removed.
    Integer { value: i64 },
    /// A stored value, binary-safe.
    Bulk { value: ByteBuf },
    /// The command failed; `code` is stable and meant for programs, `message` for people.
    Error { code: ErrorCode, message: String },
    /// Rows of named columns, such as the answer to `CLUSTER`.
    Table { columns: Vec<String>, rows: Vec<Vec<Cell>> },
    /// Several answers in order, such as `MGET`'s values.
    Array { items: Vec<Reply> },
    /// Keys in order with their metadata: a `SCAN` page, or `GET key WITHMETA`.
    Entries {
        entries: Vec<KeyValue>,
        /// Whether keys beyond these are in the range (the page stopped at its limit).
        #[serde(default)]
        more: bool,
        /// When `more`: where the next page starts (forward: its `start`; `REVERSE`: its `end`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<ByteBuf>,
    },
    /// A `TXN`'s answer: whether its compares held (so the `THEN` branch ran, else the `ELSE`
    /// branch), and the answer of each operation of the branch that ran.
    Txn { succeeded: bool, results: Vec<Reply> },
}

/// One key of an [`Reply::Entries`] answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: ByteBuf,
    /// Absent for `KEYSONLY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ByteBuf>,
    /// The revision that created the key (since it last did not exist).
    pub create_revision: u64,
    /// The revision that last changed it.
    pub mod_revision: u64,
    /// How many writes changed it since it was created (1 after creation).
    pub version: u64,
}

/// One value in a [`Reply::Table`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cell {
    Integer(i64),
    Text(String),
    /// Not known (for example, a node that did not answer).
    Nil,
}

impl Reply {
    pub fn ok() -> Reply {
        // Borrowed: the most common answer allocates nothing, made or copied.
        Reply::Status { value: "OK".into() }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply::Error { code, message: message.into() }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error { .. })
    }
}

/// Machine-readable error codes. They are part of the protocol: never renamed, only added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request is well-formed MessagePack but not a valid request (e.g. no command name).
    BadRequest,
    /// The command name is not one the node knows.
    UnknownCommand,
    /// The command got the wrong number of arguments.
    WrongArity,
    /// A key or value is over the node's configured limit.
    TooLarge,
    /// The bytes on the connection are not valid frames or messages; the connection is closed.
    Protocol,
    /// The hello named a protocol version this node does not speak.
    VersionMismatch,
    /// The node is at its connection limit.
    Busy,
    /// The node is shutting down.
    ShuttingDown,
    /// The node could not read or write its disk. The command was not applied.
    Storage,
    /// No leader with a quorum could be found within the node's request timeout (an election is
    /// going on, or too many nodes are down). The command was certainly not applied; retry later.
    NoQuorum,
    /// The write was handed to a leader, but its outcome could not be learned (the leader died,
    /// lost its quorum or did not answer in time). It may or may not have been applied, now or
    /// later: read before retrying it.
    OutcomeUnknown,
    /// Reported by clients: a read got no answer in time (it changed nothing). For a write the
    /// same situation is `OUTCOME_UNKNOWN`.
    Timeout,
    /// Only on forwarded connections: this node is not the leader and did not apply the command.
    /// The forwarding node retries it at the leader; clients never see this code.
    NotLeader,
    /// A membership change was refused (see the message); nothing changed.
    Refused,
    /// A learner cannot become a voter yet: it has not caught up with the leader's log.
    NotCaughtUp,
    /// Who the connection is has not been proven: no login yet, or a member's hello without its
    /// certificate.
    #[serde(rename = "NOAUTH")]
    NoAuth,
    /// The user (or member) is known but lacks the permission the message names.
    PermissionDenied,
    /// A member's hello names another cluster than this node's.
    WrongCluster,
    /// `INCR` and its kin found a value that is not a 64-bit integer; nothing changed.
    NotInteger,
    /// `INCR` and its kin would take the value past a 64-bit integer; nothing changed.
    Overflow,
    /// A write sent again (same session and number) was applied when first sent, but its answer
    /// was too large to keep; it was not applied again.
    AlreadyApplied,
    /// A code this build does not know (sent by a newer node).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::UnknownCommand => "UNKNOWN_COMMAND",
            ErrorCode::WrongArity => "WRONG_ARITY",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Protocol => "PROTOCOL",
            ErrorCode::VersionMismatch => "VERSION_MISMATCH",
            ErrorCode::Busy => "BUSY",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Storage => "STORAGE",
            ErrorCode::NoQuorum => "NO_QUORUM",
            ErrorCode::OutcomeUnknown => "OUTCOME_UNKNOWN",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::NotLeader => "NOT_LEADER",
            ErrorCode::Refused => "REFUSED",
            ErrorCode::NotCaughtUp => "NOT_CAUGHT_UP",
            ErrorCode::NoAuth => "NOAUTH",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::WrongCluster => "WRONG_CLUSTER",
            ErrorCode::NotInteger => "NOT_INTEGER",
            ErrorCode::Overflow => "OVERFLOW",
            ErrorCode::AlreadyApplied => "ALREADY_APPLIED",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{decode, encode};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
    }

    /// The exact bytes quoted in docs/PROTOCOL.md. If one of these changes, the protocol changed.
    #[test]
    fn golden_encodings_match_the_protocol_document() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                encode(&Hello {
                    version: 1,
                    client: "cli".into(),
                    peer: None,
                    forwarded_by: None,
                    cluster: None,
                })
                .to_vec(),
                "82 a7 76 65 72 73 69 6f 6e 01 a6 63 6c 69 65 6e 74 a3 63 6c 69",
            ),
            (
                encode(&Request::new(7, vec![ByteBuf::from("GET"), ByteBuf::from("k")])).to_vec(),
                "82 a2 69 64 07 a4 61 72 67 73 92 c4 03 47 45 54 c4 01 6b",
            ),
            (
                encode(&Response::new(7, Reply::Integer { value: 3 })).to_vec(),
                "82 a2 69 64 07 a5 72 65 70 6c 79 82 a4 74 79 70 65 a7 69 6e 74 65 67 65 72 a5 \
                 76 61 6c 75 65 03",
            ),
            (
                encode(&Response::new(7, Reply::Nil)).to_vec(),
                "82 a2 69 64 07 a5 72 65 70 6c 79 81 a4 74 79 70 65 a3 6e 69 6c",
            ),
        ];
        for (bytes, want) in cases {
            let want: String = want.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(hex(&bytes), want);
        }
    }

    #[test]
    fn every_reply_round_trips() {
        let replies = [
            Reply::ok(),
            Reply::Nil,
            Reply::Integer { value: -5 },
            Reply::Bulk { value: ByteBuf::from(vec![0u8, 255, b'\n']) },
            Reply::error(ErrorCode::WrongArity, "wrong number of arguments"),
        ];
        for reply in replies {
            let response = Response::new(9, reply);
            let back: Response = decode(&encode(&response)).unwrap();
            assert_eq!(back, response);
        }
        for hello in [
            HelloReply::Welcome { version: 1, node_id: 3, max_frame_bytes: 1 << 22 },
            HelloReply::Refused { code: ErrorCode::VersionMismatch, message: "v2".into() },
        ] {
            let back: HelloReply = decode(&encode(&hello)).unwrap();
            assert_eq!(back, hello);
        }
    }

    #[test]
    fn strings_are_accepted_where_byte_strings_are_expected() {
        // Clients in other languages often send MessagePack `str` for ASCII arguments.
        let payload = rmp_serde::to_vec_named(&serde_json::json!({"id": 1, "args": ["PING"]})).unwrap();
        let request: Request = decode(&payload).unwrap();
        assert_eq!(request.args, vec![ByteBuf::from("PING")]);
    }

    #[test]
    fn unknown_error_codes_and_extra_fields_are_tolerated() {
        let payload = rmp_serde::to_vec_named(&serde_json::json!({
            "id": 1,
            "reply": {"type": "error", "code": "SOMETHING_NEW", "message": "m"},
            "added_later": true,
        }))
        .unwrap();
        let response: Response = decode(&payload).unwrap();
        assert_eq!(response.reply, Reply::error(ErrorCode::Unknown, "m"));
    }

    proptest::proptest! {
        /// Whatever bytes a connection sends as a payload, decoding them is an answer or an
        /// error, never a panic.
        #[test]
        fn decoding_arbitrary_payloads_never_panics(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode::<Hello>(&payload);
            let _ = decode::<HelloReply>(&payload);
            let _ = decode::<Request>(&payload);
            let _ = decode::<Response>(&payload);
        }

        /// A valid request with bytes flipped decodes to something or fails, never panics.
        #[test]
        fn decoding_mutated_requests_never_panics(
            args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..16), 0..6),
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..8),
        ) {
            let request = Request::new(7, args.into_iter().map(ByteBuf::from).collect());
            let mut payload = encode(&request).to_vec();
            for (at, byte) in flips {
                let len = payload.len();
                payload[at % len] ^= byte;
            }
            let _ = decode::<Request>(&payload);
        }
    }
}
