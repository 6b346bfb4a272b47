//! `kv-cli bench`: a load generator in the spirit of `redis-benchmark` and etcd's `benchmark`.
//!
//! Each simulated client is one connection (spread round-robin over the given addresses) that
//! keeps `--pipeline` requests in flight: it sends that many, flushes once, and reads their
//! answers, as `redis-benchmark -P` does. Requests are drawn from a shared budget (`--requests`)
//! or sent until `--duration` has passed. Latency is measured per request, from the flush that
//! sent it to its answer, into one HdrHistogram per client, merged at the end.
//!
//! Everything runs on one thread (a current-thread runtime): on a small machine the generator
//! shares the cores with the nodes it measures, and one thread driving non-blocking sockets costs
//! less per request than several contending ones. The report says how much CPU the generator
//! used, so a reader can tell when it, not the cluster, was the limit.
//!
//! Nothing is dropped: every request ends as OK, an error answer (counted by code) or an unknown
//! outcome (`OUTCOME_UNKNOWN`). Each connection numbers its writes in a session of its own, so a
//! client whose connection breaks connects to the next node and sends its unanswered requests
//! again, up to [`super::MAX_SENDS`] times, as the shell does; what is still unanswered then is
//! an unknown outcome if it was a write.
//!
//! `--workload` picks the requests: `kv` (`SET` and `GET` on random keys, `--reads` deciding the
//! mix), `scan` (a `SCAN` page of `--scan-limit` keys from a random key; the report adds keys per
//! second), `incr` (`INCR` on one hot key), `txn` (a `TXN` with two compares and two writes on
//! random keys, whose compares always hold).

use super::{ExitStatus, Options};
use crate::client::{Client, ClientError, RequestSender, ResponseReceiver};
use crate::protocol::message::{ErrorCode, Reply, Request};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `kv-cli bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Concurrent clients (connections), spread over the --addr nodes in turn.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// Total requests to send (ignored when --duration is given).
    #[arg(short = 'n', long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: u64,
    /// Run for this many seconds instead of a number of requests.
    #[arg(long, value_name = "SECONDS", value_parser = super::parse_seconds)]
    pub duration: Option<Duration>,
    /// Number of distinct keys; each request picks one uniformly at random.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keyspace: u64,
    /// Size of each written value, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    pub value_size: usize,
    /// Requests each client keeps in flight (sent together, then awaited).
    #[arg(short = 'P', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub pipeline: u32,
    /// Share of requests that are reads (GET), in percent; the rest are writes (SET).
    #[arg(long, value_name = "PERCENT", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub reads: u8,
    /// How reads are served: linearizable (behind a read index the leader confirms) or local (any node, maybe stale).
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
    /// Write every key once before measuring, so that reads find values.
    #[arg(long)]
    pub prefill: bool,
    /// What the requests are (see the module docs): SET/GET, SCAN pages, INCR on one key, or TXN.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Kv)]
    pub workload: WorkloadKind,
    /// Keys per SCAN page in the scan workload.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub scan_limit: u32,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Kv,
    Scan,
    Incr,
    Txn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Linearizable,
    Local,
}

/// Latencies are recorded in microseconds, up to this many (a minute) with 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Keys are this prefix and a fixed-width number, so all keys have the same size.
const KEY_PREFIX: &str = "key:";
/// How often the progress line is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(200);
/// Prefill writes in pipelines this deep.
const PREFILL_PIPELINE: usize = 64;

/// What one client saw.
struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    /// Keys that SCAN pages carried.
    keys: u64,
    errors: BTreeMap<String, u64>,
    unknown: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            ok: 0,
            keys: 0,
            errors: BTreeMap::new(),
            unknown: 0,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency.add(&other.latency).expect("histograms with the same bounds");
        self.ok += other.ok;
        self.keys += other.keys;
        self.unknown += other.unknown;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }

    fn error(&mut self, code: &str) {
        *self.errors.entry(code.to_string()).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.ok + self.unknown + self.errors.values().sum::<u64>()
    }
}

/// Where clients take their next requests from.
struct Budget {
    /// Requests left to hand out (count mode).
    left: AtomicU64,
    /// When to stop (duration mode).
    until: Option<Instant>,
    /// Requests answered so far, for the progress line.
    done: AtomicU64,
}

impl Budget {
    /// Claims up to `want` requests; 0 means stop.
    fn claim(&self, want: u64) -> u64 {
        if let Some(until) = self.until {
            return if Instant::now() < until { want } else { 0 };
        }
        let mut left = self.left.load(Ordering::Relaxed);
        loop {
            let take = left.min(want);
            if take == 0 {
                return 0;
            }
            match self.left.compare_exchange_weak(left, left - take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(now) => left = now,
            }
        }
    }
}

/// The request mix every client draws from.
struct Workload {
    kind: WorkloadKind,
    keyspace: u64,
    key_width: usize,
    value: Vec<u8>,
    read_percent: u8,
    scan_limit: u32,
}

/// The hot key of the `incr` workload.
const COUNTER_KEY: &[u8] = b"bench:counter";

impl Workload {
    fn key(&self, n: u64) -> Vec<u8> {
        format!("{KEY_PREFIX}{n:0width$}", width = self.key_width).into_bytes()
    }

    /// The next request, and whether it writes.
    fn request(&self, rng: &mut fastrand::Rng) -> (Vec<Vec<u8>>, bool) {
        let key = self.key(rng.u64(0..self.keyspace));
        match self.kind {
            WorkloadKind::Kv if rng.u8(0..100) < self.read_percent => (vec![b"GET".to_vec(), key], false),
            WorkloadKind::Kv => (vec![b"SET".to_vec(), key, self.value.clone()], true),
            WorkloadKind::Scan => {
                let limit = self.scan_limit.to_string().into_bytes();
                (vec![b"SCAN".to_vec(), key, b"LIMIT".to_vec(), limit], false)
            }
            WorkloadKind::Incr => (vec![b"INCR".to_vec(), COUNTER_KEY.to_vec()], true),
            WorkloadKind::Txn => {
                let other = self.key(rng.u64(0..self.keyspace));
                // Compares that always hold, so that both writes are applied every time.
                let always = i64::MAX.to_string().into_bytes();
                let mut args = vec![b"TXN".to_vec()];
                for k in [&key, &other] {
                    args.extend([b"MOD".to_vec(), k.clone(), b"<".to_vec(), always.clone()]);
                }
                args.push(b"THEN".to_vec());
                for k in [key, other] {
                    args.extend([b"SET".to_vec(), k, self.value.clone()]);
                }
                (args, true)
            }
        }
    }
}

/// The report, as printed and as JSON.
#[derive(Debug, serde::Serialize)]
struct Report {
    workload: WorkloadKind,
    clients: u32,
    pipeline: u32,
    reads_percent: u8,
    consistency: Consistency,
    keyspace: u64,
    value_size: usize,
    requests: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    unknown: u64,
    seconds: f64,
    requests_per_second: f64,
    /// For the scan workload: keys the pages carried, per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    keys_per_second: Option<f64>,
    latency_ms: Latency,
    /// CPU time the benchmark process used, in cores (1.0 = one core busy all the time).
    client_cpu_cores: f64,
    /// The same as a share of the machine's cores.
    client_cpu_share: f64,
}

#[derive(Debug, serde::Serialize)]
struct Latency {
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p99_9: f64,
    max: f64,
}

/// Runs the benchmark and prints its report. Fails (exit 2) if no node can be reached.
pub fn run(runtime: tokio::runtime::Runtime, args: &BenchArgs, options: &Options, json: bool) -> ExitStatus {
    match runtime.block_on(measure(args, options)) {
        Ok(report) => {
            if json || args.json {
                println!("{}", serde_json::to_string(&report).expect("a report serializes"));
            } else {
                print!("{}", report.text());
            }
            if report.ok == report.requests { ExitStatus::Success } else { ExitStatus::ErrorReply }
        }
        Err(e) => {
            eprintln!("kv-cli bench: {e}");
            ExitStatus::Failure
        }
    }
}

async fn measure(args: &BenchArgs, options: &Options) -> Result<Report, ClientError> {
    let workload = Arc::new(Workload {
        kind: args.workload,
        scan_limit: args.scan_limit,
        keyspace: args.keyspace,
        key_width: (args.keyspace - 1).max(1).ilog10() as usize + 1,
        value: vec![b'x'; args.value_size],
        read_percent: args.reads,
    });
    let mut connections = Vec::with_capacity(args.clients as usize);
    for i in 0..args.clients as usize {
        let (mut client, _, _) = super::connect(options, i % options.addrs.len()).await?;
        let mut request = options.request.clone();
        request.local = args.consistency == Consistency::Local;
        request.wait_acks = false;
        client.set_options(request.clone());
        // A session per connection: each keeps its pipeline's writes within what a session
        // remembers, as a client of its own would.
        let session = crate::client::ClientSession::new()?;
        client.set_session(session.clone());
        let reconnect = Reconnect { options: options.clone(), next_addr: i, request, session };
        connections.push((client, reconnect));
    }
    if args.prefill {
        prefill(&workload, options).await?;
    }

    let budget = Arc::new(Budget {
        left: AtomicU64::new(args.requests),
        until: args.duration.map(|d| Instant::now() + d),
        done: AtomicU64::new(0),
    });
    let progress = Progress::start(args, &budget);
    let cpu_before = cpu_time();
    let started = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(i, (client, reconnect))| {
            let (workload, budget) = (workload.clone(), budget.clone());
            let (pipeline, timeout) = (u64::from(args.pipeline), options.timeout);
            tokio::spawn(drive(client, reconnect, workload, budget, pipeline, timeout, i as u64))
        })
        .collect();
    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(task.await.expect("a client task does not panic"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_time().saturating_sub(cpu_before).as_secs_f64() / seconds;
    progress.finish();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let ms = |us: u64| us as f64 / 1000.0;
    let h = &tally.latency;
    let requests = tally.total();
    Ok(Report {
        workload: args.workload,
        keys_per_second: (args.workload == WorkloadKind::Scan).then(|| tally.keys as f64 / seconds),
        clients: args.clients,
        pipeline: args.pipeline,
        reads_percent: args.reads,
        consistency: args.consistency,
        keyspace: args.keyspace,
        value_size: args.value_size,
        requests,
        ok: tally.ok,
        unknown: tally.unknown,
        errors: tally.errors,
        seconds,
        requests_per_second: requests as f64 / seconds,
        latency_ms: Latency {
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        },
        client_cpu_cores: cpu,
        client_cpu_share: cpu / cores,
    })
}

/// Writes every key of the keyspace once, unmeasured, over a connection of its own.
async fn prefill(workload: &Workload, options: &Options) -> Result<(), ClientError> {
    let (client, _, _) = super::connect(options, 0).await?;
    let (mut sender, mut receiver) = client.split();
    let keys: Vec<u64> = (0..workload.keyspace).collect();
    for chunk in keys.chunks(PREFILL_PIPELINE) {
        for &n in chunk {
            sender.send(vec![b"SET".to_vec(), workload.key(n), workload.value.clone()]).await?;
        }
        sender.flush().await?;
        for _ in chunk {
            let response = tokio::time::timeout(options.timeout, receiver.next())
                .await
                .map_err(|_| ClientError::Timeout(options.timeout))??;
            if let Reply::Error { code, message } = response.reply {
                return Err(ClientError::Protocol(format!("prefill failed: {code} {message}")));
            }
        }
    }
    Ok(())
}

/// How a benchmark client connects again after losing its node: to the next address, with the
/// same settings and the same session (its unanswered writes keep their numbers).
struct Reconnect {
    options: Options,
    next_addr: usize,
    request: crate::client::RequestOptions,
    session: Arc<crate::client::ClientSession>,
}

impl Reconnect {
    async fn open(&mut self) -> Result<Client, ClientError> {
        self.next_addr += 1;
        let (mut client, _, index) =
            super::connect(&self.options, self.next_addr % self.options.addrs.len()).await?;
        self.next_addr = index;
        client.set_options(self.request.clone());
        client.set_session(self.session.clone());
        Ok(client)
    }
}

/// One client: sends `pipeline` requests at a time until the budget runs out.
async fn drive(
    client: Client,
    mut reconnect: Reconnect,
    workload: Arc<Workload>,
    budget: Arc<Budget>,
    pipeline: u64,
    timeout: Duration,
    seed: u64,
) -> Tally {
    let mut tally = Tally::new();
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut sender, mut receiver) = client.split();
    let mut burst: Vec<Request> = Vec::with_capacity(pipeline as usize);
    loop {
        let n = budget.claim(pipeline);
        if n == 0 {
            return tally;
        }
        burst.clear();
        burst.extend((0..n).map(|_| sender.prepare(workload.request(&mut rng).0)));
        let sent_at = Instant::now();
        let mut answered = 0;
        for sends in 1..=super::MAX_SENDS {
            let outcome = match send_burst(&mut sender, &burst[answered..]).await {
                Ok(()) => {
                    receive_burst(&mut receiver, burst.len() - answered, sent_at, timeout, &mut tally).await
                }
                Err(e) => Err((0, e)),
            };
            let Err((got, e)) = outcome else {
                // Answered, every one: the cluster may forget them.
                burst.iter().for_each(|request| sender.answered(request.once));
                break;
            };
            answered += got;
            let reopened = match sends < super::MAX_SENDS {
                true => reconnect.open().await.ok(),
                false => None,
            };
            if let Some(client) = reopened {
                // Sent again as they were: a numbered write is applied at most once.
                (sender, receiver) = client.split();
                continue;
            }
            // No node took them: what was not answered has an unknown outcome if it was a
            // write, and failed if it was a read. This client stops; the others go on (and, in
            // count mode, send the requests it did not claim).
            for request in &burst[answered..] {
                if request.once.is_some() { tally.unknown += 1 } else { tally.error("CONNECTION_LOST") }
            }
            tracing::warn!(error = %e, "a benchmark client lost its connection");
            budget.done.fetch_add(n, Ordering::Relaxed);
            return tally;
        }
        budget.done.fetch_add(n, Ordering::Relaxed);
    }
}

async fn send_burst(sender: &mut RequestSender, burst: &[Request]) -> Result<(), ClientError> {
    for request in burst {
        sender.send_request(request.clone()).await?;
    }
    sender.flush().await
}

/// Reads the answers to `count` requests; on failure, how many were answered and why it stopped.
async fn receive_burst(
    receiver: &mut ResponseReceiver,
    count: usize,
    sent_at: Instant,
    timeout: Duration,
    tally: &mut Tally,
) -> Result<(), (usize, ClientError)> {
    for answered in 0..count {
        let response = match tokio::time::timeout(timeout, receiver.next()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err((answered, e)),
            Err(_) => return Err((answered, ClientError::Timeout(timeout))),
        };
        let micros = sent_at.elapsed().as_micros() as u64;
        tally.latency.saturating_record(micros.max(1));
        match response.reply {
            Reply::Error { code: ErrorCode::OutcomeUnknown, .. } => tally.unknown += 1,
            Reply::Error { code, .. } => tally.error(code.as_str()),
            Reply::Entries { entries, .. } => {
                tally.keys += entries.len() as u64;
                tally.ok += 1;
            }
            _ => tally.ok += 1,
        }
    }
    Ok(())
}

/// The live progress line, drawn only when stderr is a terminal.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(args: &BenchArgs, budget: &Arc<Budget>) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None, ticker: None };
        }
        let (bar, template) = match args.duration {
            Some(d) => (
                indicatif::ProgressBar::new(d.as_millis() as u64),
                "{spinner} {elapsed_precise} [{wide_bar}] {msg}",
            ),
            None => (indicatif::ProgressBar::new(args.requests), "{spinner} [{wide_bar}] {pos}/{len} {msg}"),
        };
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template"));
        let (shown, budget) = (bar.clone(), budget.clone());
        let timed = args.duration.is_some();
        let ticker = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(PROGRESS_TICK);
            loop {
                tick.tick().await;
                let done = budget.done.load(Ordering::Relaxed);
                let elapsed = started.elapsed();
                shown.set_position(if timed { elapsed.as_millis() as u64 } else { done });
                shown.set_message(format!("{:.0} req/s", done as f64 / elapsed.as_secs_f64().max(1e-3)));
            }
        });
        Progress { bar: Some(bar), ticker: Some(ticker) }
    }

    fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |usage| {
        let (user, system) = (usage.user_time(), usage.system_time());
        let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
        Duration::from_micros(micros(user) + micros(system))
    })
}

impl Report {
    fn text(&self) -> String {
        let mix = match (self.workload, self.reads_percent) {
            (WorkloadKind::Scan, _) => format!("{} scans (SCAN)", self.consistency_name()),
            (WorkloadKind::Incr, _) => "INCR on one key".to_string(),
            (WorkloadKind::Txn, _) => "TXN, 2 compares and 2 writes".to_string(),
            (WorkloadKind::Kv, 0) => "writes (SET)".to_string(),
            (WorkloadKind::Kv, 100) => format!("{} reads (GET)", self.consistency_name()),
            (WorkloadKind::Kv, r) => format!("{r}% {} reads, {}% writes", self.consistency_name(), 100 - r),
        };
        let keys = self.keys_per_second.map(|k| format!(" ({k:.0} keys/s)")).unwrap_or_default();
        let errors = if self.errors.is_empty() {
            "0".to_string()
        } else {
            self.errors.iter().map(|(code, n)| format!("{n} {code}")).collect::<Vec<_>>().join(", ")
        };
        let l = &self.latency_ms;
        format!(
            "{mix}: {} clients, pipeline {}, {} keys, {}-byte values\n\
             requests:   {} in {:.2} s: {:.0} requests/s{keys}\n\
             outcomes:   {} OK, errors: {errors}, unknown: {}\n\
             latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})\n\
             client cpu: {:.2} cores ({:.0}% of this machine)\n",
            self.clients,
            self.pipeline,
            self.keyspace,
            self.value_size,
            self.requests,
            self.seconds,
            self.requests_per_second,
            self.ok,
            self.unknown,
            l.p50,
            l.p90,
            l.p99,
            l.p99_9,
            l.max,
            l.mean,
            self.client_cpu_cores,
            self.client_cpu_share * 100.0,
        )
    }

    fn consistency_name(&self) -> &'static str {
        match self.consistency {
            Consistency::Linearizable => "linearizable",
            Consistency::Local => "local",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_hands_out_exactly_the_requests_asked_for() {
        let budget = Budget { left: AtomicU64::new(10), until: None, done: AtomicU64::new(0) };
        assert_eq!([budget.claim(4), budget.claim(4), budget.claim(4), budget.claim(4)], [4, 4, 2, 0]);
    }

    #[test]
    fn keys_have_one_width_and_the_mix_follows_the_read_share() {
        let workload = Workload {
            kind: WorkloadKind::Kv,
            keyspace: 1000,
            key_width: 3,
            value: vec![b'x'; 16],
            read_percent: 30,
            scan_limit: 1000,
        };
        assert_eq!(workload.key(7), b"key:007");
        let mut rng = fastrand::Rng::with_seed(1);
        let writes = (0..10_000).filter(|_| workload.request(&mut rng).1).count();
        assert!((6_500..7_500).contains(&writes), "{writes} writes of 10,000 at 30% reads");
    }

    #[test]
    fn every_workload_sends_commands_the_node_accepts() {
        use crate::command::{Command, Limits};
        let limits = Limits { max_key_bytes: 64, max_value_bytes: 64, max_keys: 10, max_write_bytes: 4096 };
        let mut rng = fastrand::Rng::with_seed(1);
        for kind in [WorkloadKind::Kv, WorkloadKind::Scan, WorkloadKind::Incr, WorkloadKind::Txn] {
            let workload = Workload {
                kind,
                keyspace: 100,
                key_width: 2,
                value: vec![b'x'; 16],
                read_percent: 50,
                scan_limit: 1000,
            };
            for _ in 0..20 {
                let (args, writes) = workload.request(&mut rng);
                let args = args.into_iter().map(serde_bytes::ByteBuf::from).collect();
                let command = Command::parse(args, &limits).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
                assert_eq!(matches!(command, Command::Write(_)), writes, "{kind:?}: {command:?}");
            }
        }
    }

    #[test]
    fn tallies_merge_counts_and_latencies() {
        let mut a = Tally::new();
        a.ok = 2;
        a.latency.record(100).unwrap();
        a.error("NO_QUORUM");
        let mut b = Tally::new();
        b.unknown = 1;
        b.latency.record(300).unwrap();
        b.error("NO_QUORUM");
        a.merge(b);
        assert_eq!((a.ok, a.unknown, a.errors["NO_QUORUM"], a.total()), (2, 1, 2, 5));
        assert_eq!(a.latency.len(), 2);
    }
}
