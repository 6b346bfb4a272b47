//! `kv-cli demo`: starts its own three-node cluster, runs the usual modes against it, and cleans up after itself.

mod common;

use common::{CLI_BIN, run_cli, wait_until};
use kv::client::{Client, Transport};
use kv::protocol::message::{ErrorCode, Reply};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The nodes' addresses and the data directory from the demo's banner line:
/// `kv demo: node 1 on A, node 2 on B, node 3 on C; data and logs in DIR. ...`.
fn parse_banner(stderr: &str) -> (Vec<String>, PathBuf) {
    let banner = stderr.lines().find(|l| l.starts_with("kv demo: node 1 on ")).expect(stderr);
    let nodes = banner["kv demo: ".len()..].split(';').next().unwrap();
    let addrs: Vec<String> = nodes.split(", ").map(|n| n.split(" on ").nth(1).unwrap().to_string()).collect();
    assert_eq!(addrs.len(), 3, "a three-node cluster: {banner}");
    let dir = banner.split("data and logs in ").nth(1).unwrap().split(". ").next().unwrap();
    (addrs, PathBuf::from(dir))
}

fn assert_nodes_gone(addrs: &[String]) {
    for addr in addrs {
        wait_until("the demo nodes to stop", Duration::from_secs(15), || TcpStream::connect(addr).is_err());
    }
}

#[test]
fn a_piped_demo_runs_the_commands_and_removes_its_data() {
    let out = run_cli(&["demo"], Some(b"SET a 1\nGET a\nDEL a\nUSER LIST\n"), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    // Logged in as root, the only user.
    assert_eq!(out.lines(), ["OK", "1", "1", "user\troles", "root\troot"]);
    assert!(out.stderr.contains("TLS and auth are on"), "{out:?}");
    let (addrs, dir) = parse_banner(&out.stderr);
    assert_nodes_gone(&addrs);
    assert!(!dir.exists(), "{} should be removed", dir.display());
}

#[test]
fn an_insecure_demo_runs_in_the_clear() {
    let out = run_cli(&["demo", "--insecure"], Some(b"SET a 1\nGET a\n"), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["OK", "1"]);
    assert!(out.stderr.contains("Insecure: plain TCP, no logins"), "{out:?}");
    let (addrs, _) = parse_banner(&out.stderr);
    assert_nodes_gone(&addrs);
}

#[test]
fn keep_leaves_the_data_where_it_says() {
    let out = run_cli(&["demo", "--keep"], None, &[]);
    // No -c and no stdin: nothing to run, which is a success.
    assert_eq!(out.code, 0, "{out:?}");
    let (addrs, dir) = parse_banner(&out.stderr);
    assert_nodes_gone(&addrs);
    assert!(out.stderr.contains(&format!("data kept in {}", dir.display())), "{out:?}");
    for id in 1..=3 {
        assert!(dir.join(format!("node{id}")).join("state.redb").is_file());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_interactive_demo_stops_its_node_when_the_shell_ends() {
    let mut cmd = Command::new(CLI_BIN);
    cmd.arg("demo").env("NO_COLOR", "1").env("KV_CLI_HISTFILE", "/dev/null").env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    let (_, banner) = p.exp_regex(r"kv demo: node 1 on [^;]+;[^\r\n]*").unwrap();
    let (addrs, dir) = parse_banner(&banner);
    p.exp_string(&format!("root@{}> ", addrs[0])).unwrap();
    // The nodes take neither a plain connection nor, over TLS, a command before a login.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let plain = runtime.block_on(Client::connect(&addrs[0], Duration::from_secs(5), &Transport::plain()));
    assert!(plain.is_err(), "a plain client was welcomed");
    let ca = dir.join("certs").join("ca.crt");
    let tls = Transport::tls(kv::tls::ClientTls::load(&ca, None).unwrap());
    let answer = runtime.block_on(async {
        let (mut client, _) = Client::connect(&addrs[0], Duration::from_secs(5), &tls).await.unwrap();
        client.call(vec![b"GET".to_vec(), b"demo".to_vec()]).await.unwrap()
    });
    assert!(matches!(answer.reply, Reply::Error { code: ErrorCode::NoAuth, .. }), "{answer:?}");
    // Each node serves its console and metrics where the banner says, over the demo's TLS.
    let consoles = banner.split("Console at ").nth(1).unwrap().split(" (each").next().unwrap();
    let consoles: Vec<&str> = consoles.split(", ").collect();
    assert_eq!(consoles.len(), 3, "{banner}");
    let http_addr = consoles[0].strip_prefix("https://").unwrap().strip_suffix('/').unwrap().to_string();
    let client = kv::tls::ClientTls::load(&ca, None).unwrap();
    let scrape = common::https_get(&client, &http_addr, "/metrics");
    assert!(scrape.starts_with("HTTP/1.1 200") && scrape.contains("kv_server_has_leader 1"), "{scrape}");
    let page = common::https_get(&client, &http_addr, "/");
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<title>kv console</title>"), "{page}");
    p.send_line("SET demo works").unwrap();
    p.exp_string("OK").unwrap();
    // The shell shows the write's revision and which peers acknowledged it: the commit needed one
    // of them; the other, listed first if its id is lower, may still be pending on a loaded machine.
    p.exp_regex(
        r"leader n[123] \S+ term [0-9]+ \S+ index [0-9]+ \S+ rev [0-9]+ \S+ (n[123] pending \S+ )?n[123] acked [0-9.]+ ms",
    )
    .unwrap();
    p.exp_string(&format!("{}> ", addrs[0])).unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    assert_nodes_gone(&addrs);
    assert!(!dir.exists());
}

#[test]
fn dot_commands_stop_kill_and_restart_demo_nodes() {
    let input =
        b".kill 1\nSET after-kill 1\n.nodes\n.restart 1\n.stop 2\nGET after-kill\n.restart 2\n.kill 7\n";
    let out = run_cli(&["demo"], Some(input), &[]);
    let lines = out.lines();
    assert_eq!(lines[0], "node 1 killed", "{out:?}");
    // The script was connected to node 1: it moved on and the write went through.
    assert_eq!(lines[1], "OK", "{out:?}");
    assert!(lines[2].starts_with("node 1 on ") && lines[2].ends_with(": down"), "{out:?}");
    assert!(lines[3].starts_with("node 2 on ") && lines[3].contains(": running (pid "), "{out:?}");
    assert!(lines[5].starts_with("node 1 restarted on "), "{out:?}");
    assert_eq!(lines[6], "node 2 stopped", "{out:?}");
    assert_eq!(lines[7], "1", "{out:?}");
    assert!(lines[8].starts_with("node 2 restarted on "), "{out:?}");
    assert!(out.stderr.contains("there is no node 7"), "{out:?}");
    assert_eq!(out.code, 1, "the bad dot command is an error: {out:?}");
    let (addrs, dir) = parse_banner(&out.stderr);
    assert_nodes_gone(&addrs);
    assert!(!dir.exists());
}

#[test]
fn killing_the_leader_in_the_demo_costs_the_next_write_nothing() {
    // Node 1 forwards to leader 3 over a link that the kill breaks while idle: the next write must
    // go to the new leader, not be reported as of unknown outcome.
    let input = b"CLUSTER TRANSFER-LEADER 3\nSET before 1\n.kill 3\nSET after 2\nGET after\n";
    let out = run_cli(&["demo"], Some(input), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines = out.lines();
    assert!(lines[0].contains("node 3 is the leader"), "{out:?}");
    assert_eq!(lines[1..], ["OK", "node 3 killed", "OK", "2"], "{out:?}");
    let (addrs, _) = parse_banner(&out.stderr);
    assert_nodes_gone(&addrs);
}
