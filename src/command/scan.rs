//! `SCAN`: an ordered read of a key range, one bounded page at a time.
//!
//! `SCAN start [end] [LIMIT n] [REVERSE] [KEYSONLY | COUNT]` reads keys from `start` up to `end`
//! (exclusive; `""` or none for no end); `SCAN PREFIX p ...` reads the keys that begin with `p`.
//! A page holds at most `LIMIT` keys ([`DEFAULT_LIMIT`] unless given, never more than
//! [`MAX_LIMIT`]) and stops early once its values come to [`PAGE_BYTES`]; its answer says
//! whether more keys follow and where the next page starts. `COUNT` counts every key in the
//! range instead (no limit: it holds no keys).
//!
//! Not here: the reading itself ([`crate::store`]).

use super::CommandError;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Keys in a page when the command names no `LIMIT`.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most keys a page may hold.
pub const MAX_LIMIT: u32 = 10_000;
/// A page stops once its keys and values come to this many bytes (it always holds one key), so
/// that an answer stays far below a frame whatever the values' sizes.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// A range of keys: from `start` (inclusive) to `end` (exclusive), or to the last key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Bytes,
    pub end: Option<Bytes>,
}

impl KeyRange {
    /// Every key that begins with `prefix`.
    pub fn prefix(prefix: &[u8]) -> KeyRange {
        KeyRange { start: Bytes::copy_from_slice(prefix), end: prefix_end(prefix).map(Bytes::from) }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_ref() && self.end.as_ref().is_none_or(|end| key < end.as_ref())
    }
}

/// The first key after every key that begins with `prefix`; `None` if there is none (the
/// prefix is empty or all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// What a scan answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScanShape {
    /// Keys, values and metadata.
    Entries,
    /// Keys and metadata.
    KeysOnly,
    /// How many keys the range holds.
    Count,
}

/// A parsed `SCAN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    pub range: KeyRange,
    pub limit: u32,
    pub reverse: bool,
    pub shape: ScanShape,
}

impl Scan {
    /// The scan for the page after one that ended with `more` and `next` (see
    /// [`crate::protocol::message::Reply::Entries`]).
    pub fn continued(&self, next: &[u8]) -> Scan {
        let mut scan = self.clone();
        if self.reverse {
            scan.range.end = Some(Bytes::copy_from_slice(next));
        } else {
            scan.range.start = Bytes::copy_from_slice(next);
        }
        scan
    }

    /// The arguments of a `SCAN` command (name first) that asks for this scan.
    pub fn to_args(&self) -> Vec<Vec<u8>> {
        let mut args = vec![b"SCAN".to_vec(), self.range.start.to_vec()];
        args.push(self.range.end.as_ref().map_or_else(Vec::new, |e| e.to_vec()));
        args.extend([b"LIMIT".to_vec(), self.limit.to_string().into_bytes()]);
        if self.reverse {
            args.push(b"REVERSE".to_vec());
        }
        match self.shape {
            ScanShape::Entries => {}
            ScanShape::KeysOnly => args.push(b"KEYSONLY".to_vec()),
            ScanShape::Count => args.push(b"COUNT".to_vec()),
        }
        args
    }
}

/// The option words; a second positional argument that is one of them is taken as the option.
const OPTIONS: [&str; 4] = ["LIMIT", "REVERSE", "KEYSONLY", "COUNT"];

fn is_option(word: &[u8]) -> bool {
    OPTIONS.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(word))
}

/// Parses `SCAN`'s arguments (after its name). `max_key_bytes` bounds the keys it names.
pub fn parse(args: &[Bytes], max_key_bytes: usize) -> Result<Scan, CommandError> {
    let bad = |message: String| CommandError::BadArgument(message);
    let key = |k: &Bytes| super::check_size("key", k, max_key_bytes);
    let (range, mut rest) = match args {
        [word, prefix, rest @ ..] if word.eq_ignore_ascii_case(b"PREFIX") => {
            (KeyRange::prefix(&key(prefix)?), rest)
        }
        [word] if word.eq_ignore_ascii_case(b"PREFIX") => {
            return Err(bad("SCAN PREFIX needs a prefix (\"\" for every key)".into()));
        }
        [start, end, rest @ ..] if !is_option(end) => {
            let end = (!end.is_empty()).then(|| key(end)).transpose()?;
            (KeyRange { start: key(start)?, end }, rest)
        }
        [start, rest @ ..] => (KeyRange { start: key(start)?, end: None }, rest),
        [] => return Err(bad("SCAN needs a start key, or PREFIX and a prefix".into())),
    };
    let mut scan = Scan { range, limit: DEFAULT_LIMIT, reverse: false, shape: ScanShape::Entries };
    let mut limit_given = false;
    while let [word, tail @ ..] = rest {
        rest = tail;
        match word.to_ascii_uppercase().as_slice() {
            b"LIMIT" if !limit_given => {
                let [n, tail @ ..] = rest else {
                    return Err(bad("LIMIT needs a number".into()));
                };
                rest = tail;
                scan.limit = std::str::from_utf8(n)
                    .ok()
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad(format!("bad LIMIT '{}': expected 1 to {MAX_LIMIT}", super::shown(n)))
                    })?;
                limit_given = true;
            }
            b"REVERSE" if !scan.reverse => scan.reverse = true,
            b"KEYSONLY" if scan.shape == ScanShape::Entries => scan.shape = ScanShape::KeysOnly,
            b"COUNT" if scan.shape == ScanShape::Entries => scan.shape = ScanShape::Count,
            _ => {
                return Err(bad(format!(
                    "unexpected '{}': SCAN takes LIMIT n, REVERSE, and KEYSONLY or COUNT, each once",
                    super::shown(word)
                )));
            }
        }
    }
    if let Some(end) = &scan.range.end
        && end <= &scan.range.start
    {
        return Err(bad("SCAN's end must come after its start (or be \"\" for no end)".into()));
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(words: &[&str]) -> Result<Scan, String> {
        let args: Vec<Bytes> = words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        parse(&args, 16).map_err(|e| e.to_string())
    }

    fn range(start: &str, end: Option<&str>) -> KeyRange {
        KeyRange {
            start: Bytes::copy_from_slice(start.as_bytes()),
            end: end.map(|e| Bytes::from(e.to_string())),
        }
    }

    #[test]
    fn every_form_parses() {
        let all = |range, limit, reverse, shape| Scan { range, limit, reverse, shape };
        let cases: &[(&[&str], Scan)] = &[
            (&["a"], all(range("a", None), DEFAULT_LIMIT, false, ScanShape::Entries)),
            (&["a", "m"], all(range("a", Some("m")), DEFAULT_LIMIT, false, ScanShape::Entries)),
            (&["", ""], all(range("", None), DEFAULT_LIMIT, false, ScanShape::Entries)),
            (
                &["a", "limit", "5", "reverse", "keysonly"],
                all(range("a", None), 5, true, ScanShape::KeysOnly),
            ),
            (
                &["PREFIX", "app/", "COUNT"],
                all(range("app/", Some("app0")), DEFAULT_LIMIT, false, ScanShape::Count),
            ),
            (&["prefix", ""], all(range("", None), DEFAULT_LIMIT, false, ScanShape::Entries)),
        ];
        for (words, want) in cases {
            assert_eq!(scan(words).as_ref(), Ok(want), "{words:?}");
        }
    }

    #[test]
    fn bad_forms_say_why() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "needs a start key"),
            (&["a", "LIMIT"], "LIMIT needs a number"),
            (&["a", "LIMIT", "0"], "bad LIMIT '0'"),
            (&["a", "LIMIT", "10001"], "expected 1 to 10000"),
            (&["a", "LIMIT", "1", "LIMIT", "2"], "unexpected 'LIMIT'"),
            (&["a", "KEYSONLY", "COUNT"], "unexpected 'COUNT'"),
            (&["a", "z", "sideways"], "unexpected 'sideways'"),
            (&["m", "a"], "end must come after its start"),
            (&["a", "0123456789abcdefg"], "key is 17 bytes"),
        ];
        for (words, want) in cases {
            let err = scan(words).unwrap_err();
            assert!(err.contains(want), "{words:?}: {err}");
        }
    }

    #[test]
    fn the_next_page_continues_where_the_last_one_stopped() {
        let parsed = |words: &[&str]| scan(words).unwrap();
        let forward = parsed(&["PREFIX", "app/", "LIMIT", "2", "KEYSONLY"]);
        assert_eq!(forward.continued(b"app/b\0"), parsed(&["app/b\0", "app0", "LIMIT", "2", "KEYSONLY"]));
        let reverse = parsed(&["a", "LIMIT", "2", "REVERSE"]);
        assert_eq!(reverse.continued(b"m"), parsed(&["a", "m", "LIMIT", "2", "REVERSE"]));
        // Its arguments parse back into it.
        for scan in [forward.continued(b"app/b\0"), reverse, parsed(&["", "COUNT"])] {
            let args: Vec<Bytes> = scan.to_args().into_iter().skip(1).map(Bytes::from).collect();
            assert_eq!(parse(&args, 16).unwrap(), scan);
        }
    }

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
        let r = KeyRange::prefix(b"a\xff");
        assert!(r.contains(b"a\xff\xff\xff") && !r.contains(b"b") && !r.contains(b"a"));
    }
}
