//! `kv-node`: one member of a kv cluster. Parses flags, loads the config, serves until SIGINT or
//! SIGTERM. Exit status: 0 after a clean shutdown, 1 if the node could not start or failed.

use kv::config::{self, NodeArgs};
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: per-thread free lists without locks. glibc's, limited to
/// two arenas to keep a node's memory down, spent a large share of a busy node's CPU in malloc
/// and free, partly waiting on its locks (docs/BENCHMARKS.md has the A/B and the memory figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = NodeArgs::parse_args();
    kv::log::init_node_logging();
    let config = match config::load(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kv-node: config error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One thread means tokio's current-thread scheduler, which also runs `server::run` itself: a
    // multi-thread runtime with one worker still hands work between that worker and this thread.
    let mut builder = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(config.worker_threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kv-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kv::server::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
