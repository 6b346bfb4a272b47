//! The JSON form of answers: what `kv-cli --json` prints and what the console's stream carries,
//! documented in the README (kv-cli, `--json`).
//!
//! Byte strings are text when they are UTF-8, else base64 with an `encoding` field beside them.

use super::message::{Reply, Response};
use base64::Engine as _;

/// A byte string in JSON: as text if it is UTF-8, else base64 with `<field>_encoding` beside it.
fn json_bytes(object: &mut serde_json::Map<String, serde_json::Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            object.insert(field.to_string(), text.into());
        }
        Err(_) => {
            object.insert(field.to_string(), base64::engine::general_purpose::STANDARD.encode(bytes).into());
            object.insert(format!("{field}_encoding"), "base64".into());
        }
    }
}

/// The JSON form of an answer.
pub fn reply_json(reply: &Reply) -> serde_json::Value {
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
        Reply::Array { items } => {
            serde_json::json!({"type": "array", "items": items.iter().map(reply_json).collect::<Vec<_>>()})
        }
        Reply::Entries { entries, more, next } => {
            let entries: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    let mut object = serde_json::Map::new();
                    json_bytes(&mut object, "key", &e.key);
                    if let Some(value) = &e.value {
                        json_bytes(&mut object, "value", value);
                    }
                    object.insert("create_revision".into(), e.create_revision.into());
                    object.insert("mod_revision".into(), e.mod_revision.into());
                    object.insert("version".into(), e.version.into());
                    serde_json::Value::Object(object)
                })
                .collect();
            let mut object = serde_json::Map::new();
            object.insert("type".into(), "entries".into());
            object.insert("entries".into(), entries.into());
            object.insert("more".into(), (*more).into());
            if let Some(next) = next {
                json_bytes(&mut object, "next", next);
            }
            serde_json::Value::Object(object)
        }
        Reply::Txn { succeeded, results } => serde_json::json!({
            "type": "txn",
            "succeeded": succeeded,
            "results": results.iter().map(reply_json).collect::<Vec<_>>(),
        }),
    }
}

/// The JSON form of a whole answer: its reply, plus the leader, revision and replication picture
/// when it has them.
pub fn response_json(response: &Response) -> serde_json::Value {
    let mut json = reply_json(&response.reply);
    if let Some(leader) = response.leader {
        json["leader"] = leader.into();
    }
    if let Some(revision) = response.revision {
        json["revision"] = revision.into();
    }
    if let Some(replication) = &response.replication {
        json["replication"] = serde_json::to_value(replication).unwrap_or_default();
    }
    json
}
