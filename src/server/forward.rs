//! Forwarding a client's writes and membership changes from a follower to the leader, so that a
//! client may talk to any node. (Linearizable reads are not forwarded: a follower answers them
//! behind a read index, see [`super::reads`].)
//!
//! Each client connection gets its own connection to the leader, opened on first use, so a
//! client's requests keep their order end to end and are pipelined to the leader as a batch. The
//! leader knows the connection is a forwarding one from its hello and never forwards again; if it
//! is no longer the leader it answers `NOT_LEADER`, which means "not applied": only those
//! requests are retried, at whichever node leads next.
//!
//! What happens when the leader connection fails decides what the client is told:
//! - before anything was sent (cannot connect, the node is not the leader): nothing was applied,
//!   so the requests are retried;
//! - after the requests were sent: every one left unanswered may have been applied, so it is
//!   answered `OUTCOME_UNKNOWN` and never re-sent (that could apply it twice);
//! - unless the leader said it is going away (`SHUTTING_DOWN` notice): then nothing it left
//!   unanswered was applied, and everything is retried at the next leader.

use crate::client::{Client, ClientError, RequestSender, ResponseReceiver};
use crate::protocol::message::{ErrorCode, Reply, Request, Response};
use std::time::Duration;
use tokio::time::Instant;

/// How long forwarding waits past the request timeout for the leader's own timeout answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);
/// The longest a connection attempt to the leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One client connection's link to the leader.
pub(super) struct Forwarder {
    me: u64,
    link: Option<Link>,
}

struct Link {
    leader: u64,
    sender: RequestSender,
    receiver: ResponseReceiver,
}

impl Forwarder {
    pub fn new(me: u64) -> Forwarder {
        Forwarder { me, link: None }
    }

    /// Forwards `requests` in order to node `leader` at `addr`. Returns, for each, its answer, or
    /// `None` when it was certainly not applied and should be tried again.
    pub async fn forward(
        &mut self,
        leader: u64,
        addr: &str,
        requests: &[&Request],
        deadline: Instant,
    ) -> Vec<Option<Response>> {
        let mut answers: Vec<Option<Response>> = requests.iter().map(|_| None).collect();
        if self.link.as_mut().is_some_and(|link| link.leader != leader || link.receiver.gone_while_idle()) {
            // Another leader, or the old link died while idle (nothing sent on it is lost).
            self.link = None;
        }
        let link = match self.link.take() {
            Some(link) => link,
            None => match self.connect(leader, addr, deadline).await {
                Some(link) => link,
                None => return answers,
            },
        };
        let Link { mut sender, mut receiver, .. } = link;
        let exchange = async {
            for request in requests {
                sender.send_request((*request).clone()).await?;
            }
            sender.flush().await?;
            for (answer, request) in answers.iter_mut().zip(requests) {
                let response = receiver.next().await?;
                if let Reply::Error { code: ErrorCode::NotLeader, .. } = response.reply {
                    continue;
                }
                if let (0, Reply::Error { code: ErrorCode::ShuttingDown, message }) =
                    (response.id, &response.reply)
                {
                    // The leader is going away: what it has not answered, it did not apply.
                    return Err(ClientError::GoingAway(message.clone()));
                }
                *answer = Some(Response { id: request.id, ..response });
            }
            Ok::<(), ClientError>(())
        };
        match tokio::time::timeout_at(deadline + ANSWER_MARGIN, exchange).await {
            Ok(Ok(())) => self.link = Some(Link { leader, sender, receiver }),
            failed => {
                let not_applied = matches!(failed, Ok(Err(ClientError::GoingAway(_))));
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in time".to_string(),
                };
                tracing::warn!(leader, error = %why, "forwarding to the leader failed");
                for (answer, request) in answers.iter_mut().zip(requests) {
                    if answer.is_none() && !not_applied {
                        let message = format!(
                            "the connection to leader {leader} failed ({why}) after the write was sent: \
                             it may or may not have been applied"
                        );
                        *answer =
                            Some(Response::new(request.id, Reply::error(ErrorCode::OutcomeUnknown, message)));
                    }
                }
            }
        }
        answers
    }

    async fn connect(&self, leader: u64, addr: &str, deadline: Instant) -> Option<Link> {
        let timeout = deadline.saturating_duration_since(Instant::now()).min(CONNECT_TIMEOUT);
        match Client::connect_forwarding(addr, timeout, self.me).await {
            Ok((client, info)) if info.node_id == leader => {
                let (sender, receiver) = client.split();
                Some(Link { leader, sender, receiver })
            }
            Ok((_, info)) => {
                tracing::warn!(
                    leader,
                    addr,
                    found = info.node_id,
                    "the leader's address answers as another node"
                );
                None
            }
            Err(e) => {
                tracing::debug!(leader, addr, error = %e, "cannot reach the leader");
                None
            }
        }
    }
}
