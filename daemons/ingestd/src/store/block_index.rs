//! The word index of log blocks and the FTS5 prefilter that uses it.
//!
//! A block stores the records of one commit; its full-text index entry is one row of
//!
//! ```sql
//! CREATE VIRTUAL TABLE log_blocks_fts
//!     USING fts5(words, content='', contentless_delete=1, detail=none);
//! ```
//!
//! (default `unicode61` tokenizer, rowid = block id) whose document is [`Words::as_str`]: the
//! block's distinct words. A text query (FTS5 syntax over the message) runs in two steps:
//! [`block_query`] turns it into a query for `log_blocks_fts` that picks the candidate blocks,
//! then each candidate's records are matched by the user's query itself in an in-memory
//! `fts5(message, content='')` table, which gives the exact FTS5 semantics. The prefilter only has to be
//! *sound*: every block holding a record that matches the user's query must be a candidate.
//! Correctness never depends on how much it narrows.
//!
//! # Why the prefilter is sound
//!
//! 1. **Words.** A *word* is a maximal run of bytes none of which is an ASCII non-alphanumeric
//!    byte (non-ASCII UTF-8 stays inside the run). Every ASCII non-alphanumeric character is a
//!    separator for `unicode61` (its ASCII table marks only `0-9A-Za-z` as token characters),
//!    and `unicode61` classifies each character on its own, so the tokens of a message are the
//!    union of the tokens of its words (the document joins them with spaces, also
//!    separators). [`Words`] keeps one copy of each word, ASCII-lowercased
//!    (`unicode61` folds ASCII case anyway, and lowercasing ASCII bytes leaves every non-ASCII
//!    character as it was), so the tokens of the block document include every token of every
//!    message of the block.
//! 2. **Terms.** [`block_query`] emits only single-token terms: `"word"` or `"word"*` for a word
//!    that is ASCII alphanumeric, or also holds only letters that `unicode61` always keeps
//!    inside a token and folds to one character (Latin-1 and Latin Extended-A letters, basic
//!    Greek and Cyrillic letters, kana, the CJK ideographs of Unicode 1.1;
//!    [`SINGLE_TOKEN_RANGES`]). Such a word is exactly one token, the same in both tables
//!    (same tokenizer), so a record holding the token puts it in its block's document. A word
//!    with any other character is dropped: `unicode61` might split it into several tokens
//!    (a multi-token phrase is an error under `detail=none`) or into none. A phrase (a quoted
//!    string, a bareword, `a + b`) matches only records holding each of its tokens, so it
//!    becomes the AND of its terms; with `*` the phrase's last token is a prefix, so its last
//!    emitted word becomes `"word"*` (when later words were dropped that word may not be the
//!    last token, and a prefix term is only weaker).
//! 3. **Operators.** Dropping a conjunct only widens an AND, so an AND with a side that cannot
//!    narrow is its other side. `NEAR(p1 p2, N)` matches only records holding every phrase,
//!    so it becomes their AND. `a NOT b` matches a subset of `a`, so it becomes `a`. An OR
//!    stays an OR, unless a side cannot narrow: then no narrowing is possible. Column filters
//!    (one column, `message`) and `^` only restrict where a phrase may match, so they are
//!    removed. A record matching the user's query therefore matches the transformed query on
//!    its own words, and hence its block matches it in `log_blocks_fts`.
//!
//! When nothing narrows (a query of only `NOT` right-hand sides, of non-indexable words, or
//! one whose syntax this module does not follow), [`block_query`] returns `None`: every block
//! is a candidate. The emitted query never uses what `detail=none` rejects: multi-token
//! phrases, `NEAR`, `^` or column filters.
//!
//! # Speed of [`Words::add`]
//!
//! The ingest path calls [`Words::add`] once per record. In the steady state it allocates
//! nothing: the message is lowercased into a reused buffer, the words live in one `String`
//! (the document itself) and an open-addressing table of their positions and hashes, all kept
//! by [`Words::clear`]. A word already seen costs one hash and (usually) one probe; a new one
//! is appended to the document. Measured once by hand (release build, a standalone copy of
//! this module, on the 2-core development VM while other builds ran; not a test): syslog-like
//! messages of 141 bytes and 25 words, blocks of 64 or 1024 records, 175-255 ns per message
//! (4-5.7 million messages per second on one core), 7-10 ns per word.

use std::hash::BuildHasher;

/// Slots of the hash table that [`Words::clear`] keeps; a larger table (left by a block with
/// huge numbers of distinct words) is freed so that it neither holds memory nor costs a large
/// clear per block.
const MAX_KEPT_SLOTS: usize = 1 << 16;
/// Capacity of the lowercased copy of a message that [`Words::clear`] keeps.
const MAX_KEPT_MESSAGE: usize = 64 * 1024;
/// Initial slots of the hash table (a power of two).
const MIN_SLOTS: usize = 64;
/// Parenthesis nesting beyond which [`block_query`] gives up (no stack overflow on hostile
/// input). FTS5's own parser stack (100 entries) rejects such queries anyway.
const MAX_DEPTH: usize = 256;

/// Characters outside ASCII that `unicode61` (default options) treats as letters inside a
/// token and folds to exactly one character, so that a word made of these and ASCII
/// alphanumerics is exactly one token. Inclusive ranges of letters assigned since Unicode 1.1
/// (older than any table SQLite ships); a test checks each against the bundled SQLite.
pub const SINGLE_TOKEN_RANGES: &[(char, char)] = &[
    // Latin-1 Supplement letters (without × and ÷) and Latin Extended-A.
    ('\u{C0}', '\u{D6}'),
    ('\u{D8}', '\u{F6}'),
    ('\u{F8}', '\u{17F}'),
    // Greek capital and small letters without tonos.
    ('\u{391}', '\u{3A1}'),
    ('\u{3A3}', '\u{3A9}'),
    ('\u{3B1}', '\u{3C9}'),
    // Basic Cyrillic letters.
    ('\u{410}', '\u{44F}'),
    // Hiragana and katakana letters (no combining marks, no prolonged sound mark).
    ('\u{3041}', '\u{3094}'),
    ('\u{30A1}', '\u{30FA}'),
    // CJK unified ideographs of Unicode 1.1.
    ('\u{4E00}', '\u{9FA5}'),
];

/// Which bytes separate words: the ASCII bytes that are not alphanumeric.
static SEPARATOR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = !(b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    t
};

/// Whether `b` separates words: an ASCII byte that is not alphanumeric.
#[inline]
fn is_separator(b: u8) -> bool {
    SEPARATOR[usize::from(b)]
}

/// The words of `text`, as [`Words`] and [`block_query`] split it.
fn words(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < bytes.len() && is_separator(bytes[pos]) {
            pos += 1;
        }
        let start = pos;
        while pos < bytes.len() && !is_separator(bytes[pos]) {
            pos += 1;
        }
        // Both ends are at an ASCII byte or at an end of `text`: char boundaries.
        (pos > start).then(|| &text[start..pos])
    })
}

/// Whether `word` (one of [`words`]) is exactly one `unicode61` token.
fn is_single_token(word: &str) -> bool {
    word.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || SINGLE_TOKEN_RANGES
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&c))
    })
}

/// A slot of the hash table: one distinct word (where it is in the document, and its hash),
/// or empty (`len == 0`: a word is never empty).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    hash: u64,
    start: usize,
    len: usize,
}

/// The distinct words of a block's messages: the document of the block's `log_blocks_fts` row.
///
/// Words are deduplicated ASCII-case-insensitively and kept ASCII-lowercased; see the module
/// documentation for why the document's `unicode61` tokens include every token of every added
/// message. Reuse one `Words` for every block ([`Words::clear`] keeps the allocations).
#[derive(Debug, Clone, Default)]
pub struct Words {
    /// The distinct words, each once, separated by single spaces.
    doc: String,
    /// Number of distinct words.
    count: usize,
    /// Open-addressing hash table of the words in `doc` (linear probing, at most half full).
    /// Empty, or a power of two long.
    slots: Vec<Slot>,
    /// Randomly seeded per `Words`: crafted messages cannot make the probes collide.
    hasher: foldhash::fast::RandomState,
    /// The message being added, ASCII-lowercased (reused).
    lower: String,
}

impl Words {
    /// Adds the words of one message.
    pub fn add(&mut self, message: &str) {
        let mut lower = std::mem::take(&mut self.lower);
        lower.clear();
        lower.push_str(message);
        lower.make_ascii_lowercase();
        for word in words(&lower) {
            self.insert(word);
        }
        self.lower = lower;
    }

    /// Number of distinct words added since the last [`Words::clear`].
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no word was added since the last [`Words::clear`].
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The distinct words (ASCII-lowercased) joined by single spaces, in first-seen order.
    pub fn as_str(&self) -> &str {
        &self.doc
    }

    /// [`Words::as_str`] as an owned `String`.
    pub fn document(&self) -> String {
        self.doc.clone()
    }

    /// Forgets every word, keeping the allocations for the next block.
    pub fn clear(&mut self) {
        self.doc.clear();
        self.count = 0;
        if self.lower.capacity() > MAX_KEPT_MESSAGE {
            self.lower = String::new();
        }
        if self.slots.len() > MAX_KEPT_SLOTS {
            self.slots = Vec::new();
        } else {
            self.slots.fill(Slot::default());
        }
    }

    /// Adds `word` (ASCII-lowercased) unless it is already there.
    fn insert(&mut self, word: &str) {
        if 2 * (self.count + 1) > self.slots.len() {
            self.grow();
        }
        let key = word.as_bytes();
        let hash = self.hasher.hash_one(key);
        let mask = self.slots.len() - 1;
        // Only the low bits of the hash index the table.
        let mut i = hash as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot.len == 0 {
                if !self.doc.is_empty() {
                    self.doc.push(' ');
                }
                self.slots[i] = Slot {
                    hash,
                    start: self.doc.len(),
                    len: key.len(),
                };
                self.doc.push_str(word);
                self.count += 1;
                return;
            }
            if slot.hash == hash && self.doc.as_bytes()[slot.start..slot.start + slot.len] == *key {
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the hash table (or creates it) and re-inserts every word.
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        let mask = size - 1;
        for slot in old.into_iter().filter(|s| s.len > 0) {
            let mut i = slot.hash as usize & mask;
            while self.slots[i].len > 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }
}

/// Turns a user's FTS5 query over `fts5(message)` into an FTS5 query for `log_blocks_fts`
/// (`detail=none`, documents from [`Words`]) that matches every block holding at least one
/// message the user's query matches (the module documentation says why).
///
/// `None` means no narrowing is possible: every block is a candidate. That is the answer for
/// queries whose every part is a `NOT` right-hand side, an OR with a side that cannot narrow,
/// or words that are not one `unicode61` token each (see [`SINGLE_TOKEN_RANGES`]), and for
/// syntax this function does not follow (FTS5 rejects such queries; validate the query with
/// FTS5 first and report FTS5's error). The result uses only `"word"`, `"word"*`, `AND`, `OR`
/// and parentheses, so FTS5 accepts it on a `detail=none` table. Examples:
///
/// | query | prefilter |
/// |---|---|
/// | `"connection reset" OR timeout` | `"connection" AND "reset" OR "timeout"` |
/// | `NEAR(disk full, 3) NOT sda` | `"disk" AND "full"` |
/// | `(err* OR warn) AND host1` | `("err"* OR "warn") AND "host1"` |
/// | `error OR 🔥` | `None` |
pub fn block_query(query: &str) -> Option<String> {
    let tokens = lex(query)?;
    let mut parser = Parser {
        tokens: &tokens,
        pos: 0,
        depth: 0,
    };
    let node = parser.expr()?;
    if parser.pos != tokens.len() {
        return None;
    }
    let mut out = String::new();
    render(&node?, &mut out);
    Some(out)
}

/// A token of the FTS5 query syntax (`fts5ExprGetToken` in SQLite's `fts5_expr.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// `(`
    Lp,
    /// `)`
    Rp,
    /// `{`
    Lcp,
    /// `}`
    Rcp,
    /// `:`
    Colon,
    /// `,`
    Comma,
    /// `+`
    Plus,
    /// `*`
    Star,
    /// `-`
    Minus,
    /// `^`
    Caret,
    /// The bareword `AND`.
    And,
    /// The bareword `OR`.
    Or,
    /// The bareword `NOT`.
    Not,
    /// A bareword (other than the three above) or a quoted string (the text between the
    /// quotes, `""` escapes left in: `"` separates words anyway).
    Str { text: &'a str, bare: bool },
}

/// Whether FTS5 takes `b` into a bareword (`sqlite3Fts5IsBareword`).
fn is_bareword_byte(b: u8) -> bool {
    b >= 0x80 || b.is_ascii_alphanumeric() || b == b'_' || b == 0x1A
}

/// Splits `query` into tokens; `None` where FTS5 reports a syntax error (unterminated string,
/// a byte that starts no token) or stops reading (a NUL byte).
fn lex(query: &str) -> Option<Vec<Tok<'_>>> {
    let bytes = query.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let tok = match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Tok::Lp,
            b')' => Tok::Rp,
            b'{' => Tok::Lcp,
            b'}' => Tok::Rcp,
            b':' => Tok::Colon,
            b',' => Tok::Comma,
            b'+' => Tok::Plus,
            b'*' => Tok::Star,
            b'-' => Tok::Minus,
            b'^' => Tok::Caret,
            b'"' => {
                let start = i + 1;
                let mut j = start;
                loop {
                    match bytes.get(j) {
                        // FTS5 reads up to a NUL: the string is unterminated there.
                        None | Some(0) => return None,
                        Some(b'"') if bytes.get(j + 1) == Some(&b'"') => j += 2,
                        Some(b'"') => break,
                        Some(_) => j += 1,
                    }
                }
                i = j + 1;
                tokens.push(Tok::Str {
                    text: &query[start..j],
                    bare: false,
                });
                continue;
            }
            b if is_bareword_byte(b) => {
                let start = i;
                while i < bytes.len() && is_bareword_byte(bytes[i]) {
                    i += 1;
                }
                let text = &query[start..i];
                tokens.push(match text {
                    "AND" => Tok::And,
                    "OR" => Tok::Or,
                    "NOT" => Tok::Not,
                    _ => Tok::Str { text, bare: true },
                });
                continue;
            }
            _ => return None,
        };
        tokens.push(tok);
        i += 1;
    }
    Some(tokens)
}

/// A prefilter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// One token: `"word"`, or `"word"*` when `prefix`.
    Term { word: String, prefix: bool },
    /// Every child matches (at least two children, none an `And`).
    And(Vec<Node>),
    /// Some child matches (at least two children, none an `Or`).
    Or(Vec<Node>),
}

/// AND of two prefilters; `None` (no narrowing) on one side leaves the other.
fn and(a: Option<Node>, b: Option<Node>) -> Option<Node> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => {
            let mut children = Vec::new();
            for n in [a, b] {
                match n {
                    Node::And(c) => children.extend(c),
                    n => children.push(n),
                }
            }
            Some(Node::And(children))
        }
    }
}

/// OR of two prefilters; `None` (no narrowing) on either side is `None`.
fn or(a: Option<Node>, b: Option<Node>) -> Option<Node> {
    let (a, b) = (a?, b?);
    let mut children = Vec::new();
    for n in [a, b] {
        match n {
            Node::Or(c) => children.extend(c),
            n => children.push(n),
        }
    }
    Some(Node::Or(children))
}

/// Writes `node` in FTS5 syntax (AND binds tighter than OR, so only an OR inside an AND needs
/// parentheses).
fn render(node: &Node, out: &mut String) {
    match node {
        Node::Term { word, prefix } => {
            // A word never holds `"`: it is a separator.
            out.push('"');
            out.push_str(word);
            out.push('"');
            if *prefix {
                out.push('*');
            }
        }
        Node::And(children) => {
            for (i, c) in children.iter().enumerate() {
                if i > 0 {
                    out.push_str(" AND ");
                }
                if matches!(c, Node::Or(_)) {
                    out.push('(');
                    render(c, out);
                    out.push(')');
                } else {
                    render(c, out);
                }
            }
        }
        Node::Or(children) => {
            for (i, c) in children.iter().enumerate() {
                if i > 0 {
                    out.push_str(" OR ");
                }
                render(c, out);
            }
        }
    }
}

/// Recursive-descent parser of FTS5's grammar (`fts5parse.y`):
///
/// ```text
/// expr       := expr AND expr | expr OR expr | expr NOT expr     (NOT > AND > OR, all left)
///             | colset COLON LP expr RP | LP expr RP | exprlist
/// exprlist   := cnearset+                                        (implicit AND)
/// cnearset   := [colset COLON] nearset
/// nearset    := phrase | CARET phrase | STRING LP phrase+ [COMMA STRING] RP   (STRING = NEAR)
/// phrase     := STRING [STAR] (PLUS STRING [STAR])*
/// colset     := [MINUS] (STRING | LCP STRING+ RCP)
/// ```
///
/// Each method returns `None` for a syntax error (the whole prefilter is then `None`) and
/// `Some(prefilter)` otherwise, where the prefilter itself is `None` when it cannot narrow.
struct Parser<'t, 'q> {
    tokens: &'t [Tok<'q>],
    pos: usize,
    depth: usize,
}

impl<'q> Parser<'_, 'q> {
    fn peek(&self) -> Option<Tok<'q>> {
        self.tokens.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<Tok<'q>> {
        self.tokens.get(self.pos + ahead).copied()
    }

    fn eat(&mut self, tok: Tok<'q>) -> bool {
        let hit = self.peek() == Some(tok);
        if hit {
            self.pos += 1;
        }
        hit
    }

    /// `expr` at OR level.
    fn expr(&mut self) -> Option<Option<Node>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        let mut left = self.and_expr()?;
        while self.eat(Tok::Or) {
            let right = self.and_expr()?;
            left = or(left, right);
        }
        self.depth -= 1;
        Some(left)
    }

    /// `expr` at AND level.
    fn and_expr(&mut self) -> Option<Option<Node>> {
        let mut left = self.not_expr()?;
        while self.eat(Tok::And) {
            let right = self.not_expr()?;
            left = and(left, right);
        }
        Some(left)
    }

    /// `expr` at NOT level: `a NOT b` narrows like `a`.
    fn not_expr(&mut self) -> Option<Option<Node>> {
        let left = self.primary()?;
        while self.eat(Tok::Not) {
            self.primary()?;
        }
        Some(left)
    }

    /// `LP expr RP`, `colset COLON LP expr RP` or an `exprlist`.
    fn primary(&mut self) -> Option<Option<Node>> {
        if self.eat(Tok::Lp) {
            let e = self.expr()?;
            return self.eat(Tok::Rp).then_some(e);
        }
        let mut list = None;
        let mut first = true;
        loop {
            // A cnearset starts with a colset or a nearset.
            let colset = match self.peek() {
                Some(Tok::Minus | Tok::Lcp) => true,
                Some(Tok::Str { .. }) => self.peek_at(1) == Some(Tok::Colon),
                Some(Tok::Caret) => false,
                _ if first => return None,
                _ => return Some(list),
            };
            if colset {
                self.colset()?;
                if !self.eat(Tok::Colon) {
                    return None;
                }
                if self.peek() == Some(Tok::Lp) {
                    // `colset COLON LP expr RP` is a whole expr, not part of an exprlist.
                    if !first {
                        return None;
                    }
                    self.pos += 1;
                    let e = self.expr()?;
                    return self.eat(Tok::Rp).then_some(e);
                }
            }
            let n = self.nearset()?;
            list = and(list, n);
            first = false;
        }
    }

    /// `[MINUS] (STRING | LCP STRING+ RCP)`; column filters are dropped.
    fn colset(&mut self) -> Option<()> {
        self.eat(Tok::Minus);
        if self.eat(Tok::Lcp) {
            let mut n = 0;
            while let Some(Tok::Str { .. }) = self.peek() {
                self.pos += 1;
                n += 1;
            }
            (n > 0 && self.eat(Tok::Rcp)).then_some(())
        } else if let Some(Tok::Str { .. }) = self.peek() {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    /// `phrase`, `CARET phrase` (the caret dropped) or `NEAR(phrase+ [, N])` (the AND of its
    /// phrases).
    fn nearset(&mut self) -> Option<Option<Node>> {
        if self.eat(Tok::Caret) {
            return self.phrase();
        }
        match (self.peek(), self.peek_at(1)) {
            (Some(Tok::Str { .. }), Some(Tok::Lp)) => {
                if self.peek()
                    != Some(Tok::Str {
                        text: "NEAR",
                        bare: true,
                    })
                {
                    return None;
                }
                self.pos += 2;
                let mut all = self.phrase()?;
                while let Some(Tok::Str { .. }) = self.peek() {
                    let p = self.phrase()?;
                    all = and(all, p);
                }
                if self.eat(Tok::Comma) {
                    let Some(Tok::Str { .. }) = self.peek() else {
                        return None;
                    };
                    self.pos += 1;
                }
                self.eat(Tok::Rp).then_some(all)
            }
            _ => self.phrase(),
        }
    }

    /// `STRING [STAR] (PLUS STRING [STAR])*`: the AND of the words of its strings, the last
    /// word kept of a starred string as a prefix.
    fn phrase(&mut self) -> Option<Option<Node>> {
        let mut terms = None;
        loop {
            let Some(Tok::Str { text, .. }) = self.peek() else {
                return None;
            };
            self.pos += 1;
            let prefix = self.eat(Tok::Star);
            let mut last = None;
            for w in words(text).filter(|w| is_single_token(w)) {
                if let Some(prev) = last.replace(w) {
                    terms = and(terms, Some(term(prev, false)));
                }
            }
            if let Some(w) = last {
                terms = and(terms, Some(term(w, prefix)));
            }
            if !self.eat(Tok::Plus) {
                return Some(terms);
            }
        }
    }
}

fn term(word: &str, prefix: bool) -> Node {
    Node::Term {
        word: word.to_owned(),
        prefix,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rusqlite::{Connection, params};

    use super::*;

    /// `block_query`, with `None` shown as "-".
    fn bq(query: &str) -> String {
        block_query(query).unwrap_or_else(|| "-".to_owned())
    }

    fn words_of(messages: &[&str]) -> Words {
        let mut w = Words::default();
        for m in messages {
            w.add(m);
        }
        w
    }

    fn sorted_words(w: &Words) -> Vec<&str> {
        let mut v: Vec<&str> = w.as_str().split(' ').filter(|s| !s.is_empty()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn words_dedup_case_insensitively_and_keep_first_seen_order() {
        let w = words_of(&["Error: disk error", "ERROR disk full", "eRRoR"]);
        assert_eq!(w.len(), 3);
        assert!(!w.is_empty());
        assert_eq!(w.as_str(), "error disk full");
        assert_eq!(w.document(), "error disk full");
    }

    #[test]
    fn words_split_at_every_ascii_non_alphanumeric_byte() {
        let w = words_of(&["user_login=alice@example.com 10.0.0.5:22 full-duplex\t[x]\u{1A}y\0z"]);
        assert_eq!(
            sorted_words(&w),
            [
                "0", "10", "22", "5", "alice", "com", "duplex", "example", "full", "login", "user",
                "x", "y", "z"
            ]
        );
        assert_eq!(w.len(), 14);
    }

    #[test]
    fn words_keep_non_ascii_runs_whole_and_fold_only_ascii_case() {
        let w = words_of(&[
            "Überlast-größe 日本語🔥x ÜBERLAST überlast",
            "Straße STRAßE",
        ]);
        // ASCII letters are lowercased, non-ASCII letters kept: "ÜBERLAST" is "Überlast",
        // "überlast" (small ü) is another word.
        assert_eq!(w.as_str(), "Überlast größe 日本語🔥x überlast straße");
        assert_eq!(w.len(), 5);
    }

    #[test]
    fn words_of_empty_and_punctuation_only_messages_are_empty() {
        let w = words_of(&["", "   ", "... --- !!! ??? \"'` \t\r\n"]);
        assert_eq!(w.len(), 0);
        assert!(w.is_empty());
        assert_eq!(w.as_str(), "");
    }

    #[test]
    fn words_clear_forgets_everything_and_the_table_still_works() {
        let mut w = Words::default();
        for i in 0..10_000 {
            w.add(&format!("w{i} common W{i}"));
        }
        assert_eq!(w.len(), 10_001);
        let set: BTreeSet<&str> = w.as_str().split(' ').collect();
        assert_eq!(set.len(), 10_001);
        assert!(set.contains("w9999") && set.contains("common"));
        w.clear();
        assert!(w.is_empty());
        assert_eq!(w.as_str(), "");
        w.add("b a b");
        assert_eq!(w.as_str(), "b a");
        for _ in 0..3 {
            w.clear();
            w.add("x y x z");
            assert_eq!(w.as_str(), "x y z");
            assert_eq!(w.len(), 3);
        }
    }

    #[test]
    fn words_free_a_huge_table_on_clear_and_work_on() {
        let mut w = Words::default();
        let big: String = (0..40_000).map(|i| format!("w{i} ")).collect();
        w.add(&big);
        assert_eq!(w.len(), 40_000);
        assert!(w.slots.len() > MAX_KEPT_SLOTS && w.lower.capacity() > MAX_KEPT_MESSAGE);
        w.clear();
        assert!(w.slots.is_empty() && w.lower.capacity() == 0);
        w.add("again: a b a");
        assert_eq!(w.as_str(), "again a b");
    }

    #[test]
    fn word_and_phrase_transforms() {
        for (query, want) in [
            ("error", r#""error""#),
            ("Error", r#""Error""#),
            (r#""error""#, r#""error""#),
            (
                r#""connection reset by peer""#,
                r#""connection" AND "reset" AND "by" AND "peer""#,
            ),
            (r#""say ""hi"" now""#, r#""say" AND "hi" AND "now""#),
            ("user_login", r#""user" AND "login""#),
            ("a\u{1A}b", r#""a" AND "b""#),
            (r#""10.0.0.5""#, r#""10" AND "0" AND "0" AND "5""#),
            (r#""full-duplex""#, r#""full" AND "duplex""#),
            (r#""""#, "-"),
            (r#""...""#, "-"),
            (r#""AND" "OR" "NOT""#, r#""AND" AND "OR" AND "NOT""#),
            ("NEAR", r#""NEAR""#),
            ("near", r#""near""#),
            ("error\tdisk\ndisk\r", r#""error" AND "disk" AND "disk""#),
        ] {
            assert_eq!(bq(query), want, "query {query:?}");
        }
    }

    #[test]
    fn prefix_transforms() {
        for (query, want) in [
            ("conn*", r#""conn"*"#),
            ("conn *", r#""conn"*"#),
            (r#""connection res"*"#, r#""connection" AND "res"*"#),
            (r#""conn-""#, r#""conn""#),
            (r#""conn-"*"#, r#""conn"*"#),
            // The last word is dropped, so the one before it may be the last token.
            (r#""conn 🔥"*"#, r#""conn"*"#),
            ("Überl*", r#""Überl"*"#),
            ("a🔥*", "-"),
        ] {
            assert_eq!(bq(query), want, "query {query:?}");
        }
    }

    #[test]
    fn plus_caret_near_and_column_filter_transforms() {
        for (query, want) in [
            ("a + b", r#""a" AND "b""#),
            ("a* + b", r#""a"* AND "b""#),
            (r#"a + "b c"*"#, r#""a" AND "b" AND "c"*"#),
            ("^a", r#""a""#),
            (r#"^"a b" + c"#, r#""a" AND "b" AND "c""#),
            ("NEAR(a b)", r#""a" AND "b""#),
            ("NEAR(a b c, 5)", r#""a" AND "b" AND "c""#),
            (
                "NEAR (a + b \"c d\"*,10)",
                r#""a" AND "b" AND "c" AND "d"*"#,
            ),
            ("NEAR(a)", r#""a""#),
            ("NEAR(🔥 a)", r#""a""#),
            ("NEAR(🔥 ☃)", "-"),
            ("NEAR(a b) c", r#""a" AND "b" AND "c""#),
            ("message:a", r#""a""#),
            ("message : a b", r#""a" AND "b""#),
            ("\"message\":a", r#""a""#),
            ("{message}: a", r#""a""#),
            ("{message other} : ^a", r#""a""#),
            ("- message : a", r#""a""#),
            ("-{message}:a", r#""a""#),
            ("message:(a OR b)", r#""a" OR "b""#),
            ("-message:(a OR b) NOT c", r#""a" OR "b""#),
            ("message:NEAR(a b)", r#""a" AND "b""#),
            ("a message:b c", r#""a" AND "b" AND "c""#),
        ] {
            assert_eq!(bq(query), want, "query {query:?}");
        }
    }

    #[test]
    fn boolean_transforms() {
        for (query, want) in [
            ("a AND b", r#""a" AND "b""#),
            ("a b c", r#""a" AND "b" AND "c""#),
            ("a OR b", r#""a" OR "b""#),
            ("a NOT b", r#""a""#),
            ("a NOT b NOT c", r#""a""#),
            ("a NOT b c", r#""a""#),
            ("a b NOT c", r#""a" AND "b""#),
            ("a OR b c", r#""a" OR "b" AND "c""#),
            ("a b OR c", r#""a" AND "b" OR "c""#),
            ("a OR b AND c", r#""a" OR "b" AND "c""#),
            ("(a OR b) AND c", r#"("a" OR "b") AND "c""#),
            (
                "(a OR b) AND (c OR d e)",
                r#"("a" OR "b") AND ("c" OR "d" AND "e")"#,
            ),
            ("a AND b NOT c", r#""a" AND "b""#),
            ("a NOT b AND c", r#""a" AND "c""#),
            ("a OR b OR (c OR d)", r#""a" OR "b" OR "c" OR "d""#),
            ("((a))", r#""a""#),
            ("(a AND (b AND c))", r#""a" AND "b" AND "c""#),
            // No narrowing on one side of an AND: the other side.
            ("a AND 🔥", r#""a""#),
            ("🔥 a", r#""a""#),
            ("\"\" AND a", r#""a""#),
            // No narrowing on one side of an OR: none at all.
            ("a OR 🔥", "-"),
            ("a OR \"\"", "-"),
            ("(a OR 🔥) AND b", r#""b""#),
            // Only a NOT right-hand side narrows: nothing does.
            ("\"\" NOT a", "-"),
            ("🔥 NOT a", "-"),
        ] {
            assert_eq!(bq(query), want, "query {query:?}");
        }
    }

    #[test]
    fn non_ascii_transforms() {
        for (query, want) in [
            ("Überlast", r#""Überlast""#),
            ("größe", r#""größe""#),
            ("\"größe-x\"", r#""größe" AND "x""#),
            // A bareword stops at `-`, which then starts a column filter.
            ("größe-x", "-"),
            ("日本語", r#""日本語""#),
            ("Русский", r#""Русский""#),
            ("ΕΛΛΑΔΑ", r#""ΕΛΛΑΔΑ""#),
            // ά (with tonos) is outside the known single-token letters.
            ("Ελληνικά", "-"),
            ("🔥", "-"),
            ("a🔥b", "-"),
            ("x✓y error", r#""error""#),
            ("\"Überlast 🔥 auf\"", r#""Überlast" AND "auf""#),
        ] {
            assert_eq!(bq(query), want, "query {query:?}");
        }
    }

    #[test]
    fn syntax_outside_fts5_gives_no_narrowing() {
        for query in [
            "",
            "   ",
            "error(x)",
            "\"unterminated",
            "a.b",
            "a AND",
            "AND a",
            "NOT a",
            "a OR",
            "(a",
            "a)",
            "*a",
            "a + ",
            "message:",
            "{}:a",
            "{message:a",
            "NEAR(a b,)",
            "NEAR()",
            "(a) b",
            "a message:(b)",
            "a\0b",
            "a ; b",
            "\"a\0b\"",
        ] {
            assert_eq!(block_query(query), None, "query {query:?}");
        }
    }

    #[test]
    fn deep_nesting_gives_up_without_overflowing_the_stack() {
        let deep = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(block_query(&deep), None);
        let nested = format!("{}a{}", "(".repeat(20), ")".repeat(20));
        assert_eq!(bq(&nested), r#""a""#);
        // FTS5's parser stack (100 entries) rejects what MAX_DEPTH gives up on.
        let conn = load(&[]);
        let over = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(matching(&conn, "msgs", &over).is_err());
        assert_eq!(block_query(&over), None);
        matching(&conn, "msgs", &nested).unwrap();
    }

    // ---- Against real FTS5 ----

    const BLOCK: i64 = 20;
    const BLOCKS: i64 = 15;
    const TEMPLATES: [&str; 30] = [
        "Accepted password for {u} from 10.0.{b}.{j} port {p} ssh2",
        "Failed password for invalid user {u} from 192.168.1.{j} port {p} ssh2",
        "kernel: [{n}.{p}] eth{b}: link up, 1000Mbps full-duplex",
        "user_login failed for user={u}@example.com (errno=104)",
        "Connection reset by peer: fd00::{j} -> fd00::1%eth0",
        "GET /api/v1/items?id={n}&sort=desc HTTP/1.1 200 {p}",
        "disk /dev/sda{b} is 9{j}% full 🔥 on {h}",
        "Überlast auf Leitung {j}: größe={p}MB, Temperatur {n}°C",
        "日本語 ログ メッセージ {n} 日本語のログ",
        "café crème brûlée served to {u} at {h}",
        "ERROR Error error: out of memory in worker-{j} (pid {p})",
        "warning: NEAR AND OR NOT are words here, not operators ({n})",
        "systemd[1]: Started rookery-ingestd.service - Rookery ingest daemon.",
        "CRON[{p}]: (root) CMD (run-parts /etc/cron.hourly)",
        "postfix/smtpd[{p}]: connect from mail{j}.example.org[203.0.113.{j}]",
        "\"quoted\" text with ''single'' quotes and `backticks` {n}",
        "tab\tseparated\tfields\u{1A}with\u{1A}substitute {n}",
        "Ελληνικά μηνύματα σφάλματος ΕΛΛΑΔΑ {n}",
        "Русский текст ошибки {n}",
        "emoji only 🎉🎉 and mixed a🔥b x✓y {n}",
        "camelCaseWord snake_case_word kebab-case-word dotted.word.here {n}",
        "numbers 3.14159 -42 +7 0x1F 1e10 {n}",
        "a b c d e f g {u}",
        "timeout after 30s waiting for {h}:{p}",
        "ZFS pool tank is DEGRADED; device sdb{b} FAULTED",
        "nginx: 10.1.{b}.{j} - - [24/Nov/2026:03:{j}:00 +0000] \"POST /login HTTP/2\" 401",
        "",
        "... --- !!! ???",
        "Straße STRASSE straße ÄÖÜ äöü",
        "mixed ünïcödé wörds ñandú {u}",
    ];
    const USERS: &[&str] = &[
        "alice", "bob", "carol", "dave", "eve", "mallory", "root", "admin",
    ];
    const HOSTS: &[&str] = &["web1", "web2", "db1", "cache-3", "gw.example.net"];

    fn pick(list: &[&'static str], i: i64) -> &'static str {
        list[usize::try_from(i).unwrap() % list.len()]
    }

    /// Message `n` of the corpus: block `n / BLOCK` uses four neighbouring templates, so most
    /// words occur in only a few blocks.
    fn corpus() -> Vec<String> {
        let mut out = Vec::new();
        for b in 0..BLOCKS {
            for j in 0..BLOCK {
                let n = b * BLOCK + j;
                let t = TEMPLATES[usize::try_from((b * 2 + j % 4) % 30).unwrap()];
                out.push(
                    t.replace("{u}", pick(USERS, n * 7))
                        .replace("{h}", pick(HOSTS, b + j))
                        .replace("{p}", &(1000 + (n * 37) % 9000).to_string())
                        .replace("{n}", &n.to_string())
                        .replace("{b}", &b.to_string())
                        .replace("{j}", &j.to_string()),
                );
            }
        }
        out
    }

    /// The corpus in `msgs` (`fts5(message)`, rowid = message number) and its blocks in
    /// `log_blocks_fts` (rowid = block number, document = `Words`).
    fn load(corpus: &[String]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE VIRTUAL TABLE msgs USING fts5(message);
             CREATE VIRTUAL TABLE log_blocks_fts USING fts5(words, content='', detail=none);",
        )
        .unwrap();
        let mut words = Words::default();
        for (b, block) in corpus.chunks(usize::try_from(BLOCK).unwrap()).enumerate() {
            words.clear();
            for (j, m) in block.iter().enumerate() {
                let n = b * usize::try_from(BLOCK).unwrap() + j;
                conn.execute(
                    "INSERT INTO msgs(rowid, message) VALUES (?1, ?2)",
                    params![i64::try_from(n).unwrap(), m],
                )
                .unwrap();
                words.add(m);
            }
            conn.execute(
                "INSERT INTO log_blocks_fts(rowid, words) VALUES (?1, ?2)",
                params![i64::try_from(b).unwrap(), words.as_str()],
            )
            .unwrap();
        }
        conn
    }

    fn matching(conn: &Connection, table: &str, query: &str) -> rusqlite::Result<BTreeSet<i64>> {
        let mut stmt =
            conn.prepare(&format!("SELECT rowid FROM {table} WHERE {table} MATCH ?1"))?;
        let rows = stmt.query_map([query], |r| r.get(0))?;
        rows.collect()
    }

    /// The blocks that hold a message `query` matches, and the blocks the prefilter picks
    /// (all of them for `None`). Panics if FTS5 rejects the query on `msgs`, or the prefilter
    /// on `log_blocks_fts`, or the prefilter misses a block.
    fn check(conn: &Connection, query: &str) -> (BTreeSet<i64>, BTreeSet<i64>) {
        let hits = matching(conn, "msgs", query)
            .unwrap_or_else(|e| panic!("FTS5 rejects test query {query:?}: {e}"));
        let need: BTreeSet<i64> = hits.iter().map(|n| n / BLOCK).collect();
        let got = match block_query(query) {
            None => (0..BLOCKS).collect(),
            Some(pre) => matching(conn, "log_blocks_fts", &pre).unwrap_or_else(|e| {
                panic!("prefilter {pre:?} of {query:?} fails on log_blocks_fts: {e}")
            }),
        };
        assert!(
            need.is_subset(&got),
            "query {query:?}: prefilter {:?} picks blocks {got:?}, misses {:?}",
            block_query(query),
            need.difference(&got).collect::<Vec<_>>()
        );
        (need, got)
    }

    /// Queries FTS5 accepts on `fts5(message)`, covering every syntax element.
    const QUERIES: &[&str] = &[
        "error",
        "Error",
        "ERROR",
        "password",
        "\"connection reset\"",
        "\"Connection reset by peer\"",
        "\"reset connection\"",
        "conn*",
        "\"connection res\"*",
        "pass* + for",
        "a*",
        "10*",
        "\"10.0.3\"",
        "\"10.0.3\"*",
        "\"192.168.1.7\"",
        "\"fd00::1\"",
        "user_login",
        "\"user_login\"",
        "\"full-duplex\"",
        "\"errno=104\"",
        "1000Mbps",
        "104",
        "\"3.14159\"",
        "\"0x1F\"",
        "Überlast",
        "überlast",
        "UBERLAST",
        "Überl*",
        "größe",
        "grosse",
        "\"Überlast auf Leitung\"",
        "café",
        "cafe",
        "CAFÉ",
        "crème*",
        "brûl*",
        "Straße",
        "strasse",
        "äöü",
        "日本語",
        "日本語のログ",
        "\"日本語 ログ\"",
        "Русский",
        "русский",
        "ΕΛΛΑΔΑ",
        "ελλαδα",
        "Ελληνικά",
        "🔥",
        "a🔥b",
        "x✓y",
        "🎉 emoji",
        "error 🔥",
        "error AND 🔥",
        "error OR 🔥",
        "disk NOT 🔥",
        "\"\"",
        "\"\" OR error",
        "error \"\"",
        "NEAR",
        "\"NEAR\" \"AND\"",
        "near OR operators",
        "NEAR(connection reset)",
        "NEAR(connection peer, 2)",
        "NEAR(\"disk is\" full, 5)",
        "NEAR(reset peer, 0)",
        "NEAR(pass* invalid)",
        "NEAR(out memory) worker",
        "error NOT disk",
        "error NOT (disk OR kernel)",
        "password NOT invalid",
        "password NOT invalid NOT root",
        "error OR disk NOT full",
        "error disk OR kernel",
        "error OR disk kernel",
        "error NOT disk kernel",
        "(error OR warning) AND eth0",
        "(disk OR (kernel AND eth1)) NOT web1",
        "((error))",
        "message:error",
        "message : (error OR disk)",
        "{message}: ssh2",
        "- message : error",
        "-{message}:(error)",
        "message:error disk",
        "error message:memory",
        "^Accepted",
        "^accepted password",
        "^\"Accepted password\"",
        "^password",
        "message:^Connection",
        "Accepted + password",
        "\"Accepted\" + \"password\" + for",
        "conn* + reset",
        "snake_case_word",
        "kebab* case",
        "\"dotted.word.here\"",
        "camelCaseWord",
        "camelcase*",
        "a b c d",
        "tab separated",
        "\"fields\u{1A}with\"",
        "fields\u{1A}with",
        "quoted \"single\"",
        "backticks",
        "nothingmatchesthis",
        "\"zzz qqq\"",
        "zzz OR yyy",
        "\"POST /login HTTP/2\"",
        "401 NOT 200",
        "DEGRADED AND sdb3",
        "sda*",
        "web1 OR db1",
        "\"gw.example.net\"",
        "mixed ünïcödé",
        "unicode",
        "ñandú",
        "ZFS\tpool\ntank",
    ];

    #[test]
    fn prefilter_never_misses_a_block_of_real_fts5() {
        let corpus = corpus();
        assert_eq!(corpus.len(), usize::try_from(BLOCK * BLOCKS).unwrap());
        let conn = load(&corpus);
        let mut matched = 0;
        for q in QUERIES {
            let (need, _) = check(&conn, q);
            matched += usize::from(!need.is_empty());
        }
        assert!(QUERIES.len() >= 60);
        assert!(matched >= 80, "only {matched} queries match anything");
    }

    #[test]
    fn prefilter_narrows_simple_queries() {
        let conn = load(&corpus());
        let all: BTreeSet<i64> = (0..BLOCKS).collect();
        for q in [
            "error",
            "password",
            "\"connection reset\"",
            "conn*",
            "\"connection res\"*",
            "Überlast",
            "größe",
            "cafe",
            "日本語",
            "Русский",
            "user_login",
            "\"full-duplex\"",
            "\"10.0.14\"",
            "sda*",
            "NEAR(connection reset)",
            "error NOT disk",
            "message:error",
            "^Accepted",
            "Accepted + password",
            "web1 OR db1",
        ] {
            let (need, got) = check(&conn, q);
            assert!(!need.is_empty(), "query {q:?} matches nothing");
            assert!(
                got.len() < all.len(),
                "query {q:?} does not narrow: {got:?}"
            );
        }
    }

    #[test]
    fn queries_fts5_rejects_are_rejected_and_do_not_panic() {
        let conn = load(&corpus());
        for q in [
            "10.0.0.5",
            "error(x)",
            "\"unterminated",
            "error AND",
            "NOT error",
            "*error",
            "nosuchcolumn:error",
            "NEAR(a b, x)",
            "(error) disk",
        ] {
            assert!(matching(&conn, "msgs", q).is_err(), "FTS5 accepts {q:?}");
            // Anything goes, but no panic; an answer, if any, is still valid on blocks.
            if let Some(pre) = block_query(q) {
                matching(&conn, "log_blocks_fts", &pre).unwrap();
            }
        }
    }

    /// A small deterministic generator (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            usize::try_from(self.0 % u64::try_from(n).unwrap()).unwrap()
        }
    }

    const VOCABULARY: &[&str] = &[
        "error",
        "Error",
        "disk",
        "full",
        "password",
        "for",
        "from",
        "port",
        "ssh2",
        "kernel",
        "eth0",
        "link",
        "connection",
        "reset",
        "peer",
        "user_login",
        "failed",
        "alice",
        "root",
        "GET",
        "items",
        "200",
        "401",
        "sda3",
        "Überlast",
        "größe",
        "auf",
        "日本語",
        "café",
        "cafe",
        "crème",
        "memory",
        "worker",
        "NEAR",
        "near",
        "AND",
        "OR",
        "NOT",
        "Started",
        "rookery",
        "CRON",
        "postfix",
        "quoted",
        "single",
        "tab",
        "separated",
        "Русский",
        "ΕΛΛΑΔΑ",
        "Ελληνικά",
        "emoji",
        "🎉",
        "🔥",
        "a🔥b",
        "camelCaseWord",
        "snake_case_word",
        "kebab",
        "numbers",
        "14159",
        "a",
        "b",
        "timeout",
        "ZFS",
        "DEGRADED",
        "nginx",
        "Straße",
        "äöü",
        "ünïcödé",
        "ñandú",
        "zzz",
        "nomatch",
        "web1",
        "10",
        "0",
        "fd00",
    ];

    fn gen_string(rng: &mut Rng) -> String {
        let w = VOCABULARY[rng.below(VOCABULARY.len())];
        let bare = w.bytes().all(is_bareword_byte) && !matches!(w, "AND" | "OR" | "NOT");
        let mut s = match rng.below(4) {
            0 if bare => w.to_owned(),
            1 => {
                let w2 = VOCABULARY[rng.below(VOCABULARY.len())];
                let sep = ["-", ".", " ", "_", "::", "/"][rng.below(6)];
                format!("\"{w}{sep}{w2}\"")
            }
            _ => format!("\"{w}\""),
        };
        if rng.below(5) == 0 {
            s.push('*');
        }
        s
    }

    fn gen_phrase(rng: &mut Rng) -> String {
        let mut p = gen_string(rng);
        while rng.below(5) == 0 {
            p = format!("{p} + {}", gen_string(rng));
        }
        p
    }

    fn gen_expr(rng: &mut Rng, depth: usize) -> String {
        let pick = if depth == 0 {
            rng.below(3)
        } else {
            rng.below(13)
        };
        match pick {
            0 | 1 => gen_phrase(rng),
            2 => format!("^{}", gen_phrase(rng)),
            3 => {
                let n = 1 + rng.below(3);
                let ps: Vec<String> = (0..n).map(|_| gen_phrase(rng)).collect();
                let dist = if rng.below(2) == 0 {
                    format!(", {}", rng.below(12))
                } else {
                    String::new()
                };
                format!("NEAR({}{dist})", ps.join(" "))
            }
            4 => format!(
                "{} AND {}",
                gen_expr(rng, depth - 1),
                gen_expr(rng, depth - 1)
            ),
            5 => format!(
                "{} OR {}",
                gen_expr(rng, depth - 1),
                gen_expr(rng, depth - 1)
            ),
            6 => format!(
                "{} NOT {}",
                gen_expr(rng, depth - 1),
                gen_expr(rng, depth - 1)
            ),
            7 => format!("({})", gen_expr(rng, depth - 1)),
            8 => format!("message:({})", gen_expr(rng, depth - 1)),
            9 => format!("message:{}", gen_phrase(rng)),
            10 => format!("{} {}", gen_expr(rng, depth - 1), gen_expr(rng, depth - 1)),
            11 => format!("- {{message}} : {}", gen_phrase(rng)),
            _ => format!("{} {}", gen_phrase(rng), gen_phrase(rng)),
        }
    }

    #[test]
    fn prefilter_never_misses_a_block_for_generated_queries() {
        let conn = load(&corpus());
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut accepted, mut matched, mut narrowed) = (0, 0, 0);
        for _ in 0..3000 {
            let q = gen_expr(&mut rng, 3);
            if matching(&conn, "msgs", &q).is_err() {
                continue;
            }
            accepted += 1;
            let (need, got) = check(&conn, &q);
            matched += usize::from(!need.is_empty());
            narrowed += usize::from(got.len() < usize::try_from(BLOCKS).unwrap());
        }
        // The generator mostly writes valid queries, some match and most narrow.
        assert!(accepted >= 1500, "only {accepted} of 3000 queries accepted");
        assert!(matched >= 300, "only {matched} queries match anything");
        assert!(
            narrowed >= accepted / 2,
            "only {narrowed} of {accepted} narrow"
        );
    }

    /// `unicode61` tokens of each row of `tokens` (a `detail=full` fts5 table).
    fn tokens_by_row(conn: &Connection) -> std::collections::BTreeMap<i64, BTreeSet<String>> {
        let mut stmt = conn.prepare("SELECT doc, term FROM tokens_v").unwrap();
        let mut out = std::collections::BTreeMap::<i64, BTreeSet<String>>::new();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .unwrap();
        for row in rows {
            let (doc, term) = row.unwrap();
            out.entry(doc).or_default().insert(term);
        }
        out
    }

    fn tokens_table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE VIRTUAL TABLE tokens USING fts5(x);
             CREATE VIRTUAL TABLE tokens_v USING fts5vocab(tokens, 'instance');",
        )
        .unwrap();
        conn
    }

    #[test]
    fn document_has_exactly_the_unicode61_tokens_of_its_messages() {
        let conn = tokens_table();
        let corpus = corpus();
        let mut block = Words::default();
        let mut n = 0;
        for chunk in corpus.chunks(usize::try_from(BLOCK).unwrap()) {
            block.clear();
            let mut union = BTreeSet::new();
            for m in chunk {
                let one = words_of(&[m]);
                block.add(m);
                conn.execute(
                    "INSERT INTO tokens(rowid, x) VALUES (?1, ?2), (?3, ?4)",
                    params![n, m, n + 1, one.as_str()],
                )
                .unwrap();
                n += 2;
            }
            conn.execute(
                "INSERT INTO tokens(rowid, x) VALUES (?1, ?2)",
                params![n, block.as_str()],
            )
            .unwrap();
            let by_row = tokens_by_row(&conn);
            for i in (n - 2 * i64::try_from(chunk.len()).unwrap()..n).step_by(2) {
                let msg = by_row.get(&i).cloned().unwrap_or_default();
                let doc = by_row.get(&(i + 1)).cloned().unwrap_or_default();
                assert_eq!(msg, doc, "message {i}");
                union.extend(msg);
            }
            assert_eq!(
                by_row.get(&n).cloned().unwrap_or_default(),
                union,
                "block at {n}"
            );
            n += 1;
        }
    }

    #[test]
    fn single_token_letters_are_one_unicode61_token_each() {
        let conn = tokens_table();
        let mut chars = Vec::new();
        for &(lo, hi) in SINGLE_TOKEN_RANGES {
            chars.extend(lo..=hi);
        }
        chars.extend(('0'..='9').chain('a'..='z').chain('A'..='Z'));
        let tx = conn.unchecked_transaction().unwrap();
        for (i, c) in chars.iter().enumerate() {
            let i = i64::try_from(i).unwrap();
            // Alone: one token; between ASCII letters: not a separator.
            tx.execute(
                "INSERT INTO tokens(rowid, x) VALUES (?1, ?2), (?3, ?4)",
                params![2 * i, c.to_string(), 2 * i + 1, format!("x{c}x")],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let counts: Vec<(i64, i64)> = conn
            .prepare("SELECT doc, count(*) FROM tokens_v GROUP BY doc ORDER BY doc")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            counts.len(),
            2 * chars.len(),
            "some character gives no token"
        );
        for (doc, count) in counts {
            let c = chars[usize::try_from(doc / 2).unwrap()];
            assert_eq!(count, 1, "{c:?} (U+{:04X}) in row {doc}", u32::from(c));
        }
        // And as a query on a detail=none table, each is a valid single-term phrase.
        conn.execute_batch("CREATE VIRTUAL TABLE none USING fts5(w, content='', detail=none)")
            .unwrap();
        for c in &chars {
            let q = format!("\"{c}\" OR \"x{c}\"*");
            matching(&conn, "none", &q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        }
    }
}
