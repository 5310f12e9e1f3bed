//! Sessions: started over gRPC ([`crate::grpc`]), run by [`crate::sender`] (STAMP) or
//! [`crate::generator`] (raw), bounded by
//! `[sessions]` (max packets/s per session, max concurrent sessions) and stored in SQLite
//! (`<state>/sessions.sqlite`, the newest `[sessions].max-stored` kept). A running session's
//! live statistics are in memory; its row is written when it starts and when it ends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{GeneratorSection, SessionsSection};
use crate::measure::Stats;
use crate::sender::{Kind, SessionSpec};

/// File name of the session store inside the state directory.
pub const FILE_NAME: &str = "sessions.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    source TEXT NOT NULL,
    dscp INTEGER NOT NULL,
    packet_size INTEGER NOT NULL,
    rate_pps INTEGER NOT NULL,
    count INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    ssid INTEGER NOT NULL,
    state TEXT NOT NULL,
    error TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    stats TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'stamp'
);";

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Sending or waiting for late replies.
    Running,
    /// Sent everything and waited for the replies.
    Done,
    /// Stopped by StopSession or daemon shutdown.
    Stopped,
    /// Could not run (e.g. the socket could not be opened).
    Failed,
}

impl State {
    /// The name used in the store and over gRPC.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "done" => Self::Done,
            "stopped" => Self::Stopped,
            _ => Self::Failed,
        }
    }
}

/// One session as stored or running.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Session id.
    pub id: u64,
    /// What it sends.
    pub spec: SessionSpec,
    /// Its state.
    pub state: State,
    /// Why it failed (empty otherwise).
    pub error: String,
    /// Start, Unix milliseconds.
    pub started_ms: i64,
    /// End, Unix milliseconds; 0 while running.
    pub finished_ms: i64,
    /// Statistics (live while running, final afterwards).
    pub stats: Stats,
}

/// Why a session could not be started or found.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request is invalid; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// Too many sessions are running.
    #[error("{0} sessions are running, the most [sessions].max-concurrent allows")]
    Busy(u32),
    /// No session with this id.
    #[error("no session {0}")]
    NotFound(u64),
    /// The store failed.
    #[error("session store")]
    Store(#[from] rusqlite::Error),
}

/// Cannot open the store.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the session store {path}")]
pub struct OpenError {
    path: PathBuf,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

struct Live {
    record: Record,
    progress: watch::Receiver<Stats>,
    cancel: CancellationToken,
}

/// All sessions: running ones in memory, every one in the store.
pub struct Sessions {
    conn: Mutex<Connection>,
    limits: Mutex<SessionsSection>,
    generator: Mutex<GeneratorSection>,
    live: Mutex<HashMap<u64, Live>>,
    shutdown: CancellationToken,
}

fn now_ms() -> i64 {
    i64::try_from(crate::wire::utc_now_ns() / 1_000_000).unwrap_or(i64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sessions {
    /// Opens (or creates) the store in `dir`; sessions left "running" by a previous process are
    /// marked failed. Sessions stop when `shutdown` fires.
    pub fn open(
        dir: &Path,
        limits: SessionsSection,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, OpenError> {
        let path = dir.join(FILE_NAME);
        let err = |source: Box<dyn std::error::Error + Send + Sync>| OpenError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.into()))?;
        let conn = Connection::open(&path).map_err(|e| err(e.into()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err(e.into()))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| err(e.into()))?;
        conn.execute_batch(SCHEMA).map_err(|e| err(e.into()))?;
        add_kind_column(&conn).map_err(|e| err(e.into()))?;
        conn.execute(
            "UPDATE sessions SET state = 'failed', error = 'packetd stopped while the session ran', finished_ms = ?1 WHERE state = 'running'",
            params![now_ms()],
        )
        .map_err(|e| err(e.into()))?;
        Ok(Arc::new(Self {
            conn: Mutex::new(conn),
            limits: Mutex::new(limits),
            generator: Mutex::new(GeneratorSection::default()),
            live: Mutex::new(HashMap::new()),
            shutdown,
        }))
    }

    /// New limits (config reload); running sessions keep their rate.
    pub fn set_limits(&self, limits: SessionsSection) {
        *lock(&self.limits) = limits;
    }

    /// How raw sessions started from now on send (`[generator]`; running ones keep theirs).
    pub fn set_generator(&self, generator: GeneratorSection) {
        *lock(&self.generator) = generator;
    }

    /// Number of running sessions.
    pub fn running(&self) -> usize {
        lock(&self.live).len()
    }

    /// Validates `spec` against the limits and starts it.
    pub fn start(self: &Arc<Self>, spec: SessionSpec) -> Result<Record, SessionError> {
        let limits = lock(&self.limits).clone();
        let problems = spec.problems(limits.max_pps);
        if !problems.is_empty() {
            return Err(SessionError::Invalid(problems.join("; ")));
        }
        let mut live = lock(&self.live);
        if live.len() >= usize::try_from(limits.max_concurrent).unwrap_or(usize::MAX) {
            return Err(SessionError::Busy(limits.max_concurrent));
        }
        let started_ms = now_ms();
        let id = {
            let conn = lock(&self.conn);
            conn.execute(
                "INSERT INTO sessions (destination, source, dscp, packet_size, rate_pps, count, duration_ms, ssid, state, error, started_ms, finished_ms, stats, kind)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', '', ?9, 0, '{}', ?10)",
                params![
                    spec.destination.to_string(),
                    spec.source.map(|s| s.to_string()).unwrap_or_default(),
                    spec.dscp,
                    spec.packet_size,
                    spec.rate_pps,
                    i64::try_from(spec.count).unwrap_or(i64::MAX),
                    i64::try_from(spec.duration.as_millis()).unwrap_or(i64::MAX),
                    spec.ssid,
                    started_ms,
                    spec.kind.as_str()
                ],
            )?;
            let id = u64::try_from(conn.last_insert_rowid()).unwrap_or(0);
            let keep = i64::from(limits.max_stored);
            conn.execute(
                "DELETE FROM sessions WHERE id <= ?1 AND state != 'running'",
                params![i64::try_from(id).unwrap_or(0) - keep],
            )?;
            id
        };
        let record = Record {
            id,
            spec: spec.clone(),
            state: State::Running,
            error: String::new(),
            started_ms,
            finished_ms: 0,
            stats: Stats::default(),
        };
        let (tx, rx) = watch::channel(Stats::default());
        let cancel = self.shutdown.child_token();
        live.insert(
            id,
            Live {
                record: record.clone(),
                progress: rx,
                cancel: cancel.clone(),
            },
        );
        drop(live);
        crate::events::session_started(id, &spec);
        let this = self.clone();
        let generator = lock(&self.generator).clone();
        tokio::spawn(async move {
            let (result, tx) = match spec.kind {
                Kind::Stamp => (crate::sender::run(&spec, &tx, &cancel).await, tx),
                Kind::Raw => {
                    let (s, c) = (spec.clone(), cancel.clone());
                    tokio::task::spawn_blocking(move || {
                        (crate::generator::run(&s, &generator, &tx, &c), tx)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        (
                            Err(std::io::Error::other(format!("generator thread: {e}"))),
                            watch::channel(Stats::default()).0,
                        )
                    })
                }
            };
            let (state, error, stats) = match result {
                Ok(stats) if cancel.is_cancelled() => (State::Stopped, String::new(), stats),
                Ok(stats) => (State::Done, String::new(), stats),
                Err(e) => (
                    State::Failed,
                    format!("cannot send to {}: {e}", spec.destination),
                    tx.borrow().clone(),
                ),
            };
            if let Err(e) = this.finish(id, state, &error, &stats) {
                crate::events::session_store_failed(id, &e);
            }
            lock(&this.live).remove(&id);
            crate::events::session_ended(id, state.as_str(), &stats);
            drop(tx);
        });
        Ok(record)
    }

    fn finish(&self, id: u64, state: State, error: &str, stats: &Stats) -> rusqlite::Result<()> {
        let json = serde_json::to_string(stats).unwrap_or_else(|_| "{}".to_owned());
        lock(&self.conn).execute(
            "UPDATE sessions SET state = ?1, error = ?2, finished_ms = ?3, stats = ?4 WHERE id = ?5",
            params![
                state.as_str(),
                error,
                now_ms(),
                json,
                i64::try_from(id).unwrap_or(-1)
            ],
        )?;
        Ok(())
    }

    /// The session now (live statistics while running).
    pub fn get(&self, id: u64) -> Result<Record, SessionError> {
        if let Some(l) = lock(&self.live).get(&id) {
            let mut r = l.record.clone();
            r.stats = l.progress.borrow().clone();
            return Ok(r);
        }
        let conn = lock(&self.conn);
        conn.query_row(
            &format!("{SELECT} WHERE id = ?1"),
            params![i64::try_from(id).unwrap_or(-1)],
            row_to_record,
        )
        .optional()?
        .ok_or(SessionError::NotFound(id))
    }

    /// The newest `limit` sessions, newest first.
    pub fn list(&self, limit: u32) -> Result<Vec<Record>, SessionError> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY id DESC LIMIT ?1"))?;
        let rows = stmt.query_map(params![limit], row_to_record)?;
        let mut out = Vec::new();
        for r in rows {
            let mut r = r?;
            if let Some(l) = lock(&self.live).get(&r.id) {
                r.stats = l.progress.borrow().clone();
            }
            out.push(r);
        }
        Ok(out)
    }

    /// Stops a running session and waits (up to 5 s) until its final row is written.
    pub async fn stop(&self, id: u64) -> Result<Record, SessionError> {
        let progress = lock(&self.live).get(&id).map(|l| {
            l.cancel.cancel();
            l.progress.clone()
        });
        if let Some(mut p) = progress {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while p.changed().await.is_ok() {}
            })
            .await;
        }
        self.get(id)
    }

    /// A receiver of a running session's progress (`None` when it is not running).
    pub fn watch(&self, id: u64) -> Option<watch::Receiver<Stats>> {
        lock(&self.live).get(&id).map(|l| l.progress.clone())
    }
}

const SELECT: &str = "SELECT id, destination, source, dscp, packet_size, rate_pps, count, duration_ms, ssid, state, error, started_ms, finished_ms, stats, kind FROM sessions";

/// Stores written before raw sessions existed lack the `kind` column: add it (as STAMP).
fn add_kind_column(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('sessions')")?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if !names.iter().any(|n| n == "kind") {
        conn.execute(
            "ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'stamp'",
            [],
        )?;
    }
    Ok(())
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("bad {what} in the session store").into(),
        )
    };
    let destination: SocketAddr = row
        .get::<_, String>(1)?
        .parse()
        .map_err(|_| bad(1, "destination"))?;
    let source: String = row.get(2)?;
    let source: Option<IpAddr> = if source.is_empty() {
        None
    } else {
        Some(source.parse().map_err(|_| bad(2, "source"))?)
    };
    let stats: String = row.get(13)?;
    Ok(Record {
        id: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        spec: SessionSpec {
            kind: Kind::parse(&row.get::<_, String>(14)?),
            destination,
            source,
            dscp: row.get(3)?,
            packet_size: row.get(4)?,
            rate_pps: row.get(5)?,
            count: u64::try_from(row.get::<_, i64>(6)?).unwrap_or(0),
            duration: Duration::from_millis(u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0)),
            ssid: row.get(8)?,
        },
        state: State::parse(&row.get::<_, String>(9)?),
        error: row.get(10)?,
        started_ms: row.get(11)?,
        finished_ms: row.get(12)?,
        stats: serde_json::from_str(&stats).unwrap_or_default(),
    })
}
