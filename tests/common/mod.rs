//! Test harness: real `kv-node` processes on free loopback ports, each with its own temporary data
//! directory, driven through the real `kv-cli` binary. Every wait has a deadline, and every node is
//! killed when its handle is dropped, so a failing test never leaves a process behind.

#![allow(dead_code)] // Each test file uses a different part of the harness.

pub mod network;

use kv::client::{Client, Transport};
use kv::protocol::message::{Cell, Reply, Response};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One command through the client library, to the first of `addrs` that answers; `None` if none
/// did within [`CALL_DEADLINE`]. For learning a node's state without parsing kv-cli's output.
pub fn call(addrs: &[String], args: &[&str]) -> Option<Response> {
    call_over(&Access::default(), addrs, args)
}

/// How the harness reaches a node: over which transport, logged in as whom.
#[derive(Clone, Default)]
pub struct Access {
    pub transport: Transport,
    /// A user and password to log in with first.
    pub login: Option<(String, String)>,
}

impl Access {
    pub fn tls(transport: Transport) -> Access {
        Access { transport, login: None }
    }
}

/// Like [`call`], with `access`.
pub fn call_over(access: &Access, addrs: &[String], args: &[&str]) -> Option<Response> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let attempt = async {
            let (mut client, _) = Client::connect_any(addrs, CALL_DEADLINE, &access.transport).await.ok()?;
            if let Some((user, password)) = &access.login {
                client.log_in(user, password).await.ok()?;
            }
            client.call(args.iter().map(|a| a.as_bytes().to_vec()).collect()).await.ok()
        };
        tokio::time::timeout(CALL_DEADLINE, attempt).await.ok().flatten()
    })
}

/// How long [`call`] waits for a connection and for its answer.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);

pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_kv-node");
pub const CLI_BIN: &str = env!("CARGO_BIN_EXE_kv-cli");

/// How long a node may take to start serving.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long one kv-cli run may take.
pub const CLI_DEADLINE: Duration = Duration::from_secs(60);

/// An HTTPS GET of `path` at `addr`, checking the node against `tls`'s CA: the whole answer,
/// head and body, within [`CALL_DEADLINE`].
pub fn https_get(tls: &kv::tls::ClientTls, addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let exchange = async {
            let mut stream = tls.connect(tokio::net::TcpStream::connect(addr).await.unwrap()).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: kv\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        };
        tokio::time::timeout(CALL_DEADLINE, exchange).await.expect("an answer in time")
    })
}

/// A port that was free a moment ago. The node may still lose a race for it; [`TestNode::start`]
/// then tries another.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `condition` every few milliseconds until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One running (or stopped) kv-node.
pub struct TestNode {
    pub addr: SocketAddr,
    /// How the harness reaches the node (plain unless the node serves TLS or wants a login).
    pub access: Access,
    pub data_dir: PathBuf,
    /// Extra flags given on every start.
    pub flags: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts a single node with a fresh data directory.
    pub fn start(flags: &[&str]) -> TestNode {
        let mut node = TestNode::stopped(SocketAddr::from(([127, 0, 0, 1], 0)), flags);
        node.boot_on_a_free_port();
        node
    }

    /// A node that is not running yet, on a free port with a fresh data directory.
    pub fn stopped_with(flags: &[&str]) -> TestNode {
        TestNode::stopped(SocketAddr::from(([127, 0, 0, 1], free_port())), flags)
    }

    /// A node that is not running yet, with a fresh data directory.
    fn stopped(addr: SocketAddr, flags: &[&str]) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        TestNode {
            addr,
            access: Access::default(),
            data_dir: dir.path().join("data"),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            child: None,
            log: dir.path().join("node.log"),
            _dir: Some(dir),
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn boot_on_a_free_port(&mut self) {
        for _ in 0..5 {
            self.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            if self.boot() {
                return;
            }
        }
        panic!("kv-node could not start:\n{}", self.log_text());
    }

    /// The kv-node command line for this node, its log going to a fresh log file.
    fn command(&self) -> Command {
        let log = std::fs::File::create(&self.log).unwrap();
        let mut command = Command::new(NODE_BIN);
        command
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.flags)
            .env("RUST_LOG", "info,kv=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    /// Starts the process on `self.addr`; false if it exited because the port was taken.
    pub fn boot(&mut self) -> bool {
        let child = self.command().spawn().unwrap();
        self.child = Some(child);
        // Ready means *this* process logged that it is serving: a successful connect alone could
        // reach another test's node that won a race for the same port.
        let start = Instant::now();
        loop {
            if self.log_text().contains("serving") {
                return true;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                let log = self.log_text();
                assert!(log.contains("cannot listen"), "kv-node exited with {status}:\n{log}");
                return false;
            }
            assert!(start.elapsed() < START_DEADLINE, "kv-node did not start:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the process expecting it to refuse to start: waits for it to exit, checks that it
    /// failed, and returns its log.
    pub fn boot_refused(&mut self) -> String {
        assert!(self.child.is_none(), "node is still running");
        let mut child = self.command().spawn().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > START_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kv-node was expected to refuse to start:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!status.success(), "kv-node was expected to fail:\n{}", self.log_text());
        self.log_text()
    }

    /// Waits for the node to exit on its own.
    pub fn wait_for_exit(&mut self, deadline: Duration) -> ExitStatus {
        self.reap(deadline)
    }

    /// The `CLUSTER` table as this node sees it: one JSON object per member.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let response = call_over(&self.access, &[self.addr.to_string()], &["CLUSTER"])
            .expect("the node answers CLUSTER");
        let Reply::Table { columns, rows } = response.reply else {
            panic!("CLUSTER answered {:?}", response.reply);
        };
        rows.into_iter()
            .map(|cells| {
                let cells = cells.into_iter().map(|cell| match cell {
                    Cell::Integer(n) => serde_json::Value::from(n),
                    Cell::Text(text) => serde_json::Value::from(text),
                    Cell::Nil => serde_json::Value::Null,
                });
                serde_json::Value::Object(columns.iter().cloned().zip(cells).collect())
            })
            .collect()
    }

    /// Member `id`'s row in the `CLUSTER` table as this node sees it, if it is a member.
    pub fn row(&self, id: u64) -> Option<serde_json::Value> {
        self.status().into_iter().find(|row| row["id"] == id)
    }

    /// Starts the node again on the same address and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "node is still running");
        wait_until("the old process's port to be free", START_DEADLINE, || self.boot());
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("node is running").id() as i32)
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        self.reap(Duration::from_secs(10));
    }

    /// SIGTERM, then waits for the node to exit on its own.
    pub fn terminate(&mut self) -> ExitStatus {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        self.reap(Duration::from_secs(15))
    }

    fn reap(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > deadline {
                let _ = child.kill();
                panic!("kv-node did not exit within {deadline:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs kv-cli against this node.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.run_cli(args, None)
    }

    /// Runs kv-cli against this node with `flags` and one `-c` per command.
    pub fn cli_commands(&self, flags: &[&str], commands: &[&str]) -> CliOutput {
        let mut args = flags.to_vec();
        for command in commands {
            args.extend(["-c", command]);
        }
        self.cli(&args)
    }

    /// Runs kv-cli against this node with `input` on its stdin.
    pub fn cli_piped(&self, args: &[&str], input: &[u8]) -> CliOutput {
        self.run_cli(args, Some(input))
    }

    fn run_cli(&self, args: &[&str], input: Option<&[u8]>) -> CliOutput {
        let addr = self.addr.to_string();
        let mut all = vec!["--addr", addr.as_str()];
        all.extend_from_slice(args);
        run_cli(&all, input, &[])
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: what the node logged is the best clue to why.
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(LOG_TAIL_LINES).collect();
            eprintln!("--- last lines of the log of the node on {} ---", self.addr);
            tail.iter().rev().for_each(|line| eprintln!("{line}"));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How much of each node's log a failed test prints.
const LOG_TAIL_LINES: usize = 80;

/// A cluster of real nodes on free loopback ports. Node `id` is `nodes[id - 1]`.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
}

/// How long a cluster may take to elect a leader and commit a first write.
pub const FORM_DEADLINE: Duration = Duration::from_secs(30);

impl TestCluster {
    /// Starts `size` nodes that know each other, each with `flags`, and waits until the cluster
    /// commits a write.
    pub fn start(size: u64, flags: &[&str]) -> TestCluster {
        TestCluster::start_on(None, size, flags, &|_| Vec::new(), &Access::default())
    }

    /// Like [`Self::start`], but the nodes reach each other only through `network`'s proxies,
    /// which the test can cut; clients still reach each node directly.
    pub fn start_behind(network: &network::Network, flags: &[&str]) -> TestCluster {
        let size = network.proxies.len() as u64;
        TestCluster::start_on(Some(network), size, flags, &|_| Vec::new(), &Access::default())
    }

    /// Like [`Self::start`], with node `id` also given `own_flags(id)`, and the harness reaching
    /// the nodes with `access`.
    pub fn start_each(
        size: u64,
        flags: &[&str],
        own_flags: &dyn Fn(u64) -> Vec<String>,
        access: &Access,
    ) -> TestCluster {
        TestCluster::start_on(None, size, flags, own_flags, access)
    }

    fn start_on(
        network: Option<&network::Network>,
        size: u64,
        flags: &[&str],
        own_flags: &dyn Fn(u64) -> Vec<String>,
        access: &Access,
    ) -> TestCluster {
        for _ in 0..5 {
            // Distinct ports: a port freed a moment ago can be handed out twice.
            let mut addrs: Vec<SocketAddr> = Vec::new();
            while addrs.len() < size as usize {
                let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            let mut nodes = Vec::new();
            // Where the members reach each other.
            let advertised = match network {
                Some(network) => network.proxies.clone(),
                None => addrs.clone(),
            };
            for id in 1..=size {
                let mut node_flags: Vec<String> = vec!["--id".into(), id.to_string()];
                if let Some(network) = network {
                    network.route(id, addrs[id as usize - 1]);
                    node_flags.extend(["--advertise".to_string(), advertised[id as usize - 1].to_string()]);
                }
                for (peer, addr) in (1..=size).zip(&advertised).filter(|(peer, _)| *peer != id) {
                    node_flags.extend(["--peer".to_string(), format!("{peer}={addr}")]);
                }
                node_flags.extend(flags.iter().map(|f| f.to_string()));
                node_flags.extend(own_flags(id));
                let flags: Vec<&str> = node_flags.iter().map(String::as_str).collect();
                let mut node = TestNode::stopped(addrs[id as usize - 1], &flags);
                node.access = access.clone();
                nodes.push(node);
            }
            // A lost race for a port means new ports for everyone: the peers' lists name them.
            if nodes.iter_mut().all(TestNode::boot) {
                let cluster = TestCluster { nodes };
                cluster.wait_for_a_leader();
                return cluster;
            }
        }
        panic!("could not start a cluster on free ports");
    }

    pub fn node(&mut self, id: u64) -> &mut TestNode {
        &mut self.nodes[id as usize - 1]
    }

    /// Every node's address, comma-separated, for `--addr`.
    pub fn addrs(&self) -> String {
        self.nodes.iter().map(|n| n.addr.to_string()).collect::<Vec<_>>().join(",")
    }

    /// The addresses of the running nodes only.
    pub fn live_addrs(&self) -> String {
        self.nodes.iter().filter(|n| n.is_running()).map(|n| n.addr.to_string()).collect::<Vec<_>>().join(",")
    }

    /// Runs kv-cli with every node's address.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let addrs = self.addrs();
        let mut all = vec!["--addr", addrs.as_str()];
        all.extend_from_slice(args);
        run_cli(&all, None, &[])
    }

    /// Runs kv-cli with every node's address and `input` on stdin.
    pub fn cli_piped(&self, args: &[&str], input: &[u8]) -> CliOutput {
        let addrs = self.addrs();
        let mut all = vec!["--addr", addrs.as_str()];
        all.extend_from_slice(args);
        run_cli(&all, Some(input), &[])
    }

    /// Waits until a write commits, and returns the id of the node that led it.
    pub fn wait_for_a_leader(&self) -> u64 {
        let mut leader = None;
        let addrs = self.live_addrs();
        let addrs: Vec<String> = addrs.split(',').map(String::from).collect();
        wait_until("the cluster to commit a write", FORM_DEADLINE, || {
            let answer = call_over(&self.nodes[0].access, &addrs, &["SET", "cluster-ready", "yes"]);
            leader = answer.filter(|a| !matches!(a.reply, Reply::Error { .. })).and_then(|a| a.leader);
            leader.is_some()
        });
        leader.unwrap()
    }

    /// The `CLUSTER` table as seen from node `via`: one JSON object per node.
    pub fn status(&self, via: u64) -> Vec<serde_json::Value> {
        self.nodes[via as usize - 1].status()
    }
}

/// A kv-cli process fed `SET` lines at a steady pace while a test does something to the cluster.
pub struct WritingClient {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    feeder: std::thread::JoinHandle<usize>,
    output: mpsc::Receiver<std::io::Result<std::process::Output>>,
    pid: Pid,
}

/// The most lines a [`WritingClient`] sends, and for how long at most.
const WRITER_MAX_LINES: usize = 50_000;
const WRITER_MAX_TIME: Duration = Duration::from_secs(120);

impl WritingClient {
    /// Starts kv-cli with `addrs` (comma-separated); it writes `SET {prefix}{i} {i}` about once a
    /// millisecond until [`Self::finish`].
    pub fn start(addrs: &str, prefix: &str) -> WritingClient {
        let prefix = prefix.to_string();
        WritingClient::start_lines(addrs, move |i| format!("SET {prefix}{i} {i}"))
    }

    /// Like [`Self::start`], sending `line(i)` as the `i`th command.
    pub fn start_lines(addrs: &str, line: impl Fn(usize) -> String + Send + 'static) -> WritingClient {
        let mut child = Command::new(CLI_BIN)
            .args(["--addr", addrs])
            .env_remove("KV_ADDR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let feeder = std::thread::spawn(move || {
            let started = Instant::now();
            let mut sent = 0;
            while sent < WRITER_MAX_LINES
                && started.elapsed() < WRITER_MAX_TIME
                && !stopping.load(std::sync::atomic::Ordering::Relaxed)
            {
                if writeln!(stdin, "{}", line(sent)).and_then(|_| stdin.flush()).is_err() {
                    break;
                }
                sent += 1;
                // Pacing, not waiting for a condition: a steady trickle of writes.
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        });
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        WritingClient { stop, feeder, output, pid }
    }

    /// Stops feeding, waits for kv-cli to answer everything and exit; returns its output and how
    /// many lines it was sent.
    pub fn finish(self) -> (CliOutput, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = self.feeder.join().unwrap();
        let output = match self.output.recv_timeout(CLI_DEADLINE) {
            Ok(output) => output.unwrap(),
            Err(_) => {
                let _ = kill(self.pid, Signal::SIGKILL);
                panic!("the writing kv-cli did not finish within {CLI_DEADLINE:?}");
            }
        };
        let out = CliOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        (out, sent)
    }
}

/// `count` commands made by `line(i)`, one per line, for piping into kv-cli.
pub fn script(count: usize, line: impl Fn(usize) -> String) -> Vec<u8> {
    (0..count).map(|i| line(i) + "\n").collect::<String>().into_bytes()
}

/// What one kv-cli run printed, and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// Runs kv-cli with the given arguments, environment and optional stdin, under a deadline.
pub fn run_cli(args: &[&str], input: Option<&[u8]>, env: &[(&str, &str)]) -> CliOutput {
    let mut child = Command::new(CLI_BIN)
        .args(args)
        .env_remove("KV_ADDR")
        .envs(env.iter().copied())
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(CLI_DEADLINE) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("kv-cli {args:?} did not finish within {CLI_DEADLINE:?}");
        }
    };
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes a file into a fresh temporary directory and returns both.
pub fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// A cluster of `size` nodes, each also serving HTTP on a port of its own (in id order).
pub fn http_cluster(size: u64, flags: &[String], access: &Access) -> (TestCluster, Vec<SocketAddr>) {
    let http: Vec<SocketAddr> = (0..size).map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect();
    let own = |id: u64| {
        let mut own = vec!["--http-listen".to_string(), http[id as usize - 1].to_string()];
        own.extend(flags.iter().cloned());
        own
    };
    let flags: Vec<&str> = Vec::new();
    (TestCluster::start_each(size, &flags, &own, access), http)
}
