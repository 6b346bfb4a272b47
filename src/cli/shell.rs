//! The interactive shell: rustyline for editing, history (Ctrl-R searches it), completion of
//! command names, inline hints of a command's arguments, and typed, coloured answers.
//!
//! After each write the shell shows its replication picture: the leader, the log index and term,
//! and for each peer whether (and how fast) it acknowledged the write.
//!
//! The shell survives its node: when the connection is lost it connects to the next address
//! that answers and sends the command in flight there again. A read changed nothing; a write is
//! numbered in the shell's session, so the cluster applies it at most once however often it is
//! sent. A write the node answers `OUTCOME_UNKNOWN` is sent again to the next node too; after
//! [`super::MAX_SENDS`] tries the shell reports `OUTCOME_UNKNOWN` itself.

use super::output::{BAD_INPUT, CONNECTION, Printer, TOO_FEW_ACKS};
use super::{ExitStatus, LocalCommand, Options, connect, judge, local_command, writes};
use crate::client::{Client, ClientError, NodeInfo};
use crate::command::split::split_args;
use crate::protocol::message::{ErrorCode, Reply, Request};
use colored::Colorize;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};
use std::borrow::Cow;
use std::path::PathBuf;
use tokio::runtime::Runtime;

/// The variable that names the history file; `/dev/null` turns history off.
pub const HISTORY_ENV: &str = "KV_CLI_HISTFILE";
/// The history file's name in the user's home directory.
pub const HISTORY_FILE: &str = ".kv_cli_history";

/// Runs the shell until Ctrl-D or `QUIT`.
pub fn run(runtime: Runtime, options: Options, printer: Printer) -> ExitStatus {
    let config = Config::builder()
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        .history_ignore_space(true);
    let config = match config.history_ignore_dups(true).and_then(|c| c.max_history_size(10_000)) {
        Ok(config) => config.build(),
        Err(e) => return fail(&printer, &e),
    };
    let mut editor: Editor<ShellHelper, FileHistory> = match Editor::with_config(config) {
        Ok(editor) => editor,
        Err(e) => return fail(&printer, &e),
    };
    let color = colored::control::SHOULD_COLORIZE.should_colorize();
    editor.set_helper(Some(ShellHelper { color, block: None }));
    let history = history_path();
    if let Some(path) = &history {
        // A missing file is normal on first use.
        let _ = editor.load_history(path);
    }

    let mut shell = Shell { runtime, options, printer, connection: None, next_addr: 0, next_page: None };
    shell.connect();
    let mut block = super::block::Block::default();
    loop {
        let user = shell.options.login.as_ref().map(|l| format!("{}@", l.user)).unwrap_or_default();
        let prompt = match &shell.connection {
            _ if block.is_open() => "txn... ".to_string(),
            Some((_, info)) => format!("{user}{}> ", info.addr),
            None => "not connected> ".to_string(),
        };
        if let Some(helper) = editor.helper_mut() {
            helper.block = block
                .body()
                .map(|lines| lines.iter().flat_map(|l| l.split_whitespace()).map(String::from).collect());
        }
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                if block.abandon() {
                    shell.printer.info("(TXN block dropped)");
                }
                continue;
            }
            Err(ReadlineError::Eof) => return ExitStatus::Success,
            Err(e) => return fail(&shell.printer, &e),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        // Passwords stay out of the history file.
        if !carries_password(line) {
            let _ = editor.add_history_entry(line);
            if let Some(path) = &history
                && let Err(e) = editor.append_history(path)
            {
                shell.printer.error(BAD_INPUT, &format!("cannot write history to {}: {e}", path.display()));
            }
        }
        let line = match block.feed(line) {
            Ok(Some(command)) => command,
            Ok(None) => continue,
            Err(e) => {
                shell.printer.error(BAD_INPUT, &e);
                continue;
            }
        };
        match split_args(&line) {
            Err(e) => shell.printer.error(BAD_INPUT, &e.to_string()),
            Ok(args) if args.is_empty() => {}
            Ok(args) => match local_command(&args) {
                Some(LocalCommand::Quit) => return ExitStatus::Success,
                Some(LocalCommand::Help(Ok(text))) => shell.printer.info(&text),
                Some(LocalCommand::Help(Err(e))) => shell.printer.error(BAD_INPUT, &e),
                Some(LocalCommand::Demo(command)) => shell.demo(command),
                None => shell.call(args),
            },
        }
        // A SCAN page with more keys after it: the next one on Enter, like a pager.
        while let Some(next) = shell.next_page.take() {
            match editor.readline(&MORE_PROMPT.dimmed().to_string()) {
                Ok(line) if line.trim().is_empty() => shell.call(next),
                _ => break,
            }
        }
    }
}

/// Shown after a SCAN page when more keys follow.
const MORE_PROMPT: &str = "-- more: Enter for the next page, anything else to stop -- ";

/// Whether a line sets or sends a password: `AUTH`, `USER ADD`, `USER PASSWD`.
fn carries_password(line: &str) -> bool {
    let words: Vec<String> = line.split_whitespace().take(2).map(str::to_ascii_uppercase).collect();
    match words.as_slice() {
        [first, ..] if first == "AUTH" => true,
        [first, second] => first == "USER" && (second == "ADD" || second == "PASSWD"),
        _ => false,
    }
}

fn fail(printer: &Printer, e: &ReadlineError) -> ExitStatus {
    printer.error(CONNECTION, &format!("terminal error: {e}"));
    ExitStatus::Failure
}

/// Where history lives: `$KV_CLI_HISTFILE`, else `~/.kv_cli_history`; `None` when turned off.
fn history_path() -> Option<PathBuf> {
    let path = match std::env::var_os(HISTORY_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(HISTORY_FILE),
    };
    (path != std::path::Path::new("/dev/null")).then_some(path)
}

struct Shell {
    runtime: Runtime,
    options: Options,
    printer: Printer,
    connection: Option<(Client, NodeInfo)>,
    /// Where the next connection attempt starts in the address list.
    next_addr: usize,
    /// The command for the next page of the SCAN just shown, if more keys follow.
    next_page: Option<Vec<Vec<u8>>>,
}

impl Shell {
    /// Connects to the first address that answers, starting at `next_addr`; reports failure and
    /// stays disconnected.
    fn connect(&mut self) -> bool {
        match self.runtime.block_on(connect(&self.options, self.next_addr)) {
            Ok((client, info, index)) => {
                self.next_addr = index;
                self.connection = Some((client, info));
                true
            }
            Err(e) => {
                self.printer.error(CONNECTION, &e.to_string());
                false
            }
        }
    }

    /// Runs a dot command on the demo's nodes; moves to another node if it took ours down.
    fn demo(&mut self, command: Result<super::demo::DemoCommand, String>) {
        let outcome = match (command, &self.options.demo) {
            (Err(e), _) => (Err(e), None),
            (Ok(_), None) => (Err("dot commands work only in kv-cli demo".to_string()), None),
            (Ok(command), Some(demo)) => demo.run(command),
        };
        match outcome.0 {
            Ok(text) => self.printer.info(&text),
            Err(e) => return self.printer.error(BAD_INPUT, &e),
        }
        if outcome.1.is_some()
            && outcome.1.as_deref() == self.connection.as_ref().map(|(_, info)| info.addr.as_str())
        {
            self.connection = None;
            self.next_addr += 1;
            self.connect();
        }
    }

    fn call(&mut self, args: Vec<Vec<u8>>) {
        let writes = writes(&args);
        // Made once, on the first connection, and sent as it is (with its session number) to
        // each node tried.
        let mut request: Option<Request> = None;
        for attempt in 1..=super::MAX_SENDS {
            if self.connection.is_none() && !self.connect() {
                return;
            }
            if let Some((client, info)) = self.connection.as_mut()
                && client.gone_while_idle()
            {
                // The node went away while the shell sat idle: move on before sending anything.
                let gone = format!(
                    "{} (node {}) closed the connection; trying the next node",
                    info.addr, info.node_id
                );
                self.printer.warn(CONNECTION, &gone);
                self.connection = None;
                self.next_addr += 1;
                if !self.connect() {
                    return;
                }
            }
            let Some((client, info)) = self.connection.as_mut() else { return };
            let request = request.get_or_insert_with(|| client.prepare(args.clone()));
            let resendable = !writes || request.once.is_some();
            match self.runtime.block_on(client.call_request(request.clone())) {
                Ok(response)
                    if resendable
                        && attempt < super::MAX_SENDS
                        && matches!(response.reply, Reply::Error { code: ErrorCode::OutcomeUnknown, .. }) =>
                {
                    let message = format!(
                        "{} (node {}) could not learn the write's outcome; sending it again to the next node \
                         (it is applied at most once)",
                        info.addr, info.node_id
                    );
                    self.printer.warn(ErrorCode::OutcomeUnknown.as_str(), &message);
                    self.connection = None;
                    self.next_addr += 1;
                }
                Ok(response) => {
                    let response =
                        if writes && attempt > 1 { super::after_resending(response) } else { response };
                    if let (Some(Ok(user)), Some(Ok(password)), false) = (
                        args.get(1).map(|u| String::from_utf8(u.clone())),
                        args.get(2).map(|p| String::from_utf8(p.clone())),
                        response.reply.is_error(),
                    ) && args[0].eq_ignore_ascii_case(b"AUTH")
                    {
                        // Later connections (after a failover) log in the same way.
                        self.options.login = Some(super::Login { user, password });
                    }
                    self.printer.response(&response);
                    self.next_page = next_page(&args, &response.reply);
                    if let (_, Some(warning)) = judge(&response, &self.options) {
                        self.printer.warn(TOO_FEW_ACKS, &warning);
                    }
                    return;
                }
                Err(e) => {
                    let code = match e {
                        ClientError::Timeout(_) => ErrorCode::Timeout.as_str(),
                        _ => CONNECTION,
                    };
                    let lost = format!("{} (node {}): {e}", info.addr, info.node_id);
                    let unapplied = matches!(e, ClientError::GoingAway(_));
                    self.connection = None;
                    self.next_addr += 1;
                    if writes && (!unapplied && !resendable || attempt == super::MAX_SENDS) {
                        let message = format!("{lost}; the write may or may not have been applied");
                        return self.printer.error(ErrorCode::OutcomeUnknown.as_str(), &message);
                    }
                    if attempt == super::MAX_SENDS {
                        return self.printer.error(code, &lost);
                    }
                    self.printer.warn(CONNECTION, &format!("{lost}; trying the next node"));
                }
            }
        }
    }
}

/// For a `SCAN` whose answer says more keys follow: the command for the next page.
fn next_page(args: &[Vec<u8>], reply: &Reply) -> Option<Vec<Vec<u8>>> {
    let Reply::Entries { more: true, next: Some(next), .. } = reply else { return None };
    if !args.first()?.eq_ignore_ascii_case(b"SCAN") {
        return None;
    }
    let words: Vec<bytes::Bytes> = args[1..].iter().map(|a| bytes::Bytes::copy_from_slice(a)).collect();
    let scan = crate::command::scan::parse(&words, usize::MAX).ok()?;
    Some(scan.continued(next).to_args())
}

/// Completion, hints and colour for the line editor.
struct ShellHelper {
    color: bool,
    /// The words of an open `TXN` block's lines so far, which hints and completion follow.
    block: Option<Vec<String>>,
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(super::hints::complete(&line[..pos], self.block.as_deref()))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _: &Context<'_>) -> Option<String> {
        (pos == line.len()).then(|| super::hints::hint(line, self.block.as_deref())).flatten()
    }
}

impl Highlighter for ShellHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.color { Cow::Owned(hint.dimmed().to_string()) } else { Cow::Borrowed(hint) }
    }

    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, default: bool) -> Cow<'b, str> {
        if self.color && default {
            Cow::Owned(prompt.green().bold().to_string())
        } else {
            Cow::Borrowed(prompt)
        }
    }
}

impl Validator for ShellHelper {}
impl Helper for ShellHelper {}
