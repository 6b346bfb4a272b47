//! The node's network side: the accept loop, the connection cap and graceful shutdown.
//!
//! [`run`] serves until its `shutdown` future completes, then stops accepting, lets every
//! connection finish the batch it is executing (so no acknowledged write is cut off), waits for
//! them up to [`DRAIN_TIMEOUT`], and lets the last commit finish before returning.
//!
//! Per-connection work lives in `handler`; this module never looks inside a frame except to refuse
//! a connection over the cap.

mod handler;

use crate::config::NodeConfig;
use crate::connection;
use crate::protocol::message::{ErrorCode, HelloReply};
use crate::store::group_commit::GroupCommit;
use crate::store::{Store, StoreError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for open connections to finish their current batch.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

/// What every connection of a node shares.
struct Node {
    config: NodeConfig,
    store: Arc<Store>,
    writes: GroupCommit,
}

/// Opens the store, binds the configured address and serves until `shutdown` completes.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let store = Arc::new(Store::open(&config.data_dir)?);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let (writes, writer_thread) = GroupCommit::start(store.clone()).map_err(ServerError::Thread)?;
    tracing::info!(id = config.id, addr = %config.listen, data_dir = %config.data_dir.display(), "serving");

    let node = Arc::new(Node { config, store, writes });
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::select! {
        () = accept_loop(&listener, &node, &token, &tracker) => {}
        () = shutdown => tracing::info!("shutting down"),
    }
    drop(listener);
    token.cancel();
    tracker.close();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_ok();
    drop(node);
    if drained {
        // The writer thread exits once the last handle is gone; join it so the final commit is done.
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    } else {
        // Stuck connections still hold the writer's handle, so it cannot be joined. Exiting now is
        // safe: a commit cut short is rolled back by redb on the next start, and its clients were
        // never told it succeeded.
        tracing::warn!("connections still busy after {DRAIN_TIMEOUT:?}; closing them");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn accept_loop(
    listener: &TcpListener,
    node: &Arc<Node>,
    token: &CancellationToken,
    tracker: &TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(node.config.max_connections));
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                // Usually out of file descriptors: wait for some to be released instead of exiting.
                tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracker.spawn(refuse_busy(stream, node.config.max_connections));
            continue;
        };
        let node = node.clone();
        let token = token.clone();
        tracker.spawn(async move {
            handler::serve(stream, peer, &node, &token).await;
            drop(permit);
        });
    }
}

/// Tells a client over the connection cap why it is turned away, then closes.
async fn refuse_busy(stream: TcpStream, max: usize) {
    let (_, mut writer) = connection::split(stream, 0);
    let reply = HelloReply::Refused {
        code: ErrorCode::Busy,
        message: format!("the node is serving its maximum of {max} connections; try again later"),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.send(&reply)).await;
}
