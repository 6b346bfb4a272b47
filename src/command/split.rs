//! Splitting a command line into arguments, with redis-cli's quoting rules, and the inverse:
//! quoting bytes so that they read unambiguously and split back to themselves.
//!
//! - Words are separated by whitespace.
//! - `"..."` allows the escapes `\n \r \t \b \a \\ \"` and `\xHH` for any byte; a backslash before
//!   any other character stands for that character.
//! - `'...'` is literal except `\'`.
//! - A closing quote must be followed by whitespace or the end of the line.
//!
//! One splitter serves the REPL, `-c` and piped input, so a line means the same everywhere.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("unbalanced quotes in the command line")]
    Unbalanced,
    #[error("a closing quote must be followed by a space or the end of the line")]
    TextAfterQuote,
}

/// Splits `line` into arguments.
pub fn split_args(line: &str) -> Result<Vec<Vec<u8>>, SplitError> {
    let bytes = line.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            match bytes[i] {
                quote @ (b'"' | b'\'') => {
                    i = read_quoted(bytes, i + 1, quote, &mut arg)?;
                    if i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                        return Err(SplitError::TextAfterQuote);
                    }
                }
                b => {
                    arg.push(b);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
}

/// Reads a quoted section starting after its opening quote; returns the index after the closing
/// quote.
fn read_quoted(bytes: &[u8], mut i: usize, quote: u8, out: &mut Vec<u8>) -> Result<usize, SplitError> {
    while i < bytes.len() {
        let b = bytes[i];
        if b == quote {
            return Ok(i + 1);
        }
        if b == b'\\' && i + 1 < bytes.len() {
            let next = bytes[i + 1];
            if quote == b'\'' {
                if next == b'\'' {
                    out.push(b'\'');
                    i += 2;
                    continue;
                }
            } else if next == b'x'
                && let (Some(&high), Some(&low)) = (bytes.get(i + 2), bytes.get(i + 3))
                && let Some(byte) = hex_pair(high, low)
            {
                out.push(byte);
                i += 4;
                continue;
            } else {
                out.push(match next {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
                i += 2;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    Err(SplitError::Unbalanced)
}

fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

/// Quotes bytes for display: `"..."`, with printable text as it is (UTF-8 included) and
/// everything else escaped. `split_args` turns the result back into the same bytes.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_args(line).unwrap().into_iter().map(|a| String::from_utf8(a).unwrap()).collect()
    }

    #[test]
    fn splits_like_redis_cli() {
        assert_eq!(words("  SET  a   1 "), ["SET", "a", "1"]);
        assert_eq!(words(r#"SET greeting "hello world""#), ["SET", "greeting", "hello world"]);
        assert_eq!(words(r#"SET k "tab\there \"q\" \\ \z""#), ["SET", "k", "tab\there \"q\" \\ z"]);
        assert_eq!(words(r"SET k 'it\'s \n raw'"), ["SET", "k", r"it's \n raw"]);
        assert_eq!(words(r#"SET k """#), ["SET", "k", ""]);
        assert_eq!(words("SET k ключ"), ["SET", "k", "ключ"]);
        assert!(words("").is_empty());
    }

    #[test]
    fn hex_escapes_give_any_byte() {
        assert_eq!(split_args(r#"SET k "\x00\xff\x41""#).unwrap()[2], vec![0u8, 255, b'A']);
        // Not a valid escape: kept as the characters.
        assert_eq!(split_args(r#""\xZZ""#).unwrap()[0], b"xZZ".to_vec());
    }

    #[test]
    fn bad_quoting_is_an_error() {
        assert_eq!(split_args(r#"SET k "open"#), Err(SplitError::Unbalanced));
        assert_eq!(split_args("SET k 'open"), Err(SplitError::Unbalanced));
        assert_eq!(split_args(r#"SET k "a"b"#), Err(SplitError::TextAfterQuote));
    }

    #[test]
    fn quote_escapes_what_is_not_printable() {
        assert_eq!(quote(b"hello"), r#""hello""#);
        assert_eq!(quote(b"a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(quote(&[0, 255]), r#""\x00\xff""#);
        assert_eq!(quote("héllo".as_bytes()), "\"héllo\"");
    }

    proptest::proptest! {
        #[test]
        fn quoted_bytes_split_back_to_themselves(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let line = format!("SET {} {}", quote(&bytes), quote(b"x"));
            let args = split_args(&line).unwrap();
            proptest::prop_assert_eq!(args, vec![b"SET".to_vec(), bytes, b"x".to_vec()]);
        }

        #[test]
        fn splitting_never_panics(line in ".{0,40}") {
            let _ = split_args(&line);
        }
    }
}
