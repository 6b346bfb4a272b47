//! The browser console end to end: its WebSocket stream from real nodes (what it carries, its
//! login and permissions, and the bounds on what a browser or a stranger can make a node hold),
//! and the page itself in headless Chromium and Firefox against `kv-cli demo`.

mod common;

use common::{Access, CLI_BIN, http_cluster, wait_until};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long a browser has to take each message (the node's `SEND_TIMEOUT`).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the node pings a browser, and how long it waits to hear from one.
const PING_EVERY: Duration = Duration::from_secs(10);
const SILENCE_LIMIT: Duration = Duration::from_secs(30);
/// How long the stream may take to show something the cluster did.
const STREAM_DEADLINE: Duration = Duration::from_secs(20);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Opens the console stream of the node serving HTTP on `http`, as a page it served would.
async fn open(http: SocketAddr) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{http}/console/ws").into_client_request().unwrap();
    request.headers_mut().insert("Origin", format!("http://{http}").parse().unwrap());
    let connecting = tokio_tungstenite::connect_async(request);
    let (socket, _) = tokio::time::timeout(STREAM_DEADLINE, connecting).await.expect("connected in time")?;
    Ok(socket)
}

/// The next message of type `kind`, skipping others; panics after `deadline`.
async fn next_of(socket: &mut Socket, kind: &str, deadline: Duration) -> Value {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let message = tokio::time::timeout_at(until, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} message within {deadline:?}"))
            .expect("the stream is open")
            .expect("a message");
        let Message::Text(text) = message else { continue };
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["type"] == kind {
            return value;
        }
    }
}

/// The first message matching `wanted`, skipping others; panics after `deadline`.
async fn wait_for(
    socket: &mut Socket,
    what: &str,
    deadline: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let message = tokio::time::timeout(left, async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => return serde_json::from_str::<Value>(&text).unwrap(),
                    Some(Ok(_)) => continue,
                    other => panic!("the stream ended waiting for {what}: {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} within {deadline:?}"));
        if wanted(&message) {
            return message;
        }
    }
}

/// Sends `message` with id `id` and returns the answer to it.
async fn ask(socket: &mut Socket, id: u64, mut message: Value) -> Value {
    message["id"] = id.into();
    socket.send(Message::text(message.to_string())).await.unwrap();
    wait_for(socket, "an answer", STREAM_DEADLINE, |m| m["type"] == "answer" && m["id"] == id).await["answer"]
        .clone()
}

fn role_of(tick: &Value, id: u64) -> String {
    let member = tick["members"].as_array().unwrap().iter().find(|m| m["id"] == id).unwrap();
    member["status"]["role"].as_str().unwrap_or("unreachable").to_string()
}

#[test]
fn the_stream_starts_with_the_whole_cluster_and_follows_what_it_does() {
    let (mut cluster, http) = http_cluster(3, &[], &Access::default());
    let leader = cluster.wait_for_a_leader();
    let watched = if leader == 1 { 2 } else { 1 };
    let follower = (1..=3).find(|id| *id != leader && *id != watched).unwrap();
    let runtime = runtime();
    let mut socket = runtime.block_on(open(http[watched as usize - 1])).unwrap();
    runtime.block_on(async {
        let hello = next_of(&mut socket, "hello", STREAM_DEADLINE).await;
        assert_eq!(
            (hello["node"].as_u64(), hello["auth"].as_bool()),
            (Some(watched), Some(false)),
            "{hello}"
        );
        // The state, then ticks, until one shows all three members reporting and the leader.
        wait_for(&mut socket, "a tick with three members and the leader", STREAM_DEADLINE, |m| {
            let tick = if m["type"] == "state" { &m["tick"] } else { m };
            tick["leader"] == leader
                && tick["members"].as_array().is_some_and(|members| {
                    members.len() == 3 && members.iter().all(|member| member["status"].is_object())
                })
                && tick["failure_tolerance"] == 1
        })
        .await;
        // A command run from the page goes through the node, with its acknowledgement picture.
        let answer = ask(&mut socket, 1, json!({"type": "run", "line": "SET 'from the page' yes"})).await;
        assert_eq!(answer["value"], "OK", "{answer}");
        assert_eq!(answer["leader"], leader, "{answer}");
        let peers = answer["replication"]["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 2, "{answer}");
        let read = ask(&mut socket, 2, json!({"type": "run", "args": ["GET", "from the page"]})).await;
        assert_eq!(
            read,
            json!({"type": "bulk", "value": "yes", "leader": leader, "revision": answer["revision"]})
        );
        let page = ask(&mut socket, 3, json!({"type": "scan", "prefix": "from", "limit": 10})).await;
        assert_eq!(page["entries"][0]["key"], "from the page", "{page}");
        let refused = ask(&mut socket, 4, json!({"type": "run", "line": "GET"})).await;
        assert_eq!(refused["code"], "WRONG_ARITY", "{refused}");
        let unknown = ask(&mut socket, 5, json!({"type": "run", "line": "'unbalanced"})).await;
        assert_eq!(unknown["code"], "BAD_REQUEST", "{unknown}");
        let control =
            ask(&mut socket, 6, json!({"type": "control", "action": "kill", "node": follower})).await;
        assert_eq!(control["code"], "BAD_REQUEST", "outside the demo there are no node controls: {control}");
    });
    // A write from an ordinary client to the watched node is streamed as a journey.
    let written = cluster.node(watched).cli(&["-c", "SET journey 1"]);
    assert_eq!(written.lines(), ["OK"], "{written:?}");
    runtime.block_on(async {
        let journey = wait_for(&mut socket, "the client's write's journey", STREAM_DEADLINE, |m| {
            m["type"] == "journey" && m["command"] == "SET" && m["answer"]["replication"].is_object()
        })
        .await;
        assert_eq!(journey["answer"]["leader"], leader, "{journey}");
    });
    // Load on the cluster shows in the graphs: writes per second and their latencies.
    let bench = cluster.cli(&["bench", "--duration", "3", "--clients", "4"]);
    assert_eq!(bench.code, 0, "{bench:?}");
    runtime.block_on(async {
        let tick = wait_for(&mut socket, "a sample with writes and their latencies", STREAM_DEADLINE, |m| {
            m["type"] == "tick"
                && m["sample"]["writes_per_s"].as_f64().is_some_and(|w| w > 10.0)
                && m["sample"]["write_p99_ms"].as_f64().is_some_and(|p99| p99 > 0.0)
        })
        .await;
        let sample = &tick["sample"];
        assert!(
            sample["write_p50_ms"].as_f64().unwrap() <= sample["write_p99_ms"].as_f64().unwrap(),
            "{sample}"
        );
    });
    // A member killed: the stream marks it unreachable and tells it as an event.
    cluster.node(follower).kill9();
    runtime.block_on(async {
        let event = wait_for(&mut socket, "the kill as an event", STREAM_DEADLINE, |m| {
            m["type"] == "event" && m["kind"] == "unreachable"
        })
        .await;
        assert_eq!(event["node"], follower, "{event}");
        let tick = next_of(&mut socket, "tick", STREAM_DEADLINE).await;
        assert_eq!(role_of(&tick, follower), "unreachable", "{tick}");
        assert_eq!(tick["failure_tolerance"], 0, "{tick}");
    });
    cluster.node(follower).restart();
    runtime.block_on(async {
        wait_for(&mut socket, "the member back", STREAM_DEADLINE, |m| {
            m["type"] == "event" && m["kind"] == "reachable" && m["node"] == follower
        })
        .await;
    });
}

#[test]
fn with_auth_the_stream_waits_for_a_login_and_commands_need_their_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("root-password");
    std::fs::write(&password_file, "root-secret\n").unwrap();
    let file = password_file.to_str().unwrap().to_string();
    let access = Access { login: Some(("root".into(), "root-secret".into())), ..Access::default() };
    let flags = ["--auth".to_string(), "--root-password-file".to_string(), file.clone()];
    let (cluster, http) = http_cluster(1, &flags, &access);
    cluster.wait_for_a_leader();
    for line in [
        "ROLE ADD viewer",
        "ROLE GRANT viewer read \"\"",
        "USER ADD watcher watcher-secret",
        "USER GRANT watcher viewer",
    ] {
        let out = cluster.cli(&["--user", "root", "--password-file", &file, "-c", line]);
        assert_eq!(out.code, 0, "{line}: {out:?}");
    }
    let runtime = runtime();
    runtime.block_on(async {
        let mut socket = open(http[0]).await.unwrap();
        let hello = next_of(&mut socket, "hello", STREAM_DEADLINE).await;
        assert_eq!(hello["auth"], true, "{hello}");
        let read = ask(&mut socket, 1, json!({"type": "run", "line": "GET a"})).await;
        assert_eq!(read["code"], "NOAUTH", "{read}");
        let wrong = ask(&mut socket, 2, json!({"type": "run", "args": ["AUTH", "watcher", "nope"]})).await;
        assert_eq!(wrong["code"], "NOAUTH", "{wrong}");
        // Nothing of the cluster is streamed before a login.
        let nothing = tokio::time::timeout(Duration::from_millis(2500), socket.next()).await;
        assert!(nothing.is_err(), "streamed before a login: {nothing:?}");
        // A read-only user watches and reads, and may change nothing.
        let login =
            ask(&mut socket, 3, json!({"type": "run", "args": ["AUTH", "watcher", "watcher-secret"]})).await;
        assert_eq!(login["value"], "OK", "{login}");
        let state = next_of(&mut socket, "state", STREAM_DEADLINE).await;
        assert_eq!(state["tick"]["members"].as_array().map(Vec::len), Some(1), "{state}");
        let read = ask(&mut socket, 4, json!({"type": "run", "line": "GET a"})).await;
        assert_eq!(read["type"], "nil", "{read}");
        let write = ask(&mut socket, 5, json!({"type": "run", "line": "SET a 1"})).await;
        assert_eq!(write["code"], "PERMISSION_DENIED", "{write}");
        let control = ask(&mut socket, 6, json!({"type": "control", "action": "kill", "node": 1})).await;
        assert_eq!(control["code"], "PERMISSION_DENIED", "{control}");
    });
    let out = cluster.cli(&["--user", "root", "--password-file", &file, "-c", "GET a"]);
    assert_eq!(out.lines(), [""], "the refused write changed nothing (a nil prints empty): {out:?}");
}

/// The node's resident memory, in KiB.
fn resident_kib(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn strangers_and_stalled_browsers_cannot_make_a_node_hold_more() {
    let (mut cluster, http) = http_cluster(1, &[], &Access::default());
    cluster.wait_for_a_leader();
    let http = http[0];
    let runtime = runtime();
    runtime.block_on(async {
        // Another site's page is refused.
        let mut foreign = format!("ws://{http}/console/ws").into_client_request().unwrap();
        foreign.headers_mut().insert("Origin", "http://evil.example".parse().unwrap());
        let refused = tokio_tungstenite::connect_async(foreign).await;
        assert!(
            matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
            "{refused:?}"
        );
        // At most 16 browsers at once; the 17th is told to try another node.
        let mut browsers = Vec::new();
        for _ in 0..16 {
            let mut socket = open(http).await.unwrap();
            next_of(&mut socket, "hello", STREAM_DEADLINE).await;
            browsers.push(socket);
        }
        let busy = open(http).await;
        assert!(
            matches!(&busy, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503),
            "{busy:?}"
        );
        drop(browsers);
        // Their slots come free as the node sees them gone.
        let until = Instant::now() + STREAM_DEADLINE;
        let mut again = loop {
            match open(http).await {
                Ok(socket) => break socket,
                Err(e) => assert!(Instant::now() < until, "no slot came free: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        next_of(&mut again, "hello", STREAM_DEADLINE).await;
        drop(again);
        // A message over 64 KiB ends that browser's session, and nothing else.
        let mut big = open(http).await.unwrap();
        next_of(&mut big, "hello", STREAM_DEADLINE).await;
        let line = format!("SET big {}", "x".repeat(100 * 1024));
        let _ = big.send(Message::text(json!({"type": "run", "id": 1, "line": line}).to_string())).await;
        let ended = tokio::time::timeout(STREAM_DEADLINE, async {
            loop {
                match big.next().await {
                    Some(Ok(Message::Text(_))) => continue,
                    _ => return,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the session outlived its oversized message");
    });
    let out = cluster.cli(&["-c", "EXISTS big"]);
    assert_eq!(out.lines(), ["0"], "{out:?}");
    // A browser that asks for large pages and reads nothing: the node stops sending it after
    // SEND_TIMEOUT and closes it, holding no more than what the socket buffers hold meanwhile.
    let value = "v".repeat(100 * 1024);
    let mut batch = String::new();
    for i in 0..40 {
        batch.push_str(&format!("SET page/{i:02} {value}\n"));
    }
    let out = cluster.cli_piped(&[], batch.as_bytes());
    assert_eq!(out.code, 0, "{out:?}");
    let pid = cluster.node(1).pid();
    let before = resident_kib(pid);
    let started = Instant::now();
    runtime.block_on(async {
        let mut stalled = open(http).await.unwrap();
        for id in 1..=300u64 {
            let scan = json!({"type": "scan", "id": id, "prefix": "page/", "limit": 40});
            if tokio::time::timeout(Duration::from_secs(1), stalled.send(Message::text(scan.to_string())))
                .await
                .is_err()
            {
                break;
            }
        }
        // Each page is about 4 MB: 300 of them would be 1.2 GB if the node queued them. The
        // node's memory is measured over the whole stall, until it gives up on the browser.
        let mut most = before;
        while started.elapsed() < SEND_TIMEOUT + Duration::from_secs(2) {
            most = most.max(resident_kib(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let grown = most.saturating_sub(before);
        assert!(grown < 200 * 1024, "the node grew by {grown} KiB for one stalled browser");
        // Reading now drains what the socket buffered, then finds the session closed.
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            let mut pages = 0;
            while let Some(Ok(message)) = stalled.next().await {
                if matches!(message, Message::Text(_)) {
                    pages += 1;
                }
            }
            pages
        })
        .await
        .expect("the node closed the stalled session");
        assert!(drained < 300, "the node sent every page to a browser that read nothing");
    });
    // A client that reads nothing, so answers no ping, is gone after SILENCE_LIMIT; one that
    // reads stays.
    runtime.block_on(async {
        let mut silent = open(http).await.unwrap();
        let mut reading = open(http).await.unwrap();
        let opened = Instant::now();
        let kept = tokio::time::timeout(SILENCE_LIMIT + PING_EVERY + Duration::from_secs(5), async {
            while reading.next().await.is_some_and(|m| m.is_ok()) {}
        })
        .await;
        assert!(kept.is_err(), "the session of a browser that reads ended after {:?}", opened.elapsed());
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while silent.next().await.is_some_and(|m| m.is_ok()) {}
        })
        .await;
        assert!(ended.is_ok(), "a browser silent for {:?} still has its session", opened.elapsed());
        next_of(&mut reading, "tick", STREAM_DEADLINE).await;
    });
}

/// The demo's banner, read from its stderr: console URLs and its data directory. The rest of
/// its stderr is read (and dropped) until it exits, so that it never writes to a closed pipe.
fn demo_banner(stderr: impl BufRead + Send + 'static) -> (Vec<String>, std::path::PathBuf) {
    let (banner, found) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.starts_with("kv demo: node 1 on ") {
                let _ = banner.send(line);
            }
        }
    });
    let line = found.recv_timeout(Duration::from_secs(60)).expect("the demo's banner within 60 s");
    let consoles = line.split("Console at ").nth(1).unwrap().split(" (each").next().unwrap();
    let dir = line.split("data and logs in ").nth(1).unwrap().split(". ").next().unwrap();
    (consoles.split(", ").map(String::from).collect(), dir.into())
}

#[test]
fn the_page_shows_the_cluster_at_work_in_chromium_and_firefox() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "this test drives Chromium ({chromium}); install it (apt-get install chromium, as .ci/run does) or set CHROMIUM"
    );
    let firefox = std::env::var("FIREFOX").unwrap_or_else(|_| "/usr/bin/firefox-esr".to_string());
    assert!(
        std::path::Path::new(&firefox).exists(),
        "this test drives Firefox ({firefox}); install it (apt-get install firefox-esr, as .ci/run does) or set FIREFOX"
    );
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-e2e");
    // Screenshots from an earlier run must not pass for this one's.
    let _ = std::fs::remove_dir_all(&shots);
    let mut demo = Command::new(CLI_BIN)
        .arg("demo")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (consoles, dir) = demo_banner(BufReader::new(demo.stderr.take().unwrap()));
    assert_eq!(consoles.len(), 3, "{consoles:?}");
    let password = std::fs::read_to_string(dir.join("root-password")).unwrap();
    // Each browser's script in turn against the same demo; Firefox's only if Chromium's passed.
    let browse = |script: &str, browser: (&str, &str)| {
        let mut e2e = Command::new("node")
            .arg(web.join("e2e").join(script))
            .current_dir(&web)
            .env("KV_CONSOLE_URLS", consoles.join(","))
            .env("KV_ROOT_PASSWORD", password.trim())
            .env("KV_SCREENSHOTS", &shots)
            .env(browser.0, browser.1)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = e2e.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(150) {
                let _ = e2e.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let output = e2e.wait_with_output().unwrap();
        let said =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (status.is_some_and(|s| s.success()), format!("{script} ({status:?}):\n{said}"))
    };
    let mut outcomes = vec![browse("console.mjs", ("CHROMIUM", &chromium))];
    if outcomes[0].0 {
        outcomes.push(browse("firefox.mjs", ("FIREFOX", &firefox)));
    }
    // Closing the demo's input ends it, and it stops its nodes.
    let mut input = demo.stdin.take().unwrap();
    let _ = input.flush();
    drop(input);
    wait_until("the demo to end", Duration::from_secs(30), || demo.try_wait().unwrap().is_some());
    for (passed, said) in outcomes {
        assert!(passed, "the browser test failed: {said}");
    }
    for shot in ["console.png", "restarted.png", "firefox.png", "firefox-phone.png"] {
        assert!(shots.join(shot).is_file(), "no screenshot {shot}");
    }
}
