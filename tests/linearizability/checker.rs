//! A linearizability checker for histories of one key (a register that can also be deleted), in
//! the style of Wing & Gong with Lowe's memoization: search for an order of the operations that
//! respects real time (an operation that returned before another was invoked comes first) and in
//! which every result is what a single copy of the key would have answered.
//!
//! An operation whose outcome is unknown (the client lost its answer) never returned: it may take
//! effect at any point after its invocation, or never, which is the same as taking effect last.

use std::collections::HashSet;

/// What a client did to the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// `SET key value`.
    Set(String),
    /// `DEL key`, answering how many keys it removed (0 or 1).
    Del(i64),
    /// `GET key`, answering the value or nil.
    Get(Option<String>),
    /// `CAS key expected new`, answering whether it swapped.
    Cas {
        expected: String,
        new: String,
        swapped: bool,
    },
    /// A write whose answer was lost: it may or may not have been applied.
    SetUnknown(String),
    DelUnknown,
    CasUnknown {
        expected: String,
        new: String,
    },
}

/// One operation: what it was, and when it was invoked and returned (any monotonic unit).
#[derive(Debug, Clone)]
pub struct Event {
    pub op: Op,
    pub invoked: u128,
    /// `None` for an operation that never returned.
    pub returned: Option<u128>,
}

/// The key's value after `op` when it was `state` before, or `None` if `op`'s result contradicts
/// `state`.
fn step(state: &Option<String>, op: &Op) -> Option<Option<String>> {
    match op {
        Op::Set(v) | Op::SetUnknown(v) => Some(Some(v.clone())),
        Op::Del(removed) => (*removed == i64::from(state.is_some())).then_some(None),
        Op::DelUnknown => Some(None),
        Op::Get(seen) => (seen == state).then(|| state.clone()),
        Op::Cas { expected, new, swapped } => {
            let holds = state.as_ref() == Some(expected);
            (holds == *swapped).then(|| if holds { Some(new.clone()) } else { state.clone() })
        }
        Op::CasUnknown { expected, new } => {
            Some(if state.as_ref() == Some(expected) { Some(new.clone()) } else { state.clone() })
        }
    }
}

/// Whether `history` (of one key, starting absent) is linearizable.
pub fn linearizable(history: &[Event]) -> bool {
    let mut failed = HashSet::new();
    search(history, &mut vec![false; history.len()], &None, &mut failed)
}

fn search(
    history: &[Event],
    done: &mut Vec<bool>,
    state: &Option<String>,
    failed: &mut HashSet<(Vec<bool>, Option<String>)>,
) -> bool {
    if done.iter().all(|d| *d) {
        return true;
    }
    if failed.contains(&(done.clone(), state.clone())) {
        return false;
    }
    // Only an operation invoked before every pending one has returned can go next.
    let horizon = history
        .iter()
        .zip(done.iter())
        .filter(|(_, d)| !**d)
        .filter_map(|(e, _)| e.returned)
        .min()
        .unwrap_or(u128::MAX);
    for i in 0..history.len() {
        if done[i] || history[i].invoked > horizon {
            continue;
        }
        if let Some(next) = step(state, &history[i].op) {
            done[i] = true;
            let found = search(history, done, &next, failed);
            done[i] = false;
            if found {
                return true;
            }
        }
    }
    failed.insert((done.clone(), state.clone()));
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(op: Op, invoked: u128, returned: u128) -> Event {
        Event { op, invoked, returned: Some(returned) }
    }

    fn set(v: &str) -> Op {
        Op::Set(v.to_string())
    }

    fn get(v: Option<&str>) -> Op {
        Op::Get(v.map(str::to_string))
    }

    #[test]
    fn a_sequential_history_that_reads_what_was_written_is_accepted() {
        let history = [
            event(get(None), 0, 1),
            event(set("a"), 2, 3),
            event(get(Some("a")), 4, 5),
            event(Op::Del(1), 6, 7),
            event(Op::Del(0), 8, 9),
            event(get(None), 10, 11),
        ];
        assert!(linearizable(&history));
    }

    #[test]
    fn a_stale_read_is_rejected() {
        // "b" was acknowledged before the read began, yet the read saw the older "a".
        let history = [event(set("a"), 0, 1), event(set("b"), 2, 3), event(get(Some("a")), 4, 5)];
        assert!(!linearizable(&history));
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in ["a", "b"] {
            let history = [event(set("a"), 0, 1), event(set("b"), 2, 6), event(get(Some(seen)), 3, 5)];
            assert!(linearizable(&history), "{seen}");
        }
    }

    #[test]
    fn reads_cannot_go_back_in_time_even_when_concurrent() {
        // Both reads overlap the write, but once one has seen "b" a later one cannot see "a".
        let history = [
            event(set("a"), 0, 1),
            event(set("b"), 2, 20),
            event(get(Some("b")), 3, 5),
            event(get(Some("a")), 6, 8),
        ];
        assert!(!linearizable(&history));
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never() {
        let unknown = Event { op: Op::SetUnknown("u".into()), invoked: 2, returned: None };
        let applied = [
            event(set("a"), 0, 1),
            unknown.clone(),
            event(get(Some("a")), 3, 4),
            event(get(Some("u")), 9, 10),
        ];
        assert!(linearizable(&applied));
        let never = [event(set("a"), 0, 1), unknown.clone(), event(get(Some("a")), 9, 10)];
        assert!(linearizable(&never));
        // But once seen, it stays applied.
        let flicker =
            [event(set("a"), 0, 1), unknown, event(get(Some("u")), 3, 4), event(get(Some("a")), 9, 10)];
        assert!(!linearizable(&flicker));
    }

    fn cas(expected: &str, new: &str, swapped: bool) -> Op {
        Op::Cas { expected: expected.to_string(), new: new.to_string(), swapped }
    }

    #[test]
    fn a_cas_swaps_only_from_the_value_it_expects() {
        let history = [
            event(set("a"), 0, 1),
            event(cas("a", "b", true), 2, 3),
            event(cas("a", "c", false), 4, 5),
            event(get(Some("b")), 6, 7),
        ];
        assert!(linearizable(&history));
        // Two concurrent CASes from the same value cannot both win.
        let both =
            [event(set("a"), 0, 1), event(cas("a", "b", true), 2, 5), event(cas("a", "c", true), 3, 6)];
        assert!(!linearizable(&both));
    }

    #[test]
    fn a_wrong_cas_result_is_rejected() {
        // The key held "a" when the CAS ran alone, yet it answered that it did not swap.
        let refused = [event(set("a"), 0, 1), event(cas("a", "b", false), 2, 3)];
        assert!(!linearizable(&refused));
        // It answered that it swapped, yet a later read still sees "a".
        let lost = [event(set("a"), 0, 1), event(cas("a", "b", true), 2, 3), event(get(Some("a")), 4, 5)];
        assert!(!linearizable(&lost));
        // A CAS whose answer was lost may have swapped, or not.
        let unknown = Event {
            op: Op::CasUnknown { expected: "a".into(), new: "b".into() },
            invoked: 2,
            returned: None,
        };
        for seen in ["a", "b"] {
            let history = [event(set("a"), 0, 1), unknown.clone(), event(get(Some(seen)), 4, 5)];
            assert!(linearizable(&history), "{seen}");
        }
    }

    #[test]
    fn a_delete_must_report_what_it_removed() {
        let history = [event(set("a"), 0, 1), event(Op::Del(0), 2, 3)];
        assert!(!linearizable(&history));
    }
}
