//! The results store: every probe result in SQLite (`results.sqlite` in the state directory,
//! WAL mode), written in batches by one task, pruned to `[store] retention`.
//!
//! [`Store::open`] creates the schema; [`Store::record`] queues a result without blocking the
//! prober; [`Store::recent`] reads them back (gRPC `GetResults`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::probe::Outcome;

/// File name of the database in the state directory.
pub const FILE_NAME: &str = "results.sqlite";
/// Results queued for writing before new ones are dropped (and counted): a stalled disk
/// must not grow memory without bound.
const QUEUE: usize = 16_384;
/// Rows per write transaction.
const BATCH: usize = 512;
/// How often old rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One stored result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Target name (or `adhoc:<address>` for ad-hoc probes).
    pub target: String,
    /// Module name.
    pub module: String,
    /// Start time, Unix milliseconds.
    pub started_ms: i64,
    /// Success.
    pub success: bool,
    /// `ok` or the failure reason code.
    pub reason: String,
    /// Failure text.
    pub detail: String,
    /// Whole probe, seconds.
    pub total_s: f64,
    /// `phase=seconds` pairs, comma separated.
    pub phases: String,
    /// What the probe learned ([`Outcome::fact_map`]).
    pub facts: BTreeMap<String, String>,
}

impl Row {
    /// The row of `outcome`.
    pub fn from_outcome(target: &str, module: &str, outcome: &Outcome) -> Self {
        let started_ms = outcome
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            target: target.to_owned(),
            module: module.to_owned(),
            started_ms,
            success: outcome.success,
            reason: outcome.reason().to_owned(),
            detail: outcome
                .failure
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            total_s: outcome.total.as_secs_f64(),
            phases: outcome
                .phases
                .iter()
                .map(|(p, d)| format!("{}={:.6}", p.as_str(), d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(","),
            facts: outcome.fact_map(),
        }
    }

    /// The phases as `(phase, seconds)`.
    pub fn phase_list(&self) -> Vec<(String, f64)> {
        self.phases
            .split(',')
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }
}

/// Facts as stored: one `key=value` per line (values never hold a newline).
fn encode_facts(facts: &BTreeMap<String, String>) -> String {
    facts
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('\n', " ")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_facts(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open results store {}", .path.display())]
pub struct OpenStoreError {
    /// The database file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: rusqlite::Error,
}

/// Handle to the results store.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    tx: mpsc::Sender<Row>,
    retention: Arc<Mutex<Duration>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    module TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    success INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    total_s REAL NOT NULL,
    phases TEXT NOT NULL,
    facts TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS results_target_time ON results (target, started_ms);
CREATE INDEX IF NOT EXISTS results_time ON results (started_ms);
CREATE TABLE IF NOT EXISTS tier_events (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    from_tier INTEGER NOT NULL,
    to_tier INTEGER NOT NULL,
    reason TEXT NOT NULL,
    diagnostics TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tier_events_target_time ON tier_events (target, at_ms);
";

/// A recorded change of tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierEvent {
    /// Target name.
    pub target: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Tier before.
    pub from_tier: u8,
    /// Tier after.
    pub to_tier: u8,
    /// Why.
    pub reason: String,
    /// What the diagnostics of the new tier found (empty on the way back).
    pub diagnostics: String,
}

fn lock(c: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Opens (or creates) `dir/results.sqlite` in WAL mode and starts the writer, which
    /// stops when `shutdown` fires (after writing what is queued).
    pub fn open(
        dir: &Path,
        retention: Duration,
        shutdown: CancellationToken,
    ) -> Result<Self, OpenStoreError> {
        let path = dir.join(FILE_NAME);
        let err = |source| OpenStoreError {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let conn = Arc::new(Mutex::new(conn));
        let (tx, rx) = mpsc::channel(QUEUE);
        let store = Self {
            conn,
            tx,
            retention: Arc::new(Mutex::new(retention)),
        };
        tokio::spawn(store.clone().writer(rx, shutdown));
        Ok(store)
    }

    /// Changes the retention (config reload).
    pub fn set_retention(&self, retention: Duration) {
        *self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = retention;
    }

    /// Queues `row`; returns false if the queue is full (the row is dropped).
    pub fn record(&self, row: Row) -> bool {
        self.tx.try_send(row).is_ok()
    }

    async fn writer(self, mut rx: mpsc::Receiver<Row>, shutdown: CancellationToken) {
        let mut last_prune = tokio::time::Instant::now();
        loop {
            let mut batch = Vec::with_capacity(BATCH);
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 { break; }
                }
                () = shutdown.cancelled() => {
                    rx.close();
                    while rx.recv_many(&mut batch, BATCH).await > 0 {
                        self.write(std::mem::take(&mut batch)).await;
                    }
                    break;
                }
            }
            self.write(batch).await;
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                if let Err(err) = self.prune().await {
                    tracing::warn!(error = %err, "Cannot prune old results.");
                }
            }
        }
    }

    async fn write(&self, batch: Vec<Row>) {
        let conn = self.conn.clone();
        let result = tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
            let mut c = lock(&conn);
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO results (target, module, started_ms, success, reason, detail, total_s, phases, facts)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for r in &batch {
                    stmt.execute(params![
                        r.target, r.module, r.started_ms, r.success, r.reason, r.detail, r.total_s,
                        r.phases,
                        encode_facts(&r.facts)
                    ])?;
                }
            }
            tx.commit()
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(error = %err, "Cannot write probe results, a batch is lost.")
            }
            Err(err) => tracing::error!(error = %err, "Result writer failed, a batch is lost."),
        }
    }

    /// Deletes rows older than the retention; returns how many.
    pub async fn prune(&self) -> rusqlite::Result<usize> {
        let retention = *self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let c = lock(&conn);
            c.execute("DELETE FROM tier_events WHERE at_ms < ?1", [cutoff])?;
            c.execute("DELETE FROM results WHERE started_ms < ?1", [cutoff])
        })
        .await
        .unwrap_or(Ok(0))
    }

    /// The newest `limit` results, of `target` if given, newest first.
    pub async fn recent(&self, target: Option<String>, limit: usize) -> rusqlite::Result<Vec<Row>> {
        let conn = self.conn.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        tokio::task::spawn_blocking(move || {
            let c = lock(&conn);
            let mut stmt = c.prepare_cached(
                "SELECT target, module, started_ms, success, reason, detail, total_s, phases, facts
                 FROM results WHERE (?1 IS NULL OR target = ?1)
                 ORDER BY started_ms DESC, id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![target, limit], |r| {
                Ok(Row {
                    target: r.get(0)?,
                    module: r.get(1)?,
                    started_ms: r.get(2)?,
                    success: r.get(3)?,
                    reason: r.get(4)?,
                    detail: r.get(5)?,
                    total_s: r.get(6)?,
                    phases: r.get(7)?,
                    facts: decode_facts(&r.get::<_, String>(8)?),
                })
            })?;
            rows.collect()
        })
        .await
        .unwrap_or_else(|_| Ok(Vec::new()))
    }

    /// Records a tier change now (rare: written directly, not batched), and prunes old ones
    /// with the results.
    pub async fn record_tier_event(&self, mut event: TierEvent) -> rusqlite::Result<()> {
        if event.at_ms == 0 {
            event.at_ms = now_ms();
        }
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            lock(&conn)
                .execute(
                    "INSERT INTO tier_events (target, at_ms, from_tier, to_tier, reason, diagnostics)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        event.target,
                        event.at_ms,
                        event.from_tier,
                        event.to_tier,
                        event.reason,
                        event.diagnostics
                    ],
                )
                .map(|_| ())
        })
        .await
        .unwrap_or(Ok(()))
    }

    /// The newest `limit` tier changes, of `target` if given, newest first.
    pub async fn tier_events(
        &self,
        target: Option<String>,
        limit: usize,
    ) -> rusqlite::Result<Vec<TierEvent>> {
        let conn = self.conn.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        tokio::task::spawn_blocking(move || {
            let c = lock(&conn);
            let mut stmt = c.prepare_cached(
                "SELECT target, at_ms, from_tier, to_tier, reason, diagnostics FROM tier_events
                 WHERE (?1 IS NULL OR target = ?1) ORDER BY at_ms DESC, id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![target, limit], |r| {
                Ok(TierEvent {
                    target: r.get(0)?,
                    at_ms: r.get(1)?,
                    from_tier: r.get(2)?,
                    to_tier: r.get(3)?,
                    reason: r.get(4)?,
                    diagnostics: r.get(5)?,
                })
            })?;
            rows.collect()
        })
        .await
        .unwrap_or_else(|_| Ok(Vec::new()))
    }

    /// Inserts `rows` now (tests and imports; the prober goes through [`Store::record`]).
    pub async fn insert_now(&self, rows: Vec<Row>) {
        self.write(rows).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn row(target: &str, started_ms: i64) -> Row {
        Row {
            target: target.to_owned(),
            module: "m".to_owned(),
            started_ms,
            success: true,
            reason: "ok".to_owned(),
            detail: String::new(),
            total_s: 0.01,
            phases: "connect=0.001000".to_owned(),
            facts: BTreeMap::from([("ip".to_owned(), "127.0.0.1".to_owned())]),
        }
    }

    #[tokio::test]
    async fn rows_round_trip_in_wal_mode_and_retention_deletes_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let store = Store::open(dir.path(), Duration::from_secs(3600), stop.clone()).unwrap();
        let mode: String = lock(&store.conn)
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let now = now_ms();
        store
            .insert_now(vec![
                row("a", now - 2 * 3600 * 1000),
                row("a", now - 1000),
                row("b", now),
            ])
            .await;
        store
            .record_tier_event(TierEvent {
                target: "a".to_owned(),
                at_ms: now - 2 * 3600 * 1000,
                from_tier: 1,
                to_tier: 2,
                reason: "old".to_owned(),
                diagnostics: String::new(),
            })
            .await
            .unwrap();
        let a = store.recent(Some("a".to_owned()), 10).await.unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].started_ms, now - 1000, "newest first");
        assert_eq!(a[0].facts.get("ip").map(String::as_str), Some("127.0.0.1"));
        assert_eq!(a[0].phase_list(), vec![("connect".to_owned(), 0.001)]);
        assert_eq!(store.recent(None, 10).await.unwrap().len(), 3);
        assert_eq!(
            store.prune().await.unwrap(),
            1,
            "only the 2 h old row is past 1 h"
        );
        assert_eq!(store.recent(None, 10).await.unwrap().len(), 2);
        assert!(store.tier_events(None, 10).await.unwrap().is_empty());
        store.set_retention(Duration::from_secs(60));
        assert_eq!(
            store.prune().await.unwrap(),
            0,
            "rows of the last minute stay"
        );
        stop.cancel();
    }
}
