//! `TXN`: compares, then one list of operations if they all hold, else another; applied as one
//! write, at one revision, all or nothing (etcd's transaction).
//!
//! ```text
//! TXN [compare ...] THEN [op ...] [ELSE op ...]
//! compare:  VALUE key =|!=|<|> value      (bytewise; never holds for a missing key)
//!           VERSION|CREATE|MOD key =|!=|<|> n   (a missing key has 0 for each)
//!           EXISTS key  |  MISSING key
//! op:       SET key value  |  DEL key  |  GET key  |  SCAN <SCAN's arguments>
//! ```
//!
//! Every part has a fixed number of words except `SCAN`, whose arguments run up to the next
//! `SET`, `DEL`, `GET`, `SCAN` or `ELSE`: inside a `TXN`, a `SCAN` cannot name a key spelled like
//! one of those words. No list may hold more than [`MAX_TXN_OPS`] entries (etcd's default).
//!
//! Not here: evaluating compares and applying operations ([`crate::store`]).

use super::CommandError;
use super::scan::{self, Scan};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The most compares, and the most operations in each branch, of one `TXN`.
pub const MAX_TXN_OPS: usize = 128;

/// A parsed `TXN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    /// Applied if every compare holds ...
    pub then: Vec<TxnOp>,
    /// ... else these.
    pub otherwise: Vec<TxnOp>,
}

/// One condition on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Bytes,
    pub target: Target,
    pub op: CompareOp,
}

/// What a compare looks at, and the operand it is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Value(Bytes),
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

impl CompareOp {
    /// Whether `current op operand` holds.
    pub fn holds<T: Ord + ?Sized>(self, current: &T, operand: &T) -> bool {
        match self {
            CompareOp::Equal => current == operand,
            CompareOp::NotEqual => current != operand,
            CompareOp::Less => current < operand,
            CompareOp::Greater => current > operand,
        }
    }
}

/// One operation of a branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Set { key: Bytes, value: Bytes },
    Del { key: Bytes },
    Get { key: Bytes },
    Scan(Scan),
}

impl Txn {
    /// Every key it names with whether it changes it, in order (`SCAN`s excluded).
    pub fn keys(&self) -> impl Iterator<Item = (&Bytes, bool)> {
        let compared = self.compares.iter().map(|c| (&c.key, false));
        let ops = self.then.iter().chain(&self.otherwise).filter_map(|op| match op {
            TxnOp::Set { key, .. } | TxnOp::Del { key } => Some((key, true)),
            TxnOp::Get { key } => Some((key, false)),
            TxnOp::Scan(_) => None,
        });
        compared.chain(ops)
    }

    /// The ranges its `SCAN`s read.
    pub fn scans(&self) -> impl Iterator<Item = &Scan> {
        self.then.iter().chain(&self.otherwise).filter_map(|op| match op {
            TxnOp::Scan(scan) => Some(scan),
            _ => None,
        })
    }

    /// At most how many bytes it takes encoded.
    pub fn encoded_len_estimate(&self) -> usize {
        let compares = self
            .compares
            .iter()
            .map(|c| c.key.len() + 24 + if let Target::Value(v) = &c.target { v.len() } else { 0 });
        let ops = self.then.iter().chain(&self.otherwise).map(|op| match op {
            TxnOp::Set { key, value } => key.len() + value.len() + 16,
            TxnOp::Del { key } | TxnOp::Get { key } => key.len() + 16,
            TxnOp::Scan(scan) => scan.range.start.len() + scan.range.end.as_ref().map_or(0, |e| e.len()) + 48,
        });
        compares.chain(ops).sum::<usize>() + 32
    }
}

/// Words that start an operation (and end a `SCAN`'s arguments).
const OP_WORDS: [&str; 5] = ["SET", "DEL", "GET", "SCAN", "ELSE"];

/// Whether `word` starts an operation or the `ELSE` branch, which ends a `SCAN`'s arguments.
pub(crate) fn is_op_word(word: &[u8]) -> bool {
    OP_WORDS.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(word))
}

/// Parses `TXN`'s arguments (after its name). `key` checks each key named.
pub fn parse(
    args: &[Bytes],
    key: &dyn Fn(&Bytes) -> Result<Bytes, CommandError>,
    max_value_bytes: usize,
    max_key_bytes: usize,
) -> Result<Txn, CommandError> {
    let bad = |message: String| Err(CommandError::BadArgument(message));
    let mut words = args;
    let mut txn = Txn { compares: Vec::new(), then: Vec::new(), otherwise: Vec::new() };
    loop {
        match words {
            [] => return bad("TXN needs THEN (TXN [compare ...] THEN [op ...] [ELSE op ...])".into()),
            [then, rest @ ..] if then.eq_ignore_ascii_case(b"THEN") => {
                words = rest;
                break;
            }
            _ => {}
        }
        let (compare, rest) = parse_compare(words, key, max_value_bytes)?;
        txn.compares.push(compare);
        words = rest;
        if txn.compares.len() > MAX_TXN_OPS {
            return bad(format!("a TXN takes at most {MAX_TXN_OPS} compares"));
        }
    }
    let mut branch = &mut txn.then;
    let mut in_else = false;
    while let [word, rest @ ..] = words {
        if word.eq_ignore_ascii_case(b"ELSE") && !in_else {
            in_else = true;
            branch = &mut txn.otherwise;
            words = rest;
            continue;
        }
        let (op, rest) = parse_op(words, key, max_value_bytes, max_key_bytes)?;
        branch.push(op);
        words = rest;
        if branch.len() > MAX_TXN_OPS {
            return bad(format!("a TXN branch takes at most {MAX_TXN_OPS} operations"));
        }
    }
    Ok(txn)
}

fn parse_compare<'w>(
    words: &'w [Bytes],
    key: &dyn Fn(&Bytes) -> Result<Bytes, CommandError>,
    max_value_bytes: usize,
) -> Result<(Compare, &'w [Bytes]), CommandError> {
    let what = words[0].to_ascii_uppercase();
    let missing =
        |usage: &str| CommandError::BadArgument(format!("incomplete compare: expected {usage}, before THEN"));
    match what.as_slice() {
        b"EXISTS" | b"MISSING" => {
            let [k, rest @ ..] = &words[1..] else { return Err(missing("EXISTS key or MISSING key")) };
            let op = if what == b"EXISTS" { CompareOp::NotEqual } else { CompareOp::Equal };
            Ok((Compare { key: key(k)?, target: Target::Version(0), op }, rest))
        }
        b"VALUE" | b"VERSION" | b"CREATE" | b"MOD" => {
            let [k, op, operand, rest @ ..] = &words[1..] else {
                return Err(missing("VALUE|VERSION|CREATE|MOD key =|!=|<|> operand"));
            };
            let op = match op.as_ref() {
                b"=" | b"==" => CompareOp::Equal,
                b"!=" => CompareOp::NotEqual,
                b"<" => CompareOp::Less,
                b">" => CompareOp::Greater,
                _ => {
                    return Err(CommandError::BadArgument(format!(
                        "bad compare operator '{}': expected =, !=, < or >",
                        super::shown(op)
                    )));
                }
            };
            let number = || super::parse_u64("number", operand);
            let target = match what.as_slice() {
                b"VALUE" => Target::Value(super::check_size("value", operand, max_value_bytes)?),
                b"VERSION" => Target::Version(number()?),
                b"CREATE" => Target::CreateRevision(number()?),
                _ => Target::ModRevision(number()?),
            };
            Ok((Compare { key: key(k)?, target, op }, rest))
        }
        _ => Err(CommandError::BadArgument(format!(
            "expected a compare (VALUE, VERSION, CREATE, MOD, EXISTS or MISSING) or THEN, got '{}'",
            super::shown(&words[0])
        ))),
    }
}

fn parse_op<'w>(
    words: &'w [Bytes],
    key: &dyn Fn(&Bytes) -> Result<Bytes, CommandError>,
    max_value_bytes: usize,
    max_key_bytes: usize,
) -> Result<(TxnOp, &'w [Bytes]), CommandError> {
    let what = words[0].to_ascii_uppercase();
    let incomplete =
        |usage: &str| CommandError::BadArgument(format!("incomplete operation: expected {usage}"));
    match what.as_slice() {
        b"SET" => {
            let [k, v, rest @ ..] = &words[1..] else { return Err(incomplete("SET key value")) };
            let value = super::check_size("value", v, max_value_bytes)?;
            Ok((TxnOp::Set { key: key(k)?, value }, rest))
        }
        b"DEL" | b"GET" => {
            let [k, rest @ ..] = &words[1..] else { return Err(incomplete("DEL key or GET key")) };
            let key = key(k)?;
            Ok((if what == b"DEL" { TxnOp::Del { key } } else { TxnOp::Get { key } }, rest))
        }
        b"SCAN" => {
            let args = &words[1..];
            let fixed = if args.first().is_some_and(|w| w.eq_ignore_ascii_case(b"PREFIX")) { 2 } else { 1 };
            let len = fixed.min(args.len())
                + args
                    .iter()
                    .skip(fixed)
                    .position(|w| is_op_word(w))
                    .unwrap_or(args.len().saturating_sub(fixed));
            Ok((TxnOp::Scan(scan::parse(&args[..len], max_key_bytes)?), &args[len..]))
        }
        _ => Err(CommandError::BadArgument(format!(
            "expected an operation (SET, DEL, GET or SCAN) or ELSE, got '{}'",
            super::shown(&words[0])
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn txn(words: &str) -> Result<Txn, String> {
        let args: Vec<Bytes> = words.split_whitespace().map(b).collect();
        let key = |k: &Bytes| super::super::check_size("key", k, 8);
        parse(&args, &key, 16, 8).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_transaction_parses() {
        let got = txn(
            "VALUE a = 1 version b > 2 EXISTS c MISSING d then SET a 2 DEL b SCAN p LIMIT 5 GET c else GET a",
        )
        .unwrap();
        let compare = |key, target, op| Compare { key: b(key), target, op };
        assert_eq!(
            got.compares,
            [
                compare("a", Target::Value(b("1")), CompareOp::Equal),
                compare("b", Target::Version(2), CompareOp::Greater),
                compare("c", Target::Version(0), CompareOp::NotEqual),
                compare("d", Target::Version(0), CompareOp::Equal),
            ]
        );
        assert_eq!(got.then.len(), 4);
        assert!(matches!(&got.then[2], TxnOp::Scan(s) if s.limit == 5 && s.range.start == "p"));
        assert_eq!(got.then[3], TxnOp::Get { key: b("c") });
        assert_eq!(got.otherwise, [TxnOp::Get { key: b("a") }]);
        assert_eq!(txn("THEN").unwrap(), Txn { compares: vec![], then: vec![], otherwise: vec![] });
    }

    #[test]
    fn bad_transactions_say_why() {
        let cases = [
            ("SET a 1", "expected a compare"),
            ("VALUE a = 1", "TXN needs THEN"),
            ("VALUE a ~ 1 THEN", "bad compare operator '~'"),
            ("VERSION a = x THEN", "bad number 'x'"),
            ("VALUE a =", "incomplete compare"),
            ("THEN SET a", "incomplete operation: expected SET key value"),
            ("THEN PUT a 1", "expected an operation"),
            (
                "THEN GET a ELSE GET b ELSE GET c",
                "expected an operation (SET, DEL, GET or SCAN) or ELSE, got 'ELSE'",
            ),
            ("THEN SET 123456789 v", "key is 9 bytes"),
            ("THEN SCAN a LIMIT 0", "bad LIMIT"),
        ];
        for (words, want) in cases {
            let err = txn(words).unwrap_err();
            assert!(err.contains(want), "{words}: {err}");
        }
        let many = format!("THEN {}", "GET a ".repeat(MAX_TXN_OPS + 1));
        assert!(txn(&many).unwrap_err().contains("at most 128 operations"));
        assert!(txn(&format!("THEN {}", "GET a ".repeat(MAX_TXN_OPS))).is_ok());
    }
}
