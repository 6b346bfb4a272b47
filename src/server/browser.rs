//! One browser's console session over a WebSocket (`/console/ws` on the HTTP port).
//!
//! The browser is sent a `hello`, then, once it may watch (at once when the node has no `auth`;
//! after a successful `AUTH` otherwise, as any user: a read-only role watches), the whole state
//! and then every tick, event and journey of the node's [`ConsoleFeed`]. What it sends runs
//! through the same path as a client connection's requests: its session's login and
//! permissions, then the executor, one request at a time.
//!
//! What a browser can make the node hold is bounded: at most [`MAX_BROWSERS`] sessions at once,
//! messages from it of at most [`MAX_BROWSER_MESSAGE`] bytes, and one request of it running at a
//! time. Nothing is queued for it: the ticks are a `watch` (it gets the latest), the news a
//! shared bounded `broadcast` (falling behind it means being sent the state again), and a send
//! that the browser does not take within [`SEND_TIMEOUT`] closes the session. The browser is
//! pinged every [`PING_EVERY`]; one not heard from (a pong is enough) for [`SILENCE_LIMIT`] is
//! gone, and its session ends.
//!
//! In `kv-cli demo`, the node is also told where the demo listens for node controls
//! ([`DEMO_CONTROL_ENV`]), and passes a browser's `control` messages (stop, kill, restart a
//! node) on to it, for users with the admin permission.
//!
//! Not done: a session that lives on after its login is revoked keeps watching (its commands
//! are checked against the current grants each time, as on a client connection).

use super::Node;
use super::console::Journey;
use super::executor::Executor;
use super::session::{Segment, Session};
use crate::auth::Needs;
use crate::protocol::json::response_json;
use crate::protocol::message::{ErrorCode, Reply, Request, Response};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Browser sessions served at once.
pub const MAX_BROWSERS: usize = 16;
/// The largest message a browser may send.
pub const MAX_BROWSER_MESSAGE: usize = 64 * 1024;
/// How long a browser has to take each message sent to it.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a browser is pinged; browsers answer on their own.
pub const PING_EVERY: Duration = Duration::from_secs(10);
/// A browser heard nothing from (not even a pong) for this long is gone: its session ends, so
/// that a half-open connection (a laptop closed mid-session) or a client that stopped reading
/// does not keep its slot.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(30);
/// How long the demo has to carry out a node control (a restart waits for the node to serve).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment variable `kv-cli demo` sets to `address token`: where it takes node
/// controls, and the secret that proves they come from one of its nodes.
pub const DEMO_CONTROL_ENV: &str = "KV_DEMO_CONTROL";

/// What a browser sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FromBrowser {
    /// Run a command line (redis-cli's quoting), or arguments already split.
    Run { id: u64, line: Option<String>, args: Option<Vec<String>> },
    /// One page of the key browser: keys beginning with `prefix`, from `from` on.
    Scan { id: u64, prefix: String, from: Option<String>, limit: u32 },
    /// `stop`, `kill` or `restart` a demo node.
    Control { id: u64, action: String, node: u64 },
}

/// Serves one browser until it leaves, misbehaves, or the node stops. `slot` is its place
/// among [`MAX_BROWSERS`].
pub(super) async fn serve(
    mut socket: WebSocket,
    node: Arc<Node>,
    slot: OwnedSemaphorePermit,
    token: CancellationToken,
) {
    let _slot = slot;
    let mut session = Session::new(node.config.auth, None, None);
    let mut executor = Executor::new(&*node, None, node.config.limits());
    let (mut ticks, mut news) = node.console.subscribe();
    let hello = json!({
        "type": "hello",
        "node": node.config.id,
        "auth": node.config.auth,
        "controls": demo_control().is_some(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if send(&mut socket, hello.to_string().into()).await.is_err() {
        return;
    }
    let mut watching = false;
    let mut heard = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(heard + PING_EVERY, PING_EVERY);
    loop {
        if !watching && session.logged_in() {
            watching = true;
            ticks.mark_unchanged();
            news = news.resubscribe();
            if send(&mut socket, node.console.state()).await.is_err() {
                return;
            }
        }
        let outgoing = tokio::select! {
            () = token.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            _ = ping.tick() => {
                if heard.elapsed() > SILENCE_LIMIT {
                    tracing::debug!("closing a console session silent for {SILENCE_LIMIT:?}");
                    return;
                }
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => continue,
                    _ => return,
                }
            }
            changed = ticks.changed(), if watching => match changed {
                Ok(()) => ticks.borrow_and_update().clone(),
                Err(_) => return,
            },
            received = news.recv(), if watching => match received {
                Ok(message) => message,
                Err(RecvError::Lagged(_)) => node.console.state(),
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(message)) => {
                    // Anything, a pong included, shows the browser is there.
                    heard = tokio::time::Instant::now();
                    match message {
                        Message::Text(text) => {
                            let answer = answer(&node, &mut session, &mut executor, text.as_str()).await;
                            Arc::from(answer.to_string())
                        }
                        Message::Binary(_) => {
                            Arc::from(error_message(0, ErrorCode::BadRequest, "messages are JSON text").to_string())
                        }
                        _ => continue,
                    }
                }
                Some(Err(_)) | None => return,
            },
        };
        if send(&mut socket, outgoing).await.is_err() {
            return;
        }
    }
}

/// Sends one message, giving up (and so ending the session) if the browser does not take it
/// within [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, message: Arc<str>) -> Result<(), ()> {
    let text = Utf8Bytes::from(message.as_ref());
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

fn error_message(id: u64, code: ErrorCode, message: &str) -> serde_json::Value {
    json!({"type": "answer", "id": id, "answer": {"type": "error", "code": code, "message": message}})
}

/// Carries out what a browser sent, and what to answer it.
async fn answer(
    node: &Arc<Node>,
    session: &mut Session,
    executor: &mut Executor<'_, Node>,
    text: &str,
) -> serde_json::Value {
    let message: FromBrowser = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(e) => return error_message(0, ErrorCode::BadRequest, &format!("not a console message: {e}")),
    };
    let (id, args) = match message {
        FromBrowser::Run { id, line: Some(line), args: None } => {
            match crate::command::split::split_args(&line) {
                Ok(args) if args.is_empty() => {
                    return error_message(id, ErrorCode::BadRequest, "empty command");
                }
                Ok(args) => (id, args),
                Err(e) => return error_message(id, ErrorCode::BadRequest, &e.to_string()),
            }
        }
        FromBrowser::Run { id, line: None, args: Some(args) } if !args.is_empty() => {
            (id, args.into_iter().map(String::into_bytes).collect())
        }
        FromBrowser::Run { id, .. } => {
            return error_message(id, ErrorCode::BadRequest, "give either a non-empty line or args");
        }
        FromBrowser::Scan { id, prefix, from, limit } => {
            let range = crate::command::scan::KeyRange::prefix(prefix.as_bytes());
            let start = from.map_or(range.start.to_vec(), String::into_bytes);
            let end = range.end.map_or_else(Vec::new, |end| end.to_vec());
            (id, vec![b"SCAN".to_vec(), start, end, b"LIMIT".to_vec(), limit.to_string().into_bytes()])
        }
        FromBrowser::Control { id, action, node: target } => {
            let answer = match session.allows(&Needs::Admin, &**node) {
                Err(refusal) => response_json(&Response::new(id, refusal)),
                Ok(()) => control(&action, target).await,
            };
            return json!({"type": "answer", "id": id, "answer": answer});
        }
    };
    let command = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let request = Request { wait_acks: true, ..Request::new(id, args.into_iter().map(Into::into).collect()) };
    let spec = crate::command::lookup(command.as_bytes());
    let started = std::time::Instant::now();
    let response = run(session, executor, request).await;
    let outcome = match &response.reply {
        Reply::Error { code, .. } => code.as_str(),
        _ => "ok",
    };
    node.metrics.request_answered(spec, outcome, started.elapsed());
    let answer = response_json(&response);
    if response.replication.is_some() {
        node.console.journey(Journey {
            at_ms: super::console::now_ms(),
            command: command.clone(),
            answer: answer.clone(),
        });
    }
    json!({"type": "answer", "id": id, "answer": answer})
}

/// Runs one request as a client connection would: a login, or the session's check and then
/// the executor.
async fn run(session: &mut Session, executor: &mut Executor<'_, Node>, request: Request) -> Response {
    let id = request.id;
    let items = executor.parse(vec![request]);
    executor.new_batch();
    let mut answers = Vec::new();
    for segment in Session::segments(items) {
        match segment {
            Segment::Auth(item) => answers.push(session.login(&item, executor.cluster()).await),
            Segment::Items(mut items) => {
                session.vet(&mut items, executor.cluster());
                answers.extend(executor.execute(items).await);
            }
        }
    }
    answers.pop().unwrap_or_else(|| {
        Response::new(id, Reply::error(ErrorCode::OutcomeUnknown, "the request got no answer"))
    })
}

/// Where the demo takes node controls, and its token, if this node runs in `kv-cli demo`.
fn demo_control() -> Option<(String, String)> {
    let value = std::env::var(DEMO_CONTROL_ENV).ok()?;
    let (addr, token) = value.split_once(' ')?;
    Some((addr.to_string(), token.to_string()))
}

/// Asks the demo to `action` node `target`; the answer in the JSON form of a reply.
async fn control(action: &str, target: u64) -> serde_json::Value {
    let Some((addr, token)) = demo_control() else {
        return json!({"type": "error", "code": ErrorCode::BadRequest, "message": "node controls exist only in kv-cli demo"});
    };
    if !matches!(action, "stop" | "kill" | "restart") {
        return json!({"type": "error", "code": ErrorCode::BadRequest, "message": format!("unknown control '{action}'; use stop, kill or restart")});
    }
    let asked = async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        stream.write_all(format!("{token} {action} {target}\n").as_bytes()).await?;
        let mut line = String::new();
        tokio::io::BufReader::new(stream.take(4096)).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    match tokio::time::timeout(CONTROL_TIMEOUT, asked).await {
        Ok(Ok(line)) => match line.trim_end().split_once(' ') {
            Some(("ok", text)) => json!({"type": "status", "value": text}),
            Some((_, text)) => json!({"type": "error", "code": ErrorCode::BadRequest, "message": text}),
            None => {
                json!({"type": "error", "code": ErrorCode::Refused, "message": "the demo gave no answer"})
            }
        },
        Ok(Err(e)) => {
            json!({"type": "error", "code": ErrorCode::Refused, "message": format!("cannot reach the demo: {e}")})
        }
        Err(_) => {
            json!({"type": "error", "code": ErrorCode::Timeout, "message": "the demo did not answer in time"})
        }
    }
}
