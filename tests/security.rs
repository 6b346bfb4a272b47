//! TLS on every connection, and members that prove who they are: each attack is tried against
//! real nodes and must fail, and the cluster goes on committing in the same term.

mod common;

use common::{Access, TestCluster, TestNode};
use kv::client::{Client, Transport};
use kv::connection::{self, Stream};
use kv::protocol::PROTOCOL_VERSION;
use kv::protocol::message::{ErrorCode, Hello, HelloReply};
use kv::tls::ClientTls;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A CA and certificates made by `kv-cli cert`, in a temporary directory.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// A CA, certificates for nodes `1..=nodes`, and client certificates for `users`.
    fn make(nodes: u64, users: &[&str]) -> Certs {
        let certs = Certs { dir: tempfile::tempdir().unwrap() };
        certs.cert(&["create-ca"]);
        for id in 1..=nodes {
            certs.cert(&["create-node", &id.to_string()]);
        }
        for user in users {
            certs.cert(&["create-client", user]);
        }
        certs
    }

    fn cert(&self, args: &[&str]) {
        let dir = self.dir.path().to_str().unwrap();
        let mut all = vec!["cert", "--certs-dir", dir];
        all.extend_from_slice(args);
        let out = common::run_cli(&all, None, &[]);
        assert_eq!(out.code, 0, "kv-cli cert {args:?}: {out:?}");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// The flags that give node `id` its TLS.
    fn node_flags(&self, id: u64) -> Vec<String> {
        let file = |name: String| self.path(&name).to_str().unwrap().to_string();
        vec![
            "--tls-ca".into(),
            file("ca.crt".into()),
            "--tls-cert".into(),
            file(format!("node-{id}.crt")),
            "--tls-key".into(),
            file(format!("node-{id}.key")),
        ]
    }

    /// A client that trusts this CA and presents `identity`'s certificate (`node-2`,
    /// `client-alice`), if any.
    fn client(&self, identity: Option<&str>) -> ClientTls {
        let pair =
            identity.map(|name| (self.path(&format!("{name}.crt")), self.path(&format!("{name}.key"))));
        ClientTls::load(&self.ca(), pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))).unwrap()
    }
}

fn tls_cluster(certs: &Certs) -> TestCluster {
    let access = Access::tls(Transport::tls(certs.client(None)));
    TestCluster::start_each(3, &[], &|id| certs.node_flags(id), &access)
}

/// The leader's term, as the leader reports it in `CLUSTER`.
fn leader_term(cluster: &TestCluster, via: u64) -> u64 {
    let rows = cluster.status(via);
    let leader = rows.iter().find(|row| row["role"] == "leader").expect("a leader");
    leader["term"].as_u64().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Says `hello` on a connection `dial` opened, and returns the node's reply, or why there was
/// none.
async fn say_hello(stream: std::io::Result<Stream>, hello: Hello) -> Result<HelloReply, String> {
    let stream = stream.map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = connection::split(stream, 1 << 20);
    writer.send(&hello).await.map_err(|e| format!("send: {e}"))?;
    let reply = tokio::time::timeout(Duration::from_secs(15), reader.read::<HelloReply>()).await;
    match reply {
        Err(_) => Err("no reply".into()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Ok(Ok(None)) => Err("closed".into()),
        Ok(Ok(Some(reply))) => Ok(reply),
    }
}

async fn tls_to(addr: &str, tls: &ClientTls) -> std::io::Result<Stream> {
    Ok(tls.connect(TcpStream::connect(addr).await?).await?.into())
}

fn member_hello(peer: Option<u64>, forwarded_by: Option<u64>) -> Hello {
    Hello { version: PROTOCOL_VERSION, client: "test".into(), peer, forwarded_by, cluster: None }
}

#[test]
fn a_tls_cluster_serves_clients_that_trust_its_ca_and_no_others() {
    let certs = Certs::make(3, &[]);
    let cluster = tls_cluster(&certs);
    let ca = certs.ca();
    let secure = cluster.cli(&["--ca", ca.to_str().unwrap(), "-c", "SET a 1", "-c", "GET a"]);
    assert_eq!(secure.code, 0, "{secure:?}");
    assert_eq!(secure.lines(), ["OK", "1"]);

    let plain = cluster.cli(&["-c", "GET a"]);
    assert_eq!(plain.code, 2, "a plain client gets nothing: {plain:?}");

    // A CA of its own does not make a client trusted by the nodes' certificates.
    let other = Certs::make(0, &[]);
    let stranger = cluster.cli(&["--ca", other.ca().to_str().unwrap(), "-c", "GET a"]);
    assert_eq!(stranger.code, 2, "{stranger:?}");
    assert!(stranger.stderr.contains("certificate"), "{stranger:?}");
}

#[test]
fn only_members_with_their_own_certificates_get_a_peer_connection() {
    let certs = Certs::make(4, &["alice"]);
    let cluster = tls_cluster(&certs);
    let leader = cluster.wait_for_a_leader();
    let term = leader_term(&cluster, leader);
    // Node 1 is attacked; node 2's and node 4's certificates are tried against it.
    let addr = cluster.nodes[0].addr.to_string();
    let other_cluster = Certs::make(3, &[]);
    let runtime = runtime();

    let attempt = |tls: Option<&ClientTls>, hello: Hello| {
        runtime.block_on(async {
            match tls {
                Some(tls) => say_hello(tls_to(&addr, tls).await, hello).await,
                None => say_hello(TcpStream::connect(&addr).await.map(Stream::from), hello).await,
            }
        })
    };
    let refused = |reply: Result<HelloReply, String>, code: ErrorCode| match reply {
        Ok(HelloReply::Refused { code: got, message }) => assert_eq!(got, code, "{message}"),
        other => panic!("expected {code}, got {other:?}"),
    };
    // The honest case first, so that the refusals below are not the test's own doing.
    let node2 = certs.client(Some("node-2"));
    let honest = attempt(Some(&node2), member_hello(Some(2), None));
    assert!(matches!(honest, Ok(HelloReply::Welcome { .. })), "{honest:?}");

    // Plain TCP: no TLS handshake, nothing is read.
    let plain = attempt(None, member_hello(Some(2), None));
    assert!(plain.is_err(), "a plain peer hello got {plain:?}");
    // A client's certificate claiming to be a member, for Raft and for forwarding.
    let alice = certs.client(Some("client-alice"));
    refused(attempt(Some(&alice), member_hello(Some(2), None)), ErrorCode::NoAuth);
    refused(attempt(Some(&alice), member_hello(None, Some(2))), ErrorCode::NoAuth);
    // No certificate at all.
    refused(attempt(Some(&certs.client(None)), member_hello(Some(2), None)), ErrorCode::NoAuth);
    // Node 2's certificate claiming to be node 3.
    refused(attempt(Some(&node2), member_hello(Some(3), None)), ErrorCode::NoAuth);
    refused(attempt(Some(&node2), member_hello(None, Some(3))), ErrorCode::NoAuth);
    // A certificate from the same CA for a node that is not a member.
    refused(
        attempt(Some(&certs.client(Some("node-4"))), member_hello(Some(4), None)),
        ErrorCode::PermissionDenied,
    );
    // A node of another cluster, with its own CA: the handshake fails.
    let foreign = attempt(Some(&other_cluster.client(Some("node-2"))), member_hello(Some(2), None));
    assert!(foreign.is_err(), "another cluster's node got {foreign:?}");
    // A node of another cluster from the same CA (or started with this cluster's configs):
    // its hello names its own cluster. Refused once this cluster has named itself, which its
    // first leader does soon after it is elected.
    let elsewhere = Hello { cluster: Some("another-cluster".into()), ..member_hello(Some(2), None) };
    common::wait_until("the cluster to have an id", Duration::from_secs(20), || {
        matches!(
            attempt(Some(&node2), elsewhere.clone()),
            Ok(HelloReply::Refused { code: ErrorCode::WrongCluster, .. })
        )
    });

    let ca = certs.ca();
    let after = cluster.cli(&["--ca", ca.to_str().unwrap(), "-c", "SET after attacks"]);
    assert_eq!(after.code, 0, "{after:?}");
    assert_eq!(leader_term(&cluster, leader), term, "no election happened");
}

#[test]
fn garbage_instead_of_a_tls_handshake_harms_no_other_client() {
    let certs = Certs::make(1, &[]);
    let transport = Transport::tls(certs.client(None));
    let mut node =
        TestNode::stopped_with(&certs.node_flags(1).iter().map(String::as_str).collect::<Vec<_>>());
    node.access = Access::tls(transport.clone());
    assert!(node.boot());
    let addr = node.addr.to_string();
    let runtime = runtime();
    runtime.block_on(async {
        let (mut client, _) = Client::connect(&addr, Duration::from_secs(10), &transport).await.unwrap();
        let mut strangers = Vec::new();
        for i in 0..50u8 {
            let mut stranger = TcpStream::connect(&addr).await.unwrap();
            // Plain frames, random bytes, a ClientHello cut short, and silence.
            let garbage: Vec<u8> = match i % 4 {
                0 => vec![0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8],
                1 => (0..4096).map(|b| (b as u8).wrapping_mul(31).wrapping_add(i)).collect(),
                2 => vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01],
                _ => Vec::new(),
            };
            let _ = stranger.write_all(&garbage).await;
            strangers.push(stranger);
            let answer =
                client.call(vec![b"SET".to_vec(), format!("k{i}").into_bytes(), b"v".to_vec()]).await;
            assert!(answer.is_ok_and(|a| !a.reply.is_error()), "the honest client was served");
        }
    });
    assert!(node.is_running());
    let answer = common::call_over(&Access::tls(transport), &[addr], &["GET", "k49"]).expect("an answer");
    assert!(!answer.reply.is_error(), "{answer:?}");
}

/// Replaces node 1's certificate files with ones from a new CA and sends `SIGHUP`: connections
/// opened afterwards are served with the new certificate, without a restart.
#[test]
fn certificates_rotate_on_sighup() {
    let old = Certs::make(1, &[]);
    let new = Certs::make(1, &[]);
    let served = tempfile::tempdir().unwrap();
    let place = |from: &Certs| {
        for name in ["ca.crt", "node-1.crt", "node-1.key"] {
            std::fs::copy(from.path(name), served.path().join(name)).unwrap();
        }
    };
    place(&old);
    let file = |name: &str| served.path().join(name).to_str().unwrap().to_string();
    let flags =
        ["--tls-ca", &file("ca.crt"), "--tls-cert", &file("node-1.crt"), "--tls-key", &file("node-1.key")];
    let mut node = TestNode::stopped_with(&flags);
    node.access = Access::tls(Transport::tls(old.client(None)));
    assert!(node.boot());
    let addr = [node.addr.to_string()];
    let trusts = |certs: &Certs| {
        common::call_over(&Access::tls(Transport::tls(certs.client(None))), &addr, &["PING"]).is_some()
    };
    assert!(trusts(&old) && !trusts(&new));

    place(&new);
    nix::sys::signal::kill(node.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    common::wait_until("the node to serve the new certificate", Duration::from_secs(10), || trusts(&new));
    assert!(!trusts(&old));
    assert!(node.log_text().contains("certificates read again"));

    // A file that cannot be used is reported, and the certificates in use stay.
    std::fs::write(served.path().join("node-1.key"), "not a key").unwrap();
    nix::sys::signal::kill(node.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    common::wait_until("the node to report the bad file", Duration::from_secs(10), || {
        node.log_text().contains("keeping the certificates in use")
    });
    assert!(trusts(&new));
}

/// A removal notice makes its target stop and refuse ever to start again, so it is taken only
/// when the leader confirms it. On plain TCP anyone can claim to be a member; here a stranger
/// does, as node `sender`, and tells node `target` that it was removed.
#[test]
fn a_forged_removal_notice_leaves_its_target_running() {
    use kv::peer::Dialer;
    use kv::server::control::{ControlClient, RemovalNotice};
    use openraft::{Membership, StoredMembership};
    use std::collections::BTreeSet;

    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_a_leader();
    let target = if leader == 1 { 2 } else { 1 };
    let sender = (1..=3).find(|id| *id != target && *id != leader).unwrap();
    let without_target: BTreeSet<u64> = (1..=3).filter(|id| *id != target).collect();
    let membership = StoredMembership::new(None, Membership::new_with_defaults(vec![without_target], []));
    let addr = cluster.nodes[target as usize - 1].addr.to_string();
    let runtime = runtime();
    let notify = |by: u64| {
        let notice = RemovalNotice { by, membership: membership.clone() };
        let mut client = ControlClient::new(Dialer::new(sender, None), target, addr.clone());
        runtime.block_on(client.notify_removed(notice, Duration::from_secs(10)))
    };
    // In its own name, and in the leader's.
    assert!(!notify(sender).unwrap(), "the target took a forged notice");
    assert!(!notify(leader).unwrap(), "the target took a notice sent in another's name");

    let node = cluster.node(target);
    assert!(node.is_running());
    assert!(node.log_text().contains("the leader does not confirm"));
    assert!(!node.data_dir.join("REMOVED").exists());
    let served = common::call(&[addr], &["SET", "still", "here"]).expect("an answer");
    assert!(!served.reply.is_error(), "{served:?}");
}

/// TLS and auth on every node of a 3-node cluster, root's password from a file.
fn secure_cluster(certs: &Certs, root_password: &str) -> (TestCluster, tempfile::TempDir) {
    secure_cluster_with(certs, root_password, &[])
}

/// Like [`secure_cluster`], every node also given `flags`.
fn secure_cluster_with(
    certs: &Certs,
    root_password: &str,
    flags: &[&str],
) -> (TestCluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("root-password");
    std::fs::write(&password_file, format!("{root_password}\n")).unwrap();
    let access = Access {
        transport: Transport::tls(certs.client(None)),
        login: Some(("root".into(), root_password.into())),
    };
    let file = password_file.to_str().unwrap().to_string();
    let own = |id| {
        let mut flags = certs.node_flags(id);
        flags.extend(["--auth".to_string(), "--root-password-file".to_string(), file.clone()]);
        flags
    };
    (TestCluster::start_each(3, flags, &own, &access), dir)
}

#[test]
fn users_get_what_their_roles_grant_and_nothing_more() {
    let certs = Certs::make(3, &["alice"]);
    let (cluster, _dir) = secure_cluster(&certs, "root-secret");
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();
    let as_user = |user: Option<(&str, &str)>, commands: &[&str]| {
        let addrs = cluster.addrs();
        let mut args = vec!["--addr", &addrs, "--ca", ca];
        let mut env = Vec::new();
        if let Some((user, password)) = user {
            args.extend(["--user", user]);
            env.push(("KV_PASSWORD", password));
        }
        for command in commands {
            args.extend(["-c", command]);
        }
        common::run_cli(&args, None, &env)
    };
    let root = Some(("root", "root-secret"));
    let setup = as_user(
        root,
        &[
            "USER ADD alice alice-secret",
            "ROLE ADD app",
            "ROLE GRANT app read app/",
            "ROLE GRANT app readwrite app/own/",
            "USER GRANT alice app",
            "SET app/x 1",
            "SET other/y 2",
        ],
    );
    assert_eq!(setup.code, 0, "{setup:?}");

    let alice = Some(("alice", "alice-secret"));
    let allowed = as_user(
        alice,
        &[
            "GET app/x",
            "SET app/own/z 3",
            "GET app/own/z",
            "SCAN PREFIX app/ KEYSONLY",
            "TXN VALUE app/x = 1 THEN INCR app/own/n",
            "TXN VALUE app/x = 1 THEN SET app/own/n 1 GET app/x",
        ],
    );
    assert_eq!(allowed.code, 1, "{allowed:?}");
    assert_eq!(&allowed.lines()[..5], ["1", "OK", "3", "app/own/z", "app/x"], "{allowed:?}");
    assert!(allowed.stderr.contains("expected an operation"), "INCR is no TXN operation: {allowed:?}");
    assert_eq!(&allowed.lines()[5..], ["then", "OK", "1"], "{allowed:?}");
    for (command, missing) in [
        ("SET app/x 2", "readwrite on 'app/x'"),
        ("SCAN app/ app1", "read on every key from 'app/' to 'app1'"),
        ("SCAN PREFIX \"\"", "read on every key from '' to the last"),
        ("MGET app/x other/y", "read on 'other/y'"),
        ("MSET app/own/a 1 app/b 2", "readwrite on 'app/b'"),
        ("INCR app/x", "readwrite on 'app/x'"),
        ("TXN VALUE other/y = 2 THEN SET app/own/q 1", "read on 'other/y'"),
        ("TXN THEN GET app/x ELSE SET app/x 3", "readwrite on 'app/x'"),
        ("GET other/y", "read on 'other/y'"),
        ("DEL other/y", "readwrite on 'other/y'"),
        ("CLUSTER REMOVE 3", "the admin permission"),
        ("USER ADD mallory pw", "the admin permission"),
        ("ROLE GRANT app readwrite \"\"", "the admin permission"),
        ("USER PASSWD root hijacked", "the admin permission"),
    ] {
        let denied = as_user(alice, &[command]);
        let text = format!("{}{}", denied.stdout, denied.stderr);
        assert_eq!(denied.code, 1, "{command}: {denied:?}");
        assert!(text.contains("PERMISSION_DENIED") && text.contains(missing), "{command}: {text}");
    }
    // Nobody logged in, a wrong password, an unknown user.
    let anonymous = as_user(None, &["GET app/x"]);
    assert_eq!(anonymous.code, 1, "{anonymous:?}");
    assert!(anonymous.stdout.contains("NOAUTH") || anonymous.stderr.contains("NOAUTH"), "{anonymous:?}");
    for login in [("alice", "wrong"), ("mallory", "alice-secret")] {
        let refused = as_user(Some(login), &["GET app/x"]);
        assert_eq!(refused.code, 2, "{login:?}: {refused:?}");
        assert!(refused.stderr.contains("invalid user or password"), "{refused:?}");
    }

    // Nothing changed on any refusal.
    let after = as_user(root, &["GET app/x", "GET other/y", "USER LIST", "CLUSTER"]);
    assert_eq!(after.code, 0, "{after:?}");
    assert_eq!(&after.lines()[..2], ["1", "2"]);
    assert!(!after.stdout.contains("mallory"), "{after:?}");
    for id in 1..=3 {
        assert!(cluster.status(id).len() == 3, "node {id} still has three members");
    }

    // A client certificate logs its user in, no password needed; a user changes its own password.
    let addrs = cluster.addrs();
    let with_certificate = |name: &str, commands: &[&str]| {
        let (cert, key) = (certs.path(&format!("{name}.crt")), certs.path(&format!("{name}.key")));
        let mut args = vec!["--addr", &addrs, "--ca", ca, "--cert", cert.to_str().unwrap()];
        args.extend(["--key", key.to_str().unwrap()]);
        for command in commands {
            args.extend(["-c", command]);
        }
        common::run_cli(&args, None, &[])
    };
    let by_cert = with_certificate("client-alice", &["GET app/x", "USER PASSWD alice changed"]);
    assert_eq!((by_cert.code, by_cert.lines()), (0, vec!["1", "OK"]), "{by_cert:?}");

    // The bench works over TLS with a user: every request it sends is answered OK.
    let bench = common::run_cli(
        &["--addr", &addrs, "--ca", ca, "--user", "root", "bench", "--json", "-n", "500", "--clients", "4"],
        None,
        &[("KV_PASSWORD", "root-secret")],
    );
    assert_eq!(bench.code, 0, "{bench:?}");
    let report: serde_json::Value = serde_json::from_str(bench.stdout.trim()).expect("one JSON report");
    assert_eq!((report["requests"].as_u64(), report["ok"].as_u64()), (Some(500), Some(500)), "{report}");
    assert_eq!(as_user(Some(("alice", "alice-secret")), &["GET app/x"]).code, 2);
    assert_eq!(as_user(Some(("alice", "changed")), &["GET app/x"]).code, 0);

    // A lost root password is recovered by whoever holds the CA's key (docs/SECURITY.md).
    certs.cert(&["create-client", "root"]);
    let recovered = with_certificate("client-root", &["USER PASSWD root recovered"]);
    assert_eq!(recovered.code, 0, "{recovered:?}");
    assert_eq!(as_user(Some(("root", "recovered")), &["USER LIST"]).code, 0);
}

/// Secure by default: beyond loopback, a node without TLS and auth does not start.
#[test]
fn a_node_reachable_from_other_machines_refuses_to_start_without_tls_and_auth() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let listen = format!("0.0.0.0:{port}");
        let advertise = format!("127.0.0.1:{port}");
        let mut args =
            vec!["--listen", &listen, "--advertise", &advertise, "--data-dir", dir.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        std::process::Command::new(common::NODE_BIN).args(&args).output().unwrap()
    };
    let refused = run(&[]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("does not have both TLS and auth"), "{said}");
    assert!(!dir.path().join("state.redb").exists(), "nothing was created");
}

/// A node joins a secure cluster with its own certificate: that lets it add itself and promote
/// itself, and nothing more. Another node's certificate cannot add a node under a different id.
/// The log it needs is compacted, so it catches up by snapshot, which brings it the users.
#[test]
fn a_node_joins_a_secure_cluster_with_its_own_certificate() {
    let certs = Certs::make(5, &[]);
    let compacting = ["--snapshot-entries", "20", "--keep-log-entries", "0"];
    let (cluster, _dir) = secure_cluster_with(&certs, "root-secret", &compacting);
    let root = cluster.nodes[0].access.clone();
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    for i in 0..100 {
        let key = format!("before-join-{i}");
        assert!(common::call_over(&root, &addrs, &["SET", &key, "1"]).is_some_and(|r| !r.reply.is_error()));
    }
    common::wait_until("the log to be compacted", Duration::from_secs(30), || {
        cluster.nodes[0].row(1).is_some_and(|row| row["purged"].as_u64().is_some_and(|p| p > 0))
    });
    let through = cluster.nodes[0].addr.to_string();
    let mut flags = vec!["--id".to_string(), "4".into(), "--join".into(), through.clone(), "--auth".into()];
    flags.extend(certs.node_flags(4));
    let mut joiner = TestNode::stopped_with(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    joiner.access = cluster.nodes[0].access.clone();
    assert!(joiner.boot());
    common::wait_until("node 4 to be a caught-up follower", Duration::from_secs(30), || {
        cluster.nodes[0].row(4).is_some_and(|row| row["role"] == "follower" && row["lag"] == 0)
    });
    assert!(joiner.log_text().contains("installed a snapshot"), "node 4 caught up by snapshot");
    // Node 4 checks logins against the users the snapshot brought.
    let local =
        common::call_over(&root, &[joiner.addr.to_string()], &["USER", "LIST"]).expect("root logs in");
    assert!(!local.reply.is_error(), "{local:?}");

    // Node 5's certificate, used as a client, may not add a node 6 (nor run anything else).
    let node5 = Transport::tls(certs.client(Some("node-5")));
    let answer = runtime().block_on(async {
        let (mut client, _) = Client::connect(&through, Duration::from_secs(10), &node5).await.unwrap();
        let add = ["CLUSTER", "ADD-LEARNER", "6", "127.0.0.1:1"].map(|a| a.as_bytes().to_vec()).to_vec();
        client.call(add).await.unwrap()
    });
    assert!(
        matches!(answer.reply, kv::protocol::message::Reply::Error { code: ErrorCode::NoAuth, .. }),
        "{answer:?}"
    );
    assert!(cluster.nodes[0].row(6).is_none());
}

/// Auth turned on for a cluster that ran without it (or that stopped before any leader created
/// root): a node given root's password file creates root then, so nobody is locked out.
#[test]
fn auth_turned_on_later_creates_root_from_the_password_file() {
    let certs = Certs::make(1, &[]);
    let tls = certs.node_flags(1);
    let mut node = TestNode::stopped_with(&tls.iter().map(String::as_str).collect::<Vec<_>>());
    node.access = Access::tls(Transport::tls(certs.client(None)));
    assert!(node.boot());
    let addr = [node.addr.to_string()];
    assert!(common::call_over(&node.access, &addr, &["SET", "before", "auth"]).is_some());
    node.terminate();

    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("root-password");
    std::fs::write(&password_file, "later\n").unwrap();
    node.flags.extend([
        "--auth".into(),
        "--root-password-file".into(),
        password_file.to_str().unwrap().into(),
    ]);
    node.restart();
    let root = Access { login: Some(("root".into(), "later".into())), ..node.access.clone() };
    common::wait_until("root to be created", Duration::from_secs(20), || {
        common::call_over(&root, &addr, &["GET", "before"]).is_some_and(|r| !r.reply.is_error())
    });
    let anonymous = common::call_over(&node.access, &addr, &["GET", "before"]).expect("an answer");
    assert!(matches!(anonymous.reply, kv::protocol::message::Reply::Error { code: ErrorCode::NoAuth, .. }));
}
