//! Linearizable reads share read-index checks.
//!
//! A linearizable read on the leader must see every write acknowledged before the read arrived.
//! openraft's `ensure_linearizable(ReadIndex)` gives that: it notes the commit index, confirms
//! with a quorum of voters that this node still leads, and waits until the state machine has
//! applied up to the noted index. That is a network round trip and a trip through the Raft core
//! per call, so with many clients reading at once the checks, not the reads, would be the work.
//!
//! [`ReadBarrier`] runs one check at a time and lets every read that arrived before a check
//! *started* ride on it. A read that arrives while a check is under way waits for the next one:
//! the running check may have noted the commit index before the read arrived, so it proves
//! nothing about writes acknowledged in between. Under load, each check then serves every read
//! that arrived during the previous one.

use crate::raft::KvRaft;
use openraft::ReadPolicy;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shares read-index checks among concurrent linearizable reads.
pub struct ReadBarrier {
    /// How many checks have started; the number of a check is its value after starting.
    started: AtomicU64,
    /// The number of the latest check that succeeded, or 0.
    confirmed: AtomicU64,
    /// Checks run one at a time.
    running: tokio::sync::Mutex<()>,
}

impl ReadBarrier {
    pub fn new() -> ReadBarrier {
        ReadBarrier {
            started: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Returns once a check that started after this call began has succeeded, so that reading
    /// the state machine now is linearizable; `false` if the check failed (this node does not
    /// lead, or could not reach a quorum).
    pub async fn confirm(&self, raft: &KvRaft) -> bool {
        let arrived = self.started.load(Ordering::SeqCst);
        let _turn = self.running.lock().await;
        // A check numbered above `arrived` started after this read arrived.
        if self.confirmed.load(Ordering::SeqCst) > arrived {
            return true;
        }
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let ok = raft.ensure_linearizable(ReadPolicy::ReadIndex).await.is_ok();
        if ok {
            self.confirmed.store(number, Ordering::SeqCst);
        }
        ok
    }
}
