//! Golden tests of request routing: scripts in `src/server/testscripts/executor/` drive the
//! executor against a scripted [`FakeCluster`], in tokio's paused time, and the expected trace
//! and answers sit beside each command. Regenerate after a deliberate change with
//! `UPDATE_GOLDENFILES=1 cargo test --lib executor`, and read the diff.
//!
//! Commands:
//!
//! - `cluster [id=1] [leader=me|none|N] [timeout=MS] [handover]`: a fresh fake node; `handover`
//!   marks a leadership handover under way (proposals cannot be made at once).
//! - `leader me|none|N`: who this node believes leads from now on.
//! - `expect OP OUTCOME... [delay=MS] [leader=me|none|N]`: the next call of `OP` takes
//!   `delay` of (paused) time, answers the outcomes given (one per request; the last repeats),
//!   and then leaves this node believing `leader` leads. `OP` is `propose`, `forward`,
//!   `read-index`, `change` or `news` (a wait for leadership news). Outcomes: `ok`,
//!   `not-leader`, `unreachable`, `stopping`, `unknown`, `applied-unknown` (a proposal applied,
//!   its answer lost), `refused` (a change), `none` (no read index). An `OP` with nothing
//!   scripted succeeds at once.
//! - `run [forwarded-by=N] [local] [min-acks=N] [ack-timeout=MS] [session=S] "CMD ARGS" ...`:
//!   executes one batch (with `session`, each request numbered by its place in it); prints each
//!   call the executor made of the cluster, then each answer, and the (paused) time it took.
//! - `ahead [forwarded-by=N] "CMD ARGS" ...`: offers the batch to a forwarding connection's
//!   propose-ahead window (the leader's half of forwarding); prints whether it was proposed
//!   ahead, then the answers either way.

use super::*;
use crate::command::Limits;
use crate::protocol::message::{Cell, Replication};
use crate::server::acks::AckWait;
use crate::server::cluster::{Proposed, Written};
use crate::server::forward::Ahead;
use serde_bytes::ByteBuf;
use std::collections::{HashMap, VecDeque};
use std::error::Error;
use std::fmt::Write as _;
use std::sync::Mutex;
use test_each_file::test_each_path;

fn kv_once(session: u64, seq: u64) -> crate::protocol::message::Once {
    crate::protocol::message::Once { session, seq, answered_below: 0 }
}

/// The limits the scripts' commands are parsed with.
const LIMITS: Limits =
    Limits { max_key_bytes: 1024, max_value_bytes: 1024, max_keys: 100, max_write_bytes: 65536 };

test_each_path! { in "src/server/testscripts/executor" as scripts => run_script }

fn run_script(path: &std::path::Path) {
    goldenscript::run(&mut Runner::new(), path).expect("goldenscript failed")
}

/// One scripted answer to a call of the cluster.
#[derive(Debug, Clone)]
struct Step {
    outcomes: Vec<String>,
    delay: Duration,
    leader_after: Option<Leader>,
}

/// What the executor sees of a cluster, played from a script.
struct FakeCluster {
    id: u64,
    timeout: Duration,
    state: Mutex<FakeState>,
    /// The replicated data, as the leader applied it: a real store, so that answers are real.
    store: crate::store::Store,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct FakeState {
    leader: Option<Leader>,
    handover: bool,
    steps: HashMap<String, VecDeque<Step>>,
    /// The calls made, in order, for the output.
    trace: Vec<String>,
    /// The last log index used.
    index: u64,
}

impl FakeCluster {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    /// The next scripted step for `op`, if any.
    fn step(&self, op: &str) -> Option<Step> {
        self.lock().steps.get_mut(op).and_then(VecDeque::pop_front)
    }

    fn trace(&self, line: String) {
        self.lock().trace.push(line);
    }

    /// Lets `step`'s time pass, then applies its leader change.
    async fn play(&self, step: &Option<Step>) {
        if let Some(step) = step {
            tokio::time::sleep(step.delay).await;
            if let Some(leader) = &step.leader_after {
                self.lock().leader = Some(leader.clone());
            }
        }
    }

    /// The scripted outcome of the `n`th request of a call (the last one given repeats), or `ok`.
    fn outcome(step: &Option<Step>, n: usize) -> String {
        step.as_ref()
            .and_then(|s| s.outcomes.get(n).or(s.outcomes.last()))
            .cloned()
            .unwrap_or_else(|| "ok".to_string())
    }

    /// Applies a write as the leader would.
    fn apply(&self, write: &Write) -> (crate::store::Applied, u64) {
        let mut state = self.lock();
        state.index += 1;
        (self.store.apply_write(write).unwrap(), state.index)
    }
}

/// A failed outcome from its script word.
fn failed<T>(word: &str) -> Outcome<T> {
    match word {
        "not-leader" => Outcome::NotApplied(NotApplied::NotLeader),
        "unreachable" => Outcome::NotApplied(NotApplied::Unreachable),
        "stopping" => Outcome::NotApplied(NotApplied::Stopping),
        "unknown" => Outcome::Unknown("the scripted leader vanished".to_string()),
        other => panic!("unknown outcome {other}"),
    }
}

fn show_outcome<T>(outcome: &Outcome<T>) -> String {
    match outcome {
        Outcome::Done(_) => "done".to_string(),
        Outcome::NotApplied(why) => format!("not applied ({why})"),
        Outcome::Unknown(_) => "unknown".to_string(),
    }
}

impl Cluster for FakeCluster {
    /// The leader as last seen.
    type Watch = Leader;

    fn id(&self) -> u64 {
        self.id
    }

    fn request_timeout(&self) -> Duration {
        self.timeout
    }

    fn leader(&self) -> Leader {
        self.lock().leader.clone().unwrap_or(Leader::Unknown)
    }

    fn watch(&self) -> Leader {
        Cluster::leader(self)
    }

    /// News at once if the leader changed since `seen` was looked at; else a scripted `news`
    /// step, or nothing until `until`.
    async fn leadership_news(&self, seen: &mut Leader, until: Instant) {
        let now = Cluster::leader(self);
        if now != *seen {
            *seen = now;
            return;
        }
        match self.step("news") {
            Some(step) if Instant::now() + step.delay <= until => {
                let leader = step.leader_after.clone().unwrap_or(Leader::Unknown);
                self.play(&Some(step)).await;
                self.trace(format!("news: leader {}", show_leader(&leader)));
                *seen = leader;
            }
            _ => tokio::time::sleep_until(until).await,
        }
    }

    async fn propose(&self, writes: Vec<Write>, acks: AckWait, _deadline: Instant) -> Proposed<'_> {
        let step = self.step("propose");
        self.play(&step).await;
        let outcomes: Vec<Outcome<Written>> = writes
            .iter()
            .enumerate()
            .map(|(n, write)| match FakeCluster::outcome(&step, n).as_str() {
                "ok" => {
                    let (applied, index) = self.apply(write);
                    let replication = Replication { term: 1, index, peers: Vec::new() };
                    let (reply, revision) = (applied.reply, applied.revision);
                    Outcome::Done(Written { reply, revision, replication: Some(replication) })
                }
                "applied-unknown" => {
                    self.apply(write);
                    Outcome::Unknown("the scripted leader vanished after applying it".to_string())
                }
                word => failed(word),
            })
            .collect();
        let shown: Vec<String> = outcomes.iter().map(show_outcome).collect();
        let writes: Vec<String> = writes.iter().map(|w| w.to_string()).collect();
        self.trace(format!("propose [{}] acks={acks:?} → {}", writes.join(", "), shown.join(", ")));
        Box::pin(std::future::ready(outcomes))
    }

    async fn propose_now(
        &self,
        writes: Vec<Write>,
        acks: AckWait,
        deadline: Instant,
    ) -> Option<Proposed<'_>> {
        let handover = self.lock().handover;
        if Cluster::leader(self) != Leader::Me || handover {
            return None;
        }
        Some(self.propose(writes, acks, deadline).await)
    }

    async fn read_index(&self, leader: &Leader, _deadline: Instant) -> Option<u64> {
        let step = self.step("read-index");
        self.play(&step).await;
        let index = match FakeCluster::outcome(&step, 0).as_str() {
            "ok" => Some(self.lock().index),
            _ => None,
        };
        self.trace(format!("read-index from {} → {index:?}", show_leader(leader)));
        index
    }

    async fn applied_through(&self, _index: u64, _deadline: Instant) -> bool {
        true
    }

    fn accounts(&self) -> std::sync::Arc<crate::auth::Accounts> {
        // The scripts run without auth.
        std::sync::Arc::default()
    }

    fn read(&self, reads: &[&Read]) -> (Vec<Reply>, Option<u64>) {
        let (replies, revision) = self.store.read_many(reads.iter().copied()).unwrap();
        (replies, Some(revision))
    }

    async fn forward(
        &self,
        id: u64,
        _addr: &str,
        requests: &[&Request],
        _deadline: Instant,
    ) -> Vec<Outcome<Response>> {
        let step = self.step("forward");
        self.play(&step).await;
        let limits = LIMITS;
        let outcomes: Vec<Outcome<Response>> = requests
            .iter()
            .enumerate()
            .map(|(n, request)| match FakeCluster::outcome(&step, n).as_str() {
                "ok" => {
                    let item = Item::parse((*request).clone(), &limits);
                    let reply = match item.write() {
                        Some(write) => self.apply(write).0.reply,
                        None => Reply::Status { value: "changed at the leader".into() },
                    };
                    let mut response = item.answer(reply);
                    response.leader = Some(id);
                    Outcome::Done(response)
                }
                word => failed(word),
            })
            .collect();
        let shown: Vec<String> = outcomes.iter().map(show_outcome).collect();
        let sent: Vec<String> = requests.iter().map(|r| show_args(&r.args)).collect();
        self.trace(format!("forward to {id} [{}] → {}", sent.join(", "), shown.join(", ")));
        outcomes
    }

    async fn change_membership(&self, admin: &Admin, _deadline: Instant) -> Outcome<Reply> {
        let step = self.step("change");
        self.play(&step).await;
        let outcome = match FakeCluster::outcome(&step, 0).as_str() {
            "ok" => Outcome::Done(Reply::Status { value: "changed".into() }),
            "refused" => Outcome::Done(Reply::error(ErrorCode::Refused, "scripted refusal")),
            word => failed(word),
        };
        self.trace(format!("change {admin:?} → {}", show_outcome(&outcome)));
        outcome
    }

    async fn cluster_table(&self) -> Reply {
        self.trace("cluster table".to_string());
        Reply::Table { columns: vec!["id".to_string()], rows: vec![vec![Cell::Integer(self.id as i64)]] }
    }
}

fn show_leader(leader: &Leader) -> String {
    match leader {
        Leader::Me => "me".to_string(),
        Leader::Other { id, .. } => id.to_string(),
        Leader::Unknown => "none".to_string(),
    }
}

fn parse_leader(word: &str) -> Result<Leader, Box<dyn Error>> {
    Ok(match word {
        "me" => Leader::Me,
        "none" => Leader::Unknown,
        id => {
            let id: u64 = id.parse()?;
            Leader::Other { id, addr: format!("node{id}") }
        }
    })
}

fn show_args(args: &[ByteBuf]) -> String {
    args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ")
}

fn show_reply(reply: &Reply) -> String {
    match reply {
        Reply::Status { value } => value.to_string(),
        Reply::Nil => "(nil)".to_string(),
        Reply::Integer { value } => format!("(integer) {value}"),
        Reply::Bulk { value } => format!("{:?}", String::from_utf8_lossy(value)),
        Reply::Error { code, message } => format!("{code} {message}"),
        Reply::Table { rows, .. } => format!("(table of {} rows)", rows.len()),
        Reply::Array { items } => {
            format!("[{}]", items.iter().map(show_reply).collect::<Vec<_>>().join(", "))
        }
        Reply::Entries { entries, more, .. } => format!("({} entries, more: {more})", entries.len()),
        Reply::Txn { succeeded, results } => format!(
            "(txn {}: {})",
            if *succeeded { "then" } else { "else" },
            results.iter().map(show_reply).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn show_response(response: &Response) -> String {
    let mut line = format!("{}: {}", response.id, show_reply(&response.reply));
    if let Some(leader) = response.leader {
        write!(line, " [leader {leader}]").unwrap();
    }
    if let Some(replication) = &response.replication {
        write!(line, " [index {}]", replication.index).unwrap();
    }
    line
}

struct Runner {
    runtime: tokio::runtime::Runtime,
    cluster: FakeCluster,
}

impl Runner {
    fn new() -> Runner {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        Runner { runtime, cluster: fake(1, Some(Leader::Me), Duration::from_secs(5), false) }
    }

    /// The requests of a `run` or `ahead` command, with the options its keys give.
    fn requests(command: &goldenscript::Command) -> Result<(Vec<Request>, Option<u64>), Box<dyn Error>> {
        let mut forwarded_by = None;
        let mut local = false;
        let mut min_acks = None;
        let mut ack_timeout_ms = None;
        let mut session = None;
        let mut requests = Vec::new();
        for arg in &command.args {
            match arg {
                goldenscript::Argument::KeyValue(key, value) => match key.as_str() {
                    "forwarded-by" => forwarded_by = Some(value.parse()?),
                    "min-acks" => min_acks = Some(value.parse()?),
                    "ack-timeout" => ack_timeout_ms = Some(value.parse()?),
                    "session" => session = Some(value.parse()?),
                    other => return Err(format!("unknown key {other}").into()),
                },
                goldenscript::Argument::Positional(word) if word == "local" => local = true,
                goldenscript::Argument::Positional(line) => {
                    let args =
                        line.split_whitespace().map(|w| ByteBuf::from(w.as_bytes().to_vec())).collect();
                    requests.push(Request::new(requests.len() as u64 + 1, args));
                }
                other => return Err(format!("unexpected argument {other}").into()),
            }
        }
        for request in &mut requests {
            // With a session, every request is numbered by its place in the run.
            request.once = session.map(|session| kv_once(session, request.id));
            request.local = local;
            request.min_acks = min_acks;
            request.ack_timeout_ms = ack_timeout_ms;
        }
        Ok((requests, forwarded_by))
    }

    /// The trace gathered since the last command, as output lines.
    fn take_trace(&self, output: &mut String) {
        for line in std::mem::take(&mut self.cluster.lock().trace) {
            writeln!(output, "{line}").unwrap();
        }
    }
}

fn fake(id: u64, leader: Option<Leader>, timeout: Duration, handover: bool) -> FakeCluster {
    let state = FakeState { leader, handover, ..FakeState::default() };
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    FakeCluster { id, timeout, state: Mutex::new(state), store, _dir: dir }
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        command: &goldenscript::Command,
        _: &goldenscript::Context,
    ) -> Result<String, Box<dyn Error>> {
        let mut output = String::new();
        match command.name.as_str() {
            "cluster" => {
                self.no_steps_left()?;
                let mut args = command.consume_args();
                let id = args.take_key("id").map_or(Ok(1), str::parse)?;
                let leader = args.take_key("leader").map_or(Ok(Leader::Me), parse_leader)?;
                let timeout = args.take_key("timeout").map_or(Ok(5000), str::parse)?;
                let handover = args.next_pos() == Some("handover");
                args.reject_next()?;
                let leader = (leader != Leader::Unknown).then_some(leader);
                self.cluster = fake(id, leader, Duration::from_millis(timeout), handover);
            }
            "leader" => {
                let mut args = command.consume_args();
                let leader = parse_leader(args.next_pos().ok_or("leader needs an argument")?)?;
                args.reject_next()?;
                self.cluster.lock().leader = Some(leader);
            }
            "expect" => {
                let mut args = command.consume_args();
                let op = args.next_pos().ok_or("expect needs an operation")?.to_string();
                let delay = args.take_key("delay").map_or(Ok(0), str::parse)?;
                let leader_after = args.take_key("leader").map(parse_leader).transpose()?;
                let outcomes: Vec<String> =
                    std::iter::from_fn(|| args.next_pos()).map(String::from).collect();
                args.reject_next()?;
                if outcomes.is_empty() {
                    return Err("expect needs outcomes".into());
                }
                let step = Step { outcomes, delay: Duration::from_millis(delay), leader_after };
                self.cluster.lock().steps.entry(op).or_default().push_back(step);
            }
            "run" => {
                let (requests, forwarded_by) = Runner::requests(command)?;
                let limits = LIMITS;
                let cluster = &self.cluster;
                let (answers, elapsed) = self.runtime.block_on(async {
                    let started = Instant::now();
                    let mut executor = Executor::new(cluster, forwarded_by, limits);
                    let items = executor.parse(requests);
                    (executor.execute(items).await, started.elapsed())
                });
                self.take_trace(&mut output);
                for answer in &answers {
                    writeln!(output, "{}", show_response(answer))?;
                }
                if !elapsed.is_zero() {
                    writeln!(output, "after {}ms", elapsed.as_millis())?;
                }
            }
            "ahead" => {
                let (requests, forwarded_by) = Runner::requests(command)?;
                let limits = LIMITS;
                let cluster = &self.cluster;
                let (proposed, answers) = self.runtime.block_on(async {
                    let mut executor = Executor::new(cluster, forwarded_by, limits);
                    let mut ahead = Ahead::new();
                    let items = executor.parse(requests);
                    match ahead.propose(&executor, items, ()).await {
                        Ok(()) => (true, ahead.next().await),
                        Err(items) => (false, executor.execute(items).await),
                    }
                });
                writeln!(output, "{}", if proposed { "proposed ahead" } else { "runs the usual way" })?;
                self.take_trace(&mut output);
                for answer in &answers {
                    writeln!(output, "{}", show_response(answer))?;
                }
            }
            other => return Err(format!("unknown command {other}").into()),
        }
        Ok(output)
    }

    fn end_script(&mut self) -> Result<(), Box<dyn Error>> {
        self.no_steps_left()
    }
}

impl Runner {
    /// A scripted step never taken means the executor did not make a call the script expected.
    fn no_steps_left(&self) -> Result<(), Box<dyn Error>> {
        let state = self.cluster.lock();
        let mut left: Vec<&String> =
            state.steps.iter().filter(|(_, s)| !s.is_empty()).map(|(op, _)| op).collect();
        left.sort();
        if left.is_empty() { Ok(()) } else { Err(format!("scripted steps never taken: {left:?}").into()) }
    }
}
