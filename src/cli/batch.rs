//! Non-interactive kv-cli: `-c` commands and piped input, one command per line.
//!
//! Commands are pipelined over one connection: up to [`WINDOW`] are in flight at once, so a
//! 10,000-line file costs a handful of round trips, not 10,000. Answers are printed in input
//! order. With `--stop-on-error` the window is one, so that no command after a failed one is ever
//! sent, let alone applied.
//!
//! Blank lines and lines starting with `#` are skipped; `QUIT` ends the input.

use super::output::{BAD_INPUT, CONNECTION, Printer};
use super::split::split_args;
use super::{ExitStatus, LocalCommand, Options, local_command};
use crate::client::ClientError;
use crate::client::{Client, ResponseReceiver, expect_id};
use crate::protocol::message::Response;
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// Commands in flight at most on the connection.
pub const WINDOW: usize = 1000;

/// A line of input, or why it could not be read.
pub type Line = Result<String, String>;

/// One line of input, in the order it must be reported.
enum Slot {
    /// Sent; waiting for the answer with this id.
    Sent(u64),
    /// Answered by kv-cli itself: a line it could not parse, or help text.
    Local(Result<String, String>),
}

/// Runs every line that `lines` yields and returns the exit status.
pub async fn run(mut lines: mpsc::Receiver<Line>, options: &Options, printer: &Printer) -> ExitStatus {
    let (client, _) = match Client::connect_any(&options.addrs, options.connect_timeout).await {
        Ok(connected) => connected,
        Err(e) => {
            printer.error(CONNECTION, &e.to_string());
            return ExitStatus::Failure;
        }
    };
    let (mut sender, mut receiver) = client.split();
    let window = if options.stop_on_error { 1 } else { WINDOW };
    let mut queue: VecDeque<Slot> = VecDeque::new();
    let mut in_flight = 0;
    let mut input_done = false;
    let mut status = ExitStatus::Success;

    loop {
        // Report everything at the front that is already known.
        while let Some(Slot::Local(outcome)) = queue.front() {
            match outcome {
                Ok(text) => printer.info(text),
                Err(message) => {
                    printer.error(BAD_INPUT, message);
                    status = status.or(ExitStatus::ErrorReply);
                }
            }
            queue.pop_front();
            if options.stop_on_error && status != ExitStatus::Success {
                return status;
            }
        }
        if input_done && queue.is_empty() {
            return status;
        }
        tokio::select! {
            biased;
            answer = next_answer(&mut receiver, options), if in_flight > 0 => {
                let Some(Slot::Sent(id)) = queue.pop_front() else { unreachable!("the front is a sent command") };
                in_flight -= 1;
                match answer.and_then(|response| expect_id(response, id)) {
                    Ok(reply) => {
                        printer.reply(&reply);
                        if reply.is_error() {
                            status = status.or(ExitStatus::ErrorReply);
                            if options.stop_on_error {
                                return status;
                            }
                        }
                    }
                    Err(e) => {
                        printer.error(CONNECTION, &format!(
                            "{e}; {} command(s) were sent without an answer and may or may not have been \
                             applied; the rest of the input was not sent",
                            in_flight + 1,
                        ));
                        return status.or(ExitStatus::Failure);
                    }
                }
            }
            line = lines.recv(), if !input_done && in_flight < window => {
                let line = match line {
                    None => {
                        input_done = true;
                        let _ = sender.flush().await;
                        continue;
                    }
                    Some(Err(unreadable)) => {
                        queue.push_back(Slot::Local(Err(unreadable)));
                        continue;
                    }
                    Some(Ok(line)) => line,
                };
                let trimmed = line.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                match split_args(trimmed) {
                    Err(e) => queue.push_back(Slot::Local(Err(format!("{e}: {trimmed}")))),
                    Ok(args) => match local_command(&args) {
                        Some(LocalCommand::Quit) => input_done = true,
                        Some(LocalCommand::Help(text)) => queue.push_back(Slot::Local(text)),
                        None => match sender.send(args).await {
                            Ok(id) => {
                                queue.push_back(Slot::Sent(id));
                                in_flight += 1;
                            }
                            Err(e) => {
                                printer.error(CONNECTION, &e.to_string());
                                return status.or(ExitStatus::Failure);
                            }
                        },
                    },
                }
                // Send what is queued once the input pauses or the window is full. A failed flush
                // means a lost connection, which the read side reports with the details.
                if lines.is_empty() || in_flight == window || input_done {
                    let _ = sender.flush().await;
                }
            }
        }
    }
}

async fn next_answer(receiver: &mut ResponseReceiver, options: &Options) -> Result<Response, ClientError> {
    tokio::time::timeout(options.timeout, receiver.next())
        .await
        .map_err(|_| ClientError::Timeout(options.timeout))?
}
