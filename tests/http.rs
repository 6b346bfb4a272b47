//! The HTTP port (`--http-listen`) end to end: `/metrics` parsed by a Prometheus text parser and
//! checked against what the cluster did, `/health` and `/ready` with and without a quorum, TLS
//! when the node has it, and the bounds on what a stranger's connections can hold.

mod common;

use common::{Access, http_cluster, wait_until};
use kv::client::Transport;
use kv::tls::ClientTls;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long one HTTP exchange may take.
const HTTP_DEADLINE: Duration = Duration::from_secs(10);
/// How long the cluster may take to notice a lost quorum or a member back.
const QUORUM_DEADLINE: Duration = Duration::from_secs(20);

/// An HTTP/1.1 GET over `stream`: the status code and the body.
fn get_over(mut stream: impl Read + Write, path: &str) -> std::io::Result<(u16, String)> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: kv\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_string();
    Ok((status, body))
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, HTTP_DEADLINE)?;
    stream.set_read_timeout(Some(HTTP_DEADLINE))?;
    stream.set_write_timeout(Some(HTTP_DEADLINE))?;
    Ok(stream)
}

/// Whether the node closed `stream`: end of stream or a reset, not a read that timed out.
fn closed_by_node(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => {
            matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted)
        }
    }
}

/// A plain HTTP GET of `path` at `addr`; status 0 if the node could not be reached.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    connect(addr).and_then(|s| get_over(s, path)).unwrap_or((0, String::new()))
}

/// A scrape's samples by name and (sorted) labels.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// The samples of a `/metrics` answer, as a Prometheus parser reads them.
fn scrape(addr: SocketAddr) -> Samples {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
    parsed
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<(String, String)> =
                s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            labels.sort();
            Some(((s.metric, labels), value))
        })
        .collect()
}

/// `kv_server_requests_total` summed over the members at `http`, by command and outcome.
fn requests_over(http: &[SocketAddr]) -> HashMap<(String, String), f64> {
    let mut requests = HashMap::new();
    for addr in http {
        for ((name, labels), value) in scrape(*addr) {
            if name != "kv_server_requests_total" {
                continue;
            }
            let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap();
            *requests.entry((label("command"), label("outcome"))).or_insert(0.0) += value;
        }
    }
    requests
}

fn value(samples: &Samples, name: &str) -> f64 {
    *samples.get(&(name.to_string(), Vec::new())).unwrap_or_else(|| panic!("no {name} in {samples:?}"))
}

#[test]
fn metrics_count_what_the_cluster_did() {
    let (cluster, http) = http_cluster(3, &[], &Access::default());
    let leader = cluster.wait_for_a_leader();
    let at_leader = http[leader as usize - 1];
    let before = scrape(at_leader);
    let requests_before = requests_over(&http);
    const WRITES: usize = 40;
    let script = common::script(WRITES, |i| format!("SET metrics:{i} {i}"));
    let out = cluster.cli_piped(&[], &script);
    assert_eq!(out.code, 0, "{out:?}");
    for bad in ["GET", "FROBNICATE x"] {
        assert_ne!(cluster.cli(&["-c", bad]).code, 0, "{bad} is refused");
    }
    let after = scrape(at_leader);
    // Each request is counted once, by the member its client reached, whichever member applied it.
    let requests = requests_over(&http);
    let grew = |command: &str, outcome: &str| {
        let key = (command.to_string(), outcome.to_string());
        requests.get(&key).copied().unwrap_or(0.0) - requests_before.get(&key).copied().unwrap_or(0.0)
    };
    assert_eq!(grew("SET", "ok"), WRITES as f64, "{requests:?}");
    assert_eq!(grew("GET", "WRONG_ARITY"), 1.0, "{requests:?}");
    assert_eq!(grew("unknown", "UNKNOWN_COMMAND"), 1.0, "{requests:?}");
    let grew = value(&after, "kv_server_proposals_committed_total")
        - value(&before, "kv_server_proposals_committed_total");
    // Each write is one entry; a new cluster's leader also commits its cluster id within its
    // first second, which may fall in between.
    assert!((WRITES as f64..=WRITES as f64 + 1.0).contains(&grew), "committed grew by {grew}");
    assert_eq!(value(&after, "kv_server_is_leader"), 1.0);
    assert_eq!(value(&after, "kv_server_failure_tolerance"), 1.0);
    let fsyncs = value(&after, "kv_disk_wal_fsync_duration_seconds_count");
    assert!(fsyncs > value(&before, "kv_disk_wal_fsync_duration_seconds_count"), "fsyncs counted");
    for follower in (1..=3u64).filter(|id| *id != leader) {
        let label = vec![("peer".to_string(), follower.to_string())];
        assert!(
            after.contains_key(&("kv_server_follower_lag_entries".to_string(), label.clone())),
            "{after:?}"
        );
        // At least one append per write reached each follower, each round trip timed.
        let trips = ("kv_network_peer_round_trip_time_seconds_count".to_string(), label.clone());
        let trips_before = before.get(&trips).copied().unwrap_or(0.0);
        assert!(after.get(&trips).copied().unwrap_or(0.0) > trips_before, "{after:?}");
    }
    // Every member applies what the leader committed, and knows one leader.
    let committed = value(&after, "kv_server_proposals_committed_total");
    let mut leaders = 0.0;
    for addr in &http {
        wait_until("every member to apply the writes", QUORUM_DEADLINE, || {
            value(&scrape(*addr), "kv_server_proposals_applied_total") >= committed
        });
        let samples = scrape(*addr);
        assert_eq!(value(&samples, "kv_server_has_leader"), 1.0);
        leaders += value(&samples, "kv_server_is_leader");
    }
    assert_eq!(leaders, 1.0);
    // An unknown path is a 404, not an error page with internals.
    assert_eq!(get(at_leader, "/nothing-here").0, 404);
}

#[test]
fn health_and_ready_follow_the_quorum() {
    let (mut cluster, http) = http_cluster(3, &[], &Access::default());
    for addr in &http {
        wait_until("every member to be ready", QUORUM_DEADLINE, || get(*addr, "/ready").0 == 200);
        assert_eq!(get(*addr, "/health"), (200, "ok\n".to_string()));
    }
    let leader = cluster.wait_for_a_leader();
    let at_leader = http[leader as usize - 1];
    let tolerance = |addr| value(&scrape(addr), "kv_server_failure_tolerance");
    wait_until("the leader to count every voter", QUORUM_DEADLINE, || tolerance(at_leader) == 1.0);
    let followers: Vec<u64> = (1..=3u64).filter(|id| *id != leader).collect();
    // One follower goes: the cluster still commits, and can lose no one more.
    cluster.node(followers[1]).kill9();
    wait_until("the leader to count the lost voter", QUORUM_DEADLINE, || tolerance(at_leader) == 0.0);
    assert_eq!(get(at_leader, "/ready").0, 200, "a quorum is left");
    // Then the leader: the last member cannot commit.
    cluster.node(leader).kill9();
    let at_survivor = http[followers[0] as usize - 1];
    wait_until("the survivor to say it is not ready", QUORUM_DEADLINE, || {
        get(at_survivor, "/ready").0 == 503
    });
    let (_, why) = get(at_survivor, "/ready");
    assert!(why.starts_with("not ready:"), "{why}");
    assert_eq!(get(at_survivor, "/health").0, 200, "alive without a quorum");
    // One member back makes a quorum again.
    cluster.node(followers[1]).restart();
    for addr in [at_survivor, http[followers[1] as usize - 1]] {
        wait_until("a quorum to be back", QUORUM_DEADLINE, || get(addr, "/ready").0 == 200);
    }
}

#[test]
fn a_stranger_cannot_hold_the_http_port() {
    let (cluster, http) = http_cluster(1, &[], &Access::default());
    let addr = http[0];
    // Connections that say nothing take every slot; one more is closed at once.
    let silent: Vec<TcpStream> = (0..64).map(|_| connect(addr).unwrap()).collect();
    wait_until("the node to close one more", HTTP_DEADLINE, || {
        let mut extra = connect(addr).unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        closed_by_node(&mut extra)
    });
    // A silent connection is closed once its time for a request's head is up, freeing its slot.
    let started = Instant::now();
    let mut first = silent.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    assert!(closed_by_node(&mut first), "still open after {:?}", started.elapsed());
    wait_until("the port to serve again", QUORUM_DEADLINE, || get(addr, "/health").0 == 200);
    // A request head larger than the node buffers is refused, and changes nothing.
    let mut big = connect(addr).unwrap();
    let padding = "x".repeat(64 * 1024);
    let _ = write!(big, "GET /health HTTP/1.1\r\nHost: kv\r\nX-Padding: {padding}\r\n\r\n");
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(!answer.contains("200 OK"), "{answer}");
    assert_eq!(get(addr, "/health").0, 200);
    assert_eq!(cluster.nodes.len(), 1);
}

#[test]
fn connections_that_never_read_their_answers_lose_their_slots() {
    let (_cluster, http) = http_cluster(1, &[], &Access::default());
    let addr = http[0];
    // Every slot taken by a connection that sends requests until the node stops taking them,
    // because it cannot send their answers.
    let flooders: Vec<_> = (0..64)
        .map(|_| {
            let mut stream = connect(addr).unwrap();
            std::thread::spawn(move || {
                stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                let request = b"GET /metrics HTTP/1.1\r\nHost: kv\r\n\r\n";
                for _ in 0..100_000 {
                    if stream.write_all(request).is_err() {
                        break;
                    }
                }
                stream
            })
        })
        .collect();
    let flooders: Vec<TcpStream> = flooders.into_iter().map(|f| f.join().unwrap()).collect();
    assert_eq!(get(addr, "/health").0, 0, "every slot is held");
    // The node closes them once their time is up, and serves others again.
    wait_until("the port to serve again", Duration::from_secs(45), || get(addr, "/health").0 == 200);
    drop(flooders);
}

#[test]
fn the_http_port_speaks_tls_when_the_node_does() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().to_str().unwrap();
    for args in [vec!["create-ca"], vec!["create-node", "1"]] {
        let mut all = vec!["cert", "--certs-dir", dir];
        all.extend(args);
        assert_eq!(common::run_cli(&all, None, &[]).code, 0);
    }
    let file = |name: &str| certs.path().join(name).to_str().unwrap().to_string();
    let flags =
        ["--tls-ca", &file("ca.crt"), "--tls-cert", &file("node-1.crt"), "--tls-key", &file("node-1.key")]
            .map(String::from);
    let client = ClientTls::load(&PathBuf::from(file("ca.crt")), None).unwrap();
    let access = Access::tls(Transport::tls(client.clone()));
    let (_cluster, http) = http_cluster(1, &flags, &access);
    // In the clear, nothing is served.
    let (status, _) = get(http[0], "/health");
    assert_eq!(status, 0, "no plain HTTP on a TLS node");
    // Over TLS, checked against the cluster's CA.
    let body = common::https_get(&client, &http[0].to_string(), "/metrics");
    let status: u16 = body.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("kv_server_has_leader 1"), "{body}");
}
