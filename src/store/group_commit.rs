//! Group commit: one writer thread that merges the write batches of all connections that are
//! waiting at the same moment into a single durable redb transaction.
//!
//! A durable commit costs an fsync (hundreds of microseconds here), whatever it holds. Committing
//! each client's write separately caps a node at a few thousand writes per second; merging what
//! is queued while the previous commit was syncing makes the cost per write fall as load rises,
//! without ever delaying a lone write.
//!
//! Order: jobs are applied in the order they were queued, each job's commands in their order.

use super::Store;
use crate::command::Command;
use crate::protocol::message::{ErrorCode, Reply};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// How many jobs one transaction takes at most, so one commit's latency stays bounded.
const MAX_JOBS_PER_COMMIT: usize = 512;
/// How many jobs may wait; senders wait beyond that, which pushes back on clients.
const QUEUE_DEPTH: usize = 1024;

struct Job {
    commands: Vec<Command>,
    done: oneshot::Sender<Vec<Reply>>,
}

/// A handle for queueing command batches to the writer thread. Cloning it is cheap; the thread
/// stops once every handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the writer thread. Join the handle after dropping every [`GroupCommit`] to be sure
    /// the last commit finished.
    pub fn start(store: Arc<Store>) -> std::io::Result<(GroupCommit, JoinHandle<()>)> {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let thread =
            std::thread::Builder::new().name("group-commit".into()).spawn(move || run(&store, queue))?;
        Ok((GroupCommit { jobs }, thread))
    }

    /// Runs `commands` in order, durably, and returns one reply per command. A storage failure
    /// becomes a `STORAGE` error reply for every command of the failed transaction: none of them
    /// was applied.
    pub async fn execute(&self, commands: Vec<Command>) -> Vec<Reply> {
        let n = commands.len();
        let shutting_down = || vec![Reply::error(ErrorCode::ShuttingDown, "the node is shutting down"); n];
        let (done, answer) = oneshot::channel();
        if self.jobs.send(Job { commands, done }).await.is_err() {
            return shutting_down();
        }
        answer.await.unwrap_or_else(|_| shutting_down())
    }
}

fn run(store: &Store, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        match store.execute(jobs.iter().flat_map(|job| &job.commands)) {
            Ok(replies) => {
                let mut replies = replies.into_iter();
                for job in jobs {
                    let mine = replies.by_ref().take(job.commands.len()).collect();
                    // The client may have gone; its write is committed all the same.
                    let _ = job.done.send(mine);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = jobs.len(), "commit failed; nothing in it was applied");
                for job in jobs {
                    let reply = Reply::error(ErrorCode::Storage, format!("not applied: {e}"));
                    let _ = job.done.send(vec![reply; job.commands.len()]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Read, Write};
    use bytes::Bytes;

    #[tokio::test]
    async fn concurrent_jobs_all_commit_and_answer_in_their_own_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (gc, thread) = GroupCommit::start(store.clone()).unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let gc = gc.clone();
                tokio::spawn(async move {
                    let key = Bytes::from(format!("k{i}"));
                    let value = Bytes::from(format!("v{i}"));
                    gc.execute(vec![
                        Command::Write(Write::Set { key: key.clone(), value }),
                        Command::Read(Read::Get { key }),
                    ])
                    .await
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let replies = task.await.unwrap();
            assert_eq!(replies[0], Reply::ok());
            assert_eq!(replies[1], Reply::Bulk { value: format!("v{i}").into_bytes().into() });
        }
        drop(gc);
        thread.join().unwrap();
        let count =
            store.read(&Read::Exists { keys: (0..50).map(|i| Bytes::from(format!("k{i}"))).collect() });
        assert_eq!(count.unwrap(), Reply::Integer { value: 50 });
    }
}
