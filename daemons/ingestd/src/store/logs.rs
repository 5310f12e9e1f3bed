//! Log records in the SQLite store: blocks ([`super::block`]) with a full-text index of each
//! block's words, written by the writer thread, read by queries and the log outboxes.
//!
//! Tables: `log_blocks` (a block's summary and its Bloom filter of hosts and apps; the row id
//! is the id of its first record), `log_block_data` (its compressed records, apart so a query
//! that skips a block never reads them), `log_blocks_fts` (FTS5, contentless, one row per
//! block: its distinct words) and `log_ids` (the next record id: ids are never reused, even
//! after retention deleted every block, so an outbox never points at a newer record).
//!
//! A query picks candidate blocks by their summary, Bloom filter and (with a text query) the
//! block index ([`super::block_index::block_query`]), newest first; decodes each; keeps the
//! records that pass every filter, the text query checked by SQLite's own FTS5 over those
//! records in an in-memory table; and stops once it has `limit` records.

use std::path::Path;

use rusqlite::{Connection, params};

use super::block::{self, Block, Keys};
use super::block_index::{self, Words};
use super::{LogQuery, StoreError, StoredLog};
use crate::record::LogRecord;

/// The tables of the log blocks.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log_blocks (
    id INTEGER PRIMARY KEY,
    records INTEGER NOT NULL,
    min_ts_ns INTEGER NOT NULL,
    max_ts_ns INTEGER NOT NULL,
    max_received_ns INTEGER NOT NULL,
    min_severity INTEGER,
    facilities INTEGER NOT NULL,
    parse_errors INTEGER NOT NULL,
    keys BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS log_block_data (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS log_blocks_fts
    USING fts5(words, content='', contentless_delete=1, detail=none);
CREATE TABLE IF NOT EXISTS log_ids (next_id INTEGER NOT NULL);
INSERT INTO log_ids (next_id) SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM log_ids);
";

/// Records of an old row-per-record `logs` table moved per transaction by [`migrate`].
const MIGRATE_CHUNK: usize = block::MAX_RECORDS;
/// Most receive time between the records of one block made by [`migrate`], ns.
const MIGRATE_SPAN_NS: u64 = 60_000_000_000;

/// The id the next record gets.
pub fn next_id(conn: &Connection) -> Result<i64, rusqlite::Error> {
    let stored: i64 = conn.query_row("SELECT max(next_id) FROM log_ids", [], |r| r.get(0))?;
    let past_blocks: i64 = conn.query_row(
        "SELECT coalesce(max(id + records), 1) FROM log_blocks",
        [],
        |r| r.get(0),
    )?;
    Ok(stored.max(past_blocks))
}

/// What a commit's log records need beyond the connection: the next id and scratch space.
#[derive(Debug, Default)]
pub struct LogWriter {
    /// The id of the next record stored.
    pub next_id: i64,
    words: Words,
}

impl LogWriter {
    /// Starts at the database's next id.
    pub fn open(conn: &Connection) -> Result<Self, rusqlite::Error> {
        Ok(Self {
            next_id: next_id(conn)?,
            words: Words::default(),
        })
    }

    /// Encodes `records` (any number) into blocks, using this writer's scratch space.
    pub fn encode(&mut self, records: &[&LogRecord]) -> Result<Vec<Block>, snap::Error> {
        block::encode_all(records, &mut self.words)
    }
}

/// Where each stored record's id goes besides the block: the log outboxes to fill.
#[derive(Debug, Clone, Copy)]
pub struct Outboxes {
    /// `forward_otlp_logs`.
    pub otlp: bool,
    /// `forward_quic_logs`.
    pub quic: bool,
}

/// Stores `block` inside the caller's transaction with the ids from `next_id` on (advanced
/// past them), its ids copied into the outboxes asked for.
pub fn insert_block(
    tx: &rusqlite::Transaction<'_>,
    b: &Block,
    next_id: &mut i64,
    outboxes: Outboxes,
) -> Result<(), rusqlite::Error> {
    let id = *next_id;
    let n = i64::try_from(b.records).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "INSERT INTO log_blocks (id, records, min_ts_ns, max_ts_ns, max_received_ns, min_severity, facilities, parse_errors, keys)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        id,
        n,
        b.min_ts_ns,
        b.max_ts_ns,
        b.max_received_ns,
        b.min_severity,
        b.facilities,
        i64::try_from(b.parse_errors).unwrap_or(i64::MAX),
        b.keys,
    ])?;
    tx.prepare_cached("INSERT INTO log_block_data (id, data) VALUES (?1, ?2)")?
        .execute(params![id, b.data])?;
    tx.prepare_cached("INSERT INTO log_blocks_fts (rowid, words) VALUES (?1, ?2)")?
        .execute(params![id, b.words])?;
    if outboxes.otlp {
        let mut stmt = tx.prepare_cached("INSERT INTO forward_otlp_logs (log_id) VALUES (?1)")?;
        for i in id..id + n {
            stmt.execute(params![i])?;
        }
    }
    if outboxes.quic {
        let mut stmt = tx.prepare_cached("INSERT INTO forward_quic_logs (log_id) VALUES (?1)")?;
        for i in id..id + n {
            stmt.execute(params![i])?;
        }
    }
    *next_id = id + n;
    Ok(())
}

/// Records the next id inside the caller's transaction.
pub fn save_next_id(tx: &rusqlite::Transaction<'_>, next_id: i64) -> Result<(), rusqlite::Error> {
    tx.prepare_cached("UPDATE log_ids SET next_id = ?1")?
        .execute(params![next_id])?;
    Ok(())
}

/// Deletes blocks `ids` (rows, data and index rows); returns the records they held.
fn delete_blocks(conn: &Connection, ids: &[(i64, i64)]) -> Result<u64, rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    let mut n = 0_u64;
    for &(id, records) in ids {
        tx.prepare_cached("DELETE FROM log_blocks WHERE id = ?1")?
            .execute(params![id])?;
        tx.prepare_cached("DELETE FROM log_block_data WHERE id = ?1")?
            .execute(params![id])?;
        tx.prepare_cached("DELETE FROM log_blocks_fts WHERE rowid = ?1")?
            .execute(params![id])?;
        n += u64::try_from(records).unwrap_or(0);
    }
    tx.commit()?;
    Ok(n)
}

/// Deletes the blocks whose newest record was received before `cutoff_ns`; returns the
/// records deleted. A block goes whole: it holds records received at most one commit apart.
pub fn delete_older(conn: &Connection, cutoff_ns: i64) -> Result<u64, rusqlite::Error> {
    let ids: Vec<(i64, i64)> = conn
        .prepare_cached("SELECT id, records FROM log_blocks WHERE max_received_ns < ?1")?
        .query_map(params![cutoff_ns], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut n = 0;
    for chunk in ids.chunks(64) {
        n += delete_blocks(conn, chunk)?;
    }
    Ok(n)
}

/// Deletes the oldest blocks, at least one, until `records` records are gone (or none are
/// left); returns the records deleted.
pub fn delete_oldest(conn: &Connection, records: u64) -> Result<u64, rusqlite::Error> {
    let mut ids = Vec::new();
    let mut n = 0_u64;
    {
        let mut stmt = conn.prepare_cached("SELECT id, records FROM log_blocks ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (id, k): (i64, i64) = (r.get(0)?, r.get(1)?);
            ids.push((id, k));
            n += u64::try_from(k).unwrap_or(0);
            if n >= records {
                break;
            }
        }
    }
    delete_blocks(conn, &ids)
}

/// Merges the block index's segments, so that deleted rows free their pages.
pub fn optimize(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO log_blocks_fts (log_blocks_fts) VALUES ('optimize')",
        [],
    )?;
    Ok(())
}

/// A database written before blocks keeps its records in `logs` (a row each, with the FTS5
/// table `logs_fts`): they move into blocks of consecutive ids (the same ids, so the outboxes
/// still point at them), and the old tables are dropped. Returns the records moved.
pub fn migrate(conn: &Connection) -> Result<u64, rusqlite::Error> {
    if !super::table_exists(conn, "logs")? {
        return Ok(0);
    }
    let tx = conn.unchecked_transaction()?;
    let mut writer = LogWriter::open(&tx)?;
    let mut moved = 0_u64;
    let mut after = i64::MIN;
    loop {
        let rows: Vec<(i64, LogRecord)> = tx
            .prepare_cached(
                "SELECT id, received_ns, timestamp_ns, host, app, procid, msgid, facility, severity, message, structured_data, format, parse_error, input, peer
                 FROM logs WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map(
                params![after, i64::try_from(MIGRATE_CHUNK).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, old_record(r)?)),
            )?
            .collect::<Result<_, _>>()?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.0;
        // Runs of consecutive ids (a block's records are numbered from its id on) received
        // within a minute (retention by age deletes a block whole, as it would a commit's).
        let mut rest = rows.as_slice();
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .enumerate()
                .take_while(|(i, (id, r))| {
                    *id == first.0 + i64::try_from(*i).unwrap_or(0)
                        && r.received_ns.abs_diff(first.1.received_ns) <= MIGRATE_SPAN_NS
                })
                .count();
            let records: Vec<&LogRecord> = rest[..run].iter().map(|(_, r)| r).collect();
            let b = Block::encode(&records, &mut writer.words)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            let mut id = first.0;
            insert_block(
                &tx,
                &b,
                &mut id,
                Outboxes {
                    otlp: false,
                    quic: false,
                },
            )?;
            writer.next_id = writer.next_id.max(id);
            moved += run as u64;
            rest = &rest[run..];
        }
    }
    save_next_id(&tx, writer.next_id)?;
    tx.execute_batch(
        "DROP TRIGGER IF EXISTS logs_ai;
         DROP TRIGGER IF EXISTS logs_ad;
         DROP TABLE IF EXISTS logs_fts;
         DROP TABLE logs;",
    )?;
    tx.commit()?;
    Ok(moved)
}

fn old_record(r: &rusqlite::Row<'_>) -> Result<LogRecord, rusqlite::Error> {
    Ok(LogRecord {
        received_ns: r.get(1)?,
        timestamp_ns: r.get(2)?,
        host: r.get(3)?,
        app: r.get(4)?,
        procid: r.get(5)?,
        msgid: r.get(6)?,
        facility: r.get(7)?,
        severity: r.get(8)?,
        message: r.get(9)?,
        structured_data: r.get(10)?,
        format: r.get(11)?,
        parse_error: r.get(12)?,
        input: r.get(13)?,
        peer: r.get(14)?,
    })
}

fn corrupt(e: block::DecodeError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Checks the full-text query `text` against records in memory (SQLite's FTS5, the same
/// tokenizer and syntax a row-per-record index had).
struct TextMatcher {
    conn: Connection,
    text: String,
}

impl TextMatcher {
    /// Fails with FTS5's own message when it rejects `text`.
    fn new(text: &str) -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        // Contentless: only the ids come back, and emptying it is one command.
        conn.execute_batch("CREATE VIRTUAL TABLE m USING fts5(message, content='')")?;
        let m = Self {
            conn,
            text: text.to_owned(),
        };
        m.matching()?;
        Ok(m)
    }

    /// The ids of `records` (id, message) whose message matches.
    fn filter(&self, records: &[(i64, &str)]) -> Result<Vec<i64>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute("INSERT INTO m (m) VALUES ('delete-all')", [])?;
        {
            let mut add = tx.prepare_cached("INSERT INTO m (rowid, message) VALUES (?1, ?2)")?;
            for (id, message) in records {
                add.execute(params![id, message])?;
            }
        }
        let ids = self.matching();
        tx.commit()?;
        ids
    }

    fn matching(&self) -> Result<Vec<i64>, StoreError> {
        let bad = |e: rusqlite::Error| match &e {
            // The SQL is ours; a plain SQLITE_ERROR is FTS5 rejecting the query.
            rusqlite::Error::SqliteFailure(f, Some(msg))
                if f.extended_code == rusqlite::ffi::SQLITE_ERROR =>
            {
                StoreError::BadText(msg.clone())
            }
            _ => StoreError::Sqlite(e),
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT rowid FROM m WHERE m MATCH ?1")
            .map_err(bad)?;
        let ids = stmt
            .query_map(params![self.text], |r| r.get(0))
            .map_err(bad)?
            .collect::<Result<_, _>>()
            .map_err(bad)?;
        Ok(ids)
    }
}

/// Runs `q` on a read connection of the store file at `path`: the newest matching records
/// first, at most `q.limit`.
///
/// # Errors
/// The file cannot be read, FTS5 rejects the text query, or a block does not decode.
pub fn query(path: &Path, q: &LogQuery) -> Result<Vec<StoredLog>, StoreError> {
    let mut conn = super::read_only(path)?;
    // One read transaction: retention cannot delete a block between its row and its data.
    let conn = conn.transaction()?;
    let text = q.text.as_deref().map(TextMatcher::new).transpose()?;
    let mut sql = String::from("SELECT id, records, keys FROM log_blocks AS b WHERE 1=1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    // Appends ` AND {before} ?N{after}` with `v` as parameter N.
    let mut add = |before: &str, v: rusqlite::types::Value, after: &str| {
        args.push(v);
        sql.push_str(&format!(" AND {before} ?{}{after}", args.len()));
    };
    use rusqlite::types::Value as V;
    if let Some(v) = q.start_ns {
        add("max_ts_ns >=", V::Integer(v), "");
    }
    if let Some(v) = q.end_ns {
        add("min_ts_ns <", V::Integer(v), "");
    }
    if let Some(v) = q.max_severity {
        add("min_severity <=", V::Integer(v.into()), "");
    }
    if let Some(v) = q.facility {
        add("(facilities >>", V::Integer(v.into()), ") & 1 = 1");
    }
    if let Some(v) = q.before_id {
        add("id <", V::Integer(v), "");
    }
    if q.parse_errors_only {
        add("parse_errors >", V::Integer(0), "");
    }
    if let Some(words) = q.text.as_deref().and_then(block_index::block_query) {
        add(
            "id IN (SELECT rowid FROM log_blocks_fts WHERE log_blocks_fts MATCH",
            V::Text(words),
            ")",
        );
    }
    sql.push_str(" ORDER BY id DESC");
    let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut blocks = conn.prepare(&sql)?;
    let mut rows = blocks.query(rusqlite::params_from_iter(args))?;
    let mut data = conn.prepare("SELECT data FROM log_block_data WHERE id = ?1")?;
    while out.len() < limit
        && let Some(r) = rows.next()?
    {
        let (id, records): (i64, i64) = (r.get(0)?, r.get(1)?);
        let keys = r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
        if q.host
            .as_deref()
            .is_some_and(|h| !Keys::may_hold(keys, b'h', h))
            || q.app
                .as_deref()
                .is_some_and(|a| !Keys::may_hold(keys, b'a', a))
        {
            continue;
        }
        let bytes: Vec<u8> = data.query_row(params![id], |r| r.get(0))?;
        let records =
            block::decode(id, usize::try_from(records).unwrap_or(0), &bytes).map_err(corrupt)?;
        let mut kept: Vec<(i64, LogRecord)> = records
            .into_iter()
            .zip(id..)
            .filter(|(r, rid)| keeps(q, *rid, r))
            .map(|(r, rid)| (rid, r))
            .collect();
        if let Some(m) = &text {
            let ids = m.filter(
                &kept
                    .iter()
                    .map(|(id, r)| (*id, r.message.as_str()))
                    .collect::<Vec<_>>(),
            )?;
            let ids: std::collections::HashSet<i64> = ids.into_iter().collect();
            kept.retain(|(id, _)| ids.contains(id));
        }
        for (id, record) in kept.into_iter().rev() {
            if out.len() == limit {
                break;
            }
            out.push(StoredLog { id, record });
        }
    }
    Ok(out)
}

/// Whether record `id` passes every filter of `q` but the text.
fn keeps(q: &LogQuery, id: i64, r: &LogRecord) -> bool {
    let ts = r.timestamp_ns.unwrap_or(r.received_ns);
    q.start_ns.is_none_or(|s| ts >= s)
        && q.end_ns.is_none_or(|e| ts < e)
        && q.before_id.is_none_or(|b| id < b)
        && q.host.as_deref().is_none_or(|h| r.host == h)
        && q.app.as_deref().is_none_or(|a| r.app == a)
        && q.max_severity
            .is_none_or(|s| r.severity.is_some_and(|v| v <= s))
        && q.facility.is_none_or(|f| r.facility == Some(f))
        && (!q.parse_errors_only || r.parse_error.is_some())
}

/// The records of `ids` (in that order) still stored; `None` for an id retention deleted.
/// Call it in the read transaction that read `ids`, so both are one snapshot.
pub fn records_by_id(conn: &Connection, ids: &[i64]) -> Result<Vec<Option<StoredLog>>, StoreError> {
    let mut find = conn.prepare_cached(
        "SELECT b.id, b.records, d.data FROM log_blocks AS b JOIN log_block_data AS d ON d.id = b.id
         WHERE b.id <= ?1 ORDER BY b.id DESC LIMIT 1",
    )?;
    // The block decoded last: outbox ids come in runs of the same block.
    let mut cached: Option<(i64, Vec<LogRecord>)> = None;
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        let hit = cached
            .as_ref()
            .is_some_and(|(b, r)| id >= *b && id - *b < i64::try_from(r.len()).unwrap_or(i64::MAX));
        if !hit {
            cached = None;
            let row: Option<(i64, i64, Vec<u8>)> = find
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            if let Some((b, n, data)) = row {
                let records =
                    block::decode(b, usize::try_from(n).unwrap_or(0), &data).map_err(corrupt)?;
                cached = Some((b, records));
            }
        }
        let record = cached.as_ref().and_then(|(b, r)| {
            let at = usize::try_from(id - *b).ok()?;
            r.get(at).cloned()
        });
        out.push(record.map(|record| StoredLog { id, record }));
    }
    Ok(out)
}
