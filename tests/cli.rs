//! kv-cli's non-interactive modes against a real node: `-c`, piped batches, output formats and
//! exit statuses.

mod common;

use common::{TestNode, run_cli};

#[test]
fn command_mode_prints_bare_answers_and_exits_zero() {
    let node = TestNode::start(&[]);
    let out = node.cli_commands(
        &[],
        &[
            r#"SET greeting "hello world""#,
            "GET greeting",
            "GET missing",
            "EXISTS greeting greeting missing",
            "DEL greeting missing",
            "PING",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["OK", "hello world", "", "2", "1", "PONG"]);
    assert_eq!(out.stderr, "");
}

#[test]
fn error_answers_go_to_stderr_and_exit_one() {
    let node = TestNode::start(&[]);
    let out = node.cli(&["-c", "FLY me"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("UNKNOWN_COMMAND unknown command 'FLY'"), "{out:?}");

    let out = node.cli(&["-c", "SET onlykey"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("WRONG_ARITY"), "{out:?}");

    // Without --stop-on-error every command runs; the first failure decides the status.
    let out = node.cli(&["-c", "GET nothing-here", "-c", "BOGUS", "-c", "SET after 1"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.lines(), ["", "OK"]);
    assert_eq!(node.cli(&["-c", "GET after"]).lines(), ["1"]);
}

#[test]
fn usage_and_connection_failures_exit_two() {
    let out = run_cli(&["--addr", "127.0.0.1:1", "-c", "PING"], None, &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("CONNECTION") && out.stderr.contains("127.0.0.1:1"), "{out:?}");

    let out = run_cli(&["--no-such-flag"], None, &[]);
    assert_eq!(out.code, 2);

    let out = run_cli(&["--json", "--raw", "-c", "PING"], None, &[]);
    assert_eq!(out.code, 2, "--json and --raw conflict");
}

#[test]
fn the_first_address_that_answers_is_used() {
    let node = TestNode::start(&[]);
    let dead = format!("127.0.0.1:{}", common::free_port());
    let out = run_cli(&["--addr", &format!("{dead},{}", node.addr), "-c", "PING"], None, &[]);
    assert_eq!((out.code, out.lines()), (0, vec!["PONG"]), "{out:?}");
    // KV_ADDR is read when --addr is absent.
    let out = run_cli(&["-c", "PING"], None, &[("KV_ADDR", &format!("{dead},{}", node.addr))]);
    assert_eq!((out.code, out.lines()), (0, vec!["PONG"]), "{out:?}");
}

#[test]
fn no_raw_shows_typed_answers() {
    let node = TestNode::start(&[]);
    let out =
        node.cli(&["--no-raw", "-c", r#"SET k "a\x00b""#, "-c", "GET k", "-c", "GET missing", "-c", "DEL k"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["OK", r#""a\x00b""#, "(nil)", "(integer) 1"]);
    assert!(!out.stdout.contains('\x1b'), "no colour when stdout is not a terminal");
}

#[test]
fn json_mode_prints_one_object_per_answer() {
    let node = TestNode::start(&[]);
    let out = node.cli_commands(
        &["--json"],
        &[
            "SET text héllo",
            r#"SET bin "\x00\xff""#,
            "GET text",
            "GET bin",
            "GET none",
            "EXISTS text bin",
            "SET",
            "HELP PING",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    let objects: Vec<serde_json::Value> =
        out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 8, "{out:?}");
    // A single node leads itself; a write's replication picture has no peers to show.
    assert_eq!(
        objects[0],
        serde_json::json!({"type": "status", "value": "OK", "leader": 1, "revision": 1, "replication": {
            "term": objects[0]["replication"]["term"], "index": objects[0]["replication"]["index"], "peers": []
        }})
    );
    assert!(objects[1]["replication"]["index"].as_u64() > objects[0]["replication"]["index"].as_u64());
    assert_eq!(objects[1]["revision"], 2, "each write that changes a key takes the next revision");
    // Reads carry the revision they read at.
    assert_eq!(objects[2], serde_json::json!({"type": "bulk", "value": "héllo", "leader": 1, "revision": 2}));
    assert_eq!(
        objects[3],
        serde_json::json!({"type": "bulk", "value": "AP8=", "encoding": "base64", "leader": 1, "revision": 2})
    );
    assert_eq!(objects[4], serde_json::json!({"type": "nil", "leader": 1, "revision": 2}));
    assert_eq!(objects[5], serde_json::json!({"type": "integer", "value": 2, "leader": 1, "revision": 2}));
    assert_eq!(objects[6]["type"], "error");
    assert_eq!(objects[6]["code"], "WRONG_ARITY");
    assert_eq!(objects[7]["type"], "help");
    assert!(objects[7]["value"].as_str().unwrap().contains("PING [message]"));
}

#[test]
fn a_piped_batch_answers_every_line_in_order() {
    let node = TestNode::start(&[]);
    let mut input = String::new();
    for i in 0..10_000 {
        input.push_str(&format!("SET key:{i} value-{i}\n"));
        if i % 1000 == 999 {
            input.push_str(&format!("GET key:{}\n", i - 500));
        }
    }
    let out = node.cli_piped(&[], input.as_bytes());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.lines();
    assert_eq!(lines.len(), 10_010);
    let mut expected = Vec::new();
    for i in 0..10_000 {
        expected.push("OK".to_string());
        if i % 1000 == 999 {
            expected.push(format!("value-{}", i - 500));
        }
    }
    assert_eq!(lines, expected);
}

#[test]
fn piped_input_skips_blanks_and_comments_and_reports_bad_lines() {
    let node = TestNode::start(&[]);
    let input = b"# setup\nSET a 1\n\n   \nSET b \"unclosed\nGET a\nHELP GET\nQUIT\nSET never 1\n";
    let out = node.cli_piped(&[], input);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.lines(),
        [
            "OK",
            "1",
            "  GET key [WITHMETA]",
            "  Get the value of key; (nil) when it does not exist. WITHMETA adds its create and mod revisions \
             and version."
        ]
    );
    assert!(out.stderr.contains("BAD_INPUT unbalanced quotes"), "{out:?}");
    assert_eq!(node.cli(&["-c", "EXISTS never"]).lines(), ["0"], "nothing after QUIT runs");

    let out = node.cli_piped(&[], b"SET ok 1\nSET bad \xff\xfe\nGET ok\n");
    assert_eq!(out.code, 1);
    assert_eq!(out.lines(), ["OK", "1"]);
    assert!(out.stderr.contains("line 2 is not valid UTF-8"), "{out:?}");
}

#[test]
fn stop_on_error_sends_nothing_after_the_failure() {
    let node = TestNode::start(&[]);
    let out = node.cli_piped(&["-e"], b"SET a 1\nNOPE\nSET b 2\n");
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.lines(), ["OK"]);
    assert_eq!(node.cli(&["-c", "EXISTS a b"]).lines(), ["1"], "SET b must not have run");

    let out = node.cli(&["--stop-on-error", "-c", "SET c 1", "-c", "SET", "-c", "SET d 1"]);
    assert_eq!(out.code, 1);
    assert_eq!(node.cli(&["-c", "EXISTS c d"]).lines(), ["1"]);
}

#[test]
fn oversize_keys_and_values_are_refused_and_the_connection_stays_usable() {
    let node = TestNode::start(&["--max-key-bytes", "8", "--max-value-bytes", "16"]);
    let out =
        node.cli_piped(&[], b"SET 123456789 v\nSET k 0123456789abcdefX\nSET k 0123456789abcdef\nGET k\n");
    assert_eq!(out.code, 1);
    assert_eq!(out.lines(), ["OK", "0123456789abcdef"]);
    assert!(out.stderr.contains("TOO_LARGE key is 9 bytes, over the limit of 8 bytes"), "{out:?}");
    assert!(out.stderr.contains("TOO_LARGE value is 17 bytes"), "{out:?}");
}

#[test]
fn piped_commands_are_pipelined_not_sent_one_round_trip_at_a_time() {
    use kv::connection;
    use kv::protocol::message::{Hello, HelloReply, Reply, Request, Response};
    const N: usize = 100;

    // A stand-in node that answers nothing until it has received all N requests. A client that
    // waited for each answer before sending the next request would never get there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let fake = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let deadline = std::time::Duration::from_secs(20);
            let (stream, _) = tokio::time::timeout(deadline, listener.accept()).await.unwrap().unwrap();
            let (mut reader, mut writer) = connection::split(stream, 1 << 20);
            reader.read::<Hello>().await.unwrap().unwrap();
            let welcome = HelloReply::Welcome { version: 1, node_id: 1, max_frame_bytes: 1 << 20 };
            writer.send(&welcome).await.unwrap();
            let mut ids = Vec::new();
            let gather = async {
                while ids.len() < N {
                    ids.push(reader.read::<Request>().await.unwrap().unwrap().id);
                }
            };
            let gathered = tokio::time::timeout(deadline, gather).await.is_ok();
            for id in &ids {
                writer.feed(&Response::new(*id, Reply::ok())).await.unwrap();
            }
            writer.flush().await.unwrap();
            (gathered, ids.len())
        })
    });
    let input: String = (0..N).map(|i| format!("SET k{i} v\n")).collect();
    let out = run_cli(&["--addr", &addr.to_string()], Some(input.as_bytes()), &[]);
    let (gathered, received) = fake.join().unwrap();
    assert!(gathered, "only {received} of {N} requests arrived before the first answer");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), vec!["OK"; N]);
}
