//! Golden scripts for what each command does to the store and answers: `src/store/testscripts/`.
//!
//! - `run "LINE" ...`: parses each line (kv-cli's quoting) as a command and applies it, a write
//!   through `apply_write`, a read through `read_many`; prints the answer and the revision.
//! - `flush`: moves the applied writes into the database.
//! - `bootstrap`: writes the system's records (root and the cluster id).
//! - `reopen`: flushes, closes and opens the store again.
//! - `changes from=N`: the change log from revision N.
//! - `once session=S seq=N "LINE"`: applies a write as numbered in a client session.
//!
//! Rewrite the expected output with `UPDATE_GOLDENFILES=1 cargo test --lib store`.

use super::Store;
use crate::command::{Command, Limits};
use crate::protocol::message::Reply;
use serde_bytes::ByteBuf;
use std::error::Error;
use std::fmt::Write as _;
use test_each_file::test_each_path;

const LIMITS: Limits =
    Limits { max_key_bytes: 64, max_value_bytes: 256, max_keys: 16, max_write_bytes: 65536 };

test_each_path! { in "src/store/testscripts" as scripts => run_script }

fn run_script(path: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let store = Some(Store::open(dir.path()).unwrap());
    goldenscript::run(&mut Runner { dir, store }, path).expect("goldenscript failed")
}

struct Runner {
    dir: tempfile::TempDir,
    store: Option<Store>,
}

impl Runner {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open")
    }
}

fn text(bytes: &[u8]) -> String {
    crate::command::split::quote(bytes)
}

fn show(reply: &Reply, out: &mut String, indent: &str) {
    match reply {
        Reply::Status { value } => writeln!(out, "{indent}{value}"),
        Reply::Nil => writeln!(out, "{indent}(nil)"),
        Reply::Integer { value } => writeln!(out, "{indent}(integer) {value}"),
        Reply::Bulk { value } => writeln!(out, "{indent}{}", text(value)),
        Reply::Error { code, message } => writeln!(out, "{indent}{code} {message}"),
        Reply::Table { rows, .. } => writeln!(out, "{indent}(table of {} rows)", rows.len()),
        Reply::Array { items } => {
            let _ = writeln!(out, "{indent}array of {}:", items.len());
            items.iter().for_each(|item| show(item, out, &format!("{indent}  ")));
            Ok(())
        }
        Reply::Entries { entries, more, next } => {
            for e in entries {
                let value = e.value.as_ref().map(|v| format!(" = {}", text(v))).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{indent}{}{value} (create {}, mod {}, version {})",
                    text(&e.key),
                    e.create_revision,
                    e.mod_revision,
                    e.version
                );
            }
            let next = next.as_ref().map(|n| format!(", next {}", text(n))).unwrap_or_default();
            writeln!(out, "{indent}({} entries, more: {more}{next})", entries.len())
        }
        Reply::Txn { succeeded, results } => {
            let _ = writeln!(out, "{indent}{} ran:", if *succeeded { "THEN" } else { "ELSE" });
            results.iter().for_each(|item| show(item, out, &format!("{indent}  ")));
            Ok(())
        }
    }
    .expect("writing to a string");
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        command: &goldenscript::Command,
        _: &goldenscript::Context,
    ) -> Result<String, Box<dyn Error>> {
        let mut output = String::new();
        match command.name.as_str() {
            "run" => {
                for arg in &command.args {
                    let goldenscript::Argument::Positional(line) = arg else {
                        return Err(format!("unexpected argument {arg:?}").into());
                    };
                    let args =
                        crate::command::split::split_args(line)?.into_iter().map(ByteBuf::from).collect();
                    writeln!(output, "> {line}")?;
                    let store = self.store();
                    match Command::parse(args, &LIMITS) {
                        Err(e) => show(&e.to_reply(), &mut output, "  "),
                        Ok(Command::Write(write)) => {
                            let applied = store.apply_write(&write)?;
                            show(&applied.reply, &mut output, "  ");
                            writeln!(output, "  @{}", applied.revision)?;
                        }
                        Ok(Command::Read(read)) => {
                            let (replies, revision) = store.read_many([&read])?;
                            show(&replies[0], &mut output, "  ");
                            writeln!(output, "  @{revision}")?;
                        }
                        Ok(other) => return Err(format!("not a read or write: {other:?}").into()),
                    }
                }
            }
            "flush" => self.store().flush(|_| Ok(()))?,
            "once" => {
                let mut args = command.consume_args();
                let session: u64 = args.take_key("session").ok_or("once needs session=")?.parse()?;
                let seq: u64 = args.take_key("seq").ok_or("once needs seq=")?.parse()?;
                let line = args.next_pos().ok_or("once needs a command")?.to_string();
                args.reject_next()?;
                let words =
                    crate::command::split::split_args(&line)?.into_iter().map(ByteBuf::from).collect();
                let Ok(Command::Write(write)) = Command::parse(words, &LIMITS) else {
                    return Err(format!("not a write: {line}").into());
                };
                let write = crate::command::Write::Once {
                    session,
                    seq,
                    answered_below: 0,
                    write: std::sync::Arc::new(write),
                };
                let store = self.store();
                let applied = store.apply_write(&write)?;
                writeln!(output, "> {line} (session {session}, seq {seq})")?;
                show(&applied.reply, &mut output, "  ");
                writeln!(output, "  @{}", applied.revision)?;
            }
            "bootstrap" => {
                // The system's records (root, the cluster id), as a new cluster writes them.
                use crate::auth::SystemWrite;
                let store = self.store();
                for change in [
                    SystemWrite::ClusterId { id: "c1".into() },
                    SystemWrite::Bootstrap { root_password: "hash".into() },
                ] {
                    let applied = store.apply_write(&crate::command::Write::System(change))?;
                    writeln!(output, "{:?} @{}", applied.reply, applied.revision)?;
                }
            }
            "reopen" => {
                self.store().flush(|_| Ok(()))?;
                self.store = None;
                self.store = Some(Store::open(self.dir.path())?);
            }
            "changes" => {
                let mut args = command.consume_args();
                let from = args.take_key("from").map_or(Ok(0), str::parse)?;
                args.reject_next()?;
                for (revision, changes) in self.store().changes_since(from)? {
                    let shown: Vec<String> = changes
                        .iter()
                        .map(|(key, record)| match record {
                            Some(record) => {
                                let (meta, value) = super::record::decode(record).expect("a record");
                                format!("{}={} v{}", text(key), text(value), meta.version)
                            }
                            None => format!("{} deleted", text(key)),
                        })
                        .collect();
                    writeln!(output, "{revision}: {}", shown.join(", "))?;
                }
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        Ok(output)
    }
}
