//! The node's HTTP port (`http_listen`): what operators probe and scrape.
//!
//! - `/health`: 200 while the node's Raft core runs (liveness: restart the node if not).
//! - `/ready`: 200 while the node has a leader that confirms, as for a linearizable read, that it
//!   still leads, and the node has applied everything that leader had committed: a request sent
//!   to it is served at once. 503 with why otherwise (within [`READY_TIMEOUT`]).
//! - `/metrics`: the Prometheus text format ([`crate::metrics`]).
//!
//! Every input is bounded as on the client port: at most [`MAX_HTTP_CONNECTIONS`] at once (more
//! are closed at once), a TLS handshake and each request's headers within [`HEADER_TIMEOUT`]
//! (which also closes idle keep-alive connections), at most [`MAX_REQUEST_BUFFER`] bytes of
//! request head buffered, and a connection closed after [`MAX_CONNECTION_TIME`] whatever it
//! does, so that one that sends requests and never reads the answers cannot keep its slot. No
//! route reads a request body. Over TLS when the node has TLS (the
//! same certificate as its client port).
//!
//! Not done: the browser console and its WebSocket stream; these endpoints take no login, since
//! they carry no keys or values (as etcd's `/metrics` and `/health`).

use super::Node;
use super::cluster::{Cluster, Leader};
use crate::metrics::index;
use axum::Router;
use axum::extract::State;
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
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(node.clone());
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
                    Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
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
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection ended");
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
