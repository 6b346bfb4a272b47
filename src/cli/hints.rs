//! What the shell suggests as you type: Tab completes command names, subcommands and the keywords
//! of a `TXN`, and an inline hint shows the arguments still to type, taken from each command's
//! synopsis in [`crate::command::COMMANDS`].
//!
//! A `TXN` is followed clause by clause, whether typed on one line or as a block over several
//! (the block's earlier lines are passed in): after `VALUE` the hint is `key =|!=|<|> value`,
//! after `THEN` it is the operations, and Tab offers only the words that may come next (`END`
//! too, in a block).
//!
//! Where a synopsis offers other forms (`key [key ...] | key IFREV rev`), the hint follows the
//! form whose keyword the user has typed (`IFREV`), else the first.
//!
//! Not done, deliberately: words are split on whitespace, not by the shell's quoting (a quoted
//! argument holding spaces can only put a hint off by a word, and a hint is only a guess); keys
//! are not completed (that would take a round trip to the node per keystroke).

use crate::command::{COMMANDS, lookup, subcommands};

/// Names that complete at the start of a line: the node's commands and the shell's own.
fn command_names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|c| c.name).chain(["HELP", "QUIT", "EXIT"])
}

/// Completes the word before the cursor: a command name at the start of the line or after
/// `HELP`, a subcommand, or a `TXN` keyword. `block` holds the words of an open `TXN` block's
/// earlier lines. Candidates follow the case the user is typing in.
pub fn complete(before_cursor: &str, block: Option<&[String]>) -> (usize, Vec<String>) {
    let start = before_cursor.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let earlier: Vec<&str> = before_cursor[..start].split_whitespace().collect();
    let prefix = &before_cursor[start..];
    let lower = !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_lowercase());
    let names: Vec<&str> = if let Some(body) = txn_body(block, &earlier) {
        txn::next_words(&body, block.is_some())
    } else {
        match earlier.as_slice() {
            [] => command_names().collect(),
            [first] if first.eq_ignore_ascii_case("HELP") => command_names().collect(),
            [first] => match subcommands(first) {
                Some(table) => table.iter().map(|(name, _)| *name).collect(),
                None => return (start, Vec::new()),
            },
            _ => return (start, Vec::new()),
        }
    };
    let candidates = names
        .into_iter()
        .filter(|name| begins_with(name, prefix))
        .map(|name| if lower { name.to_ascii_lowercase() } else { name.to_string() } + " ")
        .collect();
    (start, candidates)
}

/// The inline hint for a line with the cursor at its end: the rest of a uniquely typed command
/// name or keyword and its arguments, or the arguments still to type. `block` holds the words of
/// an open `TXN` block's earlier lines.
pub fn hint(line: &str, block: Option<&[String]>) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after_space = line.is_empty() || line.ends_with(char::is_whitespace);
    // The words before the one being typed, and that one.
    let (done, typing) = match words.split_last() {
        Some((last, done)) if !after_space => (done, Some(*last)),
        _ => (words.as_slice(), None),
    };
    if let Some(body) = txn_body(block, done) {
        return txn::hint(&body, typing, block.is_some());
    }
    let (first, typed) = words.split_first()?;
    if typed.is_empty() && !after_space {
        let name = unique_match(command_names(), first)?;
        let args = lookup(name.as_bytes()).map_or("", |spec| spec.args);
        return Some(format!("{} {args}", rest_of(name, first)).trim_end().to_string())
            .filter(|h| !h.is_empty());
    }
    if !after_space {
        return None;
    }
    if let (Some(table), [sub, after @ ..]) = (subcommands(first), typed) {
        let (_, synopsis) = table.iter().find(|(name, _)| name.eq_ignore_ascii_case(sub))?;
        return synopsis_hint(synopsis, after);
    }
    synopsis_hint(lookup(first.as_bytes())?.args, typed)
}

/// The words of a `TXN` after its name, when the words typed so far belong to one: those of an
/// open block's earlier lines and the line's, or the line's after a leading `TXN`.
fn txn_body<'a>(block: Option<&'a [String]>, line: &[&'a str]) -> Option<Vec<&'a str>> {
    match (block, line) {
        (Some(earlier), _) => Some(earlier.iter().map(String::as_str).chain(line.iter().copied()).collect()),
        (None, [first, rest @ ..]) if first.eq_ignore_ascii_case("TXN") => Some(rest.to_vec()),
        _ => None,
    }
}

/// Whether `name` begins with `typed`, in any case.
fn begins_with(name: &str, typed: &str) -> bool {
    name.len() >= typed.len() && name[..typed.len()].eq_ignore_ascii_case(typed)
}

/// The only candidate that begins with `typed` (any case), if exactly one does.
fn unique_match(candidates: impl IntoIterator<Item = &'static str>, typed: &str) -> Option<&'static str> {
    let mut matches = candidates.into_iter().filter(|name| begins_with(name, typed));
    let name = matches.next()?;
    matches.next().is_none().then_some(name)
}

/// What is left of `name` after `typed`, in the case the user is typing in.
fn rest_of(name: &str, typed: &str) -> String {
    let rest = &name[typed.len()..];
    if typed.chars().all(|c| c.is_ascii_lowercase()) { rest.to_ascii_lowercase() } else { rest.to_string() }
}

/// The arguments of `synopsis` still to type after `typed`; `[x ...]` stays shown once reached.
fn synopsis_hint(synopsis: &str, typed: &[&str]) -> Option<String> {
    let tokens = arg_tokens(synopsis);
    let forms: Vec<&[String]> = tokens.split(|t| t == "|").collect();
    let is_keyword = |t: &str| t.len() > 1 && t.chars().all(|c| c.is_ascii_uppercase() || c == '-');
    let chosen = forms
        .iter()
        .find(|form| form.iter().zip(typed).any(|(t, w)| is_keyword(t) && t.eq_ignore_ascii_case(w)))
        .or(forms.first())?;
    match chosen.get(typed.len()..) {
        Some(rest) if !rest.is_empty() => Some(rest.join(" ")),
        _ => chosen.last().filter(|t| t.contains("...")).cloned(),
    }
}

/// Splits an argument synopsis into words, keeping `[...]` groups whole.
fn arg_tokens(synopsis: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in synopsis.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ' ' if depth == 0 => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// `TXN`'s grammar as the shell follows it (the parser is [`crate::command::txn`]).
mod txn {
    use super::{rest_of, synopsis_hint, unique_match};

    /// One clause: a compare or an operation, its keyword and its arguments.
    struct Clause {
        word: &'static str,
        args: &'static [&'static str],
        compare: bool,
    }

    const OPERATOR: &str = "=|!=|<|>";
    const CLAUSES: &[Clause] = &[
        Clause { word: "VALUE", args: &["key", OPERATOR, "value"], compare: true },
        Clause { word: "VERSION", args: &["key", OPERATOR, "n"], compare: true },
        Clause { word: "CREATE", args: &["key", OPERATOR, "rev"], compare: true },
        Clause { word: "MOD", args: &["key", OPERATOR, "rev"], compare: true },
        Clause { word: "EXISTS", args: &["key"], compare: true },
        Clause { word: "MISSING", args: &["key"], compare: true },
        Clause { word: "SET", args: &["key", "value"], compare: false },
        Clause { word: "DEL", args: &["key"], compare: false },
        Clause { word: "GET", args: &["key"], compare: false },
        // Its arguments run up to the next operation or ELSE; hinted from SCAN's own synopsis.
        Clause { word: "SCAN", args: &[], compare: false },
    ];

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Section {
        Compares,
        Then,
        Else,
    }

    /// Where the words typed so far leave a `TXN`.
    enum Place<'w> {
        /// Where a clause (or `THEN`, `ELSE`) may begin.
        Between(Section),
        /// Inside a clause, with its arguments typed so far.
        Inside(&'static Clause, &'w [&'w str], Section),
        /// Past something that is not `TXN`'s grammar: no suggestion.
        Lost,
    }

    fn place<'w>(words: &'w [&'w str]) -> Place<'w> {
        let mut section = Section::Compares;
        // The clause being read: it and where its arguments begin.
        let mut current: Option<(&'static Clause, usize)> = None;
        for (i, word) in words.iter().enumerate() {
            if let Some((clause, from)) = current {
                let full = if clause.word == "SCAN" {
                    crate::command::txn::is_op_word(word.as_bytes())
                } else {
                    i - from == clause.args.len()
                };
                if !full {
                    continue;
                }
                current = None;
            }
            section = match (section, word.to_ascii_uppercase().as_str()) {
                (Section::Compares, "THEN") => Section::Then,
                (Section::Then, "ELSE") => Section::Else,
                (section, upper) => {
                    let compares = section == Section::Compares;
                    match CLAUSES.iter().find(|c| c.word == upper && c.compare == compares) {
                        Some(clause) => current = Some((clause, i + 1)),
                        None => return Place::Lost,
                    }
                    section
                }
            };
        }
        match current {
            Some((clause, from)) if clause.word == "SCAN" || words.len() - from < clause.args.len() => {
                Place::Inside(clause, &words[from..], section)
            }
            _ => Place::Between(section),
        }
    }

    /// The words that may begin the next clause.
    fn clause_words(section: Section, block: bool) -> Vec<&'static str> {
        let compares = section == Section::Compares;
        let mut words: Vec<&str> = CLAUSES.iter().filter(|c| c.compare == compares).map(|c| c.word).collect();
        words.extend(match section {
            Section::Compares => Some("THEN"),
            Section::Then => Some("ELSE"),
            Section::Else => None,
        });
        words.extend(block.then_some("END"));
        words
    }

    /// The words Tab offers after `done`.
    pub fn next_words(done: &[&str], block: bool) -> Vec<&'static str> {
        match place(done) {
            Place::Between(section) => clause_words(section, block),
            Place::Inside(clause, typed, _) if clause.args.get(typed.len()) == Some(&OPERATOR) => {
                vec!["=", "!=", "<", ">"]
            }
            Place::Inside(clause, [], _) if clause.word == "SCAN" => vec!["PREFIX"],
            Place::Inside(clause, _, section) if clause.word == "SCAN" => {
                let mut words = vec!["LIMIT", "REVERSE", "KEYSONLY", "COUNT"];
                words.extend(
                    clause_words(section, block).into_iter().filter(|w| !["THEN", "END"].contains(w)),
                );
                words
            }
            Place::Inside(..) | Place::Lost => Vec::new(),
        }
    }

    /// The hint after `done`, with `typing` the word under the cursor, if any.
    pub fn hint(done: &[&str], typing: Option<&str>, block: bool) -> Option<String> {
        let section_hint = |section| match section {
            Section::Compares => "[compare ...] THEN [op ...] [ELSE op ...]",
            Section::Then => "[op ...] [ELSE op ...]",
            Section::Else => "[op ...]",
        };
        let clause_hint = |clause: &Clause, typed: &[&str]| {
            if clause.word == "SCAN" {
                synopsis_hint(crate::command::lookup(b"SCAN").map_or("", |spec| spec.args), typed)
            } else {
                Some(clause.args[typed.len()..].join(" ")).filter(|h| !h.is_empty())
            }
        };
        match (place(done), typing) {
            (Place::Between(section), None) => Some(section_hint(section).to_string()),
            (Place::Inside(clause, typed, _), None) => clause_hint(clause, typed),
            (Place::Between(section), Some(typing)) => {
                let word = unique_match(clause_words(section, block), typing)?;
                let then = match word {
                    "THEN" => Some(section_hint(Section::Then).to_string()),
                    "ELSE" => Some(section_hint(Section::Else).to_string()),
                    "END" => None,
                    _ => CLAUSES.iter().find(|c| c.word == word).and_then(|c| clause_hint(c, &[])),
                };
                Some(format!("{} {}", rest_of(word, typing), then.unwrap_or_default()).trim_end().to_string())
                    .filter(|h| !h.is_empty())
            }
            (Place::Inside(..) | Place::Lost, Some(_)) | (Place::Lost, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn completes_command_names_in_the_users_case() {
        assert_eq!(complete("GE", None), (0, vec!["GET ".to_string()]));
        assert_eq!(complete("e", None), (0, vec!["exists ".to_string(), "exit ".to_string()]));
        assert_eq!(complete("help s", None), (5, vec!["set ".to_string(), "scan ".to_string()]));
        assert_eq!(complete("SET ke", None), (4, vec![]));
    }

    #[test]
    fn hints_show_the_arguments_still_to_type() {
        let cases = [
            ("SE", Some("T key value [NX | XX | IFREV rev]")),
            ("set", Some(" key value [NX | XX | IFREV rev]")),
            ("SET ", Some("key value [NX | XX | IFREV rev]")),
            ("SET k ", Some("value [NX | XX | IFREV rev]")),
            ("SET k v ", Some("[NX | XX | IFREV rev]")),
            ("CAS k ", Some("expected new")),
            ("SCAN a ", Some("[end] [LIMIT n] [REVERSE] [KEYSONLY | COUNT]")),
            ("SCAN PREFIX ", Some("p [LIMIT n] [REVERSE] [KEYSONLY | COUNT]")),
            ("scan prefix app/ ", Some("[LIMIT n] [REVERSE] [KEYSONLY | COUNT]")),
            ("DEL ", Some("key [key ...]")),
            ("DEL a b ", Some("[key ...]")),
            ("DEL a IFREV ", Some("rev")),
            ("E", None),
            ("FLY ", None),
            ("USER ADD ", Some("user password")),
            ("user add alice ", Some("password")),
            ("ROLE GRANT app ", Some("read|readwrite|admin [prefix]")),
            ("CLUSTER REMOVE ", Some("id")),
            ("USER LIST ", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(hint(line, None).as_deref(), want, "{line:?}");
        }
    }

    #[test]
    fn subcommands_complete_after_their_command() {
        assert_eq!(complete("USER G", None), (5, vec!["GRANT ".to_string()]));
        assert_eq!(complete("role d", None), (5, vec!["del ".to_string()]));
        assert_eq!(complete("CLUSTER TR", None), (8, vec!["TRANSFER-LEADER ".to_string()]));
        assert_eq!(complete("GET k", None).1, Vec::<String>::new());
    }

    #[test]
    fn a_txn_on_one_line_is_hinted_clause_by_clause() {
        let cases = [
            ("TXN ", Some("[compare ...] THEN [op ...] [ELSE op ...]")),
            ("TXN VAL", Some("UE key =|!=|<|> value")),
            ("TXN VALUE ", Some("key =|!=|<|> value")),
            ("txn value k ", Some("=|!=|<|> value")),
            ("TXN VALUE k = 1 ", Some("[compare ...] THEN [op ...] [ELSE op ...]")),
            ("TXN MOD k > ", Some("rev")),
            ("TXN EXISTS k TH", Some("EN [op ...] [ELSE op ...]")),
            ("TXN M", None),
            ("TXN MI", Some("SSING key")),
            ("TXN THEN ", Some("[op ...] [ELSE op ...]")),
            ("TXN THEN SET ", Some("key value")),
            ("TXN THEN SET k v ", Some("[op ...] [ELSE op ...]")),
            ("TXN THEN SCAN a ", Some("[end] [LIMIT n] [REVERSE] [KEYSONLY | COUNT]")),
            ("TXN THEN SCAN PREFIX p/ ", Some("[LIMIT n] [REVERSE] [KEYSONLY | COUNT]")),
            ("TXN THEN SCAN a b GET ", Some("key")),
            ("TXN THEN GET a el", Some("se [op ...]")),
            ("TXN THEN GET a ELSE ", Some("[op ...]")),
            ("TXN THEN GET a ELSE D", Some("EL key")),
            ("TXN THEN VALUE ", None),
            ("TXN FLY ", None),
            ("TXN THEN GET a E", Some("LSE [op ...]")),
        ];
        for (line, want) in cases {
            assert_eq!(hint(line, None).as_deref(), want, "{line:?}");
        }
    }

    #[test]
    fn a_txn_block_is_hinted_from_its_earlier_lines() {
        let opened: Vec<String> = Vec::new();
        assert_eq!(hint("", Some(&opened)).as_deref(), Some("[compare ...] THEN [op ...] [ELSE op ...]"));
        assert_eq!(hint("EXISTS ", Some(&opened)).as_deref(), Some("key"), "a compare's EXISTS, one key");
        let compared = words("VALUE a = 1");
        assert_eq!(hint("TH", Some(&compared)).as_deref(), Some("EN [op ...] [ELSE op ...]"));
        let then = words("VALUE a = 1 THEN SET a 2");
        assert_eq!(hint("", Some(&then)).as_deref(), Some("[op ...] [ELSE op ...]"));
        assert_eq!(hint("E", Some(&then)), None, "ELSE and END both match");
        assert_eq!(hint("EN", Some(&then)).as_deref(), Some("D"));
    }

    #[test]
    fn tab_offers_only_what_may_come_next_in_a_txn() {
        let offered = |before: &str, block: Option<&[String]>| complete(before, block).1;
        assert_eq!(offered("TXN V", None), ["VALUE ", "VERSION "]);
        assert_eq!(offered("txn value k ", None), ["= ", "!= ", "< ", "> "]);
        assert_eq!(offered("TXN THEN S", None), ["SET ", "SCAN "]);
        assert_eq!(offered("TXN THEN SCAN a L", None), ["LIMIT "]);
        assert_eq!(offered("TXN THEN SCAN P", None), ["PREFIX "]);
        assert_eq!(offered("TXN THEN SET k ", None), Vec::<String>::new(), "a value is the user's");
        assert_eq!(offered("TXN THEN GET k E", None), ["ELSE "]);
        let then = words("EXISTS a THEN GET a");
        assert_eq!(offered("E", Some(&then)), ["ELSE ", "END "]);
        assert_eq!(offered("e", Some(&words("THEN ELSE"))), ["end "]);
    }
}
