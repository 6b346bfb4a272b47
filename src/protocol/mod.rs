//! The wire protocol shared by `kv-node` and `kv-cli`.
//!
//! Every message is one *frame*: a 4-byte big-endian length followed by that many bytes of payload
//! (`frame`). Every payload is a MessagePack value built from the serde types in `message`. The
//! first frame a client sends is a [`message::Hello`]; everything after it is a
//! [`message::Request`], answered by a [`message::Response`] that echoes the request's id.
//!
//! `docs/PROTOCOL.md` is the normative description for writers of clients in other languages; the
//! golden-byte tests in `message` pin the encoding so that the document and the code cannot drift.
//!
//! Deliberately not here: what the commands *mean* (`command`), and sockets (`connection`).

pub mod frame;
pub mod json;
pub mod message;
pub mod msgpack;
pub mod request;
pub mod response;

/// The protocol version spoken by this build. A hello with any other version is refused with
/// [`message::ErrorCode::VersionMismatch`].
pub const PROTOCOL_VERSION: u32 = 1;
