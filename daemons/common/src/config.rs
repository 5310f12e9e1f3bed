//! Configuration loading shared by every daemon: compiled defaults ← `/etc/rookery/<d>.toml` ←
//! `/etc/rookery/<d>.d/*.toml` (lexical order) ← `ROOKERY_<D>__SECTION__KEY` environment.
//!
//! Operators get every problem at once, each naming where it is and which key:
//! `/etc/rookery/licensed.toml:12:9: licence.keepalive-interval: invalid value …`, or
//! `env ROOKERY_LICENSED__LICENCE__MAX_ATTEMPTS: licence.max-attempts: …` for the environment.
//! To collect more than the first serde error, each file is deserialized, the failing entry is
//! reported and blanked out (offsets are kept, so later positions stay right), and the file is
//! deserialized again. Spans come from `toml::de::DeTable`, which keeps them for every key and
//! value. Semantic checks ([`DaemonConfig::validate`]) return key paths, which are mapped back
//! to the layer that last set the key. Entry point: [`load`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::de::{DeTable, DeValue};

/// A daemon's configuration type: the whole `<daemon>.toml`.
///
/// Implementations use `#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]` on
/// every struct, so a partial file is complete once defaults are applied and a typo is an error.
pub trait DaemonConfig:
    Serialize + DeserializeOwned + Default + Clone + PartialEq + fmt::Debug + Send + Sync + 'static
{
    /// Short daemon name: `licensed`, `packetd`, … (file, socket and env prefix derive from it).
    const DAEMON: &'static str;

    /// Semantic checks beyond types. Returns every problem, each with its dotted key path.
    fn validate(&self) -> Vec<Invalid>;

    /// The `[grpc]` section (socket path).
    fn grpc(&self) -> &GrpcSection;

    /// The `[metrics]` section (loopback listener).
    fn metrics(&self) -> &MetricsSection;
}

/// A semantic problem found by [`DaemonConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key path, e.g. `licence.keepalive-interval` or `targets[2].interval`.
    pub key: String,
    /// What is wrong, including what was expected.
    pub message: String,
}

impl Invalid {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where a [`Problem`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A position in a file (1-based line and column, in characters).
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
    },
    /// A whole file (unreadable, or the key is not written anywhere in it).
    Path(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, line, column } => write!(f, "{}:{line}:{column}", path.display()),
            Self::Path(path) => write!(f, "{}", path.display()),
            Self::Env(var) => write!(f, "env {var}"),
        }
    }
}

/// One configuration problem, printed as `LOCATION: KEY: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it is.
    pub location: Location,
    /// Dotted key path; empty for syntax errors and unreadable files.
    pub key: String,
    /// What is wrong (expected …).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(f, "{}: {}: {}", self.location, self.key, self.message)
        }
    }
}

/// Every problem found while loading a configuration (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration ({} problem{})", .0.len(), if .0.len() == 1 { "" } else { "s" })]
pub struct ConfigErrors(pub Vec<Problem>);

/// Where a daemon's configuration comes from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The main file; missing means compiled defaults.
    pub main: PathBuf,
    /// Directory of drop-ins (`*.toml`, merged in lexical order); missing means none.
    pub dropin_dir: PathBuf,
    /// Environment variables, as `(name, value)`; only `ROOKERY_<DAEMON>__…` ones are used.
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The sources of daemon `daemon`: `/etc/rookery/<daemon>.toml` (or `config`, if given),
    /// the `.d` directory beside it, and the given environment.
    pub fn new(
        daemon: &str,
        config: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let main = config
            .map(Path::to_path_buf)
            .unwrap_or_else(|| Path::new(crate::CONFIG_DIR).join(format!("{daemon}.toml")));
        let dropin_dir = main.with_extension("d");
        let prefix = env_prefix(daemon);
        let env = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .collect();
        Self {
            main,
            dropin_dir,
            env,
        }
    }

    /// [`Sources::new`] with the process environment.
    pub fn from_process(daemon: &str, config: Option<&Path>) -> Self {
        Self::new(daemon, config, std::env::vars())
    }
}

/// `ROOKERY_<DAEMON>__`.
pub fn env_prefix(daemon: &str) -> String {
    format!("ROOKERY_{}__", daemon.to_ascii_uppercase())
}

/// A successfully loaded configuration.
#[derive(Debug, Clone)]
pub struct Loaded<C> {
    /// The effective configuration (defaults applied).
    pub config: C,
    /// SHA-256 (hex) of the effective configuration, to tell configurations apart.
    pub digest: String,
    /// Files that were read, in merge order.
    pub files: Vec<PathBuf>,
    /// Things an operator should fix that do not stop the daemon (e.g. file permissions).
    pub warnings: Vec<String>,
}

/// Loads `C` from `sources`: every layer is checked, every problem is returned at once.
pub fn load<C: DaemonConfig>(sources: &Sources) -> Result<Loaded<C>, ConfigErrors> {
    load_inner::<C>(sources, None)
}

/// Like [`load`], with `main_text` standing in for the main file's content (used to validate a
/// candidate file before it is written).
pub fn load_candidate<C: DaemonConfig>(
    sources: &Sources,
    main_text: &str,
) -> Result<Loaded<C>, ConfigErrors> {
    load_inner::<C>(sources, Some(main_text))
}

/// The effective configuration as TOML (what `print-config` shows).
pub fn render<C: DaemonConfig>(config: &C) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|err| format!("# cannot render: {err}\n"))
}

/// SHA-256 (hex) of the effective configuration.
pub fn digest<C: DaemonConfig>(config: &C) -> String {
    hex::encode(Sha256::digest(render(config).as_bytes()))
}

/// One parsed layer, kept to map key paths back to positions.
struct FileLayer {
    path: PathBuf,
    text: String,
}

fn load_inner<C: DaemonConfig>(
    sources: &Sources,
    main_text: Option<&str>,
) -> Result<Loaded<C>, ConfigErrors> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut merged = match toml::Table::try_from(C::default()) {
        Ok(t) => t,
        Err(err) => {
            return Err(ConfigErrors(vec![Problem {
                location: Location::Path(sources.main.clone()),
                key: String::new(),
                message: format!("compiled defaults cannot be represented: {err}"),
            }]));
        }
    };
    let mut files = Vec::new();
    let mut layers = Vec::new();
    let mut shifted: Vec<String> = Vec::new();

    // The main file, then drop-ins in lexical order.
    let mut paths = vec![sources.main.clone()];
    match std::fs::read_dir(&sources.dropin_dir) {
        Ok(entries) => {
            let mut dropins: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            dropins.sort();
            paths.extend(dropins);
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => problems.push(Problem {
            location: Location::Path(sources.dropin_dir.clone()),
            key: String::new(),
            message: format!("cannot read drop-in directory: {err}"),
        }),
    }

    for (i, path) in paths.iter().enumerate() {
        let text = if i == 0
            && let Some(t) = main_text
        {
            t.to_owned()
        } else {
            match std::fs::read_to_string(path) {
                Ok(t) => {
                    if let Some(w) = permission_warning(path) {
                        warnings.push(w);
                    }
                    t
                }
                Err(err) if i == 0 && err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    problems.push(Problem {
                        location: Location::Path(path.clone()),
                        key: String::new(),
                        message: format!("cannot read: {err}"),
                    });
                    continue;
                }
            }
        };
        let (good, file_problems, file_shifted) = check_file::<C>(path, &text);
        problems.extend(file_problems);
        shifted.extend(file_shifted);
        deep_merge(&mut merged, good);
        files.push(path.clone());
        layers.push(FileLayer {
            path: path.clone(),
            text,
        });
    }

    // Environment overrides, one variable at a time so each error names its variable.
    let prefix = env_prefix(C::DAEMON);
    let mut env_keys: BTreeMap<String, String> = BTreeMap::new();
    let mut env_vars: Vec<&(String, String)> = sources.env.iter().collect();
    env_vars.sort();
    for (name, value) in env_vars {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let segments: Vec<String> = rest
            .split("__")
            .map(|s| s.to_ascii_lowercase().replace('_', "-"))
            .collect();
        if segments.iter().any(String::is_empty) {
            problems.push(Problem {
                location: Location::Env(name.clone()),
                key: String::new(),
                message: format!(
                    "cannot map to a key (expected {prefix}SECTION__KEY, e.g. {prefix}METRICS__LISTEN)"
                ),
            });
            continue;
        }
        let key = segments.join(".");
        let mut layer = toml::Table::new();
        insert_path(&mut layer, &segments, parse_env_value(value));
        let mut candidate = merged.clone();
        deep_merge(&mut candidate, layer.clone());
        match toml::Value::Table(candidate).try_into::<C>() {
            Ok(_) => {
                deep_merge(&mut merged, layer);
                env_keys.insert(key, name.clone());
            }
            Err(err) => problems.push(Problem {
                location: Location::Env(name.clone()),
                key,
                message: err.message().to_owned(),
            }),
        }
    }

    let config = match toml::Value::Table(merged).try_into::<C>() {
        Ok(c) => c,
        Err(err) => {
            // Each layer was checked on its own; a conflict between layers lands here.
            problems.push(Problem {
                location: Location::Path(sources.main.clone()),
                key: String::new(),
                message: format!("layers do not combine: {}", err.message()),
            });
            return Err(ConfigErrors(problems));
        }
    };

    for invalid in config.validate() {
        if shifted
            .iter()
            .any(|list| invalid.key.starts_with(&format!("{list}[")))
        {
            // Reported again, at the right element, once the errors above are fixed.
            continue;
        }
        problems.push(Problem {
            location: locate(&invalid.key, &layers, &env_keys, &sources.main),
            key: invalid.key,
            message: invalid.message,
        });
    }

    if problems.is_empty() {
        let digest = digest(&config);
        Ok(Loaded {
            config,
            digest,
            files,
            warnings,
        })
    } else {
        Err(ConfigErrors(problems))
    }
}

fn permission_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o022 != 0).then(|| {
        format!(
            "{} is writable by group or others (mode {:o}); anyone who can write it controls the daemon",
            path.display(),
            mode & 0o777
        )
    })
}

/// Deserializes one file as `C`, collecting every error: each failing entry is reported, then
/// blanked out, and the file is tried again. Returns the entries that are fine as a table.
///
/// Also returns the paths of lists of tables that lost an element this way: later elements
/// moved up, so semantic checks of those lists would point at the wrong element.
fn check_file<C: DaemonConfig>(
    path: &Path,
    text: &str,
) -> (toml::Table, Vec<Problem>, Vec<String>) {
    if text.len() >= CHUNKED_MIN
        && let Some(good) = parse_chunked::<C>(text)
    {
        return (good, Vec::new(), Vec::new());
    }
    check_whole::<C>(path, text)
}

/// [`check_file`] on the file as a whole: what it returns for any file the piecewise parse
/// does not take (every file with an error), so errors always carry the whole file's
/// positions.
fn check_whole<C: DaemonConfig>(
    path: &Path,
    text: &str,
) -> (toml::Table, Vec<Problem>, Vec<String>) {
    /// Bound on the recovery loop: one round per bad entry.
    const MAX_ROUNDS: usize = 200;
    let mut problems = Vec::new();
    let mut shifted = Vec::new();
    // Only a file with errors needs its span tree (to locate entries) and a working copy (to
    // blank them out): a valid file is parsed twice, never held as a tree beside its table,
    // which keeps the peak memory of a large file (thousands of targets) down.
    let mut tree = None;
    let mut work: Option<String> = None;
    for _ in 0..MAX_ROUNDS {
        let err = match toml::from_str::<C>(work.as_deref().unwrap_or(text)) {
            Ok(_) => break,
            Err(err) => err,
        };
        let tree = match &mut tree {
            Some(t) => t,
            None => match DeTable::parse(text) {
                Ok(t) => tree.insert(t),
                Err(err) => {
                    let at = err.span().map_or(0, |s| s.start);
                    let problem = Problem {
                        location: file_location(path, text, at),
                        key: String::new(),
                        message: format!("syntax error: {}", err.message()),
                    };
                    return (toml::Table::new(), vec![problem], Vec::new());
                }
            },
        };
        let at = err.span().map_or(0, |s| s.start);
        let found = find_entry(tree.get_ref(), text, at, "");
        let key = found.as_ref().map(|f| f.0.clone()).unwrap_or_default();
        if let Some((list, _)) = key.split_once('[') {
            shifted.push(list.to_owned());
        }
        let work = work.get_or_insert_with(|| text.to_owned());
        if is_cascade(&key, err.message(), &problems) {
            // "missing field `x`" because an earlier round blanked the bad `x`: said already.
            if let Some((_, ranges)) = found.filter(|(_, r)| !r.is_empty()) {
                for r in ranges {
                    blank_lines(work, r);
                }
                continue;
            }
            break;
        }
        problems.push((
            at,
            Problem {
                location: file_location(path, text, at),
                key,
                message: err.message().to_owned(),
            },
        ));
        match found {
            Some((_, ranges)) if !ranges.is_empty() => {
                for r in ranges {
                    blank_lines(work, r);
                }
            }
            _ => break,
        }
    }
    drop(tree);
    let good = toml::from_str::<toml::Table>(work.as_deref().unwrap_or(text)).unwrap_or_default();
    problems.sort_by_key(|(at, _)| *at);
    (
        good,
        problems.into_iter().map(|(_, p)| p).collect(),
        shifted,
    )
}

/// Files from this size on are parsed piece by piece when they can be ([`parse_chunked`]).
const CHUNKED_MIN: usize = 256 * 1024;
/// Text per piece of a file parsed piece by piece.
const CHUNK_TARGET: usize = 64 * 1024;

/// A valid large file, parsed in pieces of about [`CHUNK_TARGET`] bytes cut before top-level
/// array-of-tables headers (`[[targets]]`): the parser holds every token and event of what it
/// parses at once (about 30 bytes per byte of text), so a file of 10,000 targets would need
/// tens of MiB at once, a piece needs about 2 MiB. Each piece must deserialize as `C` on its
/// own; the pieces' tables are then joined, appending to the arrays of tables they continue.
///
/// `None` (parse the whole file instead, which also reports errors with their positions) when
/// the file has an error, has no such cut, or when the pieces share any key other than the
/// arrays of tables they continue (a table defined twice is an error only the whole-file
/// parse sees).
fn parse_chunked<C: DaemonConfig>(text: &str) -> Option<toml::Table> {
    let cuts = chunk_cuts(text)?;
    let mut good = toml::Table::new();
    // Top-level keys written as `[[key]]` headers so far: the only ones a piece may continue.
    let mut arrays: Vec<&str> = Vec::new();
    let mut start = 0;
    for (end, piece_arrays) in cuts {
        let piece = &text[start..end];
        start = end;
        toml::from_str::<C>(piece).ok()?;
        let table = toml::from_str::<toml::Table>(piece).ok()?;
        for (key, value) in table {
            match (good.get_mut(&key), value) {
                (None, value) => {
                    good.insert(key, value);
                }
                (Some(toml::Value::Array(have)), toml::Value::Array(more))
                    if arrays.contains(&key.as_str()) && piece_arrays.contains(&key.as_str()) =>
                {
                    have.extend(more);
                }
                _ => return None,
            }
        }
        for key in piece_arrays {
            if !arrays.contains(&key) {
                arrays.push(key);
            }
        }
    }
    Some(good)
}

/// Where to cut `text` into pieces for [`parse_chunked`]: the end of each piece (the last is
/// `text.len()`), with the top-level keys the piece writes as `[[key]]` headers. A cut is made
/// only before a `[[key]]` header at the start of a line, outside any value, with `key` one
/// bare key already written as `[[key]]` before it, once the piece is [`CHUNK_TARGET`] long.
/// `None` if there is no cut.
fn chunk_cuts(text: &str) -> Option<Vec<(usize, Vec<&str>)>> {
    use toml_parser::lexer::TokenKind as K;
    let source = toml_parser::Source::new(text);
    let mut tokens = source.lex().peekable();
    let mut cuts: Vec<(usize, Vec<&str>)> = Vec::new();
    let mut piece_start = 0;
    let mut piece_arrays: Vec<&str> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    // Nesting of `[` / `{` inside a value; a value ends at a newline outside any nesting.
    let mut depth = 0usize;
    let mut in_value = false;
    let mut line_start = true;
    while let Some(token) = tokens.next() {
        let span = token.span();
        match token.kind() {
            K::Newline => {
                if depth == 0 {
                    in_value = false;
                }
                line_start = true;
                continue;
            }
            K::Whitespace | K::Comment => continue,
            K::Eof => break,
            K::LeftSquareBracket if line_start && !in_value => {
                line_start = false;
                // A header: `[[` for an array of tables (the brackets are adjacent).
                let array = tokens.peek().is_some_and(|t| {
                    t.kind() == K::LeftSquareBracket && t.span().start() == span.end()
                });
                if !array {
                    // `[table]`: skip to its closing bracket.
                    for t in tokens.by_ref() {
                        if matches!(t.kind(), K::RightSquareBracket | K::Newline | K::Eof) {
                            break;
                        }
                    }
                    continue;
                }
                tokens.next();
                let mut key: Option<&str> = None;
                let mut simple = true;
                for t in tokens.by_ref() {
                    match t.kind() {
                        K::RightSquareBracket | K::Newline | K::Eof => break,
                        K::Whitespace => {}
                        K::Atom if key.is_none() => {
                            key = Some(&text[t.span().start()..t.span().end()]);
                        }
                        _ => simple = false,
                    }
                }
                let Some(key) = key.filter(|k| {
                    simple
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }) else {
                    continue;
                };
                if span.start() - piece_start >= CHUNK_TARGET && seen.contains(&key) {
                    cuts.push((span.start(), std::mem::take(&mut piece_arrays)));
                    piece_start = span.start();
                }
                if !piece_arrays.contains(&key) {
                    piece_arrays.push(key);
                }
                if !seen.contains(&key) {
                    seen.push(key);
                }
                continue;
            }
            K::Equals if !in_value => in_value = true,
            K::LeftSquareBracket | K::LeftCurlyBracket if in_value => depth += 1,
            K::RightSquareBracket | K::RightCurlyBracket if in_value => {
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        line_start = false;
    }
    if cuts.is_empty() {
        return None;
    }
    cuts.push((text.len(), piece_arrays));
    Some(cuts)
}

/// Whether `message` at `key` only reports the absence of an entry already reported as wrong.
fn is_cascade(key: &str, message: &str, reported: &[(usize, Problem)]) -> bool {
    let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
    else {
        return false;
    };
    let missing = join(key, field);
    reported.iter().any(|(_, p)| {
        p.key == missing
            || p.key.starts_with(&format!("{missing}."))
            || p.key.starts_with(&format!("{missing}["))
    })
}

fn file_location(path: &Path, text: &str, at: usize) -> Location {
    let (line, column) = line_col(text, at);
    Location::File {
        path: path.to_path_buf(),
        line,
        column,
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
pub fn line_col(text: &str, at: usize) -> (u32, u32) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// Replaces every character of the lines touched by `range` with spaces (newlines stay, so
/// offsets and line numbers of everything else are unchanged).
fn blank_lines(work: &mut String, range: Range<usize>) {
    let start = work
        .get(..range.start)
        .and_then(|s| s.rfind('\n'))
        .map_or(0, |i| i + 1);
    let end = work
        .get(range.end..)
        .and_then(|s| s.find('\n'))
        .map_or(work.len(), |i| range.end + i);
    if start >= end || end > work.len() {
        return;
    }
    // Multi-byte characters become as many spaces as they had bytes, so offsets stay put.
    let blanked: String = work[start..end]
        .chars()
        .map(|c| {
            if c == '\n' {
                "\n".to_owned()
            } else {
                " ".repeat(c.len_utf8())
            }
        })
        .collect();
    work.replace_range(start..end, &blanked);
}

type Entry = (String, Vec<Range<usize>>);

fn is_header(text: &str, span: &Range<usize>) -> bool {
    text.get(span.clone()).is_some_and(|s| s.starts_with('['))
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Byte ranges covering an entry and everything under it.
fn extent(key: &Range<usize>, value: &toml::Spanned<DeValue<'_>>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    out.push(key.start.min(value.span().start)..key.end.max(value.span().end));
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                out.extend(extent(&k.span(), v));
            }
        }
        DeValue::Array(a) => {
            for e in a.iter() {
                if let DeValue::Table(t) = e.get_ref() {
                    out.push(e.span());
                    for (k, v) in t.iter() {
                        out.extend(extent(&k.span(), v));
                    }
                }
            }
        }
        _ => {}
    }
    out
}

/// Finds the entry an error at byte `at` belongs to: its key path and the ranges to blank so
/// that the error goes away without disturbing the rest of the file.
fn find_entry(table: &DeTable<'_>, text: &str, at: usize, prefix: &str) -> Option<Entry> {
    let contains = |r: &Range<usize>| r.start <= at && at < r.end.max(r.start + 1);
    for (k, v) in table.iter() {
        let path = join(prefix, k.get_ref());
        let kspan = k.span();
        let vspan = v.span();
        match v.get_ref() {
            DeValue::Table(t) if is_header(text, &vspan) => {
                // The deepest entry first: a header table's span can cover its sub-tables
                // (`[modules]` spans `[modules.a.http]`), and blaming the parent would blank
                // every sibling along with the one bad key.
                if let Some(found) = find_entry(t, text, at, &path) {
                    return Some(found);
                }
                if contains(&kspan) || contains(&vspan) {
                    return Some((path, extent(&kspan, v)));
                }
            }
            DeValue::Array(a) if a.iter().next().is_some_and(|e| is_header(text, &e.span())) => {
                // An array of tables: blame one element, blank only that element.
                for (i, e) in a.iter().enumerate() {
                    let DeValue::Table(t) = e.get_ref() else {
                        continue;
                    };
                    let epath = format!("{path}[{i}]");
                    let mut ranges = vec![e.span()];
                    for (ek, ev) in t.iter() {
                        ranges.extend(extent(&ek.span(), ev));
                    }
                    if contains(&e.span()) || (contains(&kspan) && i == 0) {
                        return Some((epath, ranges));
                    }
                    if let Some((p, _)) = find_entry(t, text, at, &epath) {
                        return Some((p, ranges));
                    }
                }
            }
            _ => {
                let whole = extent(&kspan, v);
                if let DeValue::Table(t) = v.get_ref()
                    && !contains(&kspan)
                    && let Some(found) = find_entry(t, text, at, &path)
                {
                    // An implicit table (`modules` of `[modules.a]`, or `a` of `a.b = 1`):
                    // blank only the entry inside it, not its siblings.
                    return Some(found);
                }
                if contains(&kspan) || whole.iter().any(contains) {
                    // Name the deepest key, but blank the whole key = value entry.
                    let deeper = match v.get_ref() {
                        DeValue::Table(t) => find_entry(t, text, at, &path).map(|f| f.0),
                        DeValue::Array(a) => a
                            .iter()
                            .position(|e| contains(&e.span()))
                            .map(|i| format!("{path}[{i}]")),
                        _ => None,
                    };
                    let span = whole.iter().fold(kspan.clone(), |acc, r| {
                        acc.start.min(r.start)..acc.end.max(r.end)
                    });
                    return Some((deeper.unwrap_or(path), vec![span]));
                }
            }
        }
    }
    None
}

/// Value of an environment override: a TOML value if it parses as one (`30`, `true`,
/// `["a", "b"]`, `"x"`), otherwise the raw text as a string.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn insert_path(table: &mut toml::Table, segments: &[String], value: toml::Value) {
    match segments {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                insert_path(t, rest, value);
            }
        }
    }
}

/// Merges `over` into `base`: tables merge key by key, anything else (arrays too) replaces.
fn deep_merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Splits `a.b[2].c` into lookups.
fn path_segments(key: &str) -> Vec<(String, Option<usize>)> {
    key.split('.')
        .map(|seg| match seg.split_once('[') {
            Some((name, idx)) => (name.to_owned(), idx.trim_end_matches(']').parse().ok()),
            None => (seg.to_owned(), None),
        })
        .collect()
}

/// Byte offset of the value at `key` in `text`, if the file sets it.
fn span_of(text: &str, key: &str) -> Option<usize> {
    let tree = DeTable::parse(text).ok()?;
    let mut table: &DeTable<'_> = tree.get_ref();
    let segs = path_segments(key);
    for (i, (name, idx)) in segs.iter().enumerate() {
        let (_, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        let value = match (idx, value.get_ref()) {
            (Some(n), DeValue::Array(a)) => a.get(*n)?,
            _ => value,
        };
        if i + 1 == segs.len() {
            let span = value.span();
            // A header table's own span is its header: good enough to point at.
            return Some(span.start);
        }
        table = value.get_ref().as_table()?;
    }
    None
}

/// Where key `key` was last set: the environment, else the last file that writes it (or its
/// nearest parent), else the main file as a whole.
fn locate(
    key: &str,
    layers: &[FileLayer],
    env: &BTreeMap<String, String>,
    main: &Path,
) -> Location {
    let plain = key.split('[').next().unwrap_or(key);
    if let Some(var) = env.get(plain) {
        return Location::Env(var.clone());
    }
    let mut candidate = key.to_owned();
    loop {
        for layer in layers.iter().rev() {
            if let Some(at) = span_of(&layer.text, &candidate) {
                return file_location(&layer.path, &layer.text, at);
            }
        }
        match candidate.rfind(['.', '[']) {
            Some(i) => candidate.truncate(i),
            None => break,
        }
    }
    Location::Path(
        layers
            .last()
            .map_or_else(|| main.to_path_buf(), |l| l.path.clone()),
    )
}

/// Checks a documented factory file (`etc/rookery/<daemon>.toml`): with its commented-out
/// settings (`#key = value`, `#[section]`) uncommented it must parse as `C`, equal
/// `C::default()`, and mention every key the defaults have. Returns what is wrong.
pub fn factory_file_problems<C: DaemonConfig>(text: &str) -> Vec<String> {
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[') || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    match toml::from_str::<C>(&uncommented) {
        Ok(parsed) if parsed != C::default() => out.push(format!(
            "uncommented file differs from the compiled defaults:\n--- file\n{}\n--- defaults\n{}",
            render(&parsed),
            render(&C::default())
        )),
        Ok(_) => {}
        Err(err) => out.push(format!("uncommented file does not parse: {err}")),
    }
    let written = toml::from_str::<toml::Table>(&uncommented).unwrap_or_default();
    let defaults = toml::Table::try_from(C::default()).unwrap_or_default();
    let mut missing = Vec::new();
    key_paths(&defaults, "", &mut |k| {
        if !has_path(&written, k) {
            missing.push(k.to_owned());
        }
    });
    if !missing.is_empty() {
        out.push(format!("keys not documented: {}", missing.join(", ")));
    }
    out
}

fn key_paths(table: &toml::Table, prefix: &str, f: &mut dyn FnMut(&str)) {
    for (k, v) in table {
        let path = join(prefix, k);
        match v {
            toml::Value::Table(t) if !t.is_empty() => key_paths(t, &path, f),
            _ => f(&path),
        }
    }
}

fn has_path(table: &toml::Table, path: &str) -> bool {
    let mut cur = table;
    let segs: Vec<&str> = path.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        match cur.get(*seg) {
            Some(toml::Value::Table(t)) if i + 1 < segs.len() => cur = t,
            Some(_) if i + 1 == segs.len() => return true,
            _ => return false,
        }
    }
    false
}

// ----------------------------------------------------------------------------------------------
// Sections every daemon has.

/// `[grpc]`: where the daemon's gRPC Unix socket lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GrpcSection {
    /// Unix socket path (group `rookery`, mode 0660).
    pub socket: PathBuf,
}

impl GrpcSection {
    /// `/run/rookery/<daemon>.sock`.
    pub fn for_daemon(daemon: &str) -> Self {
        Self {
            socket: Path::new(crate::RUN_DIR).join(format!("{daemon}.sock")),
        }
    }

    /// Checks of this section, with keys under `section`.
    pub fn validate(&self, section: &str) -> Vec<Invalid> {
        let mut out = Vec::new();
        if !self.socket.is_absolute() {
            out.push(Invalid::new(
                format!("{section}.socket"),
                format!("\"{}\" is not an absolute path", self.socket.display()),
            ));
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if self.socket.as_os_str().len() > 107 {
            out.push(Invalid::new(
                format!("{section}.socket"),
                "is longer than the 107 bytes a Unix socket path can hold",
            ));
        }
        out
    }
}

/// `[metrics]`: the loopback `/healthz` + `/metrics` listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsSection {
    /// Listen address, e.g. `127.0.0.1:9114`.
    pub listen: SocketAddr,
}

impl MetricsSection {
    /// `127.0.0.1:<port>`.
    pub fn loopback(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Checks of this section, with keys under `section`.
    pub fn validate(&self, section: &str) -> Vec<Invalid> {
        let mut out = Vec::new();
        if !self.listen.ip().is_loopback() {
            out.push(Invalid::new(
                format!("{section}.listen"),
                format!(
                    "{} is not a loopback address (expected 127.0.0.1 or ::1; ingestd scrapes locally, the firewall keeps it private)",
                    self.listen
                ),
            ));
        }
        out
    }
}

/// `[state]`: where the daemon keeps its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StateSection {
    /// State directory (systemd's `StateDirectory=` creates the default one).
    pub directory: PathBuf,
}

impl StateSection {
    /// `/var/lib/rookery/<daemon>`.
    pub fn for_daemon(daemon: &str) -> Self {
        Self {
            directory: Path::new(crate::STATE_DIR).join(daemon),
        }
    }

    /// Checks of this section, with keys under `section`.
    pub fn validate(&self, section: &str) -> Vec<Invalid> {
        if self.directory.is_absolute() {
            Vec::new()
        } else {
            vec![Invalid::new(
                format!("{section}.directory"),
                format!("\"{}\" is not an absolute path", self.directory.display()),
            )]
        }
    }
}

#[cfg(test)]
mod tests;
