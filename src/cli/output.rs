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
//! Help text is printed as it is (in JSON: `{"type":"help","value":"..."}`).
//! Errors found by kv-cli itself (bad quoting, lost connection) are shown like error answers,
//! with the codes [`BAD_INPUT`] and [`CONNECTION`]. Every answer is flushed at once, so a program
//! reading kv-cli's output line by line never waits on a buffer.

use super::split::quote;
use crate::protocol::message::Reply;
use base64::Engine as _;
use colored::Colorize;
use std::io::{self, Write};

/// Code of a command line kv-cli could not parse.
pub const BAD_INPUT: &str = "BAD_INPUT";
/// Code of a failure to reach a node or of a connection lost mid-command.
pub const CONNECTION: &str = "CONNECTION";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Raw,
    Json,
}

/// Writes answers to stdout and errors to stderr in one [`Format`].
pub struct Printer {
    format: Format,
}

impl Printer {
    /// `color` applies to the human format only.
    pub fn new(format: Format, color: bool) -> Printer {
        colored::control::set_override(color && format == Format::Human);
        Printer { format }
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
            Format::Json => json_line(reply),
            Format::Raw => match reply {
                Reply::Status { value } => value.clone(),
                Reply::Nil => String::new(),
                Reply::Integer { value } => value.to_string(),
                Reply::Bulk { value } => return write_raw_bulk(value),
                Reply::Error { .. } => unreachable!("handled above"),
            },
            Format::Human => match reply {
                Reply::Status { value } => value.green().to_string(),
                Reply::Nil => "(nil)".dimmed().to_string(),
                Reply::Integer { value } => format!("(integer) {}", value.to_string().cyan()),
                Reply::Bulk { value } => quote(value).yellow().to_string(),
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

/// The NDJSON form of a successful answer.
pub fn json_line(reply: &Reply) -> String {
    let json = match reply {
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
        Reply::Error { code, message } => return json_error(code.as_str(), message),
    };
    json.to_string()
}

fn json_error(code: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "code": code, "message": message}).to_string()
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
    use crate::protocol::message::ErrorCode;
    use serde_bytes::ByteBuf;

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
}
