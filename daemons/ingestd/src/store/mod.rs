//! The log store: SQLite in WAL mode (`logs.sqlite` in the state directory), a `logs` table
//! with an FTS5 index of the message text, written by one writer thread; or, for fleets, the
//! same tables in PostgreSQL (`store/postgres.rs`, `[store] backend = "postgres"`) behind the same
//! queue, writer, acknowledgements and queries.
//!
//! Inputs hand records to [`Store::submit`] (waits for queue room: TCP and HTTP are held
//! back, which is the backpressure) or [`Store::try_submit`] (UDP: a full queue is a counted
//! rejection). The queue is bounded in records by a semaphore; the writer takes what is
//! queued, up to `batch-records`, commits it in one transaction and only then acknowledges
//! each submission and frees its queue room. Retention (max age, max bytes) runs in the same
//! thread, so it never races the writes. Queries open their own read connection (WAL lets
//! them run beside the writer).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::events::{InputLabels, Metrics};
use crate::record::LogRecord;

/// File name of the log database inside the state directory.
pub const DB_FILE: &str = "logs.sqlite";
/// Page cache of the writer connection, KiB (memory bound: this plus the queue).
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// WAL pages between automatic checkpoints.
const WRITER_WAL_PAGES: i64 = 8192;
/// The WAL file is truncated to this after a checkpoint if it grew beyond it.
const WAL_LIMIT_BYTES: i64 = 64 * 1024 * 1024;
/// Samples in `samples_head` that make the writer merge it into `samples`.
const HEAD_MERGE_ROWS: u64 = 262_144;
/// Rows deleted per retention step: small steps keep the writer responsive.
const RETENTION_CHUNK: i64 = 5_000;

mod block;
pub mod block_index;
mod chunks;
mod logs;
mod postgres;

pub use logs::query as query_file;

/// This machine's host name: the PostgreSQL outbox owner and the sender in forwarded
/// record ids.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Why a submission or query failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The queue has no room (only from [`Store::try_submit`]).
    #[error("the write queue is full")]
    QueueFull,
    /// More records in one submission than the queue holds.
    #[error("{0} records in one submission exceed the write queue ({1} records)")]
    TooLarge(usize, usize),
    /// The writer has stopped (shutdown or a fatal database error).
    #[error("the store writer has stopped")]
    Closed,
    /// SQLite failed.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// The commit of this submission failed; nothing of it was stored.
    #[error("commit failed: {0}")]
    Commit(String),
    /// A full-text query SQLite could not parse.
    #[error("bad full-text query: {0}")]
    BadText(String),
    /// PostgreSQL failed.
    #[error("PostgreSQL error: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Stored data that does not decode (a damaged file).
    #[error("the store is damaged: {0}")]
    Corrupt(String),
}

/// Cannot open the store.
#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    /// The SQLite file.
    #[error("cannot open the log store {path}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL server cannot be reached or refused the login.
    #[error("cannot open the PostgreSQL log store")]
    Connect(#[from] rookery_common::postgres::ConnectError),
    /// The schema cannot be created on the PostgreSQL server.
    #[error("cannot create the log store schema in PostgreSQL at {url}")]
    Schema {
        /// The server (password removed).
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
}

/// Where queries read.
#[derive(Clone)]
enum Reader {
    /// Each query opens a read connection on the file (WAL lets it run beside the writer).
    Sqlite(PathBuf),
    Postgres(postgres::Pg),
}

/// What the writer thread writes to.
enum Db {
    Sqlite(Connection),
    /// The pool, and the runtime the writer thread blocks on for it.
    Postgres(postgres::Pg, tokio::runtime::Handle),
}

/// Series ids by label set (as submitted; the database holds the canonical JSON key): a hit
/// costs one hash of the labels (foldhash, seeded per process), no key text; a miss keeps a
/// reference to the submitted (usually interned) label set, not a copy.
type SeriesIds = HashMap<Labels, i64, foldhash::fast::RandomState>;

/// Labels of a series as stored (canonical JSON object).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).unwrap_or_default();
    map.into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Outbox rows `(seq, labels, ts, value)` grouped by series, with the highest seq.
fn group_outbox(rows: Vec<(i64, String, i64, f64)>) -> Option<(i64, Vec<SeriesSamples>)> {
    let max_seq = rows.iter().map(|r| r.0).max()?;
    let mut by_series: std::collections::BTreeMap<String, Vec<(i64, f64)>> =
        std::collections::BTreeMap::new();
    for (_, labels, ts, v) in rows {
        by_series.entry(labels).or_default().push((ts, v));
    }
    let series = by_series
        .into_iter()
        .map(|(labels, mut samples)| {
            samples.sort_by_key(|s| s.0);
            SeriesSamples {
                labels: parse_labels(&labels).into(),
                samples,
            }
        })
        .collect();
    Some((max_seq, series))
}

/// A series' label set, sorted by name, shared: remote_write hands out one `Arc` per label set
/// it has seen ([`crate::remote_write::LabelInterner`]); build one from a `Vec` with `.into()`.
pub type Labels = Arc<[(String, String)]>;

/// Metric samples of one series, as remote_write delivers them.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// Labels sorted by name, `__name__` included.
    pub labels: Labels,
    /// (timestamp in ms since the Unix epoch, value).
    pub samples: Vec<(i64, f64)>,
}

impl SeriesSamples {
    /// The metric name (`__name__`), empty if absent.
    pub fn name(&self) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == "__name__")
            .map_or("", |(_, v)| v.as_str())
    }

    /// Canonical text of the label set: the series' identity.
    pub fn key(&self) -> String {
        labels_key(&self.labels)
    }
}

/// Canonical JSON object of sorted labels.
pub fn labels_key(labels: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

enum Payload {
    Logs(Vec<LogRecord>),
    /// Log records the submitter already encoded into blocks (SQLite): the writer only
    /// stores them.
    Blocks(Encoded),
    Samples(Vec<SeriesSamples>),
}

/// Log records encoded into blocks, with what the writer counts of them.
struct Encoded {
    blocks: Vec<block::Block>,
    records: usize,
    /// Records per input, in runs (counted as stored after the commit).
    inputs: Vec<(String, u64)>,
}

impl Encoded {
    fn new(records: &[LogRecord]) -> Result<Self, snap::Error> {
        let refs: Vec<&LogRecord> = records.iter().collect();
        let blocks = block::encode_all(&refs, &mut block_index::Words::default())?;
        Ok(Self {
            blocks,
            records: records.len(),
            inputs: input_runs(records),
        })
    }
}

/// Submissions of at least this many records are encoded by the submitter, on its own
/// thread; smaller ones (a UDP datagram) go to the writer, which makes one block of them all.
const ENCODE_IN_SUBMITTER: usize = 32;

/// The records of `records` per input, in runs.
fn input_runs(records: &[LogRecord]) -> Vec<(String, u64)> {
    let mut runs: Vec<(String, u64)> = Vec::new();
    for r in records {
        match runs.last_mut() {
            Some((input, n)) if *input == r.input => *n += 1,
            _ => runs.push((r.input.clone(), 1)),
        }
    }
    runs
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Self::Logs(r) => r.len(),
            Self::Blocks(e) => e.records,
            Self::Samples(s) => s.iter().map(|s| s.samples.len()).sum(),
        }
    }

    fn input(&self) -> &str {
        match self {
            Self::Logs(r) => r.first().map_or("", |r| r.input.as_str()),
            Self::Blocks(e) => e.inputs.first().map_or("", |(i, _)| i.as_str()),
            Self::Samples(_) => "remote_write",
        }
    }
}

/// The outcome of a submission's commit, with its payload: the submitter frees the payload,
/// on its own thread, so the writer does not spend its time freeing what others allocated.
struct Committed(Result<(), String>, Payload);

struct Job {
    payload: Payload,
    ack: Option<oneshot::Sender<Committed>>,
    _permit: OwnedSemaphorePermit,
}

enum Msg {
    Write(Job),
    Retain(Retention),
    /// A forwarder delivered this outbox up to this sequence number.
    Forwarded(Outbox, i64, oneshot::Sender<Result<(), String>>),
}

/// The forwarding outboxes: one per target and kind, each read and emptied in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbox {
    /// Metric samples for `forward.remote-write-url`.
    RemoteWrite,
    /// Metric samples for `forward.otlp-url`.
    OtlpSamples,
    /// Log records (by id) for `forward.otlp-url`.
    OtlpLogs,
    /// Metric samples for `forward.quic-peer`.
    QuicSamples,
    /// Log records (by id) for `forward.quic-peer`.
    QuicLogs,
}

impl Outbox {
    /// The SQLite table; the PostgreSQL one has the `ingestd_` prefix.
    fn table(self) -> &'static str {
        match self {
            Self::RemoteWrite => "forward_outbox",
            Self::OtlpSamples => "forward_otlp_samples",
            Self::OtlpLogs => "forward_otlp_logs",
            Self::QuicSamples => "forward_quic_samples",
            Self::QuicLogs => "forward_quic_logs",
        }
    }

    /// The sample outboxes with their target's counters, for retention.
    fn samples(m: &Metrics) -> [(Self, &crate::events::TargetMetrics); 2] {
        [(Self::OtlpSamples, &m.otlp), (Self::QuicSamples, &m.quic)]
    }
}

/// Retention bounds, changeable by reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Database pages in use at most, in bytes.
    pub max_bytes: u64,
    /// Records older than this (by receive time) are deleted.
    pub max_age: Duration,
    /// How often retention runs.
    pub interval: Duration,
    /// Samples older than this are downsampled.
    pub downsample_after: Duration,
    /// One sample (the last) is kept per series and step of this length.
    pub downsample_step: Duration,
}

/// Handle of the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::UnboundedSender<Msg>,
    forward: Arc<std::sync::atomic::AtomicBool>,
    otlp: Arc<std::sync::atomic::AtomicBool>,
    quic: Arc<std::sync::atomic::AtomicBool>,
    room: Arc<Semaphore>,
    capacity: usize,
    reader: Reader,
    metrics: Metrics,
    retention: Arc<Mutex<Retention>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    labels TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS series_name ON series(name);
-- Merged samples are in `sample_chunks` (chunks.rs); `samples` (a row per sample) and its
-- time index are an older version's, moved into chunks at open.
DROP INDEX IF EXISTS samples_ts;
CREATE TABLE IF NOT EXISTS samples_head_blocks (
    id INTEGER PRIMARY KEY,
    samples INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS forward_outbox (
    seq INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS forward_otlp_samples (
    seq INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS forward_otlp_logs (
    seq INTEGER PRIMARY KEY,
    log_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS forward_quic_samples (
    seq INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS forward_quic_logs (
    seq INTEGER PRIMARY KEY,
    log_id INTEGER NOT NULL
);
";

fn open_db(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    // auto_vacuum must be set before the first table exists; incremental lets retention
    // return freed pages without a full VACUUM.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit survives power loss, and acknowledgements come after commits.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The writer's page cache (SQLite's default is 2 MiB): the samples key is written all over
    // (a page per series and commit), and re-reading those pages every commit dominated
    // remote_write once the table outgrew the cache.
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    // Checkpoint every WRITER_WAL_PAGES pages of WAL instead of 1000: a page written by many
    // commits between two checkpoints is copied into the database once.
    conn.pragma_update(None, "wal_autocheckpoint", WRITER_WAL_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)?;
    // Statement journals (an INSERT that fires the FTS trigger inside the batch's transaction
    // needs one) in memory, not in temporary files: they only undo a failed statement and a
    // crash discards them anyway.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(logs::SCHEMA)?;
    conn.execute_batch(chunks::SCHEMA)?;
    migrate_row_head(&conn)?;
    let moved = chunks::migrate(&conn)?;
    if moved > 0 {
        tracing::info!(
            samples = moved,
            "Moved the samples of an older store into chunks."
        );
    }
    let moved = logs::migrate(&conn)?;
    if moved > 0 {
        tracing::info!(
            records = moved,
            "Moved the log records of an older store into blocks."
        );
    }
    Ok(conn)
}

/// A database written before the packed head has its recent samples in `samples_head`, one
/// row per sample: they go into `samples` (after the packed head, should a newer version have
/// written one too: the old rows are then the later ones) and the table is dropped.
fn migrate_row_head(conn: &Connection) -> Result<(), rusqlite::Error> {
    if !table_exists(conn, "samples_head")? {
        return Ok(());
    }
    merge_head(conn)?;
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT OR REPLACE INTO samples (series_id, ts_ms, value)
         SELECT series_id, ts_ms, value FROM samples_head ORDER BY series_id, ts_ms, rowid",
        [],
    )?;
    tx.execute("DROP TABLE samples_head", [])?;
    tx.commit()
}

/// Bytes of one sample in a head block: series id, time (ms) and value (IEEE 754 bits), each
/// 8 bytes little-endian.
const HEAD_SAMPLE_BYTES: usize = 24;

/// Appends one sample to a head block.
fn pack_sample(block: &mut Vec<u8>, series_id: i64, ts_ms: i64, value: f64) {
    block.extend_from_slice(&series_id.to_le_bytes());
    block.extend_from_slice(&ts_ms.to_le_bytes());
    block.extend_from_slice(&value.to_bits().to_le_bytes());
}

/// `data` as records of `size` bytes each, or an error naming `what` (column `column` of its
/// row) when it is not a whole number of them.
fn fixed_records<'a>(
    data: &'a [u8],
    size: usize,
    column: usize,
    what: &str,
) -> Result<std::slice::ChunksExact<'a, u8>, rusqlite::Error> {
    if !data.len().is_multiple_of(size) {
        return Err(rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Blob,
            format!(
                "{what} of {} bytes is not a whole number of {size}-byte samples",
                data.len()
            )
            .into(),
        ));
    }
    Ok(data.chunks_exact(size))
}

/// The 8 bytes of `record` from `at` on (little-endian, for `from_le_bytes`).
fn le_word(record: &[u8], at: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&record[at..at + 8]);
    w
}

/// A read connection on the store file (WAL lets it read beside the writer).
fn read_only(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Whether the database has a table `name`.
fn table_exists(conn: &Connection, name: &str) -> Result<bool, rusqlite::Error> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// The samples `(series id, ms, value)` of one head block, in the order they were written.
fn unpack_block(
    data: &[u8],
) -> Result<impl Iterator<Item = (i64, i64, f64)> + '_, rusqlite::Error> {
    let records = fixed_records(data, HEAD_SAMPLE_BYTES, 2, "a samples_head_blocks block")?;
    let word = le_word;
    Ok(records.map(move |c| {
        (
            i64::from_le_bytes(word(c, 0)),
            i64::from_le_bytes(word(c, 8)),
            f64::from_bits(u64::from_le_bytes(word(c, 16))),
        )
    }))
}

/// Every sample of the head not yet merged into `samples`, `(series id, ms, value)` in the
/// order they were committed (a later one of the same series and time replaces an earlier
/// one). For tests and tools that read the database file directly.
pub fn head_samples(conn: &Connection) -> Result<Vec<(i64, i64, f64)>, rusqlite::Error> {
    let mut out = Vec::new();
    each_head_sample(conn, |s| out.push(s))?;
    Ok(out)
}

/// Every sample merged from the head into the chunks, `(series id, ms, value)` by series and
/// time. For tests and tools that read the database file directly.
pub fn merged_samples(conn: &Connection) -> Result<Vec<(i64, i64, f64)>, rusqlite::Error> {
    chunks::all(conn)
}

/// Calls `f` with every sample of the head, as [`head_samples`] lists them, one block at a
/// time: a reader that only filters does not copy the whole head first.
fn each_head_sample(
    conn: &Connection,
    mut f: impl FnMut((i64, i64, f64)),
) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare_cached("SELECT data FROM samples_head_blocks ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        unpack_block(r.get_ref(0)?.as_blob()?)?.for_each(&mut f);
    }
    Ok(())
}

/// Moves the head blocks into the sample chunks in one transaction, sorted by series and time:
/// each chunk is then written once per merge instead of once per commit. Of several samples of
/// the same series and time the one written last is kept. Returns the samples merged.
fn merge_head(conn: &Connection) -> Result<usize, rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    let mut head = head_samples(&tx)?;
    if head.is_empty() {
        return Ok(0);
    }
    // Stable: samples of the same key stay in commit order, the last one wins.
    head.sort_by_key(|&(id, ts, _)| (id, ts));
    let mut series: Vec<(i64, f64)> = Vec::new();
    for (i, &(id, ts, v)) in head.iter().enumerate() {
        let next = head.get(i + 1);
        if next.is_some_and(|n| (n.0, n.1) == (id, ts)) {
            continue;
        }
        series.push((ts, v));
        if next.is_none_or(|n| n.0 != id) {
            chunks::merge_series(&tx, id, &series, chunks::Wins::New)?;
            series.clear();
        }
    }
    tx.execute("DELETE FROM samples_head_blocks", [])?;
    tx.commit()?;
    Ok(head.len())
}

impl Store {
    /// Opens (creating if needed) `dir/logs.sqlite` and starts the writer thread.
    pub fn open(
        dir: &Path,
        queue_records: usize,
        batch_records: usize,
        retention: Retention,
        metrics: Metrics,
    ) -> Result<Self, OpenStoreError> {
        let path = dir.join(DB_FILE);
        let conn = open_db(&path).map_err(|source| OpenStoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        Self::start(
            Db::Sqlite(conn),
            Reader::Sqlite(path),
            queue_records,
            batch_records,
            retention,
            metrics,
        )
    }

    /// Connects to the PostgreSQL server of `section` (creating the schema if missing) and
    /// starts the writer thread; call from within the Tokio runtime.
    pub async fn open_postgres(
        section: &rookery_common::postgres::PostgresSection,
        queue_records: usize,
        batch_records: usize,
        retention: Retention,
        metrics: Metrics,
    ) -> Result<Self, OpenStoreError> {
        let pg = postgres::Pg::open(section).await?;
        Self::start(
            Db::Postgres(pg.clone(), tokio::runtime::Handle::current()),
            Reader::Postgres(pg),
            queue_records,
            batch_records,
            retention,
            metrics,
        )
    }

    fn start(
        db: Db,
        reader: Reader,
        queue_records: usize,
        batch_records: usize,
        retention: Retention,
        metrics: Metrics,
    ) -> Result<Self, OpenStoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(queue_records));
        metrics
            .queue_capacity
            .set(i64::try_from(queue_records).unwrap_or(i64::MAX));
        let forward = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let otlp = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let quic = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = Writer {
            db,
            forward: forward.clone(),
            otlp: otlp.clone(),
            quic: quic.clone(),
            series_ids: SeriesIds::default(),
            head_rows: 0,
            logs: logs::LogWriter::default(),
            rx,
            batch_records,
            metrics: metrics.clone(),
            room: room.clone(),
            capacity: queue_records,
        };
        std::thread::Builder::new()
            .name("ingestd-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| OpenStoreError::Sqlite {
                path: PathBuf::from("ingestd-writer thread"),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Self {
            tx,
            forward,
            otlp,
            quic,
            room,
            capacity: queue_records,
            reader,
            metrics,
            retention: Arc::new(Mutex::new(retention)),
        })
    }

    /// Path of the SQLite database file (`None` with PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        match &self.reader {
            Reader::Sqlite(p) => Some(p),
            Reader::Postgres(_) => None,
        }
    }

    /// What the store is, for status: the SQLite file or the PostgreSQL URL (no password).
    pub fn describe(&self) -> String {
        match &self.reader {
            Reader::Sqlite(p) => p.display().to_string(),
            Reader::Postgres(pg) => pg.describe(),
        }
    }

    /// Capacity of the write queue in records: the most one submission may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.capacity - self.room.available_permits()
    }

    fn enqueue(&self, payload: Payload, permit: OwnedSemaphorePermit) -> Ack {
        let (ack_tx, ack_rx) = oneshot::channel();
        let depth = self.queue_depth();
        self.metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        let job = Job {
            payload,
            ack: Some(ack_tx),
            _permit: permit,
        };
        if self.tx.send(Msg::Write(job)).is_err() {
            return Ack(None);
        }
        Ack(Some(ack_rx))
    }

    /// Queues `records`, waiting for room; the returned [`Ack`] resolves after the commit.
    pub async fn submit(&self, records: Vec<LogRecord>) -> Result<Ack, StoreError> {
        let payload = match self.reader {
            // On a blocking thread: a large HTTP push takes milliseconds to encode.
            Reader::Sqlite(_) if records.len() >= ENCODE_IN_SUBMITTER => {
                tokio::task::spawn_blocking(move || Encoded::new(&records))
                    .await
                    .map_err(|_| StoreError::Closed)?
                    .map(Payload::Blocks)
                    .map_err(|e| StoreError::Commit(format!("cannot compress the records: {e}")))?
            }
            _ => Payload::Logs(records),
        };
        self.submit_payload(payload).await
    }

    /// Queues metric samples (counted in samples against the queue), waiting for room.
    pub async fn submit_samples(&self, series: Vec<SeriesSamples>) -> Result<Ack, StoreError> {
        self.submit_payload(Payload::Samples(series)).await
    }

    async fn submit_payload(&self, payload: Payload) -> Result<Ack, StoreError> {
        let len = payload.len();
        let n = u32::try_from(len)
            .ok()
            .filter(|n| (*n as usize) <= self.capacity)
            .ok_or(StoreError::TooLarge(len, self.capacity))?;
        let permit = self
            .room
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(self.enqueue(payload, permit))
    }

    /// Queues `records` if there is room now, without waiting.
    pub fn try_submit(&self, records: Vec<LogRecord>) -> Result<Ack, StoreError> {
        let n = u32::try_from(records.len())
            .ok()
            .filter(|n| (*n as usize) <= self.capacity)
            .ok_or(StoreError::TooLarge(records.len(), self.capacity))?;
        let permit = self
            .room
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| StoreError::QueueFull)?;
        Ok(self.enqueue(Payload::Logs(records), permit))
    }

    /// Current retention bounds.
    pub fn retention(&self) -> Retention {
        *self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the retention bounds (reload).
    pub fn set_retention(&self, r: Retention) {
        *self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = r;
    }

    /// Runs retention now, in the writer thread, and waits until it is queued.
    pub fn retain_now(&self) {
        let _ = self.tx.send(Msg::Retain(self.retention()));
    }

    /// Runs retention every interval until `shutdown`.
    pub async fn retention_loop(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let interval = self.retention().interval;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => self.retain_now(),
            }
        }
    }

    /// Runs `query` on a read connection.
    pub async fn query(&self, query: LogQuery) -> Result<Vec<StoredLog>, StoreError> {
        let path = match &self.reader {
            Reader::Sqlite(p) => p.clone(),
            Reader::Postgres(pg) => return pg.query(&query).await,
        };
        tokio::task::spawn_blocking(move || logs::query(&path, &query))
            .await
            .map_err(|_| StoreError::Closed)?
    }
}

/// Resolves once the submission is committed (or failed to commit).
#[must_use = "the submission is acknowledged only once this resolves"]
pub struct Ack(Option<oneshot::Receiver<Committed>>);

impl Ack {
    /// Waits for the commit.
    pub async fn committed(self) -> Result<(), StoreError> {
        match self.0 {
            None => Err(StoreError::Closed),
            Some(rx) => match rx.await {
                Ok(Committed(result, payload)) => {
                    drop(payload);
                    result.map_err(StoreError::Commit)
                }
                Err(_) => Err(StoreError::Closed),
            },
        }
    }
}

struct Writer {
    db: Db,
    /// Copy committed samples into the forwarding outbox.
    forward: Arc<std::sync::atomic::AtomicBool>,
    /// Copy committed samples and log ids into the OTLP outboxes.
    otlp: Arc<std::sync::atomic::AtomicBool>,
    /// Copy committed samples and log ids into the QUIC outboxes.
    quic: Arc<std::sync::atomic::AtomicBool>,
    /// Series ids by labels: remote_write repeats the same series every scrape.
    series_ids: SeriesIds,
    /// Samples in `samples_head_blocks` (SQLite), merged into `samples` from
    /// [`HEAD_MERGE_ROWS`] on.
    head_rows: u64,
    /// The next log id and the scratch space of encoding (SQLite).
    logs: logs::LogWriter,
    rx: mpsc::UnboundedReceiver<Msg>,
    batch_records: usize,
    metrics: Metrics,
    room: Arc<Semaphore>,
    capacity: usize,
}

impl Writer {
    fn run(mut self) {
        if let Db::Sqlite(conn) = &self.db {
            self.head_rows = conn
                .query_row(
                    "SELECT coalesce(sum(samples), 0) FROM samples_head_blocks",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_or(0, |n| u64::try_from(n).unwrap_or(0));
            match logs::LogWriter::open(conn) {
                Ok(w) => self.logs = w,
                Err(err) => {
                    // Without the next id, a commit could reuse an id: store nothing.
                    tracing::error!(error = %err, "Reading the next log record id failed; the store writer stops.");
                    return;
                }
            }
        }
        while let Some(first) = self.rx.blocking_recv() {
            let mut jobs = Vec::new();
            let mut n = 0;
            let mut retain = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Write(job) => {
                        n += job.payload.len();
                        jobs.push(job);
                    }
                    Msg::Forwarded(outbox, seq, ack) => {
                        let r = match &self.db {
                            Db::Sqlite(conn) => conn
                                .execute(
                                    &format!("DELETE FROM {} WHERE seq <= ?1", outbox.table()),
                                    params![seq],
                                )
                                .map(|_| ())
                                .map_err(|e| e.to_string()),
                            Db::Postgres(pg, rt) => rt
                                .block_on(pg.outbox_delivered(outbox, seq))
                                .map_err(|e| e.to_string()),
                        };
                        let _ = ack.send(r);
                    }
                    // Retention runs after what was queued before it, before what follows.
                    Msg::Retain(r) => {
                        retain = Some(r);
                        break;
                    }
                }
                if n < self.batch_records {
                    next = self.rx.try_recv().ok();
                }
            }
            if !jobs.is_empty() {
                self.commit(jobs);
            }
            if let Some(r) = retain {
                if let Db::Postgres(pg, rt) = &self.db {
                    self.retain_postgres(pg, rt, r);
                    continue;
                }
                // Downsampling and retention work on `samples` alone.
                if let Err(err) = self.merge_head() {
                    tracing::error!(error = %err, "Merging recent samples failed.");
                }
                if let Err(err) = self.downsample(r.downsample_after, r.downsample_step) {
                    tracing::error!(error = %err, "Metric downsampling failed.");
                }
                match self.retain(r.max_bytes, r.max_age) {
                    Ok(deleted) => {
                        self.metrics.retention_deleted.inc_by(deleted);
                    }
                    Err(err) => tracing::error!(error = %err, "Log retention failed."),
                }
            }
        }
    }

    fn commit(&mut self, jobs: Vec<Job>) {
        let forward = Forward {
            remote_write: self.forward.load(std::sync::atomic::Ordering::Relaxed),
            otlp: self.otlp.load(std::sync::atomic::Ordering::Relaxed),
            quic: self.quic.load(std::sync::atomic::Ordering::Relaxed),
        };
        let result = match &mut self.db {
            Db::Sqlite(conn) => insert(conn, &jobs, &mut self.series_ids, forward, &mut self.logs)
                .map(|n| self.head_rows += n)
                .map_err(|e| e.to_string()),
            Db::Postgres(pg, rt) => rt
                .block_on(pg.insert(&jobs, &mut self.series_ids, forward))
                .map_err(|e| e.to_string()),
        };
        match &result {
            Ok(()) => {
                self.metrics.commits.inc();
                for job in &jobs {
                    match &job.payload {
                        Payload::Logs(records) => self.count_stored(&input_runs(records)),
                        Payload::Blocks(e) => self.count_stored(&e.inputs),
                        Payload::Samples(_) => {
                            self.metrics.stored_samples.inc_by(job.payload.len() as u64);
                        }
                    }
                }
            }
            Err(err) => {
                // A rolled-back transaction may have left ids of series that do not exist.
                self.series_ids.clear();
                tracing::error!(error = %err, records = jobs.iter().map(|j| j.payload.len()).sum::<usize>(), "Store commit failed; the senders get an error.");
                for job in &jobs {
                    self.metrics.reject(
                        job.payload.input(),
                        "store_error",
                        job.payload.len() as u64,
                    );
                }
            }
        }
        for job in jobs {
            let Job {
                payload,
                ack,
                _permit: permit,
            } = job;
            // Queue room comes back after the commit and before the acknowledgement.
            drop(permit);
            if let Some(ack) = ack {
                let _ = ack.send(Committed(result.clone(), payload));
            }
        }
        let depth = self.capacity - self.room.available_permits();
        self.metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        if self.head_rows >= HEAD_MERGE_ROWS
            && let Err(err) = self.merge_head()
        {
            tracing::error!(error = %err, "Merging recent samples failed.");
        }
    }

    /// Counts records as stored, per input.
    fn count_stored(&self, runs: &[(String, u64)]) {
        for (input, n) in runs {
            self.metrics
                .stored
                .get_or_create(&InputLabels {
                    input: input.clone(),
                })
                .inc_by(*n);
        }
    }

    /// Moves the head into `samples` ([`merge_head`]).
    fn merge_head(&mut self) -> Result<(), rusqlite::Error> {
        let Db::Sqlite(conn) = &mut self.db else {
            return Ok(());
        };
        if self.head_rows == 0 {
            return Ok(());
        }
        merge_head(conn)?;
        self.head_rows = 0;
        Ok(())
    }

    /// Keeps, for samples older than `after`, only the last sample of each series per `step`
    /// (the last, not the mean: counters stay monotonic, so `rate` stays right).
    fn downsample(&mut self, after: Duration, step: Duration) -> Result<u64, rusqlite::Error> {
        let (cutoff, step_ms) = downsample_cutoff(after, step);
        let Db::Sqlite(conn) = &self.db else {
            return Ok(0);
        };
        let n = chunks::rewrite_old(conn, cutoff, None, |samples| {
            // Sorted by time: a sample stays if it is the last of its step, or not yet old.
            let mut keep = Vec::with_capacity(samples.len());
            for (i, &(ts, v)) in samples.iter().enumerate() {
                let last_of_step = samples
                    .get(i + 1)
                    .is_none_or(|n| n.0.div_euclid(step_ms) != ts.div_euclid(step_ms));
                if ts >= cutoff || last_of_step {
                    keep.push((ts, v));
                }
            }
            *samples = keep;
        })?;
        Ok(n as u64)
    }

    /// Retention of the PostgreSQL backend: downsampling, max age, then max bytes.
    fn retain_postgres(&self, pg: &postgres::Pg, rt: &tokio::runtime::Handle, r: Retention) {
        let (cutoff, step_ms) = downsample_cutoff(r.downsample_after, r.downsample_step);
        if let Err(err) = rt.block_on(pg.downsample(cutoff, step_ms)) {
            tracing::error!(error = %err, "Metric downsampling failed.");
        }
        match rt.block_on(pg.retain(age_cutoff_ns(r.max_age))) {
            Ok((deleted, dropped, otlp_dropped)) => {
                self.metrics.retention_deleted.inc_by(deleted);
                self.metrics.forward_dropped.inc_by(dropped);
                self.metrics.otlp.dropped.inc_by(otlp_dropped[0]);
                self.metrics.quic.dropped.inc_by(otlp_dropped[1]);
            }
            Err(err) => tracing::error!(error = %err, "Log retention failed."),
        }
        match rt.block_on(pg.retain_bytes(r.max_bytes)) {
            Ok((deleted, dropped, otlp_dropped)) => {
                self.metrics.retention_deleted.inc_by(deleted);
                self.metrics.forward_dropped.inc_by(dropped);
                self.metrics.otlp.dropped.inc_by(otlp_dropped[0]);
                self.metrics.quic.dropped.inc_by(otlp_dropped[1]);
            }
            Err(err) => tracing::error!(error = %err, "Retention by store.max-bytes failed."),
        }
    }

    fn retain(&mut self, max_bytes: u64, max_age: Duration) -> Result<u64, rusqlite::Error> {
        let cutoff = age_cutoff_ns(max_age);
        let Db::Sqlite(conn) = &self.db else {
            return Ok(0);
        };
        let mut deleted = logs::delete_older(conn, cutoff)?;
        let cutoff_ms = cutoff / 1_000_000;
        chunks::rewrite_old(conn, cutoff_ms, Some(cutoff_ms), |samples| {
            samples.retain(|&(ts, _)| ts >= cutoff_ms);
        })?;
        // An uplink outage longer than max-age: the undelivered samples go, counted.
        let dropped = conn.execute(
            "DELETE FROM forward_outbox WHERE ts_ms < ?1",
            params![cutoff_ms],
        )?;
        self.metrics.forward_dropped.inc_by(dropped as u64);
        for (outbox, m) in Outbox::samples(&self.metrics) {
            let dropped = conn.execute(
                &format!("DELETE FROM {} WHERE ts_ms < ?1", outbox.table()),
                params![cutoff_ms],
            )?;
            m.dropped.inc_by(dropped as u64);
        }
        // Samples up to this long after the oldest go per step of the loop below (doubled
        // while a step deletes fewer than a chunk).
        let mut span_ms: i64 = 60_000;
        while used_bytes(conn)? > max_bytes {
            let records = logs::delete_oldest(conn, (RETENTION_CHUNK / 5).unsigned_abs())?;
            let mut n = usize::try_from(records).unwrap_or(usize::MAX);
            let dropped = conn.execute(
                "DELETE FROM forward_outbox WHERE seq IN (SELECT seq FROM forward_outbox ORDER BY seq LIMIT ?1)",
                params![RETENTION_CHUNK],
            )?;
            self.metrics.forward_dropped.inc_by(dropped as u64);
            n += dropped;
            for (outbox, m) in Outbox::samples(&self.metrics) {
                let t = outbox.table();
                let dropped = conn.execute(
                    &format!(
                        "DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t} ORDER BY seq LIMIT ?1)"
                    ),
                    params![RETENTION_CHUNK],
                )?;
                m.dropped.inc_by(dropped as u64);
                n += dropped;
            }
            // Metrics share the bound: the oldest samples go too, whole windows of chunks.
            let gone = chunks::delete_oldest(conn, span_ms)?;
            if gone < usize::try_from(RETENTION_CHUNK * 2).unwrap_or(usize::MAX) {
                span_ms = span_ms.saturating_mul(2);
            }
            n += gone;
            deleted += n as u64;
            if n == 0 {
                break;
            }
            // Deleted index rows only free pages after the index merges its segments.
            logs::optimize(conn)?;
        }
        if deleted > 0 {
            conn.execute_batch("PRAGMA incremental_vacuum;")?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(deleted)
    }
}

/// Cutoff (ms, whole steps) and step (ms) of downsampling.
fn downsample_cutoff(after: Duration, step: Duration) -> (i64, i64) {
    let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
    let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    // Only whole steps before the cutoff: a step still receiving samples is left alone.
    let cutoff = (crate::now_ns() / 1_000_000).saturating_sub(after_ms) / step_ms * step_ms;
    (cutoff, step_ms)
}

/// Receive times before this (ns) are past `max_age`.
fn age_cutoff_ns(max_age: Duration) -> i64 {
    crate::now_ns().saturating_sub(i64::try_from(max_age.as_nanos()).unwrap_or(i64::MAX))
}

/// Database pages in use (not free), in bytes.
fn used_bytes(conn: &Connection) -> Result<u64, rusqlite::Error> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok(u64::try_from((pages - free) * page_size).unwrap_or(0))
}

/// Which outboxes a commit copies into.
#[derive(Debug, Clone, Copy)]
struct Forward {
    remote_write: bool,
    otlp: bool,
    quic: bool,
}

/// Writes the batch in one transaction; returns the samples added to the head (one block
/// in `samples_head_blocks` for the whole batch).
fn insert(
    conn: &mut Connection,
    jobs: &[Job],
    series_ids: &mut SeriesIds,
    forward: Forward,
    log_writer: &mut logs::LogWriter,
) -> Result<u64, rusqlite::Error> {
    let mut head_rows = 0u64;
    let tx = conn.transaction()?;
    {
        let mut find = tx.prepare_cached("SELECT id FROM series WHERE labels = ?1")?;
        let mut add = tx.prepare_cached("INSERT INTO series (name, labels) VALUES (?1, ?2)")?;
        // The batch's samples in arrival order, one block; `merge_head` moves them into
        // `samples`.
        let mut block = Vec::new();
        let mut outbox = tx.prepare_cached(
            "INSERT INTO forward_outbox (series_id, ts_ms, value) VALUES (?1, ?2, ?3)",
        )?;
        let mut otlp_out = tx.prepare_cached(
            "INSERT INTO forward_otlp_samples (series_id, ts_ms, value) VALUES (?1, ?2, ?3)",
        )?;
        let mut quic_out = tx.prepare_cached(
            "INSERT INTO forward_quic_samples (series_id, ts_ms, value) VALUES (?1, ?2, ?3)",
        )?;
        for job in jobs {
            let Payload::Samples(series) = &job.payload else {
                continue;
            };
            for s in series {
                let id = match series_ids.get(&*s.labels) {
                    Some(id) => *id,
                    None => {
                        let key = s.key();
                        let id = match find.query_row(params![key], |r| r.get::<_, i64>(0)) {
                            Ok(id) => id,
                            Err(rusqlite::Error::QueryReturnedNoRows) => {
                                add.execute(params![s.name(), key])?;
                                tx.last_insert_rowid()
                            }
                            Err(e) => return Err(e),
                        };
                        series_ids.insert(s.labels.clone(), id);
                        id
                    }
                };
                block.reserve(s.samples.len() * HEAD_SAMPLE_BYTES);
                for &(ts, v) in &s.samples {
                    pack_sample(&mut block, id, ts, v);
                    head_rows += 1;
                    if forward.remote_write {
                        outbox.execute(params![id, ts, v])?;
                    }
                    if forward.otlp {
                        otlp_out.execute(params![id, ts, v])?;
                    }
                    if forward.quic {
                        quic_out.execute(params![id, ts, v])?;
                    }
                }
            }
        }
        if head_rows > 0 {
            tx.prepare_cached("INSERT INTO samples_head_blocks (samples, data) VALUES (?1, ?2)")?
                .execute(params![i64::try_from(head_rows).unwrap_or(i64::MAX), block])?;
        }
    }
    // Log records in submission order: the writer's own blocks (records of small
    // submissions, together) and the blocks submitters encoded.
    let outboxes = logs::Outboxes {
        otlp: forward.otlp,
        quic: forward.quic,
    };
    let mut next_id = log_writer.next_id;
    let mut pending: Vec<&LogRecord> = Vec::new();
    let compress = |e: snap::Error| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
    for job in jobs {
        match &job.payload {
            Payload::Logs(records) => pending.extend(records),
            Payload::Blocks(e) => {
                for b in log_writer.encode(&pending).map_err(compress)? {
                    logs::insert_block(&tx, &b, &mut next_id, outboxes)?;
                }
                pending.clear();
                for b in &e.blocks {
                    logs::insert_block(&tx, b, &mut next_id, outboxes)?;
                }
            }
            Payload::Samples(_) => {}
        }
    }
    for b in log_writer.encode(&pending).map_err(compress)? {
        logs::insert_block(&tx, &b, &mut next_id, outboxes)?;
    }
    if next_id != log_writer.next_id {
        logs::save_next_id(&tx, next_id)?;
    }
    tx.commit()?;
    log_writer.next_id = next_id;
    Ok(head_rows)
}

/// A log query: every set filter must match.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Inclusive lower bound of the record time (sender's timestamp, else receive time), ns.
    pub start_ns: Option<i64>,
    /// Exclusive upper bound, ns.
    pub end_ns: Option<i64>,
    /// Exact host.
    pub host: Option<String>,
    /// Exact app.
    pub app: Option<String>,
    /// Severity at most this number (0 emergency … 7 debug): "this bad or worse".
    pub max_severity: Option<u8>,
    /// Exact facility.
    pub facility: Option<u8>,
    /// Full-text query over the message text (FTS5 syntax; PostgreSQL: websearch syntax).
    pub text: Option<String>,
    /// Only records that did not parse.
    pub parse_errors_only: bool,
    /// Records with `id` below this (paging, newest first).
    pub before_id: Option<i64>,
    /// Most records returned.
    pub limit: u32,
}

/// A stored record and its ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLog {
    /// Row ID, increasing with insertion.
    pub id: i64,
    /// The record.
    pub record: LogRecord,
}

#[cfg(test)]
mod tests;

impl Store {
    /// Series named `name` that pass `matchers`, with their samples in `[start_ms, end_ms]`.
    pub async fn select_series(
        &self,
        name: String,
        matchers: Vec<crate::promql::Matcher>,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesSamples>, StoreError> {
        let path = match &self.reader {
            Reader::Sqlite(p) => p.clone(),
            Reader::Postgres(pg) => {
                return Ok(pg.select_series(&name, &matchers, start_ms, end_ms).await?);
            }
        };
        tokio::task::spawn_blocking(move || {
            let mut conn = read_only(&path)?;
            // One read transaction: a merge of the head between two reads moves no sample
            // out of sight.
            let tx = conn.transaction()?;
            let mut find = tx.prepare("SELECT id, labels FROM series WHERE name = ?1")?;
            let rows: Vec<(i64, String)> = find
                .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let matched: Vec<(i64, Vec<(String, String)>)> = rows
                .into_iter()
                .map(|(id, labels)| (id, parse_labels(&labels)))
                .filter(|(_, labels)| matchers.iter().all(|m| m.matches(labels)))
                .collect();
            // Recent samples not merged yet: one scan of the (bounded) head per query.
            let mut head: HashMap<i64, Vec<(i64, f64)>> =
                matched.iter().map(|(id, _)| (*id, Vec::new())).collect();
            if !head.is_empty() {
                each_head_sample(&tx, |(id, ts, v)| {
                    if (start_ms..=end_ms).contains(&ts)
                        && let Some(recent) = head.get_mut(&id)
                    {
                        recent.push((ts, v));
                    }
                })?;
            }
            let mut out = Vec::new();
            for (id, labels) in matched {
                let mut samples = chunks::read(&tx, id, start_ms, end_ms)?;
                let recent = head.remove(&id).unwrap_or_default();
                if !recent.is_empty() {
                    // The later write of a time wins, as `INSERT OR REPLACE` would have it.
                    let mut by_ts: std::collections::BTreeMap<i64, f64> =
                        samples.into_iter().collect();
                    by_ts.extend(recent);
                    samples = by_ts.into_iter().collect();
                }
                out.push(SeriesSamples {
                    labels: labels.into(),
                    samples,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

impl Store {
    /// Turns the copy of committed samples into the forwarding outbox on or off.
    pub fn set_forwarding(&self, on: bool) {
        self.forward.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Turns the copy of committed samples and logs into the OTLP outboxes on or off.
    pub fn set_otlp_forwarding(&self, on: bool) {
        self.otlp.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Turns the copy of committed samples and logs into the QUIC outboxes on or off.
    pub fn set_quic_forwarding(&self, on: bool) {
        self.quic.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The oldest undelivered samples of `outbox` (a sample outbox), as [`Store::outbox`].
    pub async fn sample_outbox(
        &self,
        outbox: Outbox,
        limit: u32,
    ) -> Result<Option<(i64, Vec<SeriesSamples>)>, StoreError> {
        let path = match &self.reader {
            Reader::Sqlite(p) => p.clone(),
            Reader::Postgres(pg) => return Ok(group_outbox(pg.outbox(outbox, limit).await?)),
        };
        tokio::task::spawn_blocking(move || {
            let conn = read_only(&path)?;
            let mut stmt = conn.prepare(&format!(
                "SELECT o.seq, s.labels, o.ts_ms, o.value FROM {} AS o
                 JOIN series AS s ON s.id = o.series_id ORDER BY o.seq LIMIT ?1",
                outbox.table()
            ))?;
            let rows: Vec<(i64, String, i64, f64)> = stmt
                .query_map(params![limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            Ok(group_outbox(rows))
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// The oldest undelivered log records of `outbox` (a log outbox; at most `limit` outbox
    /// rows): the highest sequence number, the records still stored, in order, and how many
    /// of the rows point to records retention has deleted meanwhile.
    pub async fn log_outbox(
        &self,
        outbox: Outbox,
        limit: u32,
    ) -> Result<Option<LogBatch>, StoreError> {
        let path = match &self.reader {
            Reader::Sqlite(p) => p.clone(),
            Reader::Postgres(pg) => return Ok(pg.log_outbox(outbox, limit).await?),
        };
        tokio::task::spawn_blocking(move || {
            let mut conn = read_only(&path)?;
            // The outbox rows and the records they name: one snapshot.
            let conn = conn.transaction()?;
            let rows: Vec<(i64, i64)> = conn
                .prepare(&format!(
                    "SELECT seq, log_id FROM {} ORDER BY seq LIMIT ?1",
                    outbox.table()
                ))?
                .query_map(params![limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut batch = LogBatch {
                seq: rows.last().map_or(0, |r| r.0),
                ..LogBatch::default()
            };
            let ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
            for found in logs::records_by_id(&conn, &ids)? {
                match found {
                    Some(log) => batch.logs.push(log),
                    None => batch.missing += 1,
                }
            }
            Ok((batch.seq > 0).then_some(batch))
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Deletes `outbox` up to `seq` (delivered), in the writer.
    pub async fn delivered(&self, outbox: Outbox, seq: i64) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Forwarded(outbox, seq, tx))
            .map_err(|_| StoreError::Closed)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Commit(e)),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// The oldest undelivered samples of the remote_write outbox (at most `limit`), grouped
    /// by series, and the highest sequence number among them.
    pub async fn outbox(
        &self,
        limit: u32,
    ) -> Result<Option<(i64, Vec<SeriesSamples>)>, StoreError> {
        self.sample_outbox(Outbox::RemoteWrite, limit).await
    }

    /// Deletes the remote_write outbox up to `seq` (delivered), in the writer.
    pub async fn outbox_delivered(&self, seq: i64) -> Result<(), StoreError> {
        self.delivered(Outbox::RemoteWrite, seq).await
    }
}

/// Log records read from the OTLP outbox.
#[derive(Debug, Clone, Default)]
pub struct LogBatch {
    /// Highest sequence number read: delivering deletes the outbox up to it.
    pub seq: i64,
    /// The records still stored, in outbox order.
    pub logs: Vec<StoredLog>,
    /// Outbox rows whose record retention deleted before it was forwarded.
    pub missing: u64,
}
