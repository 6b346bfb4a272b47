//! Multi-line `TXN` blocks, in the shell and in piped input: a line holding only `TXN` opens a
//! block, a line holding only `END` closes it, and the lines between join into one `TXN`
//! command, as if typed on one line:
//!
//! ```text
//! TXN
//!   VALUE balance/a = 100
//! THEN
//!   SET balance/a 70
//!   SET balance/b 30
//! ELSE
//!   GET balance/a
//! END
//! ```
//!
//! A quoted argument cannot span lines. A block holds at most [`MAX_BLOCK_LINES`] lines.

/// The most lines one block may hold (a `TXN` takes at most 128 compares and 2 × 128 operations,
/// plus its keywords).
pub const MAX_BLOCK_LINES: usize = 512;

/// The block being read, if one is open.
#[derive(Debug, Default)]
pub struct Block {
    lines: Option<Vec<String>>,
}

impl Block {
    /// Takes one trimmed, non-empty line. Gives back a command to run: the line itself outside a
    /// block, or the joined block at its `END`; `None` while a block is open; an error if the
    /// block grew too long (it is then dropped).
    pub fn feed(&mut self, line: &str) -> Result<Option<String>, String> {
        let Some(lines) = self.lines.as_mut() else {
            if line.eq_ignore_ascii_case("TXN") {
                self.lines = Some(vec!["TXN".to_string()]);
                return Ok(None);
            }
            return Ok(Some(line.to_string()));
        };
        if line.eq_ignore_ascii_case("END") {
            let lines = self.lines.take().unwrap_or_default();
            return Ok(Some(lines.join(" ")));
        }
        if lines.len() >= MAX_BLOCK_LINES {
            self.lines = None;
            return Err(format!("a TXN block holds at most {MAX_BLOCK_LINES} lines; it was dropped"));
        }
        lines.push(line.to_string());
        Ok(None)
    }

    /// The lines of an open block after its `TXN`.
    pub fn body(&self) -> Option<&[String]> {
        self.lines.as_deref().map(|lines| &lines[1..])
    }

    /// Whether a block is open (waiting for its `END`).
    pub fn is_open(&self) -> bool {
        self.lines.is_some()
    }

    /// Drops an open block (Ctrl-C in the shell, the end of piped input).
    pub fn abandon(&mut self) -> bool {
        self.lines.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_between_txn_and_end_join_into_one_command() {
        let mut block = Block::default();
        assert_eq!(block.feed("GET a"), Ok(Some("GET a".to_string())));
        assert_eq!(block.feed("txn"), Ok(None));
        assert!(block.is_open());
        for line in ["VALUE a = 1", "THEN", "SET a 2", "ELSE", "GET a"] {
            assert_eq!(block.feed(line), Ok(None));
        }
        assert_eq!(block.feed("end"), Ok(Some("TXN VALUE a = 1 THEN SET a 2 ELSE GET a".to_string())));
        assert!(!block.is_open());
        assert_eq!(
            block.feed("TXN THEN GET a"),
            Ok(Some("TXN THEN GET a".to_string())),
            "one line stays one"
        );
    }

    #[test]
    fn a_block_is_bounded_and_can_be_abandoned() {
        let mut block = Block::default();
        block.feed("TXN").unwrap();
        for _ in 1..MAX_BLOCK_LINES {
            assert_eq!(block.feed("GET a"), Ok(None));
        }
        assert!(block.feed("GET a").is_err());
        assert!(!block.is_open());
        block.feed("TXN").unwrap();
        assert!(block.abandon());
        assert_eq!(block.feed("END"), Ok(Some("END".to_string())));
    }
}
