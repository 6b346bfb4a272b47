//! What became of a request that needed the leader: the one type behind the product's promise
//! that `NO_QUORUM` means "not applied" and `OUTCOME_UNKNOWN` means "maybe".
//!
//! Every step on the way to the leader (proposing, forwarding, a membership change, a read-index
//! check) ends in an [`Outcome`]. Only [`Outcome::NotApplied`] may be retried, here or at another
//! node, because only then is it certain that nothing took effect; an [`Outcome::Unknown`] is
//! reported to the client as `OUTCOME_UNKNOWN` and never sent again, since that could apply a
//! write twice, unless the client numbered the write in a session: the state machine then
//! applies it at most once (`crate::store::sessions`), and the executor tries it again. The executor turns what is still `NotApplied` when its time is up into
//! `NO_QUORUM`.

use crate::protocol::message::{ErrorCode, Reply, Response};
use std::fmt;

/// What became of one request (or one step of it) on its way through the leader.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    /// It went through: this is its answer (which may itself be an error that is final, such
    /// as a refused membership change).
    Done(T),
    /// It certainly did not take effect, for the reason given: it may be tried again.
    NotApplied(NotApplied),
    /// It may or may not have taken effect, for the reason given: it must not be tried again.
    Unknown(String),
}

/// Why a request certainly did not take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotApplied {
    /// The node it reached does not lead (or stopped leading before appending it).
    NotLeader,
    /// No leader could be reached (no connection, or a link that broke before sending).
    Unreachable,
    /// The leader is going away and took nothing more (a shutdown or a leadership handover).
    Stopping,
    /// A read index could not be confirmed, or the node did not apply up to it in time.
    NoReadIndex,
}

impl fmt::Display for NotApplied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotApplied::NotLeader => "not the leader",
            NotApplied::Unreachable => "leader unreachable",
            NotApplied::Stopping => "leader stopping",
            NotApplied::NoReadIndex => "no read index",
        })
    }
}

impl<T> Outcome<T> {
    pub fn is_not_applied(&self) -> bool {
        matches!(self, Outcome::NotApplied(_))
    }

    /// Applies `f` to a `Done` value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Done(value) => Outcome::Done(f(value)),
            Outcome::NotApplied(why) => Outcome::NotApplied(why),
            Outcome::Unknown(why) => Outcome::Unknown(why),
        }
    }
}

impl Outcome<Response> {
    /// The answer a client gets for this outcome of its request `id`, unless it is still to be
    /// retried (`None`). An unknown outcome becomes `OUTCOME_UNKNOWN` with its reason.
    pub fn settled(self, id: u64) -> Option<Response> {
        match self {
            Outcome::Done(response) => Some(response),
            Outcome::NotApplied(_) => None,
            Outcome::Unknown(why) => Some(Response::new(id, unknown(&why))),
        }
    }
}

/// The `OUTCOME_UNKNOWN` answer for a change whose fate is unknown for the reason `why`.
pub fn unknown(why: &str) -> Reply {
    Reply::error(ErrorCode::OutcomeUnknown, format!("{why}; it may or may not have been applied"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unknown_outcome_becomes_outcome_unknown() {
        let done = Outcome::Done(Response::new(3, Reply::ok())).settled(3);
        assert_eq!(done, Some(Response::new(3, Reply::ok())));
        assert_eq!(Outcome::<Response>::NotApplied(NotApplied::NotLeader).settled(3), None);
        let unknown = Outcome::<Response>::Unknown("the link broke".into()).settled(3).unwrap();
        assert_eq!(unknown.id, 3);
        assert!(matches!(unknown.reply, Reply::Error { code: ErrorCode::OutcomeUnknown, .. }));
    }
}
