//! The results store: every probe result in SQLite (`results.sqlite` in the state directory,
//! WAL mode) or, for fleets, in PostgreSQL (`store/postgres.rs`), written in batches by one task,
//! pruned to `[store] retention`.
//!
//! [`Store::open`] (SQLite) and [`Store::open_postgres`] create the schema; [`Store::record`]
//! queues a result without blocking the prober; [`Store::recent`] reads them back (gRPC
//! `GetResults`). Both backends keep the same rows and answer the same queries.

mod postgres;

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
pub enum OpenStoreError {
    /// The SQLite file.
    #[error("cannot open results store {}", .path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL server cannot be reached or refused the login.
    #[error("cannot open the PostgreSQL results store")]
    Connect(#[from] rookery_common::postgres::ConnectError),
    /// The schema cannot be created on the PostgreSQL server.
    #[error("cannot create the results schema in PostgreSQL at {url}")]
    Schema {
        /// The server (password removed).
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
}

/// A read or write of the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// Handle to the results store.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    tx: mpsc::Sender<Row>,
    retention: Arc<Mutex<Duration>>,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(Arc<Mutex<Connection>>),
    Postgres(postgres::Pg),
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
        let err = |source| OpenStoreError::Sqlite {
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
        Ok(Self::start(
            Backend::Sqlite(Arc::new(Mutex::new(conn))),
            retention,
            shutdown,
        ))
    }

    /// Connects to the PostgreSQL server of `section`, creates the schema if missing and
    /// starts the writer. Rows are those of this probe (its host name): a fleet shares the
    /// tables, each probe reads and prunes its own results.
    pub async fn open_postgres(
        section: &rookery_common::postgres::PostgresSection,
        retention: Duration,
        shutdown: CancellationToken,
    ) -> Result<Self, OpenStoreError> {
        let pg = postgres::Pg::open(section).await?;
        Ok(Self::start(Backend::Postgres(pg), retention, shutdown))
    }

    /// Opens the backend `store` selects (`dir` is the state directory of SQLite).
    pub async fn open_configured(
        store: &crate::config::StoreSection,
        dir: &Path,
        shutdown: CancellationToken,
    ) -> Result<Self, OpenStoreError> {
        match store.backend {
            crate::config::StoreBackend::Sqlite => Self::open(dir, store.retention, shutdown),
            crate::config::StoreBackend::Postgres => {
                Self::open_postgres(&store.postgres, store.retention, shutdown).await
            }
        }
    }

    fn start(backend: Backend, retention: Duration, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let store = Self {
            backend,
            tx,
            retention: Arc::new(Mutex::new(retention)),
        };
        tokio::spawn(store.clone().writer(rx, shutdown));
        store
    }

    /// What the store is, for status: the SQLite file or the PostgreSQL URL (no password).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite(c) => lock(c)
                .path()
                .map_or_else(|| FILE_NAME.to_owned(), ToOwned::to_owned),
            Backend::Postgres(pg) => pg.describe(),
        }
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
        let conn = match &self.backend {
            Backend::Sqlite(conn) => conn.clone(),
            Backend::Postgres(pg) => {
                if let Err(err) = pg.write(&batch).await {
                    tracing::error!(error = %err, rows = batch.len(), "Cannot write probe results to PostgreSQL, a batch is lost.");
                }
                return;
            }
        };
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
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let retention = *self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let conn = match &self.backend {
            Backend::Sqlite(conn) => conn.clone(),
            Backend::Postgres(pg) => return Ok(pg.prune(cutoff).await?),
        };
        Ok(tokio::task::spawn_blocking(move || {
            let c = lock(&conn);
            c.execute("DELETE FROM tier_events WHERE at_ms < ?1", [cutoff])?;
            c.execute("DELETE FROM results WHERE started_ms < ?1", [cutoff])
        })
        .await
        .unwrap_or(Ok(0))?)
    }

    /// The newest `limit` results, of `target` if given, newest first.
    pub async fn recent(
        &self,
        target: Option<String>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = match &self.backend {
            Backend::Sqlite(conn) => conn.clone(),
            Backend::Postgres(pg) => return Ok(pg.recent(target, limit).await?),
        };
        Ok(tokio::task::spawn_blocking(move || {
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
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
        .unwrap_or_else(|_| Ok(Vec::new()))?)
    }

    /// Records a tier change now (rare: written directly, not batched), and prunes old ones
    /// with the results.
    pub async fn record_tier_event(&self, mut event: TierEvent) -> Result<(), StoreError> {
        if event.at_ms == 0 {
            event.at_ms = now_ms();
        }
        let conn = match &self.backend {
            Backend::Sqlite(conn) => conn.clone(),
            Backend::Postgres(pg) => return Ok(pg.record_tier_event(&event).await?),
        };
        Ok(tokio::task::spawn_blocking(move || {
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
        .unwrap_or(Ok(()))?)
    }

    /// The newest `limit` tier changes, of `target` if given, newest first.
    pub async fn tier_events(
        &self,
        target: Option<String>,
        limit: usize,
    ) -> Result<Vec<TierEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = match &self.backend {
            Backend::Sqlite(conn) => conn.clone(),
            Backend::Postgres(pg) => return Ok(pg.tier_events(target, limit).await?),
        };
        Ok(tokio::task::spawn_blocking(move || {
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
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
        .unwrap_or_else(|_| Ok(Vec::new()))?)
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

    /// The same rows, order, limits and retention, whichever the backend.
    async fn check_semantics(store: &Store) {
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
        store
            .record_tier_event(TierEvent {
                target: "b".to_owned(),
                at_ms: 0,
                from_tier: 2,
                to_tier: 3,
                reason: "critical".to_owned(),
                diagnostics: "hop 3 lost 50%".to_owned(),
            })
            .await
            .unwrap();
        let a = store.recent(Some("a".to_owned()), 10).await.unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].started_ms, now - 1000, "newest first");
        assert_eq!(a[0], row("a", now - 1000), "every field round-trips");
        assert_eq!(a[0].facts.get("ip").map(String::as_str), Some("127.0.0.1"));
        assert_eq!(a[0].phase_list(), vec![("connect".to_owned(), 0.001)]);
        assert_eq!(store.recent(None, 10).await.unwrap().len(), 3);
        assert_eq!(store.recent(None, 1).await.unwrap()[0].target, "b");
        let b = store.tier_events(Some("b".to_owned()), 10).await.unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].from_tier, b[0].to_tier), (2, 3));
        assert_eq!(b[0].diagnostics, "hop 3 lost 50%");
        assert!(b[0].at_ms >= now, "0 means now");
        assert_eq!(store.tier_events(None, 10).await.unwrap().len(), 2);
        assert_eq!(
            store.prune().await.unwrap(),
            1,
            "only the 2 h old row is past 1 h"
        );
        assert_eq!(store.recent(None, 10).await.unwrap().len(), 2);
        let events = store.tier_events(None, 10).await.unwrap();
        assert_eq!(events.len(), 1, "the old tier change went with it");
        assert_eq!(events[0].target, "b");
        store.set_retention(Duration::from_secs(60));
        assert_eq!(
            store.prune().await.unwrap(),
            0,
            "rows of the last minute stay"
        );
    }

    #[tokio::test]
    async fn rows_round_trip_in_wal_mode_and_retention_deletes_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let store = Store::open(dir.path(), Duration::from_secs(3600), stop.clone()).unwrap();
        let Backend::Sqlite(conn) = &store.backend else {
            panic!("SQLite backend expected");
        };
        let mode: String = lock(conn)
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        check_semantics(&store).await;
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_has_the_same_semantics() {
        let pg = tokio::task::spawn_blocking(|| rookery_pgtest::PgServer::start().unwrap())
            .await
            .unwrap();
        let section = rookery_common::postgres::PostgresSection {
            url: format!("{}?sslmode=disable", pg.url()),
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let store = Store::open_postgres(&section, Duration::from_secs(3600), stop.clone())
            .await
            .unwrap();
        assert!(
            store.describe().contains(":***@127.0.0.1:"),
            "{}",
            store.describe()
        );
        check_semantics(&store).await;
        // Another probe's rows in the shared table are neither read nor pruned.
        pg.psql(
            "INSERT INTO probed_results (probe, target, module, started_ms, success, reason, detail, total_s, phases) \
             VALUES ('other-probe', 'a', 'm', 1, true, 'ok', '', 0.1, '')",
        )
        .unwrap();
        assert!(
            store
                .recent(None, 10)
                .await
                .unwrap()
                .iter()
                .all(|r| r.started_ms > 1)
        );
        assert_eq!(store.prune().await.unwrap(), 0);
        assert_eq!(
            pg.psql("SELECT count(*) FROM probed_results WHERE probe = 'other-probe'")
                .unwrap(),
            "1"
        );
        // A second open (a restart, or another probe) finds the schema in place.
        Store::open_postgres(&section, Duration::from_secs(3600), stop.clone())
            .await
            .unwrap();
        stop.cancel();
    }
}
