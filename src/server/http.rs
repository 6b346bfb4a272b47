//! The node's HTTP port (`http_listen`): what operators probe and scrape.
//!
//! - `/health`: 200 while the node's Raft core runs (liveness: restart the node if not).
//! - `/ready`: 200 while the node has a leader that confirms, as for a linearizable read, that it
//!   still leads, and the node has applied everything that leader had committed: a request sent
//!   to it is served at once. 503 with why otherwise (within [`READY_TIMEOUT`]).
//! - `/metrics`: the Prometheus text format ([`crate::metrics`]).
//! - `/` and the files it loads: the browser console (docs/CONSOLE.md), embedded in the binary;
//!   `/console/ws`: its WebSocket stream ([`super::browser`]), only for pages this port served
//!   (the `Origin` check) and at most [`MAX_BROWSERS`] at once.
//!
//! Every input is bounded as on the client port: at most [`MAX_HTTP_CONNECTIONS`] at once (more
//! are closed at once), a TLS handshake and each request's headers within [`HEADER_TIMEOUT`]
//! (which also closes idle keep-alive connections), at most [`MAX_REQUEST_BUFFER`] bytes of
//! request head buffered, and a connection closed after [`MAX_CONNECTION_TIME`] whatever it
//! does, so that one that sends requests and never reads the answers cannot keep its slot. No
//! route reads a request body. Over TLS when the node has TLS (the
//! same certificate as its client port).
//!
//! `/health`, `/ready` and `/metrics` take no login, since they carry no keys or values (as
//! etcd's); the console's stream asks for one when the node has `auth`. A connection upgraded to
//! a WebSocket leaves this port's connection slots and lifetime for the console's own bounds.

use super::Node;
use super::browser::{MAX_BROWSER_MESSAGE, MAX_BROWSERS};
use super::cluster::{Cluster, Leader};
use super::console_assets;
use crate::metrics::index;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// HTTP connections served at once.
pub const MAX_HTTP_CONNECTIONS: usize = 64;
/// How long a connection has for its TLS handshake, and for each request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one HTTP connection may stay open; a scraper simply opens another.
pub const MAX_CONNECTION_TIME: Duration = Duration::from_secs(30);
/// How long `/ready` waits for the leader to confirm it leads.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// The most bytes of a request's head buffered (hyper's smallest allowed buffer).
pub const MAX_REQUEST_BUFFER: usize = 8192;

/// Serves the HTTP port on `listener` until `token` is cancelled.
pub(super) async fn serve(listener: TcpListener, node: Arc<Node>, token: CancellationToken) {
    let browsers = Arc::new(Semaphore::new(MAX_BROWSERS));
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/console/ws", get(console_stream))
        .fallback(get(console_file))
        .with_state(RouteState { node: node.clone(), browsers, token: token.clone() });
    let slots = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = token.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: let some be released.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many HTTP connections; closed");
            continue;
        };
        let router = router.clone();
        let tls = node.tls.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let served = async {
                match tls {
                    Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept_web(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, router).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "HTTP TLS handshake timed out"),
                    },
                    None => serve_connection(stream, router).await,
                }
            };
            tokio::select! {
                _ = tokio::time::timeout(MAX_CONNECTION_TIME, served) => {}
                () = token.cancelled() => {}
            }
        });
    }
}

async fn serve_connection(io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static, router: Router) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BUFFER)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

/// What every route may use.
#[derive(Clone)]
struct RouteState {
    node: Arc<Node>,
    /// Browser sessions' slots.
    browsers: Arc<Semaphore>,
    /// Cancelled when the node stops.
    token: CancellationToken,
}

impl axum::extract::FromRef<RouteState> for Arc<Node> {
    fn from_ref(routes: &RouteState) -> Arc<Node> {
        routes.node.clone()
    }
}

/// Opens a browser's console stream: only from a page this port served (its `Origin` names
/// this host), and only while a browser slot is free.
async fn console_stream(
    State(routes): State<RouteState>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let origin_host = origin.to_str().unwrap_or_default().split_once("://").map_or("", |(_, host)| host);
        if host.is_empty() || origin_host != host {
            return (StatusCode::FORBIDDEN, "the console stream is only for pages this node served\n")
                .into_response();
        }
    }
    let Ok(slot) = routes.browsers.clone().try_acquire_owned() else {
        let busy = format!("{MAX_BROWSERS} browsers are watching this node already; try another node\n");
        return (StatusCode::SERVICE_UNAVAILABLE, busy).into_response();
    };
    upgrade
        .max_message_size(MAX_BROWSER_MESSAGE)
        .max_frame_size(MAX_BROWSER_MESSAGE)
        .on_upgrade(move |socket| super::browser::serve(socket, routes.node, slot, routes.token))
}

/// The console's files; without them, a page saying how to build them.
async fn console_file(uri: axum::http::Uri) -> axum::response::Response {
    let security = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        ),
    ];
    if let Some(why) = console_assets::NOT_BUILT {
        let page = console_assets::missing_page(why);
        return (security, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response();
    }
    match console_assets::get(uri.path()) {
        Some((contents, content_type)) => {
            // Vite names assets by their hash, so they never change; the page itself may.
            let cache = if uri.path().starts_with("/assets/") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (security, [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, cache)], contents)
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    match &node.raft.metrics().borrow_watched().running_state {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(fatal) => (StatusCode::SERVICE_UNAVAILABLE, format!("the Raft core stopped: {fatal}\n")),
    }
}

async fn ready(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let leader = node.leader();
    let why_not = match leader {
        Leader::Unknown => Some("no leader known".to_string()),
        // The check a linearizable read makes: the leader confirms it still leads (a quorum
        // heard from it) and names its commit index.
        leader => match node.read_index(&leader, Instant::now() + READY_TIMEOUT).await {
            None => Some(format!("the leader did not confirm its leadership within {READY_TIMEOUT:?}")),
            Some(committed) => {
                let applied = index(node.raft.metrics().borrow_watched().last_applied);
                (applied < committed).then(|| format!("applied up to {applied} of {committed} committed"))
            }
        },
    };
    match why_not {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let raft = node.raft.metrics().borrow_watched().clone();
    let open = node.config.max_connections - node.client_slots.available_permits();
    node.metrics.observe(&raft, open);
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        node.metrics.encode(),
    )
}
