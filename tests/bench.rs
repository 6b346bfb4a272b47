//! `kv-cli bench` against real nodes: every request is accounted for, in the report and in the
//! store, and failures are counted rather than dropped. Nothing here asserts a speed: benchmark
//! figures come from benchmark runs (docs/BENCHMARKS.md), never from tests.

mod common;

use common::{TestCluster, TestNode, run_cli};
use serde_json::Value;

fn report(out: &common::CliOutput) -> Value {
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("not one JSON report ({e}): {out:?}"))
}

#[test]
fn a_write_benchmark_accounts_for_every_request_and_writes_what_it_says() {
    let cluster = TestCluster::start(3, &[]);
    let out = cluster.cli(&[
        "bench",
        "--json",
        "-n",
        "3000",
        "--clients",
        "6",
        "--pipeline",
        "4",
        "--keyspace",
        "20",
        "--value-size",
        "5",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = report(&out);
    assert_eq!(
        (r["requests"].as_u64(), r["ok"].as_u64(), r["unknown"].as_u64()),
        (Some(3000), Some(3000), Some(0))
    );
    assert_eq!(r["errors"], serde_json::json!({}));
    let latency = &r["latency_ms"];
    let at = |q: &str| latency[q].as_f64().unwrap();
    assert!(
        0.0 < at("p50") && at("p50") <= at("p90") && at("p90") <= at("p99") && at("p99") <= at("max"),
        "{r}"
    );
    assert!(
        r["requests_per_second"].as_f64().unwrap() > 0.0 && r["client_cpu_cores"].as_f64().unwrap() >= 0.0
    );
    // With 3,000 writes over 20 keys, every key was written, with the stated value.
    for key in ["key:00", "key:19"] {
        assert_eq!(cluster.cli(&["-c", &format!("GET {key}")]).lines(), ["xxxxx"]);
    }
}

#[test]
fn reads_are_measured_linearizable_or_local_after_a_prefill() {
    let cluster = TestCluster::start(3, &[]);
    for consistency in ["linearizable", "local"] {
        let out = cluster.cli(&[
            "bench",
            "--json",
            "--reads",
            "100",
            "--consistency",
            consistency,
            "--prefill",
            "--keyspace",
            "50",
            "--clients",
            "3",
            "--duration",
            "0.5",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        let r = report(&out);
        assert_eq!(r["consistency"], consistency);
        assert_eq!(r["reads_percent"], 100);
        assert!(r["requests"].as_u64().unwrap() > 0 && r["requests"] == r["ok"], "{r}");
    }
    // The prefill wrote every key of the key space.
    assert_eq!(cluster.cli(&["-c", "EXISTS key:00 key:49"]).lines(), ["2"]);
}

#[test]
fn refused_requests_are_counted_by_code_and_fail_the_run() {
    let node = TestNode::start(&["--max-value-bytes", "8"]);
    let out = node.cli(&["bench", "--json", "-n", "40", "--clients", "2", "--value-size", "9"]);
    assert_eq!(out.code, 1, "{out:?}");
    let r = report(&out);
    assert_eq!((r["requests"].as_u64(), r["ok"].as_u64()), (Some(40), Some(0)));
    assert_eq!(r["errors"]["TOO_LARGE"], 40, "{r}");
    // Plain output shows them too.
    let out = node.cli(&["bench", "-n", "10", "--clients", "1", "--value-size", "9"]);
    assert!(out.stdout.contains("errors: 10 TOO_LARGE"), "{out:?}");
}

#[test]
fn no_reachable_node_is_a_clear_failure() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = run_cli(&["--addr", &addr, "--connect-timeout", "1", "bench", "-n", "10"], None, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("kv-cli bench:") && out.stderr.contains(&addr), "{out:?}");
}
