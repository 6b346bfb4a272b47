//! kv-node as a process: persistence across `kill -9`, graceful shutdown, bad configs, and
//! hostile or broken connections that must not hurt anyone else.

mod common;

use common::{NODE_BIN, TestNode, temp_file, wait_until};
use kv::client::Client;
use kv::protocol::frame::{decode, encode};
use kv::protocol::message::{ErrorCode, Hello, HelloReply, Reply, Request, Response};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut node = TestNode::start(&[]);
    let writes: String = (0..500).map(|i| format!("SET key{i} value{i}\n")).collect();
    let out = node.cli_piped(&[], writes.as_bytes());
    assert_eq!((out.code, out.lines().len()), (0, 500), "{out:?}");
    assert_eq!(node.cli(&["-c", "DEL key0"]).lines(), ["1"]);

    node.kill9();
    node.restart();

    let reads: String = (0..500).map(|i| format!("GET key{i}\n")).collect();
    let out = node.cli_piped(&[], reads.as_bytes());
    assert_eq!(out.code, 0, "{out:?}");
    let mut expected: Vec<String> = (0..500).map(|i| format!("value{i}")).collect();
    expected[0] = String::new();
    assert_eq!(out.lines(), expected);
}

#[test]
fn sigterm_shuts_down_cleanly_and_keeps_the_data() {
    let mut node = TestNode::start(&[]);
    assert_eq!(node.cli(&["-c", "SET k v"]).code, 0);
    let status = node.terminate();
    assert!(status.success(), "exit status {status}:\n{}", node.log_text());
    assert!(node.log_text().contains("stopped"));
    node.restart();
    assert_eq!(node.cli(&["-c", "GET k"]).lines(), ["v"]);
}

#[test]
fn a_bad_config_stops_the_node_with_one_clear_line() {
    let cases = [
        ("id = 1\nlisten = \"127.0.0.1:7001\"\ncolour = \"blue\"\n", ":3:1: unknown field `colour`"),
        ("id = 1\nlisten = \"localhost:http\"\n", ":2:10: bad address 'localhost:http'"),
        (
            "id = 2\n[[peers]]\nid = 3\naddr = \"127.0.0.1:1\"\n[[peers]]\nid = 3\naddr = \"127.0.0.1:2\"\n",
            "duplicate id 3",
        ),
        ("id = 1\nlisten = [\n", ":2:"),
    ];
    for (toml, want) in cases {
        let (_dir, path) = temp_file("bad.toml", toml);
        let out = Command::new(NODE_BIN).arg("--config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{toml:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{toml:?}: {stderr}");
        assert!(stderr.starts_with("kv-node: config error: "), "{stderr}");
        assert!(stderr.contains(&format!("bad.toml{want}")) || stderr.contains(want), "{toml:?}: {stderr}");
    }
    let out = Command::new(NODE_BIN).args(["--config", "/nonexistent/kv.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent/kv.toml"));
    let out = Command::new(NODE_BIN).args(["--peer", "two=127.0.0.1:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects a malformed flag");
}

#[test]
fn a_data_directory_in_use_is_refused() {
    let node = TestNode::start(&[]);
    let out = Command::new(NODE_BIN)
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open") && stderr.contains("state.redb"), "{stderr}");
    assert_eq!(node.cli(&["-c", "PING"]).code, 0);
}

fn words(words: &[&str]) -> Vec<serde_bytes::ByteBuf> {
    words.iter().map(|w| serde_bytes::ByteBuf::from(*w)).collect()
}

/// A raw socket to the node, for sending what no real client would.
struct Raw(TcpStream);

impl Raw {
    fn connect(node: &TestNode) -> Raw {
        let stream = TcpStream::connect(node.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(stream)
    }

    fn hello(node: &TestNode) -> Raw {
        let mut raw = Raw::connect(node);
        raw.frame(&encode(&Hello {
            version: 1,
            client: "raw".into(),
            peer: None,
            forwarded_by: None,
            cluster: None,
        }));
        let welcome: HelloReply = decode(&raw.read_frame().expect("welcome")).unwrap();
        assert!(matches!(welcome, HelloReply::Welcome { .. }), "{welcome:?}");
        raw
    }

    fn frame(&mut self, payload: &[u8]) {
        self.0.write_all(&(payload.len() as u32).to_be_bytes()).unwrap();
        self.0.write_all(payload).unwrap();
    }

    /// The next frame's payload, or `None` once the node has closed the connection.
    fn read_frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        match self.0.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a frame: {e}"),
        }
        let mut payload = vec![0; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut payload).unwrap();
        Some(payload)
    }

    /// Expects an error frame with `code`, then the end of the connection.
    fn expect_closing_error(&mut self, code: ErrorCode) -> String {
        let response: Response = decode(&self.read_frame().expect("an error frame")).unwrap();
        assert_eq!(response.id, 0);
        let Reply::Error { code: got, message } = response.reply else { panic!("{response:?}") };
        assert_eq!(got, code, "{message}");
        assert_eq!(self.read_frame(), None, "the node must close the connection");
        message
    }
}

#[test]
fn broken_clients_lose_their_own_connection_and_nothing_else() {
    let node = TestNode::start(&[
        "--max-frame-bytes",
        "65536",
        "--max-key-bytes",
        "1024",
        "--max-value-bytes",
        "32768",
    ]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut good, _) = runtime
        .block_on(Client::connect(
            &node.addr.to_string(),
            Duration::from_secs(10),
            &kv::client::Transport::default(),
        ))
        .unwrap();
    let mut set = |key: &str| {
        runtime
            .block_on(good.call(vec![b"SET".to_vec(), key.as_bytes().to_vec(), b"v".to_vec()]))
            .map(|r| r.reply)
    };
    assert_eq!(set("before").unwrap(), Reply::ok());

    // Text instead of frames: "GET " read as a length prefix is far over the limit.
    let mut raw = Raw::connect(&node);
    raw.0.write_all(b"GET a\r\n").unwrap();
    let refusal: HelloReply = decode(&raw.read_frame().expect("a refusal")).unwrap();
    assert!(matches!(refusal, HelloReply::Refused { code: ErrorCode::Protocol, .. }), "{refusal:?}");
    assert_eq!(raw.read_frame(), None);

    // A protocol version the node does not speak.
    let mut raw = Raw::connect(&node);
    raw.frame(&encode(&Hello {
        version: 99,
        client: "future".into(),
        peer: None,
        forwarded_by: None,
        cluster: None,
    }));
    let refusal: HelloReply = decode(&raw.read_frame().unwrap()).unwrap();
    let HelloReply::Refused { code, message } = refusal else { panic!("{refusal:?}") };
    assert_eq!(code, ErrorCode::VersionMismatch);
    assert!(message.contains("99"), "{message}");

    // A frame over the limit after a good hello: refused before its payload is read.
    let mut raw = Raw::hello(&node);
    raw.0.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
    let message = raw.expect_closing_error(ErrorCode::Protocol);
    assert!(message.contains("65536"), "{message}");

    // A well-framed payload that is not a request; the good request before it is still answered.
    let mut raw = Raw::hello(&node);
    raw.frame(&encode(&Request::new(5, words(&["PING"]))));
    raw.frame(b"\xc1\xc1 not msgpack");
    let pong: Response = decode(&raw.read_frame().unwrap()).unwrap();
    assert_eq!(pong.id, 5);
    raw.expect_closing_error(ErrorCode::Protocol);

    // Half a frame, then the client vanishes; and a client that vanishes before its answer.
    let mut raw = Raw::hello(&node);
    raw.0.write_all(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    drop(raw);
    let mut raw = Raw::hello(&node);
    raw.frame(&encode(&Request::new(1, words(&["SET", "vanished", "v"]))));
    drop(raw);

    // The established connection and new ones are unaffected.
    assert_eq!(set("after").unwrap(), Reply::ok());
    let out = node.cli(&["-c", "EXISTS before after"]);
    assert_eq!(out.lines(), ["2"], "{out:?}");
    wait_until("the vanished client's write to be applied", Duration::from_secs(10), || {
        node.cli(&["-c", "EXISTS vanished"]).lines() == ["1"]
    });
    assert!(!node.log_text().contains("panicked"), "{}", node.log_text());
}

#[test]
fn connections_over_the_cap_are_refused_with_busy() {
    let node = TestNode::start(&["--max-connections", "1"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The harness's readiness probe may still hold the one slot for a moment.
    let mut held = None;
    wait_until("the only slot", Duration::from_secs(10), || {
        held = runtime
            .block_on(Client::connect(
                &node.addr.to_string(),
                Duration::from_secs(10),
                &kv::client::Transport::default(),
            ))
            .ok();
        held.is_some()
    });
    let out = node.cli(&["-c", "PING"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("BUSY"), "{out:?}");
    drop(held);
    wait_until("the slot to be released", Duration::from_secs(10), || node.cli(&["-c", "PING"]).code == 0);
}
