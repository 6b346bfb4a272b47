//! The data model end to end, through kv-cli against a real cluster: revisions and metadata,
//! range scans, conditional writes, counters and transactions; what each answers, in each output
//! format, and what each refuses.

mod common;

use common::{TestCluster, WritingClient, call, script};
use kv::protocol::message::Reply;
use std::collections::BTreeSet;

/// Answers as JSON objects, one per command.
fn json(out: &common::CliOutput) -> Vec<serde_json::Value> {
    out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

#[test]
fn every_new_command_answers_and_refuses_through_kv_cli() {
    let cluster = TestCluster::start(3, &[]);
    // Through a follower, so that writes are forwarded and reads confirmed with the leader.
    let leader = cluster.wait_for_a_leader();
    let follower = &cluster.nodes[if leader == 1 { 1 } else { 0 }];
    let out = follower.cli_piped(
        &["--json"],
        &script(1, |_| {
            [
                "SET k v1",
                "SET k v2",
                "GET k WITHMETA",
                "SET k v3 NX",
                "SET fresh x NX",
                "SET k v3 IFREV 1",
                "CAS k v2 v3",
                "CAS k v2 v4",
                "MSET m/a 1 m/b 2 m/c 3",
                "MGET m/a nope m/c",
                "INCR n",
                "INCRBY n 41",
                "DECRBY n 2",
                "INCR k",
                "SCAN m/ LIMIT 2",
                "SCAN PREFIX m/ KEYSONLY REVERSE",
                "SCAN PREFIX m/ COUNT",
                "DEL m/a IFREV 1",
                "TXN VALUE n = 40 THEN SET n 0 GET n ELSE GET k",
                "SCAN",
                "TXN SET a 1",
            ]
            .join("\n")
        }),
    );
    assert_eq!(out.code, 1, "the last two are refused: {out:?}");
    let answers = json(&out);
    assert_eq!(answers.len(), 21, "{out:?}");
    let revision = |n: usize| answers[n]["revision"].as_u64().unwrap();
    assert_eq!(answers[0]["value"], "OK");
    assert_eq!(revision(1), revision(0) + 1, "each write takes the next revision");
    let meta = &answers[2]["entries"][0];
    assert_eq!(
        (meta["key"].as_str(), meta["value"].as_str(), meta["version"].as_u64()),
        (Some("k"), Some("v2"), Some(2))
    );
    assert_eq!(meta["create_revision"].as_u64(), Some(revision(0)));
    assert_eq!(meta["mod_revision"].as_u64(), Some(revision(1)));
    assert_eq!(answers[3]["type"], "nil", "NX on an existing key: {}", answers[3]);
    assert_eq!(revision(3), revision(1), "a write that changed nothing keeps the revision");
    assert_eq!(answers[4]["value"], "OK");
    assert_eq!(answers[5]["type"], "nil", "IFREV of an old revision");
    assert_eq!((answers[6]["value"].as_i64(), answers[7]["value"].as_i64()), (Some(1), Some(0)));
    assert_eq!(answers[8]["value"], "OK");
    let items: Vec<&serde_json::Value> = answers[9]["items"].as_array().unwrap().iter().collect();
    assert_eq!(
        items.iter().map(|i| i["type"].as_str().unwrap()).collect::<Vec<_>>(),
        ["bulk", "nil", "bulk"]
    );
    assert_eq!((items[0]["value"].as_str(), items[2]["value"].as_str()), (Some("1"), Some("3")));
    assert_eq!(
        [10, 11, 12].map(|n| answers[n]["value"].as_i64().unwrap()),
        [1, 42, 40],
        "INCR, INCRBY and DECRBY answer the new value"
    );
    assert_eq!(answers[13]["code"], "NOT_INTEGER");
    let page = &answers[14];
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert_eq!((page["more"].as_bool(), page["next"].as_str()), (Some(true), Some("m/b\u{0}")));
    let reversed: Vec<&str> =
        answers[15]["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(reversed, ["m/c", "m/b", "m/a"]);
    assert!(answers[15]["entries"][0].get("value").is_none(), "KEYSONLY");
    assert_eq!(answers[16]["value"].as_i64(), Some(3));
    assert_eq!(answers[17]["value"].as_i64(), Some(0), "DEL IFREV of the wrong revision");
    let txn = &answers[18];
    assert_eq!(txn["succeeded"], true);
    assert_eq!(txn["results"][1]["value"], "0");
    assert_eq!(answers[19]["code"], "WRONG_ARITY");
    assert_eq!(answers[20]["code"], "BAD_REQUEST");
    assert!(answers[20]["message"].as_str().unwrap().contains("expected a compare"));

    // The raw form: key<TAB>value per key; a page that stopped early says so on stderr.
    let out = follower.cli(&["-c", "GET k WITHMETA", "-c", "SCAN PREFIX m/ LIMIT 1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["k\tv3", "m/a\t1"]);
    assert_eq!(out.stderr.trim(), r#"(more keys follow; the next page continues at "m/a\x00")"#);
    let out = follower.cli(&["-c", "SCAN PREFIX m/"]);
    assert_eq!((out.code, out.lines().len(), out.stderr.as_str()), (0, 3, ""), "the whole range: {out:?}");
}

#[test]
fn a_txn_spans_lines_in_piped_input_and_a_failed_compare_changes_nothing() {
    let cluster = TestCluster::start(3, &[]);
    let input = "\
MSET acct/a 100 acct/b 0
TXN
  VALUE acct/a = 100
  MISSING acct/c
THEN
  SET acct/a 70
  SET acct/b 30
ELSE
  GET acct/a
END
GET acct/a WITHMETA
TXN
  VALUE acct/a = 100
THEN
  SET acct/a 0
  SET acct/b 100
END
MGET acct/a acct/b
TXN
  THEN
";
    let out = cluster.cli_piped(&["--json"], input.as_bytes());
    assert_eq!(out.code, 1, "the last block is never closed: {out:?}");
    let answers = json(&out);
    assert_eq!(answers.len(), 6, "{out:?}");
    assert_eq!(answers[5]["code"], "BAD_INPUT");
    assert!(answers[5]["message"].as_str().unwrap().contains("inside a TXN block (no END)"), "{out:?}");
    assert_eq!(answers[1]["succeeded"], true);
    assert_eq!(answers[1]["results"].as_array().unwrap().len(), 2);
    // Both keys of the transaction changed at one revision.
    let applied_at = answers[1]["revision"].as_u64().unwrap();
    assert_eq!(answers[2]["entries"][0]["mod_revision"].as_u64(), Some(applied_at));
    assert_eq!(answers[3]["succeeded"], false);
    assert_eq!(answers[3]["results"], serde_json::json!([]));
    assert_eq!(answers[3]["revision"].as_u64(), Some(applied_at), "a failed compare takes no revision");
    let values: Vec<&str> =
        answers[4]["items"].as_array().unwrap().iter().map(|i| i["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["70", "30"]);

    // The same transaction as one -c line.
    let out = cluster.cli(&["-c", "TXN VALUE acct/a = 70 THEN SET acct/a 60 SET acct/b 40 GET acct/b"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["then", "OK", "OK", "40"]);
}

/// Pages through 100,000 keys with SCAN while other clients write: every key shows exactly once
/// and in order, whatever is written meanwhile to keys already there or outside the range.
#[test]
fn a_scan_pages_through_every_key_exactly_once_while_writes_go_on() {
    const KEYS: usize = 100_000;
    let cluster = TestCluster::start(3, &[]);
    let out = cluster.cli_piped(
        &[],
        &script(KEYS / 100, |i| {
            let pairs: Vec<String> = (0..100).map(|j| format!("scan/{:06} {}", i * 100 + j, i)).collect();
            format!("MSET {}", pairs.join(" "))
        }),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    // Writers: one rewrites keys in the range, one adds keys after it.
    let rewriting = WritingClient::start(&cluster.addrs(), "scan/0");
    let adding = WritingClient::start(&cluster.addrs(), "scan0/");
    let mut seen = Vec::with_capacity(KEYS);
    let mut start = "scan/".to_string();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= KEYS / 1000 + 1, "more pages than the keys fill");
        let answer =
            call(&addrs, &["SCAN", &start, "scan0", "LIMIT", "1000", "KEYSONLY"]).expect("an answer");
        let Reply::Entries { entries, more, next } = answer.reply else { panic!("{:?}", answer.reply) };
        seen.extend(entries.into_iter().map(|e| String::from_utf8(e.key.into_vec()).unwrap()));
        if !more {
            break;
        }
        start = String::from_utf8(next.expect("a page with more says where they start").into_vec()).unwrap();
    }
    let (rewrote, _) = rewriting.finish();
    let (added, _) = adding.finish();
    assert_eq!((rewrote.code, added.code), (0, 0), "{rewrote:?} {added:?}");
    // The rewriting client may also have created keys within the range (`scan/0<n>` beyond the
    // six digits); every one of the original keys shows once, in order.
    let originals: Vec<&String> = seen.iter().filter(|k| k.len() == "scan/000000".len()).collect();
    assert_eq!(originals.len(), KEYS, "{pages} pages");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
    let expected: BTreeSet<String> = (0..KEYS).map(|i| format!("scan/{i:06}")).collect();
    assert_eq!(originals.into_iter().cloned().collect::<BTreeSet<_>>(), expected);
    let count = call(&addrs, &["SCAN", "scan/", "scan0", "COUNT"]).expect("an answer").reply;
    assert!(matches!(count, Reply::Integer { value } if value as usize >= KEYS), "{count:?}");
}
