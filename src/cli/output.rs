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
//!
//! A write's replication picture follows its answer in the shell, and in scripts with `--acks`:
//! in the human format as a second, coloured line (`leader n1 · term 2 · index 42 · n2 acked
//! 0.8 ms · n3 unreachable`), in the raw format as `leader=1 term=2 index=42 n2=acked:0.80ms
//! n3=unreachable`. JSON always carries it, as `"leader"` and `"replication"` fields of the
//! answer's object.
//!
//! Help text is printed as it is (in JSON: `{"type":"help","value":"..."}`).
//! Errors found by kv-cli itself (bad quoting, lost connection) are shown like error answers,
//! with the codes [`BAD_INPUT`] and [`CONNECTION`]. Every answer is flushed at once, so a program
//! reading kv-cli's output line by line never waits on a buffer.

use super::split::quote;
use crate::protocol::message::{AckState, Cell, Replication, Reply, Response};
use base64::Engine as _;
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
            let mut json = json_value(&response.reply);
            if let Some(leader) = response.leader {
                json["leader"] = leader.into();
            }
            if let Some(replication) = &response.replication {
                json["replication"] = serde_json::to_value(replication).unwrap_or_default();
            }
            return print_line(&mut io::stdout().lock(), &json.to_string());
        }
        self.reply(&response.reply);
        let (Some(leader), Some(replication)) = (response.leader, &response.replication) else { return };
        if self.acks {
            let line = match self.format {
                Format::Human => ack_line(leader, replication),
                _ => raw_ack_line(leader, replication),
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
            Format::Json => json_value(reply).to_string(),
            Format::Raw => match reply {
                Reply::Status { value } => value.clone(),
                Reply::Nil => String::new(),
                Reply::Integer { value } => value.to_string(),
                Reply::Bulk { value } => return write_raw_bulk(value),
                Reply::Table { columns, rows } => raw_table(columns, rows),
                Reply::Error { .. } => unreachable!("handled above"),
            },
            Format::Human => match reply {
                Reply::Status { value } => value.green().to_string(),
                Reply::Nil => "(nil)".dimmed().to_string(),
                Reply::Integer { value } => format!("(integer) {}", value.to_string().cyan()),
                Reply::Bulk { value } => quote(value).yellow().to_string(),
                Reply::Table { columns, rows } => human_table(columns, rows),
                Reply::Error { .. } => unreachable!("handled above"),
            },
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

/// The JSON form of an answer.
pub fn json_value(reply: &Reply) -> serde_json::Value {
    match reply {
        Reply::Status { value } => serde_json::json!({"type": "status", "value": value}),
        Reply::Nil => serde_json::json!({"type": "nil"}),
        Reply::Integer { value } => serde_json::json!({"type": "integer", "value": value}),
        Reply::Bulk { value } => match std::str::from_utf8(value) {
            Ok(text) => serde_json::json!({"type": "bulk", "value": text}),
            Err(_) => serde_json::json!({
                "type": "bulk",
                "value": base64::engine::general_purpose::STANDARD.encode(value),
                "encoding": "base64",
            }),
        },
        Reply::Table { columns, rows } => {
            serde_json::json!({"type": "table", "columns": columns, "rows": rows})
        }
        Reply::Error { code, message } => {
            serde_json::json!({"type": "error", "code": code, "message": message})
        }
    }
}

fn json_error(code: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "code": code, "message": message}).to_string()
}

/// `leader n1 · term 2 · index 42 · n2 acked 0.8 ms · n3 unreachable`, coloured by state.
pub fn ack_line(leader: u64, replication: &Replication) -> String {
    let mut parts = vec![
        format!("leader n{leader}"),
        format!("term {}", replication.term),
        format!("index {}", replication.index),
    ];
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
pub fn raw_ack_line(leader: u64, replication: &Replication) -> String {
    let mut line = format!("leader={leader} term={} index={}", replication.term, replication.index);
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

fn write_raw_bulk(value: &[u8]) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(value).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{ErrorCode, PeerAck};
    use serde_bytes::ByteBuf;

    fn json_line(reply: &Reply) -> String {
        json_value(reply).to_string()
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
            ack_line(1, &replication),
            "  leader n1 · term 2 · index 42 · n2 acked 0.8 ms · n3 unreachable · n4 pending"
        );
        assert_eq!(
            raw_ack_line(1, &replication),
            "leader=1 term=2 index=42 n2=acked:0.84ms n3=unreachable n4=pending"
        );
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
