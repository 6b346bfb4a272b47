//! `kv-cli demo`: a throwaway local cluster with the shell attached, like `cockroach demo`.
//!
//! It starts `kv-node` processes (the binary next to `kv-cli`) on free loopback ports with their
//! data in a temporary directory, hands their addresses to the usual kv-cli modes, and stops them
//! and removes the data when those finish (unless `--keep`).
//!
//! The nodes run in their own process group, so a Ctrl-C typed at the shell does not reach them,
//! and they get SIGTERM if kv-cli dies, so they never outlive the demo.
//!
//! For now the cluster has one node: replication arrives with the Raft work.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a demo node may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a demo node may take to shut down before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the data directory when the demo ends, and print where it is.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("kv-node was not found next to kv-cli ({0}); build both with `cargo build --release`")]
    NodeBinaryMissing(PathBuf),
    #[error("cannot create the demo's data directory: {0}")]
    TempDir(std::io::Error),
    #[error("cannot start kv-node: {0}")]
    Spawn(std::io::Error),
    #[error("kv-node did not start; its log says:\n{0}")]
    NodeFailed(String),
}

/// A running demo cluster.
pub struct DemoCluster {
    nodes: Vec<DemoNode>,
    dir: tempfile::TempDir,
}

struct DemoNode {
    child: Child,
    addr: SocketAddr,
}

impl DemoCluster {
    /// Starts the demo's node(s) and waits until they serve.
    pub fn start() -> Result<DemoCluster, DemoError> {
        let binary = node_binary()?;
        let dir = tempfile::Builder::new().prefix("kv-demo-").tempdir().map_err(DemoError::TempDir)?;
        let node = DemoNode::start(&binary, 1, dir.path())?;
        Ok(DemoCluster { nodes: vec![node], dir })
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.to_string()).collect()
    }

    /// A line for people: where the nodes are and where their data and logs live.
    pub fn banner(&self) -> String {
        let nodes: Vec<String> =
            self.nodes.iter().enumerate().map(|(i, n)| format!("node {} on {}", i + 1, n.addr)).collect();
        format!(
            "kv demo: {}; data and logs in {}. QUIT or Ctrl-D ends the demo.",
            nodes.join(", "),
            self.dir.path().display()
        )
    }

    /// Stops every node; removes the data unless `keep`, in which case it returns where it is.
    pub fn stop(self, keep: bool) -> Option<PathBuf> {
        for node in self.nodes {
            node.stop();
        }
        keep.then(|| self.dir.keep())
    }
}

impl DemoNode {
    fn start(binary: &Path, id: u64, dir: &Path) -> Result<DemoNode, DemoError> {
        let log_path = dir.join(format!("node{id}.log"));
        let mut last_log = String::new();
        // A port that was free a moment ago may be taken by the time the node binds it.
        for _ in 0..5 {
            let addr = free_addr().map_err(DemoError::Spawn)?;
            let log = std::fs::File::create(&log_path).map_err(DemoError::Spawn)?;
            let mut command = Command::new(binary);
            command
                .args(["--id", &id.to_string(), "--listen", &addr.to_string()])
                .arg("--data-dir")
                .arg(dir.join(format!("node{id}")))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0);
            // SAFETY: set_pdeathsig is a single prctl(2) call, async-signal-safe, and touches no
            // memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
                });
            }
            let mut child = command.spawn().map_err(DemoError::Spawn)?;
            let started = Instant::now();
            loop {
                last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if last_log.contains("serving") {
                    return Ok(DemoNode { child, addr });
                }
                if child.try_wait().map_err(DemoError::Spawn)?.is_some() {
                    break;
                }
                if started.elapsed() > START_TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(DemoError::NodeFailed(last_log));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !last_log.contains("cannot listen") {
                break;
            }
        }
        Err(DemoError::NodeFailed(last_log))
    }

    /// SIGTERM, then SIGKILL if the node has not exited in time.
    fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_binary() -> Result<PathBuf, DemoError> {
    let cli = std::env::current_exe().map_err(DemoError::Spawn)?;
    let node = cli.with_file_name("kv-node");
    if node.is_file() { Ok(node) } else { Err(DemoError::NodeBinaryMissing(node)) }
}

fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}
