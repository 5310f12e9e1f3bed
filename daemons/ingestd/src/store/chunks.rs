//! Metric samples in the SQLite store once merged from the head: chunks, one row per series and
//! two-hour window (`sample_chunks`), each the window's samples of the series sorted by time,
//! one per millisecond, 16 bytes each (time in ms, value as IEEE 754 bits; little-endian).
//!
//! A merge of the head writes a row per series and window it has samples for (reading the
//! chunk already there and merging into it: the later write of a time wins), where a row per
//! sample made each sample a B-tree insert. Reads take the chunks of a series whose windows
//! overlap the range; retention and downsampling rewrite or delete the chunks that hold old
//! samples.

use rusqlite::{Connection, params};

/// The time each chunk covers, ms, from a multiple of it (UTC).
pub const WINDOW_MS: i64 = 2 * 3600 * 1000;
/// Bytes of one sample in a chunk.
const SAMPLE_BYTES: usize = 16;

/// The chunk table.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sample_chunks (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    window_ms INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS sample_chunks_key ON sample_chunks(series_id, window_ms);
";

/// The start of the window holding `ts_ms`.
pub fn window(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(WINDOW_MS) * WINDOW_MS
}

fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * SAMPLE_BYTES);
    for &(ts, v) in samples {
        out.extend_from_slice(&ts.to_le_bytes());
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    out
}

fn decode(data: &[u8]) -> Result<Vec<(i64, f64)>, rusqlite::Error> {
    let word = super::le_word;
    Ok(
        super::fixed_records(data, SAMPLE_BYTES, 4, "a sample chunk")?
            .map(|c| {
                (
                    i64::from_le_bytes(word(c, 0)),
                    f64::from_bits(u64::from_le_bytes(word(c, 8))),
                )
            })
            .collect(),
    )
}

/// Which side wins where both have a sample at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wins {
    /// The samples being merged (they were written later).
    New,
    /// The chunk's (the samples being merged are older: a migration).
    Stored,
}

/// `a` and `b`, each sorted by time with unique times, merged; on equal times `b`'s sample
/// is kept if `b_wins`.
fn merge_sorted(a: &[(i64, f64)], b: &[(i64, f64)], b_wins: bool) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(if b_wins { b[j] } else { a[i] });
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Merges `samples` of series `series_id` (sorted by time, unique times) into its chunks.
pub fn merge_series(
    conn: &Connection,
    series_id: i64,
    samples: &[(i64, f64)],
    wins: Wins,
) -> Result<(), rusqlite::Error> {
    let mut find = conn
        .prepare_cached("SELECT data FROM sample_chunks WHERE series_id = ?1 AND window_ms = ?2")?;
    let mut put = conn.prepare_cached(
        "INSERT INTO sample_chunks (series_id, window_ms, samples, data) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (series_id, window_ms) DO UPDATE SET samples = excluded.samples, data = excluded.data",
    )?;
    let mut rest = samples;
    while let Some(&(first, _)) = rest.first() {
        let w = window(first);
        let n = rest
            .iter()
            .position(|&(ts, _)| window(ts) != w)
            .unwrap_or(rest.len());
        let (these, next) = rest.split_at(n);
        rest = next;
        let stored: Option<Vec<u8>> = find
            .query_row(params![series_id, w], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let merged = match stored {
            Some(data) => merge_sorted(&decode(&data)?, these, wins == Wins::New),
            None => these.to_vec(),
        };
        put.execute(params![
            series_id,
            w,
            i64::try_from(merged.len()).unwrap_or(i64::MAX),
            encode(&merged)
        ])?;
    }
    Ok(())
}

/// The samples of series `series_id` from `start_ms` to `end_ms` (inclusive), by time.
pub fn read(
    conn: &Connection,
    series_id: i64,
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<(i64, f64)>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT data FROM sample_chunks WHERE series_id = ?1 AND window_ms BETWEEN ?2 AND ?3
         ORDER BY window_ms",
    )?;
    let mut rows = stmt.query(params![series_id, window(start_ms), end_ms])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.extend(
            decode(r.get_ref(0)?.as_blob()?)?
                .into_iter()
                .filter(|(ts, _)| (start_ms..=end_ms).contains(ts)),
        );
    }
    Ok(out)
}

/// Every stored sample `(series id, ms, value)`, by series and time (tests and tools).
pub fn all(conn: &Connection) -> Result<Vec<(i64, i64, f64)>, rusqlite::Error> {
    let mut stmt =
        conn.prepare("SELECT series_id, data FROM sample_chunks ORDER BY series_id, window_ms")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        out.extend(
            decode(r.get_ref(1)?.as_blob()?)?
                .into_iter()
                .map(|(ts, v)| (id, ts, v)),
        );
    }
    Ok(out)
}

/// Applies `f` to the samples of every chunk whose window starts before `before_ms` (in one
/// transaction), writing back the chunks it changed (deleting those left empty); chunks of
/// windows that end by `whole_before_ms` are deleted without being read. Returns the samples
/// removed.
pub fn rewrite_old(
    conn: &Connection,
    before_ms: i64,
    whole_before_ms: Option<i64>,
    mut f: impl FnMut(&mut Vec<(i64, f64)>),
) -> Result<usize, rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    let mut removed = 0_usize;
    if let Some(cut) = whole_before_ms {
        removed += tx.query_row(
            "SELECT coalesce(sum(samples), 0) FROM sample_chunks WHERE window_ms + ?2 <= ?1",
            params![cut, WINDOW_MS],
            |r| r.get::<_, i64>(0),
        )? as usize;
        tx.execute(
            "DELETE FROM sample_chunks WHERE window_ms + ?2 <= ?1",
            params![cut, WINDOW_MS],
        )?;
    }
    let old: Vec<(i64, Vec<u8>)> = tx
        .prepare("SELECT id, data FROM sample_chunks WHERE window_ms < ?1")?
        .query_map(params![before_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    {
        let mut update =
            tx.prepare("UPDATE sample_chunks SET samples = ?2, data = ?3 WHERE id = ?1")?;
        let mut delete = tx.prepare("DELETE FROM sample_chunks WHERE id = ?1")?;
        for (id, data) in old {
            let mut samples = decode(&data)?;
            let n = samples.len();
            f(&mut samples);
            if samples.len() == n {
                continue;
            }
            removed += n - samples.len();
            if samples.is_empty() {
                delete.execute(params![id])?;
            } else {
                update.execute(params![
                    id,
                    i64::try_from(samples.len()).unwrap_or(i64::MAX),
                    encode(&samples)
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(removed)
}

/// Deletes the chunks of the oldest windows: up to `span_ms` after the oldest window start.
/// Returns the samples deleted.
pub fn delete_oldest(conn: &Connection, span_ms: i64) -> Result<usize, rusqlite::Error> {
    let oldest: Option<i64> =
        conn.query_row("SELECT min(window_ms) FROM sample_chunks", [], |r| r.get(0))?;
    let Some(oldest) = oldest else {
        return Ok(0);
    };
    let last = oldest.saturating_add(span_ms);
    let n: i64 = conn.query_row(
        "SELECT coalesce(sum(samples), 0) FROM sample_chunks WHERE window_ms <= ?1",
        params![last],
        |r| r.get(0),
    )?;
    conn.execute(
        "DELETE FROM sample_chunks WHERE window_ms <= ?1",
        params![last],
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// A database written before chunks has its merged samples in `samples` (a row each): they
/// move into chunks (where the head was merged into a chunk already, the head's samples are
/// the later ones and win), and the table is dropped. Returns the samples moved.
pub fn migrate(conn: &Connection) -> Result<usize, rusqlite::Error> {
    if !super::table_exists(conn, "samples")? {
        return Ok(0);
    }
    let tx = conn.unchecked_transaction()?;
    let mut moved = 0;
    {
        let mut stmt =
            tx.prepare("SELECT series_id, ts_ms, value FROM samples ORDER BY series_id, ts_ms")?;
        let mut rows = stmt.query([])?;
        let mut series: Option<i64> = None;
        let mut samples: Vec<(i64, f64)> = Vec::new();
        while let Some(r) = rows.next()? {
            let (id, ts, v): (i64, i64, f64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            if series.is_some_and(|s| s != id) {
                merge_series(&tx, series.unwrap_or(id), &samples, Wins::Stored)?;
                moved += samples.len();
                samples.clear();
            }
            series = Some(id);
            samples.push((ts, v));
        }
        if let Some(id) = series {
            merge_series(&tx, id, &samples, Wins::Stored)?;
            moved += samples.len();
        }
    }
    tx.execute("DROP TABLE samples", [])?;
    tx.commit()?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch(SCHEMA).unwrap_or_else(|e| panic!("{e}"));
        conn
    }

    #[test]
    fn later_writes_win_and_windows_split_the_series() {
        let conn = db();
        let h = 3_600_000;
        merge_series(&conn, 1, &[(h, 1.0), (3 * h, 3.0)], Wins::New).unwrap_or_default();
        merge_series(&conn, 1, &[(h, 10.0), (2 * h - 1, 2.0)], Wins::New).unwrap_or_default();
        merge_series(&conn, 1, &[(h, 99.0), (5 * h, 5.0)], Wins::Stored).unwrap_or_default();
        merge_series(&conn, 2, &[(h, 7.0)], Wins::New).unwrap_or_default();
        let got = read(&conn, 1, 0, 10 * h).unwrap_or_default();
        assert_eq!(
            got,
            [(h, 10.0), (2 * h - 1, 2.0), (3 * h, 3.0), (5 * h, 5.0)]
        );
        assert_eq!(
            read(&conn, 1, h + 1, 3 * h).unwrap_or_default(),
            [(2 * h - 1, 2.0), (3 * h, 3.0)]
        );
        let chunks: i64 = conn
            .query_row(
                "SELECT count(*) FROM sample_chunks WHERE series_id = 1",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        assert_eq!(chunks, 3, "windows [0,2h), [2h,4h), [4h,6h)");
        assert_eq!(read(&conn, 2, 0, h).unwrap_or_default(), [(h, 7.0)]);
        // Times before 1970 fall in their own windows too.
        merge_series(&conn, 3, &[(-1, 1.0), (0, 2.0)], Wins::New).unwrap_or_default();
        assert_eq!(
            read(&conn, 3, -5, 5).unwrap_or_default(),
            [(-1, 1.0), (0, 2.0)]
        );
    }

    #[test]
    fn rewriting_old_chunks_removes_and_counts_samples() {
        let conn = db();
        let samples: Vec<(i64, f64)> = (0..100).map(|i| (i * 360_000, i as f64)).collect();
        merge_series(&conn, 1, &samples, Wins::New).unwrap_or_default();
        // Everything before 5 h: windows [0,2h) and [2h,4h) whole, [4h,6h) in part.
        let cut = 5 * 3_600_000;
        let removed = rewrite_old(&conn, cut, Some(cut), |s| s.retain(|(ts, _)| *ts >= cut))
            .unwrap_or_default();
        assert_eq!(removed, 50);
        assert_eq!(
            read(&conn, 1, 0, i64::MAX).unwrap_or_default(),
            samples[50..]
        );
        assert_eq!(delete_oldest(&conn, 0).unwrap_or_default(), 10);
        assert_eq!(
            read(&conn, 1, 0, i64::MAX).unwrap_or_default(),
            samples[60..]
        );
    }

    #[test]
    fn a_chunk_of_a_wrong_size_is_an_error() {
        let conn = db();
        conn.execute(
            "INSERT INTO sample_chunks (series_id, window_ms, samples, data) VALUES (1, 0, 1, x'0102')",
            [],
        )
        .unwrap_or_default();
        let err = read(&conn, 1, 0, 10)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("a sample chunk of 2 bytes"), "{err}");
    }
}
