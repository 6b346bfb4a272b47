//! kv-cli: the interactive shell (`shell`), `-c` and piped batches (`batch`), and the pieces they
//! share: one line splitter (`split`) and one way of printing answers (`output`).
//!
//! Exit status: 0 when every command succeeded (a missing key is a success), 1 when the node
//! answered an error (or a line could not be parsed), 2 for usage errors and connection failures,
//! 3 when a write succeeded but fewer peers than `--min-acks` had acknowledged it, 4 when a
//! write's outcome is unknown (it may or may not have been applied). The first failure decides.

pub mod batch;
pub mod bench;
pub mod block;
pub mod cert;
pub mod demo;
pub mod hints;
pub mod output;
pub mod shell;

use crate::client::{Client, ClientError, NodeInfo, RequestOptions, Transport};
use crate::command::{COMMANDS, lookup};
use crate::protocol::message::{ErrorCode, Reply, Response};
use crate::tls::{ClientTls, TlsError};
use output::{Format, Printer};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// kv-cli's command-line flags.
#[derive(Debug, clap::Parser)]
#[command(
    name = "kv-cli",
    version,
    about = "Client shell for a kv cluster",
    after_help = "Exit status: 0 success, 1 error answer, 2 usage or connection failure, \
                  3 fewer peer acks than --min-acks, 4 a write's outcome is unknown."
)]
pub struct CliArgs {
    #[command(subcommand)]
    pub mode: Option<Mode>,
    /// Node addresses to try in order; comma-separated or repeated.
    #[arg(
        long = "addr",
        value_name = "HOST:PORT",
        env = "KV_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001"
    )]
    pub addrs: Vec<String>,
    /// Run COMMAND and exit; repeat to run several in order.
    #[arg(short = 'c', value_name = "COMMAND")]
    pub commands: Vec<String>,
    /// Stop at the first error; commands after it are not sent.
    #[arg(short = 'e', long)]
    pub stop_on_error: bool,
    /// Bare answers without type prefixes or colour (the default when stdout is not a terminal).
    #[arg(long, overrides_with = "no_raw")]
    pub raw: bool,
    /// Typed answers even when stdout is not a terminal.
    #[arg(long, overrides_with = "raw")]
    pub no_raw: bool,
    /// One JSON object per answer (NDJSON).
    #[arg(long, conflicts_with_all = ["raw", "no_raw"])]
    pub json: bool,
    /// How long to wait for an answer.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// How long to wait for a node to accept the connection.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub connect_timeout: Duration,
    /// Read from the connected node's own state: faster, but possibly stale (not linearizable).
    #[arg(long)]
    pub local: bool,
    /// Print each write's replication picture in plain output too (the shell always shows it).
    #[arg(long)]
    pub acks: bool,
    /// A write acknowledged by fewer than N peers (nodes other than the leader) makes kv-cli exit
    /// with status 3. The leader waits up to --ack-timeout for them.
    #[arg(long, value_name = "N")]
    pub min_acks: Option<u32>,
    /// How long the leader waits for --min-acks peer acknowledgements.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds, requires = "min_acks")]
    pub ack_timeout: Duration,
    /// Connect over TLS, trusting the cluster's CA certificate in FILE (PEM).
    #[arg(long, value_name = "FILE", env = "KV_CA")]
    pub ca: Option<PathBuf>,
    /// With --ca: present this client certificate (PEM); its common name is the user logged in.
    #[arg(long, value_name = "FILE", env = "KV_CERT", requires_all = ["ca", "key"])]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE", env = "KV_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Log in as USER on every connection; the password comes from --password-file, else
    /// $KV_PASSWORD, else a prompt that does not echo.
    #[arg(long, value_name = "USER", env = "KV_USER")]
    pub user: Option<String>,
    /// The file whose first line is --user's password.
    #[arg(long, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
}

/// A user and password to log in with on every connection.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({})", self.user)
    }
}

impl CliArgs {
    /// The login from --user and its password's source.
    fn login(&self) -> Result<Option<Login>, String> {
        let Some(user) = &self.user else { return Ok(None) };
        let password = match (&self.password_file, std::env::var("KV_PASSWORD")) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            (None, Ok(password)) => password,
            (None, Err(_)) if std::io::stdin().is_terminal() => {
                rpassword::prompt_password(format!("password for {user}: "))
                    .map_err(|e| format!("cannot read the password: {e}"))?
            }
            (None, Err(_)) => {
                return Err(format!(
                    "--user {user} needs a password: --password-file, $KV_PASSWORD, or a terminal to type it"
                ));
            }
        };
        Ok(Some(Login { user: user.clone(), password }))
    }

    /// How to reach the nodes, from --ca, --cert and --key.
    fn transport(&self) -> Result<Transport, TlsError> {
        let Some(ca) = &self.ca else { return Ok(Transport::plain()) };
        let identity = self.cert.as_deref().zip(self.key.as_deref());
        Ok(Transport::tls(ClientTls::load(ca, identity)?))
    }
}

/// Modes other than talking to an existing cluster.
#[derive(Debug, clap::Subcommand)]
pub enum Mode {
    /// Start a throwaway local cluster (data in a temp dir) and attach to it.
    Demo(demo::DemoArgs),
    /// Measure the cluster's throughput and latency under load from many clients.
    Bench(bench::BenchArgs),
    /// Make the certificates of a secure cluster: its CA, its nodes', its clients'.
    Cert(cert::CertArgs),
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// What every mode needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub addrs: Vec<String>,
    pub stop_on_error: bool,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Plain TCP or TLS.
    pub transport: Transport,
    /// Sent as `AUTH` on every new connection.
    pub login: Option<Login>,
    /// Sent with every request.
    pub request: RequestOptions,
    /// Numbers every write, so that one whose outcome is unknown can be sent again, to another
    /// node, and is still applied at most once.
    pub session: Option<Arc<crate::client::ClientSession>>,
    /// The demo's nodes, when running `kv-cli demo`: the target of dot commands.
    pub demo: Option<DemoControl>,
}

/// A handle on the demo cluster for dot commands; clones share it.
#[derive(Clone)]
pub struct DemoControl(Arc<Mutex<demo::DemoCluster>>);

impl std::fmt::Debug for DemoControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DemoControl")
    }
}

impl DemoControl {
    /// Runs a dot command (starting and stopping processes blocks); returns what to tell the user
    /// and, when it took a node down, that node's address.
    pub fn run(&self, command: demo::DemoCommand) -> (Result<String, String>, Option<String>) {
        let mut cluster = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let result = cluster.run(command);
        let down = match command {
            demo::DemoCommand::Node(demo::NodeAction::Stop | demo::NodeAction::Kill, id)
                if result.is_ok() =>
            {
                cluster.addr(id)
            }
            _ => None,
        };
        (result, down)
    }
}

/// kv-cli's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success = 0,
    ErrorReply = 1,
    Failure = 2,
    TooFewAcks = 3,
    OutcomeUnknown = 4,
}

/// What an answer means for the exit status, with a warning to show when a write fell short of
/// `--min-acks`.
pub fn judge(response: &Response, options: &Options) -> (ExitStatus, Option<String>) {
    match &response.reply {
        Reply::Error { code: ErrorCode::OutcomeUnknown, .. } => (ExitStatus::OutcomeUnknown, None),
        Reply::Error { .. } => (ExitStatus::ErrorReply, None),
        _ => match (options.request.min_acks, &response.replication) {
            (Some(min), Some(replication)) if replication.acked() < min as usize => (
                ExitStatus::TooFewAcks,
                Some(format!(
                    "the write was applied, but only {} of the {min} required peers acknowledged it",
                    replication.acked()
                )),
            ),
            _ => (ExitStatus::Success, None),
        },
    }
}

impl ExitStatus {
    /// Keeps the first failure: `self` unless it is a success.
    pub fn or(self, later: ExitStatus) -> ExitStatus {
        if self == ExitStatus::Success { later } else { self }
    }
}

/// Whether a command line changes the store, so that it must not be resent after its answer was
/// lost.
pub fn writes(args: &[Vec<u8>]) -> bool {
    crate::command::changes_state(args)
}

/// How many times kv-cli sends one command at most: a read, or a write numbered in its session,
/// is sent again to the next node after a lost connection or an unknown outcome.
pub const MAX_SENDS: usize = 4;

/// The answer to a write sent again: a refusal now (`NO_QUORUM`) does not undo an earlier send
/// whose outcome was unknown, which may still be applied; that is reported as it is.
pub fn after_resending(mut response: Response) -> Response {
    if let Reply::Error { code: ErrorCode::NoQuorum, message } = &response.reply {
        let message = format!(
            "{message}; but an earlier send of this write had an unknown outcome: it may or may not have \
             been applied"
        );
        response.reply = Reply::error(ErrorCode::OutcomeUnknown, message);
    }
    response
}

/// Connects to the first address that answers, starting at `addrs[first]`, and applies the
/// request options. Also returns the address's index, so that a reconnection can start after it.
pub async fn connect(options: &Options, first: usize) -> Result<(Client, NodeInfo, usize), ClientError> {
    let (mut client, info) =
        Client::connect_any_from(&options.addrs, first, options.connect_timeout, &options.transport).await?;
    if let Some(login) = &options.login {
        client.log_in(&login.user, &login.password).await?;
    }
    client.set_options(options.request.clone());
    if let Some(session) = &options.session {
        client.set_session(session.clone());
    }
    let index = options.addrs.iter().position(|a| *a == info.addr).unwrap_or(first);
    Ok((client, info, index))
}

/// Commands that kv-cli answers itself.
pub enum LocalCommand {
    Quit,
    /// Help text, or an error for an unknown topic.
    Help(Result<String, String>),
    /// A dot command for the demo's nodes, or why the line is not one.
    Demo(Result<demo::DemoCommand, String>),
}

/// Recognises kv-cli's own commands.
pub fn local_command(args: &[Vec<u8>]) -> Option<LocalCommand> {
    let name = args.first()?;
    if name.eq_ignore_ascii_case(b"QUIT") || name.eq_ignore_ascii_case(b"EXIT") {
        return Some(LocalCommand::Quit);
    }
    if name.eq_ignore_ascii_case(b"HELP") {
        return Some(LocalCommand::Help(help(args.get(1).map(Vec::as_slice))));
    }
    if name.starts_with(b".") {
        return Some(LocalCommand::Demo(demo::DemoCommand::parse(args)));
    }
    None
}

/// `HELP` and `HELP <command>`.
pub fn help(topic: Option<&[u8]>) -> Result<String, String> {
    if let Some(topic) = topic {
        let spec = lookup(topic)
            .ok_or_else(|| format!("no help for '{}': not a command", String::from_utf8_lossy(topic)))?;
        return Ok(format!("  {} {}\n  {}", spec.name, spec.args, spec.summary));
    }
    let mut text = String::from(
        "Commands (names are case-insensitive; quote arguments with spaces like \"hello world\";\n\
         escapes such as \"\\n\" and \"\\x00\" work inside double quotes):\n",
    );
    for spec in COMMANDS {
        text.push_str(&format!("  {:<24} {}\n", format!("{} {}", spec.name, spec.args), spec.summary));
    }
    text.push_str(&format!("  {:<24} {}\n", "HELP [command]", "Show this help, or one command's."));
    text.push_str(&format!("  {:<24} {}\n", "QUIT", "Leave (Ctrl-D works too)."));
    text.push_str("In kv-cli demo only:\n");
    text.push_str(demo::DEMO_HELP);
    Ok(text)
}

/// Runs kv-cli and returns its exit status.
pub fn run(args: CliArgs) -> ExitStatus {
    let stdout_is_tty = std::io::stdout().is_terminal();
    let format = if args.json {
        Format::Json
    } else if args.raw || (!args.no_raw && !stdout_is_tty) {
        Format::Raw
    } else {
        Format::Human
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let printer = Printer::new(format, stdout_is_tty && !no_color, args.acks);
    let transport = match args.transport() {
        Ok(transport) => transport,
        Err(e) => {
            printer.error(output::CONNECTION, &e.to_string());
            return ExitStatus::Failure;
        }
    };
    let login = match args.login() {
        Ok(login) => login,
        Err(e) => {
            printer.error(output::CONNECTION, &e);
            return ExitStatus::Failure;
        }
    };
    let mut options = Options {
        addrs: args.addrs,
        stop_on_error: args.stop_on_error,
        timeout: args.timeout,
        connect_timeout: args.connect_timeout,
        transport,
        login,
        request: RequestOptions {
            local: args.local,
            min_acks: args.min_acks,
            ack_timeout: args.min_acks.map(|_| args.ack_timeout),
            // Whoever will see the pictures gets complete ones.
            wait_acks: args.acks || args.json || (args.commands.is_empty() && std::io::stdin().is_terminal()),
        },
        session: None,
        demo: None,
    };
    match crate::client::ClientSession::new() {
        Ok(session) => options.session = Some(session),
        Err(e) => {
            printer.error(output::CONNECTION, &format!("cannot draw a random session id: {e}"));
            return ExitStatus::Failure;
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            printer.error(output::CONNECTION, &format!("cannot start the runtime: {e}"));
            return ExitStatus::Failure;
        }
    };
    let demo_args = match args.mode {
        None => return run_mode(runtime, args.commands, options, printer),
        Some(Mode::Bench(bench)) => return bench::run(runtime, &bench, &options, args.json),
        Some(Mode::Demo(demo_args)) => demo_args,
        Some(Mode::Cert(cert)) => return run_cert(&cert),
    };
    let cluster = match demo::DemoCluster::start(!demo_args.insecure) {
        Ok(cluster) => cluster,
        Err(e) => {
            printer.error(output::CONNECTION, &e.to_string());
            return ExitStatus::Failure;
        }
    };
    if let Some(security) = cluster.security() {
        match security.client() {
            Ok((transport, login)) => {
                options.transport = transport;
                options.login = Some(login);
            }
            Err(e) => {
                printer.error(output::CONNECTION, &e.to_string());
                return ExitStatus::Failure;
            }
        }
    }
    eprintln!("{}", cluster.banner());
    options.addrs = cluster.addrs();
    if demo_args.open
        && let Some(url) = cluster.console_url(1)
    {
        open_browser(&url);
    }
    let control = DemoControl(Arc::new(Mutex::new(cluster)));
    // The console's buttons act through a weak handle, so that the demo can still take the
    // cluster back to stop it.
    let weak = Arc::downgrade(&control.0);
    control.0.lock().unwrap_or_else(|p| p.into_inner()).serve_controls(move |command| match weak.upgrade() {
        Some(cluster) => DemoControl(cluster).run(command).0,
        None => Err("the demo is ending".to_string()),
    });
    options.demo = Some(control.clone());
    let status = run_mode(runtime, args.commands, options, printer);
    // Every other handle went with the options.
    let cluster = Arc::try_unwrap(control.0).ok().map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()));
    if let Some(kept) = cluster.and_then(|c| c.stop(demo_args.keep)) {
        eprintln!("kv demo: data kept in {}", kept.display());
    }
    status
}

/// Opens `url` in the system's browser, or says how to open it.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let opened = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = opened {
        eprintln!("kv demo: cannot open a browser ({opener}: {e}); open {url} yourself");
    }
}

/// `kv-cli cert`: makes a certificate and says where it went.
fn run_cert(args: &cert::CertArgs) -> ExitStatus {
    match cert::run(args) {
        Ok(made) => {
            println!("wrote {} and {}", made.cert.display(), made.key.display());
            ExitStatus::Success
        }
        Err(e) => {
            eprintln!("kv-cli cert: {e}");
            ExitStatus::Failure
        }
    }
}

/// Runs `-c` commands, the shell on a terminal, or the lines piped to stdin.
fn run_mode(
    runtime: tokio::runtime::Runtime,
    commands: Vec<String>,
    options: Options,
    printer: Printer,
) -> ExitStatus {
    if !commands.is_empty() {
        let (tx, rx) = mpsc::channel(commands.len());
        for command in commands {
            let _ = tx.try_send(Ok(command));
        }
        drop(tx);
        return runtime.block_on(batch::run(rx, &options, &printer));
    }
    if std::io::stdin().is_terminal() {
        let mut printer = printer;
        printer.show_acks();
        return shell::run(runtime, options, printer);
    }
    let (tx, rx) = mpsc::channel(batch::WINDOW);
    // Reading stdin blocks, so it gets its own thread; the channel's bound keeps it from reading
    // far ahead of what the node has answered.
    std::thread::spawn(move || read_lines(std::io::stdin().lock(), &tx));
    runtime.block_on(batch::run(rx, &options, &printer))
}

fn read_lines(mut input: impl BufRead, tx: &mpsc::Sender<batch::Line>) {
    for number in 1.. {
        let mut buf = Vec::new();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(format!("cannot read input: {e}")));
                return;
            }
        }
        let line = String::from_utf8(buf)
            .map_err(|_| format!("line {number} is not valid UTF-8; write binary data with \\xHH escapes"));
        if tx.blocking_send(line).is_err() {
            return;
        }
    }
}
