//! `kv-node`: one member of a kv cluster. Parses flags, loads the config, serves until SIGINT or
//! SIGTERM. Exit status: 0 after a clean shutdown, 1 if the node could not start or failed.

use kv::config::{self, NodeArgs};
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: per-thread free lists without locks. glibc's, limited to
/// two arenas to keep a node's memory down, spent a large share of a busy node's CPU in malloc
/// and free, partly waiting on its locks (docs/BENCHMARKS.md has the A/B and the memory figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h, which the Rust bindings do not name; a test below checks
/// it against the option's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory freed and not reused waits before mimalloc returns it to the OS, unless
/// `MIMALLOC_PURGE_DELAY` says otherwise. mimalloc's default (1 s) is shorter than the cycle of
/// a busy node, which frees its unflushed writes at every flush and allocates them again until
/// the next: the pages went back to the OS and were faulted in and zeroed again, a few percent
/// of a loaded node's CPU (docs/BENCHMARKS.md). An idle node still gives them back.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets mimalloc's options that `kv-node` chooses, leaving those set in the environment.
fn configure_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads whenever it purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

fn main() -> ExitCode {
    configure_allocator();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // The environment's value stands, and may be anything.
        }
        // SAFETY: reads and sets one of mimalloc's options.
        unsafe {
            // mimalloc's default for the purge delay: so the option's number is the right one.
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            configure_allocator();
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), PURGE_DELAY_MS);
        }
    }
}
