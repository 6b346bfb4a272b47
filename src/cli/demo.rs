//! `kv-cli demo`: a throwaway local cluster with the shell attached, like `cockroach demo`.
//!
//! It starts `kv-node` processes (the binary next to `kv-cli`) on free loopback ports with their
//! data in a temporary directory, hands their addresses to the usual kv-cli modes, and stops them
//! and removes the data when those finish (unless `--keep`).
//!
//! The nodes run in their own process group, so a Ctrl-C typed at the shell does not reach them,
//! and they get SIGTERM if kv-cli dies, so they never outlive the demo.
//!
//! The cluster has three nodes that replicate through Raft; the demo is ready once they have
//! elected a leader, so the first command does not wait for an election.
//!
//! It is as secure as a real deployment should be: it makes a CA and node certificates in its
//! directory (`kv-cli cert`'s code), runs every node with TLS and auth, gives `root` a random
//! password (kept in the directory, readable by its owner only) and logs the shell in as root.
//! `--insecure` runs today's plain cluster instead.
//!
//! Inside the demo, dot commands act on the nodes so that failures can be watched live:
//! `.nodes`, `.stop N` (graceful), `.kill N` (`kill -9`), `.restart N`. In piped input they run
//! after every command before them has been answered.

use crate::client::{Client, Transport};
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
/// How many nodes the demo cluster has.
const NODES: u64 = 3;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the data directory when the demo ends, and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Plain TCP and no logins, instead of TLS and auth.
    #[arg(long)]
    pub insecure: bool,
    /// Open the console of node 1 in the system's browser (`xdg-open`, `open`).
    #[arg(long)]
    pub open: bool,
}

/// Where the demo takes node controls from its nodes' consoles (the page's stop, kill and
/// restart buttons): a loopback port, and a secret its nodes are given so that nothing else on
/// the machine can use it.
struct ControlPort {
    listener: TcpListener,
    /// The secret each control must start with.
    token: String,
    /// What the nodes find in their environment ([`crate::server::DEMO_CONTROL_ENV`]): the
    /// port's address and the token.
    env: String,
}

impl ControlPort {
    fn open() -> std::io::Result<ControlPort> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let token: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
        let env = format!("{} {token}", listener.local_addr()?);
        Ok(ControlPort { listener, token, env })
    }
}

/// Carries out node controls from the demo's nodes with `run`, one at a time, for as long as
/// the process lives. A control is one line, `token action node`, answered `ok text` or
/// `error text`.
fn serve_controls(port: ControlPort, run: impl Fn(DemoCommand) -> Result<String, String> + Send + 'static) {
    use std::io::{BufRead, BufReader, Read, Write};
    let ControlPort { listener, token, .. } = port;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let Ok(reader) = stream.try_clone() else { continue };
            if BufReader::new(reader.take(256)).read_line(&mut line).is_err() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let answer = match words.as_slice() {
                [given, action, id] if *given == token => {
                    let args: Vec<Vec<u8>> =
                        [format!(".{action}"), id.to_string()].map(String::into_bytes).into();
                    DemoCommand::parse(&args).and_then(&run)
                }
                _ => Err("not a control from this demo's nodes".to_string()),
            };
            let reply = match answer {
                Ok(text) => format!("ok {text}\n"),
                Err(text) => format!("error {text}\n"),
            };
            let mut stream = stream;
            let _ = stream.write_all(reply.as_bytes());
        }
    });
}

/// How the demo's nodes are secured: their CA, and root's password.
#[derive(Clone)]
pub struct DemoSecurity {
    pub ca: PathBuf,
    pub root_password: String,
    /// The file root's password is in.
    pub password_file: PathBuf,
}

impl DemoSecurity {
    /// Makes the CA, the nodes' certificates and root's password in `dir`.
    fn make(dir: &Path) -> Result<DemoSecurity, DemoError> {
        use super::cert::{Output, create_ca, create_node};
        let certs = dir.join("certs");
        let output = Output { dir: certs.clone(), days: Some(30), overwrite: false };
        let ca = create_ca(&output).map_err(|e| DemoError::Security(e.to_string()))?;
        for id in 1..=NODES {
            let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
            create_node(&output, &ca.key, id, &hosts).map_err(|e| DemoError::Security(e.to_string()))?;
        }
        let root_password: String = (0..20).map(|_| fastrand::alphanumeric()).collect();
        let password_file = dir.join("root-password");
        super::cert::write_file(&password_file, &format!("{root_password}\n"), 0o600)
            .map_err(|e| DemoError::Security(e.to_string()))?;
        Ok(DemoSecurity { ca: ca.cert, root_password, password_file })
    }

    /// How a client reaches the nodes, and its login.
    pub fn client(&self) -> Result<(Transport, super::Login), DemoError> {
        let tls =
            crate::tls::ClientTls::load(&self.ca, None).map_err(|e| DemoError::Security(e.to_string()))?;
        Ok((Transport::tls(tls), super::Login { user: "root".into(), password: self.root_password.clone() }))
    }

    /// The flags that give node `id` its TLS and auth.
    fn flags(&self, id: u64) -> Vec<String> {
        let certs = self.ca.parent().unwrap_or(Path::new("."));
        let file = |name: String| certs.join(name).to_string_lossy().into_owned();
        vec![
            "--tls-ca".into(),
            self.ca.to_string_lossy().into_owned(),
            "--tls-cert".into(),
            file(format!("node-{id}.crt")),
            "--tls-key".into(),
            file(format!("node-{id}.key")),
            "--auth".into(),
            "--root-password-file".into(),
            self.password_file.to_string_lossy().into_owned(),
        ]
    }
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
    #[error("the demo cluster elected no leader within {0:?}")]
    NoLeader(Duration),
    #[error("cannot make the demo's certificates: {0}")]
    Security(String),
}

/// Why one node did not start.
enum StartFailure {
    /// Its port was taken between choosing and binding it: try the whole cluster again.
    PortTaken,
    Failed(DemoError),
}

/// A running demo cluster.
pub struct DemoCluster {
    nodes: Vec<DemoNode>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    /// `None` for an insecure demo.
    security: Option<DemoSecurity>,
    /// Where its nodes' consoles send node controls: the port until it is served, and what the
    /// nodes are told of it.
    controls: Option<ControlPort>,
    control_env: String,
}

struct DemoNode {
    /// `None` while the node is stopped or killed.
    child: Option<Child>,
    addr: SocketAddr,
    /// Where it serves `/health`, `/ready` and `/metrics`.
    http: SocketAddr,
}

/// What a dot command does to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    Stop,
    Kill,
    Restart,
}

/// A dot command: `.nodes`, or an action on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoCommand {
    Nodes,
    Node(NodeAction, u64),
}

/// The dot commands, for help.
pub const DEMO_HELP: &str = "  .nodes                   List the demo's nodes and whether they run.\n\
  .stop N                  Stop node N gracefully (it hands over leadership first).\n\
  .kill N                  Kill node N with SIGKILL, like a crash.\n\
  .restart N               Start a stopped or killed node N again.";

impl DemoCommand {
    /// Parses a line's words, the first starting with a dot.
    pub fn parse(args: &[Vec<u8>]) -> Result<DemoCommand, String> {
        let words: Vec<String> =
            args.iter().map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect();
        let id = || -> Result<u64, String> {
            match words.as_slice() {
                [_, id] => id.parse().map_err(|_| format!("bad node number '{id}'")),
                _ => Err(format!("{} takes one node number, such as {} 2", words[0], words[0])),
            }
        };
        match words[0].as_str() {
            ".nodes" if words.len() == 1 => Ok(DemoCommand::Nodes),
            ".stop" => Ok(DemoCommand::Node(NodeAction::Stop, id()?)),
            ".kill" => Ok(DemoCommand::Node(NodeAction::Kill, id()?)),
            ".restart" => Ok(DemoCommand::Node(NodeAction::Restart, id()?)),
            other => {
                Err(format!("unknown demo command '{other}'; try .nodes, .stop N, .kill N or .restart N"))
            }
        }
    }
}

impl DemoCluster {
    /// Starts the demo's nodes and waits until they have a leader.
    pub fn start(secure: bool) -> Result<DemoCluster, DemoError> {
        let binary = node_binary()?;
        let dir = tempfile::Builder::new().prefix("kv-demo-").tempdir().map_err(DemoError::TempDir)?;
        let security = if secure { Some(DemoSecurity::make(dir.path())?) } else { None };
        let controls = ControlPort::open().map_err(DemoError::Spawn)?;
        let control_env = controls.env.clone();
        let mut last = DemoError::NodeFailed("no free ports".to_string());
        // A port that was free a moment ago may be taken by the time a node binds it; every
        // node's peer list names the ports, so a lost race means new ports for all.
        for _ in 0..5 {
            let addrs: Vec<SocketAddr> =
                (0..NODES).map(|_| free_addr()).collect::<Result<_, _>>().map_err(DemoError::Spawn)?;
            let mut nodes = Vec::new();
            let mut port_taken = false;
            for id in 1..=NODES {
                let http = free_addr().map_err(DemoError::Spawn)?;
                match DemoNode::start(&binary, id, &addrs, http, dir.path(), security.as_ref(), &control_env)
                {
                    Ok(node) => nodes.push(node),
                    Err(StartFailure::PortTaken) => {
                        port_taken = true;
                        break;
                    }
                    Err(StartFailure::Failed(e)) => {
                        nodes.iter_mut().for_each(DemoNode::stop);
                        return Err(e);
                    }
                }
            }
            if !port_taken {
                let cluster =
                    DemoCluster { nodes, dir, binary, security, controls: Some(controls), control_env };
                if let Err(e) = cluster.wait_for_a_leader() {
                    cluster.stop(false);
                    return Err(e);
                }
                return Ok(cluster);
            }
            nodes.iter_mut().for_each(DemoNode::stop);
            last = DemoError::NodeFailed("every port tried was taken".to_string());
        }
        Err(last)
    }

    /// Waits until a linearizable read succeeds, which needs an elected leader.
    fn wait_for_a_leader(&self) -> Result<(), DemoError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DemoError::Spawn)?;
        let addrs = self.addrs();
        let (transport, login) = match &self.security {
            Some(security) => {
                let (transport, login) = security.client()?;
                (transport, Some(login))
            }
            None => (Transport::plain(), None),
        };
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            let read = runtime.block_on(async {
                let (mut client, _) =
                    Client::connect_any(&addrs, Duration::from_secs(1), &transport).await.ok()?;
                if let Some(login) = &login {
                    // Root exists once the first leader has created it.
                    client.log_in(&login.user, &login.password).await.ok()?;
                }
                client.call(vec![b"EXISTS".to_vec(), b"demo".to_vec()]).await.ok()
            });
            if read.is_some_and(|response| !response.reply.is_error()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(DemoError::NoLeader(START_TIMEOUT))
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.to_string()).collect()
    }

    /// How the demo is secured, if it is.
    pub fn security(&self) -> Option<&DemoSecurity> {
        self.security.as_ref()
    }

    /// A line for people: where the nodes are and where their data and logs live.
    pub fn banner(&self) -> String {
        let nodes: Vec<String> =
            self.nodes.iter().enumerate().map(|(i, n)| format!("node {} on {}", i + 1, n.addr)).collect();
        let security = match &self.security {
            Some(security) => format!(
                " TLS and auth are on: CA {}, logged in as root (password in {}).",
                security.ca.display(),
                security.password_file.display()
            ),
            None => " Insecure: plain TCP, no logins.".to_string(),
        };
        let consoles: Vec<String> =
            (1..=self.nodes.len() as u64).filter_map(|id| self.console_url(id)).collect();
        format!(
            "kv demo: {}; data and logs in {}.{security} Console at {} (each node serves it, with \
             /metrics, /health and /ready). .kill N, .stop N and .restart N act on a node, here or \
             from the console; QUIT or Ctrl-D ends the demo.",
            nodes.join(", "),
            self.dir.path().display(),
            consoles.join(", ")
        )
    }

    /// Node `id`'s console.
    pub fn console_url(&self, id: u64) -> Option<String> {
        let scheme = if self.security.is_some() { "https" } else { "http" };
        let node = (id as usize).checked_sub(1).and_then(|i| self.nodes.get(i))?;
        Some(format!("{scheme}://{}/", node.http))
    }

    /// Takes node controls from the nodes' consoles from now on, carrying them out with `run`.
    pub fn serve_controls(&mut self, run: impl Fn(DemoCommand) -> Result<String, String> + Send + 'static) {
        if let Some(port) = self.controls.take() {
            serve_controls(port, run);
        }
    }

    /// Runs a dot command; returns what to tell the user.
    pub fn run(&mut self, command: DemoCommand) -> Result<String, String> {
        let (action, id) = match command {
            DemoCommand::Nodes => return Ok(self.nodes_text()),
            DemoCommand::Node(action, id) => (action, id),
        };
        let count = self.nodes.len();
        let Some(node) = (id as usize).checked_sub(1).and_then(|i| self.nodes.get_mut(i)) else {
            return Err(format!("there is no node {id}; the demo has nodes 1 to {count}"));
        };
        match (action, node.child.is_some()) {
            (NodeAction::Stop | NodeAction::Kill, false) => Err(format!("node {id} is not running")),
            (NodeAction::Restart, true) => Err(format!("node {id} is running; .stop or .kill it first")),
            (NodeAction::Stop, true) => {
                node.stop();
                Ok(format!("node {id} stopped"))
            }
            (NodeAction::Kill, true) => {
                node.kill();
                Ok(format!("node {id} killed"))
            }
            (NodeAction::Restart, false) => {
                let addrs: Vec<SocketAddr> = self.nodes.iter().map(|n| n.addr).collect();
                let http = self.nodes[id as usize - 1].http;
                let env = &self.control_env;
                match DemoNode::start(
                    &self.binary,
                    id,
                    &addrs,
                    http,
                    self.dir.path(),
                    self.security.as_ref(),
                    env,
                ) {
                    Ok(started) => {
                        self.nodes[id as usize - 1] = started;
                        Ok(format!("node {id} restarted on {}", addrs[id as usize - 1]))
                    }
                    Err(StartFailure::PortTaken) => {
                        Err(format!("node {id}'s port was taken by another process"))
                    }
                    Err(StartFailure::Failed(e)) => Err(e.to_string()),
                }
            }
        }
    }

    /// The address of node `id`, if the demo has one.
    pub fn addr(&self, id: u64) -> Option<String> {
        (id as usize).checked_sub(1).and_then(|i| self.nodes.get(i)).map(|n| n.addr.to_string())
    }

    fn nodes_text(&self) -> String {
        let lines: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let state = match &n.child {
                    Some(child) => format!("running (pid {})", child.id()),
                    None => "down".to_string(),
                };
                format!("node {} on {}: {state}", i + 1, n.addr)
            })
            .collect();
        lines.join("\n")
    }

    /// Stops every node; removes the data unless `keep`, in which case it returns where it is.
    pub fn stop(mut self, keep: bool) -> Option<PathBuf> {
        for node in &mut self.nodes {
            node.stop();
        }
        keep.then(|| self.dir.keep())
    }
}

impl DemoNode {
    /// Starts node `id` of the cluster whose nodes listen on `addrs` (node `i` on `addrs[i - 1]`),
    /// serving HTTP on `http`.
    fn start(
        binary: &Path,
        id: u64,
        addrs: &[SocketAddr],
        http: SocketAddr,
        dir: &Path,
        security: Option<&DemoSecurity>,
        control_env: &str,
    ) -> Result<DemoNode, StartFailure> {
        let failed = |e| StartFailure::Failed(DemoError::Spawn(e));
        let log_path = dir.join(format!("node{id}.log"));
        let addr = addrs[id as usize - 1];
        // Appended to, so that a restarted node's log keeps what it said before.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(failed)?;
        let logged_before = log.metadata().map_err(failed)?.len() as usize;
        let mut command = Command::new(binary);
        command.args([
            "--id",
            &id.to_string(),
            "--listen",
            &addr.to_string(),
            "--http-listen",
            &http.to_string(),
        ]);
        for (peer, peer_addr) in (1..).zip(addrs).filter(|(peer, _)| *peer != id) {
            command.args(["--peer", &format!("{peer}={peer_addr}")]);
        }
        // The nodes share this machine: each gets its share of the CPUs rather than one thread
        // per CPU, which only adds wake-ups between threads (docs/BENCHMARKS.md).
        let workers = (crate::config::available_cpus() / addrs.len()).max(1);
        if let Some(security) = security {
            command.args(security.flags(id));
        }
        command
            .args(["--worker-threads", &workers.to_string()])
            .arg("--data-dir")
            .arg(dir.join(format!("node{id}")))
            .env("RUST_LOG", "info")
            .env(crate::server::DEMO_CONTROL_ENV, control_env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        // SAFETY: set_pdeathsig is a single prctl(2) call, async-signal-safe, and touches no
        // memory of the parent.
        unsafe {
            command
                .pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from));
        }
        let mut child = command.spawn().map_err(failed)?;
        let started = Instant::now();
        loop {
            let whole = std::fs::read(&log_path).unwrap_or_default();
            let log = String::from_utf8_lossy(whole.get(logged_before..).unwrap_or_default()).into_owned();
            if log.contains("serving") {
                return Ok(DemoNode { child: Some(child), addr, http });
            }
            if child.try_wait().map_err(failed)?.is_some() {
                if log.contains("cannot listen") {
                    return Err(StartFailure::PortTaken);
                }
                return Err(StartFailure::Failed(DemoError::NodeFailed(log)));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartFailure::Failed(DemoError::NodeFailed(log)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if the node has not exited in time.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL: the node gets no chance to clean up, as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
