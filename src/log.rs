//! The node's logging: one line per event on stderr, at the level `RUST_LOG` asks (default
//! `info`), with the messages openraft repeats on every tick held to one per [`REPEAT_EVERY`].
//!
//! A node cut off from the others logs, through openraft, "election timeout expired" on every
//! tick while its pre-vote is in flight (every few milliseconds) and a warning for every failed
//! heartbeat to every peer. The first of each says what is happening; the thousands after it
//! drown everything else. [`RepeatLimit`] lets one through per callsite per period.
//!
//! Deliberately not here: log files or rotation (stderr goes where the operator sends it).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// How often a repeating message gets through.
pub const REPEAT_EVERY: Duration = Duration::from_secs(10);

/// How the repeating messages begin.
const REPEATING: &[&str] = &["election timeout expired", "trigger pre-vote", "failed to send a heartbeat"];

/// Installs the node's logging for the whole process.
pub fn init_node_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry().with(filter).with(RepeatLimit::new(REPEAT_EVERY)).with(format).init();
}

/// Lets one of openraft's repeating messages through per callsite per `every`.
pub struct RepeatLimit {
    every: Duration,
    /// When each callsite (by name: file and line) last got through.
    last: Mutex<HashMap<&'static str, Instant>>,
}

impl RepeatLimit {
    pub fn new(every: Duration) -> RepeatLimit {
        RepeatLimit { every, last: Mutex::new(HashMap::new()) }
    }

    fn allow(&self, callsite: &'static str, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(callsite) {
            Some(at) if now.duration_since(*at) < self.every => false,
            _ => {
                last.insert(callsite, now);
                true
            }
        }
    }
}

/// The text of an event's message.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

impl<S: Subscriber> Layer<S> for RepeatLimit {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if !metadata.target().starts_with("openraft") {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if !REPEATING.iter().any(|repeating| message.0.starts_with(repeating)) {
            return true;
        }
        self.allow(metadata.name(), Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_message_gets_through_once_per_period_per_callsite() {
        let limit = RepeatLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(limit.allow("a.rs:1", t0));
        assert!(!limit.allow("a.rs:1", t0 + Duration::from_secs(9)));
        assert!(limit.allow("b.rs:2", t0 + Duration::from_secs(9)), "another callsite");
        assert!(limit.allow("a.rs:1", t0 + Duration::from_secs(10)));
    }
}
