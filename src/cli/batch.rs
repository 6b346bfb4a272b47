//! Non-interactive kv-cli: `-c` commands and piped input, one command per line.
//!
//! Commands are pipelined over one connection: up to [`WINDOW`] are in flight at once, so a
//! 10,000-line file costs a handful of round trips, not 10,000. Answers are printed in input
//! order. With `--stop-on-error` the window is one, so that no command after a failed one is ever
//! sent, let alone applied.
//!
//! If the connection is lost (the node died), kv-cli connects to the next address that answers
//! and sends again what was in flight: reads changed nothing, and writes are numbered in
//! kv-cli's session, so the cluster applies each at most once however often it is sent. A write
//! the node answers `OUTCOME_UNKNOWN` is handled the same way: kv-cli moves to the next node and
//! sends it (and everything after it) again. A command is sent at most [`super::MAX_SENDS`] times;
//! a write still unanswered then is reported as `OUTCOME_UNKNOWN` (exit status 4).
//!
//! Blank lines and lines starting with `#` are skipped; `QUIT` ends the input. A `TXN` may span
//! lines, from a line holding only `TXN` to one holding only `END` ([`super::block`]).

use super::output::{BAD_INPUT, CONNECTION, Printer, TOO_FEW_ACKS};
use super::{ExitStatus, LocalCommand, Options, connect, judge, local_command, writes};
use crate::client::{ClientError, RequestSender, ResponseReceiver, expect_id};
use crate::command::split::split_args;
use crate::protocol::message::{ErrorCode, Reply, Request, Response};
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// Commands in flight at most on the connection.
pub const WINDOW: usize = 1000;
/// Connections lost in a row, with no answer in between, before kv-cli gives up.
const MAX_LOSSES_IN_A_ROW: usize = 3;

/// A line of input, or why it could not be read.
pub type Line = Result<String, String>;

/// One line of input, in the order it must be reported.
enum Slot {
    /// Sent `sends` times, the last with this id; waiting for its answer.
    Sent { id: u64, request: Request, writes: bool, sends: usize },
    /// Known without the node: help text, or an error with its code and exit status.
    Done(Result<String, (String, String, ExitStatus)>),
    /// A demo dot command, run once everything before it is answered.
    Demo(super::demo::DemoCommand),
}

/// The live connection and where it goes.
struct Link {
    sender: RequestSender,
    receiver: ResponseReceiver,
    addr: String,
    /// Index in the address list, so that a reconnection starts with the next one.
    index: usize,
}

impl Link {
    async fn open(options: &Options, first: usize) -> Result<Link, ClientError> {
        let (client, info, index) = connect(options, first).await?;
        let (sender, receiver) = client.split();
        Ok(Link { sender, receiver, addr: info.addr, index })
    }

    /// Replaces an idle link with one to the next node that answers; false (after saying why)
    /// if none does.
    async fn move_on(&mut self, options: &Options, printer: &Printer) -> bool {
        match Link::open(options, self.index + 1).await {
            Ok(link) => {
                *self = link;
                true
            }
            Err(e) => {
                printer.error(CONNECTION, &e.to_string());
                false
            }
        }
    }
}

/// Runs every line that `lines` yields and returns the exit status.
pub async fn run(mut lines: mpsc::Receiver<Line>, options: &Options, printer: &Printer) -> ExitStatus {
    let mut link = match Link::open(options, 0).await {
        Ok(link) => link,
        Err(e) => {
            printer.error(CONNECTION, &e.to_string());
            return ExitStatus::Failure;
        }
    };
    let window = if options.stop_on_error { 1 } else { WINDOW };
    let mut queue: VecDeque<Slot> = VecDeque::new();
    let mut in_flight = 0;
    let mut input_done = false;
    let mut status = ExitStatus::Success;
    let mut losses = 0;
    let mut block = super::block::Block::default();

    loop {
        // Report everything at the front that is already known.
        while let Some(Slot::Done(outcome)) = queue.front() {
            match outcome {
                Ok(text) => printer.info(text),
                Err((code, message, failure)) => {
                    printer.error(code, message);
                    status = status.or(*failure);
                }
            }
            queue.pop_front();
            if options.stop_on_error && status != ExitStatus::Success {
                return status;
            }
        }
        if let Some(Slot::Demo(command)) = queue.front() {
            let (result, down) = match &options.demo {
                Some(demo) => demo.run(*command),
                None => (Err("dot commands work only in kv-cli demo".to_string()), None),
            };
            queue.pop_front();
            match result {
                Ok(text) => printer.info(&text),
                Err(e) => {
                    printer.error(BAD_INPUT, &e);
                    status = status.or(ExitStatus::ErrorReply);
                }
            }
            // Move off the node just taken down before anything is sent to it.
            if down.as_deref() == Some(link.addr.as_str()) && !link.move_on(options, printer).await {
                return status.or(ExitStatus::Failure);
            }
            continue;
        }
        if input_done && queue.is_empty() {
            return status;
        }
        let barrier = queue.iter().any(|slot| matches!(slot, Slot::Demo(_)));
        tokio::select! {
            biased;
            answer = next_answer(&mut link.receiver, options), if in_flight > 0 => {
                let Some(Slot::Sent { id, request, sends, .. }) = queue.front() else { unreachable!("the front is a sent command") };
                let resend = request.once.is_some() && *sends < super::MAX_SENDS;
                // Set when what is in flight goes to the next node: why, and whether the node
                // said it applied none of it.
                let move_on = match answer.and_then(|response| expect_id(response, *id)) {
                    Ok(Response { reply: Reply::Error { code: ErrorCode::OutcomeUnknown, message }, .. }) if resend => {
                        // Sent again to the next node, with everything behind it, in order.
                        Some((format!("{} could not learn a write's outcome ({message})", link.addr), false))
                    }
                    Ok(response) => {
                        let response = match queue.front() {
                            Some(Slot::Sent { writes: true, sends, .. }) if *sends > 1 => super::after_resending(response),
                            _ => response,
                        };
                        if let Some(Slot::Sent { request, .. }) = queue.front()
                            && !matches!(response.reply, Reply::Error { code: ErrorCode::OutcomeUnknown, .. })
                        {
                            // Final: it will not be sent again, and the cluster may forget it.
                            link.sender.answered(request.once);
                        }
                        queue.pop_front();
                        in_flight -= 1;
                        losses = 0;
                        printer.response(&response);
                        let (verdict, warning) = judge(&response, options);
                        if let Some(warning) = warning {
                            printer.warn(TOO_FEW_ACKS, &warning);
                        }
                        status = status.or(verdict);
                        if options.stop_on_error && verdict != ExitStatus::Success {
                            return status;
                        }
                        None
                    }
                    Err(e) => {
                        losses += 1;
                        let lost = format!("{} lost ({e})", link.addr);
                        if losses > MAX_LOSSES_IN_A_ROW {
                            printer.error(CONNECTION, &format!("{lost}; giving up after {MAX_LOSSES_IN_A_ROW} reconnections"));
                            return status.or(ExitStatus::Failure);
                        }
                        Some((lost, matches!(e, ClientError::GoingAway(_))))
                    }
                };
                if let Some((lost, unapplied)) = move_on {
                    match reconnect(&mut queue, &link, options, &lost, unapplied).await {
                        Ok((new_link, resent)) => {
                            link = new_link;
                            in_flight = resent;
                        }
                        Err(e) => {
                            printer.error(CONNECTION, &format!("{lost}; cannot reconnect: {e}"));
                            return status.or(ExitStatus::Failure);
                        }
                    }
                }
            }
            line = lines.recv(), if !input_done && in_flight < window && !barrier => {
                let line = match line {
                    None => {
                        if block.abandon() {
                            queue.push_back(bad_input("the input ended inside a TXN block (no END)".to_string()));
                        }
                        input_done = true;
                        let _ = link.sender.flush().await;
                        continue;
                    }
                    Some(Err(unreadable)) => {
                        queue.push_back(bad_input(unreadable));
                        continue;
                    }
                    Some(Ok(line)) => line,
                };
                let trimmed = line.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                let command = match block.feed(trimmed) {
                    Ok(Some(command)) => command,
                    Ok(None) => continue,
                    Err(e) => {
                        queue.push_back(bad_input(e));
                        continue;
                    }
                };
                let trimmed = command.as_str();
                match split_args(trimmed) {
                    Err(e) => queue.push_back(bad_input(format!("{e}: {trimmed}"))),
                    Ok(args) => match local_command(&args) {
                        Some(LocalCommand::Quit) => input_done = true,
                        Some(LocalCommand::Help(Ok(text))) => queue.push_back(Slot::Done(Ok(text))),
                        Some(LocalCommand::Help(Err(e))) => queue.push_back(bad_input(e)),
                        Some(LocalCommand::Demo(Ok(command))) => queue.push_back(Slot::Demo(command)),
                        Some(LocalCommand::Demo(Err(e))) => queue.push_back(bad_input(e)),
                        None => {
                            // The node went away while nothing was in flight: move on first, so
                            // that this command is not lost with the old connection.
                            if in_flight == 0
                                && link.receiver.gone_while_idle()
                                && !link.move_on(options, printer).await
                            {
                                return status.or(ExitStatus::Failure);
                            }
                            let writes = writes(&args);
                            let request = link.sender.prepare(args);
                            // A failed send shows up as a lost connection on the read side.
                            let id = link.sender.send_request(request.clone()).await.unwrap_or(0);
                            queue.push_back(Slot::Sent { id, request, writes, sends: 1 });
                            in_flight += 1;
                        }
                    },
                }
                // Send what is queued once the input pauses, the window is full or a dot command
                // waits for the answers. A failed flush means a lost connection, which the read
                // side reports with the details.
                let barrier = matches!(queue.back(), Some(Slot::Demo(_)));
                if lines.is_empty() || in_flight == window || input_done || barrier {
                    let _ = link.sender.flush().await;
                }
            }
        }
    }
}

fn bad_input(message: String) -> Slot {
    Slot::Done(Err((BAD_INPUT.to_string(), message, ExitStatus::ErrorReply)))
}

/// After a lost connection (or an unknown outcome): marks in-flight writes that may not be sent
/// again as of unknown outcome (unnumbered ones, unless the node said it applied none of them,
/// and any sent [`super::MAX_SENDS`] times), connects to the next node that answers and resends
/// the rest there, as they were. Returns the new link and how many commands are in flight on it.
async fn reconnect(
    queue: &mut VecDeque<Slot>,
    old: &Link,
    options: &Options,
    lost: &str,
    unapplied: bool,
) -> Result<(Link, usize), ClientError> {
    for slot in queue.iter_mut() {
        if let Slot::Sent { writes: true, request, sends, .. } = &slot {
            let numbered = request.once.is_some();
            let give_up = if numbered { *sends >= super::MAX_SENDS } else { !unapplied };
            if give_up {
                let message = format!("{lost} after the write was sent: it may or may not have been applied");
                *slot = Slot::Done(Err((
                    ErrorCode::OutcomeUnknown.to_string(),
                    message,
                    ExitStatus::OutcomeUnknown,
                )));
            }
        }
    }
    let mut link = Link::open(options, old.index + 1).await?;
    let mut resent = 0;
    for slot in queue.iter_mut() {
        if let Slot::Sent { id, request, sends, .. } = slot {
            *id = link.sender.send_request(request.clone()).await?;
            *sends += 1;
            resent += 1;
        }
    }
    link.sender.flush().await?;
    Ok((link, resent))
}

async fn next_answer(receiver: &mut ResponseReceiver, options: &Options) -> Result<Response, ClientError> {
    tokio::time::timeout(options.timeout, receiver.next())
        .await
        .map_err(|_| ClientError::Timeout(options.timeout))?
}
