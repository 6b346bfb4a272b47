//! How kv-cli shows answers: typed and coloured for people, bare for scripts, NDJSON for programs.
//!
//! | answer  | human                 | raw      | json                                         |
//! |---------|-----------------------|----------|----------------------------------------------|
//! | status  | `OK`                  | `OK`     | `{"type":"status","value":"OK"}`             |
//! | nil     | `(nil)`               | (empty)  | `{"type":"nil"}`                             |
//! | integer | `(integer) 3`         | `3`      | `{"type":"integer","value":3}`               |
//! | bulk    | `"v"` (quoted)        | `v`      | `{"type":"bulk","value":"v"}` (+ `"encoding":"base64"` if not UTF-8) |
//! | error   | `(error) CODE msg` on stderr | `(error) CODE msg` on stderr | `{"type":"error","code":"CODE","message":"msg"}` |
//!
//! | table   | aligned columns       | tab-separated, header first | `{"type":"table","columns":[..],"rows":[[..]]}` |
//! | array   | `1) "v"` per item     | one item per line | `{"type":"array","items":[..]}` |
//! | entries | key, value and metadata columns; `(more ...)` if the page stopped | `key<TAB>value` per line; `(more ...)` on stderr | `{"type":"entries","entries":[{"key":..,"value":..,"create_revision":..,"mod_revision":..,"version":..}],"more":false}` (+ `"next"`) |
//! | txn     | the branch that ran, then `1) OK` per operation | `then` or `else`, then one result per line | `{"type":"txn","succeeded":true,"results":[..]}` |
//!
//! A write's replication picture follows its answer in the shell, and in scripts with `--acks`:
//! in the human format as a second, coloured line (`leader n1 · term 2 · index 42 · rev 7 · n2
//! acked 0.8 ms · n3 unreachable`), in the raw format as `leader=1 term=2 index=42 revision=7
//! n2=acked:0.80ms n3=unreachable`. JSON always carries it, as `"leader"`, `"revision"` and
//! `"replication"` fields of the answer's object (reads of keys carry `"revision"` too).
//!
//! Help text is printed as it is (in JSON: `{"type":"help","value":"..."}`).
//! Errors found by kv-cli itself (bad quoting, lost connection) are shown like error answers,
//! with the codes [`BAD_INPUT`] and [`CONNECTION`]. Every answer is flushed at once, so a program
//! reading kv-cli's output line by line never waits on a buffer.

use crate::command::split::quote;
use crate::protocol::json::{reply_json, response_json};
use crate::protocol::message::{AckState, Cell, KeyValue, Replication, Reply, Response};
use colored::Colorize;
use std::io::{self, Write};

/// Code of a command line kv-cli could not parse.
pub const BAD_INPUT: &str = "BAD_INPUT";
/// Code of a failure to reach a node or of a connection lost mid-command.
pub const CONNECTION: &str = "CONNECTION";
/// Code of the warning for a write that fewer peers than `--min-acks` acknowledged.
pub const TOO_FEW_ACKS: &str = "TOO_FEW_ACKS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Raw,
    Json,
}

/// Writes answers to stdout and errors to stderr in one [`Format`].
pub struct Printer {
    format: Format,
    /// Show the replication picture after writes (JSON always carries it).
    acks: bool,
}

impl Printer {
    /// `color` applies to the human format only; `acks` to the human and raw formats (JSON always
    /// carries the picture).
    pub fn new(format: Format, color: bool, acks: bool) -> Printer {
        colored::control::set_override(color && format == Format::Human);
        Printer { format, acks }
    }

    /// Shows one answer and, for a write, its replication picture.
    pub fn response(&self, response: &Response) {
        if self.format == Format::Json {
            return print_line(&mut io::stdout().lock(), &response_json(response).to_string());
        }
        self.reply(&response.reply);
        let (Some(leader), Some(replication)) = (response.leader, &response.replication) else { return };
        if self.acks {
            let line = match self.format {
                Format::Human => ack_line(leader, response.revision, replication),
                _ => raw_ack_line(leader, response.revision, replication),
            };
            print_line(&mut io::stdout().lock(), &line);
        }
    }

    /// Shows replication pictures from now on (the shell always does).
    pub fn show_acks(&mut self) {
        self.acks = true;
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Shows one answer.
    pub fn reply(&self, reply: &Reply) {
        if let Reply::Error { code, message } = reply {
            return self.error(code.as_str(), message);
        }
        let line = match self.format {
            Format::Json => reply_json(reply).to_string(),
            Format::Raw => {
                let (mut out, mut notes) = (Vec::new(), Vec::new());
                raw(reply, &mut out, &mut notes);
                let mut stdout = io::stdout().lock();
                let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
                // A page that stopped early says so where a script's parser will not trip on
                // it, and a person running the script still sees that keys were left out.
                notes.iter().for_each(|note| print_line(&mut io::stderr().lock(), note));
                return;
            }
            Format::Human => human(reply),
        };
        print_line(&mut io::stdout().lock(), &line);
    }

    /// Shows an error: an error answer from the node or one of kv-cli's own.
    pub fn error(&self, code: &str, message: &str) {
        match self.format {
            Format::Json => print_line(&mut io::stdout().lock(), &json_error(code, message)),
            Format::Raw => print_line(&mut io::stderr().lock(), &format!("(error) {code} {message}")),
            Format::Human => {
                let line = format!("(error) {code} {message}").red().to_string();
                print_line(&mut io::stderr().lock(), &line);
            }
        }
    }

    /// Shows a warning about an answer already shown. JSON output leaves it out: the answer's
    /// object carries the facts, and answers stay one object per command.
    pub fn warn(&self, code: &str, message: &str) {
        if self.format != Format::Json {
            self.error(code, message);
        }
    }

    /// Shows text that kv-cli answers itself (help). In JSON it is one `{"type":"help"}` object,
    /// so that answers stay one per command.
    pub fn info(&self, text: &str) {
        let line = match self.format {
            Format::Json => serde_json::json!({"type": "help", "value": text}).to_string(),
            Format::Human | Format::Raw => text.to_string(),
        };
        print_line(&mut io::stdout().lock(), &line);
    }
}

/// An answer for people: typed, quoted and coloured.
fn human(reply: &Reply) -> String {
    let numbered = |items: &[Reply]| {
        let lines: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(n, item)| {
                let text = human(item).replace('\n', &format!("\n{:width$}", "", width = 4));
                format!("{}) {text}", n + 1)
            })
            .collect();
        lines.join("\n")
    };
    match reply {
        Reply::Status { value } => value.green().to_string(),
        Reply::Nil => "(nil)".dimmed().to_string(),
        Reply::Integer { value } => format!("(integer) {}", value.to_string().cyan()),
        Reply::Bulk { value } => quote(value).yellow().to_string(),
        Reply::Table { columns, rows } => human_table(columns, rows),
        Reply::Error { code, message } => format!("(error) {code} {message}").red().to_string(),
        Reply::Array { items } if items.is_empty() => "(empty array)".dimmed().to_string(),
        Reply::Array { items } => numbered(items),
        Reply::Entries { entries, more, next } => {
            human_entries(entries, *more, next.as_ref().map(|n| n.as_slice()))
        }
        Reply::Txn { succeeded, results } => {
            let branch = match succeeded {
                true => "THEN ran: every compare held".green().to_string(),
                false => "ELSE ran: a compare failed".yellow().to_string(),
            };
            if results.is_empty() { branch } else { format!("{branch}\n{}", numbered(results)) }
        }
    }
}

/// A page of keys as a table: key, value (unless keys only), and metadata.
fn human_entries(entries: &[KeyValue], more: bool, next: Option<&[u8]>) -> String {
    if entries.is_empty() {
        return "(no keys)".dimmed().to_string();
    }
    let with_values = entries.iter().any(|e| e.value.is_some());
    let mut columns = vec!["key".to_string()];
    if with_values {
        columns.push("value".to_string());
    }
    columns.extend(["create_rev", "mod_rev", "version"].map(String::from));
    let rows: Vec<Vec<Cell>> = entries
        .iter()
        .map(|e| {
            let mut row = vec![Cell::Text(quote(&e.key))];
            if with_values {
                row.push(e.value.as_ref().map_or(Cell::Nil, |v| Cell::Text(quote(v))));
            }
            let number = |n: u64| Cell::Integer(i64::try_from(n).unwrap_or(i64::MAX));
            row.extend([number(e.create_revision), number(e.mod_revision), number(e.version)]);
            row
        })
        .collect();
    let mut text = human_table(&columns, &rows);
    if more {
        text.push_str(&format!("\n{}", more_keys_note(next).dimmed()));
    }
    text
}

/// What follows a scan page that stopped before the end of its range, in every form but JSON.
fn more_keys_note(next: Option<&[u8]>) -> String {
    let next = next.map(quote).unwrap_or_default();
    format!("(more keys follow; the next page continues at {next})")
}

/// An answer for scripts: bare values, one per line, into `out`; what is not a value (a scan page
/// that stopped before the end of its range) into `notes`, for stderr.
fn raw(reply: &Reply, out: &mut Vec<u8>, notes: &mut Vec<String>) {
    let mut line = |bytes: &[u8]| {
        out.extend_from_slice(bytes);
        out.push(b'\n');
    };
    match reply {
        Reply::Status { value } => line(value.as_bytes()),
        Reply::Nil => line(b""),
        Reply::Integer { value } => line(value.to_string().as_bytes()),
        Reply::Bulk { value } => line(value),
        Reply::Table { columns, rows } => line(raw_table(columns, rows).as_bytes()),
        Reply::Error { code, message } => line(format!("(error) {code} {message}").as_bytes()),
        Reply::Array { items } => items.iter().for_each(|item| raw(item, out, notes)),
        Reply::Entries { entries, more, next } => {
            for entry in entries {
                let mut row = entry.key.to_vec();
                if let Some(value) = &entry.value {
                    row.push(b'\t');
                    row.extend_from_slice(value);
                }
                line(&row);
            }
            if *more {
                notes.push(more_keys_note(next.as_ref().map(|n| n.as_slice())));
            }
        }
        Reply::Txn { succeeded, results } => {
            line(if *succeeded { b"then" } else { b"else" });
            results.iter().for_each(|item| raw(item, out, notes));
        }
    }
}

fn json_error(code: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "code": code, "message": message}).to_string()
}

/// `leader n1 · term 2 · index 42 · n2 acked 0.8 ms · n3 unreachable`, coloured by state.
pub fn ack_line(leader: u64, revision: Option<u64>, replication: &Replication) -> String {
    let mut parts = vec![
        format!("leader n{leader}"),
        format!("term {}", replication.term),
        format!("index {}", replication.index),
    ];
    parts.extend(revision.map(|r| format!("rev {r}")));
    for peer in &replication.peers {
        parts.push(match (peer.state, peer.ms) {
            (AckState::Acked, Some(ms)) => format!("n{} acked {ms:.1} ms", peer.node).green().to_string(),
            (AckState::Acked, None) => format!("n{} acked", peer.node).green().to_string(),
            (AckState::Pending, _) => format!("n{} pending", peer.node).yellow().to_string(),
            (AckState::Unreachable, _) => format!("n{} unreachable", peer.node).red().to_string(),
        });
    }
    format!("  {}", parts.join(&" · ".dimmed().to_string()))
}

/// `leader=1 term=2 index=42 n2=acked:0.80ms n3=unreachable`: one line, easy to split.
pub fn raw_ack_line(leader: u64, revision: Option<u64>, replication: &Replication) -> String {
    let mut line = format!("leader={leader} term={} index={}", replication.term, replication.index);
    if let Some(revision) = revision {
        line.push_str(&format!(" revision={revision}"));
    }
    for peer in &replication.peers {
        line.push_str(&match (peer.state, peer.ms) {
            (AckState::Acked, Some(ms)) => format!(" n{}=acked:{ms:.2}ms", peer.node),
            (AckState::Acked, None) => format!(" n{}=acked", peer.node),
            (AckState::Pending, _) => format!(" n{}=pending", peer.node),
            (AckState::Unreachable, _) => format!(" n{}=unreachable", peer.node),
        });
    }
    line
}

fn cell_text(cell: &Cell) -> String {
    match cell {
        Cell::Integer(n) => n.to_string(),
        Cell::Text(text) => text.clone(),
        Cell::Nil => "-".to_string(),
    }
}

fn raw_table(columns: &[String], rows: &[Vec<Cell>]) -> String {
    let mut lines = vec![columns.join("\t")];
    lines.extend(rows.iter().map(|row| row.iter().map(cell_text).collect::<Vec<_>>().join("\t")));
    lines.join("\n")
}

fn human_table(columns: &[String], rows: &[Vec<Cell>]) -> String {
    let texts: Vec<Vec<String>> = rows.iter().map(|row| row.iter().map(cell_text).collect()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| {
            texts
                .iter()
                .map(|row| row.get(c).map_or(0, String::len))
                .chain([columns[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let pad = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut lines = vec![pad(columns.to_vec()).bold().to_string()];
    for row in texts {
        let line = pad(row);
        lines.push(if line.contains("leader") {
            line.green().to_string()
        } else if line.contains("unreachable") {
            line.red().to_string()
        } else {
            line
        });
    }
    lines.join("\n")
}

fn print_line(out: &mut impl Write, line: &str) {
    // A closed stdout (`kv-cli ... | head -1`) is not worth a panic; the exit code still tells.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{ErrorCode, PeerAck};
    use serde_bytes::ByteBuf;

    fn json_line(reply: &Reply) -> String {
        reply_json(reply).to_string()
    }

    #[test]
    fn json_marks_only_non_utf8_values_as_base64() {
        let text = Reply::Bulk { value: ByteBuf::from("héllo") };
        assert_eq!(json_line(&text), r#"{"type":"bulk","value":"héllo"}"#);
        let binary = Reply::Bulk { value: ByteBuf::from(vec![0u8, 0xff]) };
        assert_eq!(json_line(&binary), r#"{"encoding":"base64","type":"bulk","value":"AP8="}"#);
        assert_eq!(json_line(&Reply::Nil), r#"{"type":"nil"}"#);
        assert_eq!(json_line(&Reply::Integer { value: 2 }), r#"{"type":"integer","value":2}"#);
        let error = Reply::error(ErrorCode::WrongArity, "m");
        assert_eq!(json_line(&error), r#"{"code":"WRONG_ARITY","message":"m","type":"error"}"#);
    }

    #[test]
    fn the_ack_line_names_every_peer_and_its_state() {
        colored::control::set_override(false);
        let replication = Replication {
            term: 2,
            index: 42,
            peers: vec![
                PeerAck { node: 2, state: AckState::Acked, ms: Some(0.84) },
                PeerAck { node: 3, state: AckState::Unreachable, ms: None },
                PeerAck { node: 4, state: AckState::Pending, ms: None },
            ],
        };
        assert_eq!(
            ack_line(1, Some(7), &replication),
            "  leader n1 · term 2 · index 42 · rev 7 · n2 acked 0.8 ms · n3 unreachable · n4 pending"
        );
        assert_eq!(
            raw_ack_line(1, Some(7), &replication),
            "leader=1 term=2 index=42 revision=7 n2=acked:0.84ms n3=unreachable n4=pending"
        );
    }

    #[test]
    fn a_raw_scan_page_that_stopped_early_says_where_to_go_on_apart_from_its_values() {
        let entry = |key: &str, value: Option<&str>| KeyValue {
            key: ByteBuf::from(key),
            value: value.map(ByteBuf::from),
            create_revision: 1,
            mod_revision: 2,
            version: 3,
        };
        let page = |more: bool| Reply::Entries {
            entries: vec![entry("a", Some("1")), entry("b", None)],
            more,
            next: more.then(|| ByteBuf::from("b\0")),
        };
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        raw(&page(false), &mut out, &mut notes);
        assert_eq!((out.as_slice(), notes.len()), (&b"a\t1\nb\n"[..], 0));
        let txn = Reply::Txn { succeeded: true, results: vec![page(true)] };
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        raw(&txn, &mut out, &mut notes);
        assert_eq!(out, b"then\na\t1\nb\n");
        assert_eq!(notes, [r#"(more keys follow; the next page continues at "b\x00")"#]);
    }

    #[test]
    fn tables_align_in_human_form_and_tab_separate_in_raw_form() {
        colored::control::set_override(false);
        let columns = vec!["id".to_string(), "role".to_string()];
        let rows =
            vec![vec![Cell::Integer(1), Cell::Text("leader".into())], vec![Cell::Integer(10), Cell::Nil]];
        assert_eq!(human_table(&columns, &rows), "id  role\n1   leader\n10  -");
        assert_eq!(raw_table(&columns, &rows), "id\trole\n1\tleader\n10\t-");
    }
}
