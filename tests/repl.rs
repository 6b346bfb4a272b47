//! The interactive shell, driven through a real pseudo-terminal.

mod common;

use common::{CLI_BIN, TestNode};
use rexpect::session::{PtySession, spawn_command};
use std::path::Path;
use std::process::Command;

/// A shell in a pseudo-terminal. rustyline puts the terminal in raw mode at each prompt, which
/// drops anything typed before it, so like a person the test waits for the prompt before typing.
struct Repl {
    session: PtySession,
    prompt: String,
}

impl Repl {
    /// Types keys without pressing Enter.
    fn type_keys(&mut self, keys: &str) {
        self.session.send(keys).unwrap();
        // The pty writer is line-buffered; keys without a newline would sit in it.
        self.session.flush().unwrap();
    }

    /// Types `line`, expects `answer`, then waits for the next prompt: a fresh one, after a
    /// newline, not a redraw of the line being edited (which repeats the prompt).
    fn run(&mut self, line: &str, answer: &str) {
        self.session.send_line(line).unwrap();
        self.session.exp_string(answer).unwrap();
        self.session.exp_regex(&format!(r"\n[^\n]*{}", self.prompt.replace('.', r"\."))).unwrap();
    }
}

/// Starts kv-cli in a pty against `node`, with its history in `history`.
fn repl(node: &TestNode, history: &Path, color: bool) -> Repl {
    let mut cmd = Command::new(CLI_BIN);
    cmd.args(["--addr", &node.addr.to_string()]).env("KV_CLI_HISTFILE", history).env("TERM", "xterm");
    if color {
        cmd.env_remove("NO_COLOR");
    } else {
        cmd.env("NO_COLOR", "1");
    }
    let mut session = spawn_command(cmd, Some(15_000)).unwrap();
    let prompt = format!("{}> ", node.addr);
    session.exp_string(&prompt).unwrap();
    Repl { session, prompt }
}

#[test]
fn the_shell_runs_commands_completes_hints_and_keeps_history() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let mut r = repl(&node, &history, false);

    r.run(r#"SET greeting "hello world""#, "OK");
    r.run("GET greeting", r#""hello world""#);
    r.run("EXISTS greeting nope", "(integer) 1");
    r.run("FLY away", "(error) UNKNOWN_COMMAND unknown command 'FLY'");
    r.run(r#"SET "unclosed"#, "(error) BAD_INPUT unbalanced quotes");
    r.run("HELP SET", "Set key to hold value");

    // Tab completes the command name: "TX<tab>" becomes "TXN ".
    r.type_keys("TX\t");
    r.session.exp_string("TXN ").unwrap();
    r.run("EXISTS greeting THEN GET greeting", "THEN ran");

    // A TXN typed over several lines, from TXN to END, is one command; then the key's metadata.
    let txn = std::mem::replace(&mut r.prompt, "txn... ".to_string());
    r.run("TXN", "");
    // Inside the block, hints follow the TXN's grammar: here a compare's arguments.
    r.type_keys("VAL");
    r.session.exp_string("VALUE key =|!=|<|> value").unwrap();
    r.run("UE greeting = \"hello world\"", "");
    for line in ["THEN", "DEL greeting"] {
        r.run(line, "");
    }
    r.prompt = txn;
    r.run("END", "1) (integer) 1");
    r.run("SET k v", "rev ");
    r.run("GET k WITHMETA", "create_rev");

    // The hint shows the arguments still to type; Ctrl-C drops the line without running it.
    r.type_keys("SET ");
    r.session.exp_string("SET key value").unwrap();
    r.type_keys("never");
    r.session.send_control('c').unwrap();
    // Redraws of the edited line repeat the prompt; only the fresh one follows a newline.
    r.session.exp_regex(&format!(r"\n[^\n]*{}", r.prompt.replace('.', r"\."))).unwrap();
    r.run("EXISTS never greeting", "(integer) 0");

    r.session.send_control('d').unwrap();
    r.session.exp_eof().unwrap();
    let saved = std::fs::read_to_string(&history).unwrap();
    for line in [r#"SET greeting "hello world""#, "GET greeting", "DEL greeting", "END", "HELP SET"] {
        assert!(saved.lines().any(|l| l == line), "{line:?} missing from history:\n{saved}");
    }
    assert!(!saved.contains("SET never"), "an interrupted line is not history");
}

/// A long SCAN pages like a pager: Enter shows the next page, anything else stops.
#[test]
fn a_long_scan_pages_on_enter() {
    let node = TestNode::start(&[]);
    let out = node.cli(&["-c", "MSET p/1 a p/2 b p/3 c p/4 d p/5 e"]);
    assert_eq!(out.code, 0, "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut r = repl(&node, &dir.path().join("history"), false);
    let more = "-- more: Enter for the next page";
    r.session.send_line("SCAN PREFIX p/ LIMIT 2").unwrap();
    r.session.exp_string("\"p/2\"").unwrap();
    r.session.exp_string(more).unwrap();
    r.session.send_line("").unwrap();
    r.session.exp_string("\"p/4\"").unwrap();
    r.session.exp_string(more).unwrap();
    r.session.send_line("").unwrap();
    r.session.exp_string("\"p/5\"").unwrap();
    // The last page: no more prompt, the shell's own again.
    r.session.exp_regex(&format!(r"\n[^\n]*{}", r.prompt.replace('.', r"\."))).unwrap();
    r.session.send_line("SCAN PREFIX p/ LIMIT 1 REVERSE").unwrap();
    r.session.exp_string("\"p/5\"").unwrap();
    r.session.exp_string(more).unwrap();
    r.run("q", "");
    r.run("GET p/1", "\"a\"");
    r.session.send_line("QUIT").unwrap();
    r.session.exp_eof().unwrap();
}

#[test]
fn answers_are_coloured_unless_no_color_is_set() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut r = repl(&node, &dir.path().join("history"), true);
    r.run("DEL nothing", "(integer) \x1b[36m0");
    r.session.send_line("QUIT").unwrap();
    r.session.exp_eof().unwrap();

    let mut r = repl(&node, Path::new("/dev/null"), false);
    r.run("DEL nothing", "(integer) 0");
    r.session.send_line("QUIT").unwrap();
    r.session.exp_eof().unwrap();
}

#[test]
fn the_shell_survives_its_node_going_away() {
    let mut node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut r = repl(&node, &dir.path().join("history"), false);
    r.run("SET k v", "OK");

    node.kill9();
    r.prompt = "not connected> ".to_string();
    r.run("GET k", "(error) CONNECTION");
    r.run("GET k", "no node answered");

    node.restart();
    r.prompt = format!("{}> ", node.addr);
    r.run("GET k", r#""v""#);
    r.session.send_line("QUIT").unwrap();
    r.session.exp_eof().unwrap();
}
