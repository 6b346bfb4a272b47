//! `kv-cli demo`: starts its own node, runs the usual modes against it, and cleans up after itself.

mod common;

use common::{CLI_BIN, run_cli, wait_until};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The node address and data directory from the demo's banner line.
fn parse_banner(stderr: &str) -> (String, PathBuf) {
    let banner = stderr.lines().find(|l| l.starts_with("kv demo: node 1 on ")).expect(stderr);
    let addr = banner["kv demo: node 1 on ".len()..].split(';').next().unwrap().to_string();
    let dir = banner.split("data and logs in ").nth(1).unwrap().split(". ").next().unwrap();
    (addr, PathBuf::from(dir))
}

fn assert_node_gone(addr: &str) {
    wait_until("the demo node to stop", Duration::from_secs(15), || TcpStream::connect(addr).is_err());
}

#[test]
fn a_piped_demo_runs_the_commands_and_removes_its_data() {
    let out = run_cli(&["demo"], Some(b"SET a 1\nGET a\nDEL a\n"), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["OK", "1", "1"]);
    let (addr, dir) = parse_banner(&out.stderr);
    assert_node_gone(&addr);
    assert!(!dir.exists(), "{} should be removed", dir.display());
}

#[test]
fn keep_leaves_the_data_where_it_says() {
    let out = run_cli(&["demo", "--keep"], None, &[]);
    // No -c and no stdin: nothing to run, which is a success.
    assert_eq!(out.code, 0, "{out:?}");
    let (addr, dir) = parse_banner(&out.stderr);
    assert_node_gone(&addr);
    assert!(out.stderr.contains(&format!("data kept in {}", dir.display())), "{out:?}");
    assert!(dir.join("node1").join("state.redb").is_file());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_interactive_demo_stops_its_node_when_the_shell_ends() {
    let mut cmd = Command::new(CLI_BIN);
    cmd.arg("demo").env("NO_COLOR", "1").env("KV_CLI_HISTFILE", "/dev/null").env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    let (_, banner) = p.exp_regex(r"kv demo: node 1 on [0-9.:]+;[^\r\n]*").unwrap();
    let (addr, dir) = parse_banner(&banner);
    p.exp_string(&format!("{addr}> ")).unwrap();
    p.send_line("SET demo works").unwrap();
    p.exp_string("OK").unwrap();
    p.exp_string(&format!("{addr}> ")).unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    assert_node_gone(&addr);
    assert!(!dir.exists());
}
