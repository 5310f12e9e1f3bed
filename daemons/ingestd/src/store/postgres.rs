//! The PostgreSQL backend of the store (fleets): the same tables as the SQLite file, named
//! `ingestd_*`, the same writer (one thread, one transaction per batch, acknowledgements after
//! the commit) and the same queries. Full text is PostgreSQL's: a GIN index over
//! `to_tsvector('simple', message)` queried with `websearch_to_tsquery` (words are ANDed,
//! `"a phrase"`, `or`, `-word`), like FTS5's unicode61 tokenizer without stemming.
//!
//! Several ingestd instances may share the database: logs, series and samples are shared
//! (a central store), while each instance's forwarding outbox is its own (`instance` = host
//! name). Retention by age, downsampling and `max-bytes` run over the shared tables: the
//! size is `pg_total_relation_size` of the `ingestd_*` tables (indexes and TOAST included);
//! above the bound the oldest rows go in batches and `VACUUM FULL` returns the space.

use std::collections::HashMap;

use rookery_common::postgres::PostgresSection;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row as _};

use super::{
    Forward, Job, LogBatch, LogQuery, Outbox, Payload, SeriesSamples, StoreError, StoredLog,
    parse_labels,
};
use crate::record::LogRecord;

const SCHEMA: &[&str] = &[
    // Several instances may start at once against an empty database: one creates the schema.
    "SELECT pg_advisory_xact_lock(hashtext('rookery-ingestd-schema'))",
    "CREATE TABLE IF NOT EXISTS ingestd_logs (
        id BIGSERIAL PRIMARY KEY,
        received_ns BIGINT NOT NULL,
        timestamp_ns BIGINT,
        ts_ns BIGINT NOT NULL,
        host TEXT NOT NULL,
        app TEXT NOT NULL,
        procid TEXT NOT NULL,
        msgid TEXT NOT NULL,
        facility SMALLINT,
        severity SMALLINT,
        message TEXT NOT NULL,
        structured_data TEXT NOT NULL,
        format TEXT NOT NULL,
        parse_error TEXT,
        input TEXT NOT NULL,
        peer TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ingestd_logs_ts ON ingestd_logs (ts_ns)",
    "CREATE INDEX IF NOT EXISTS ingestd_logs_received ON ingestd_logs (received_ns)",
    "CREATE INDEX IF NOT EXISTS ingestd_logs_host_ts ON ingestd_logs (host, ts_ns)",
    "CREATE INDEX IF NOT EXISTS ingestd_logs_app_ts ON ingestd_logs (app, ts_ns)",
    "CREATE INDEX IF NOT EXISTS ingestd_logs_fts ON ingestd_logs USING GIN (to_tsvector('simple', message))",
    "CREATE TABLE IF NOT EXISTS ingestd_series (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        labels TEXT NOT NULL UNIQUE
    )",
    "CREATE INDEX IF NOT EXISTS ingestd_series_name ON ingestd_series (name)",
    "CREATE TABLE IF NOT EXISTS ingestd_samples (
        series_id BIGINT NOT NULL,
        ts_ms BIGINT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (series_id, ts_ms)
    )",
    "CREATE INDEX IF NOT EXISTS ingestd_samples_ts ON ingestd_samples (ts_ms)",
    "CREATE TABLE IF NOT EXISTS ingestd_forward_outbox (
        seq BIGSERIAL PRIMARY KEY,
        instance TEXT NOT NULL,
        series_id BIGINT NOT NULL,
        ts_ms BIGINT NOT NULL,
        value DOUBLE PRECISION NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ingestd_forward_outbox_instance ON ingestd_forward_outbox (instance, seq)",
    "CREATE TABLE IF NOT EXISTS ingestd_forward_otlp_samples (
        seq BIGSERIAL PRIMARY KEY,
        instance TEXT NOT NULL,
        series_id BIGINT NOT NULL,
        ts_ms BIGINT NOT NULL,
        value DOUBLE PRECISION NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ingestd_forward_otlp_samples_instance ON ingestd_forward_otlp_samples (instance, seq)",
    "CREATE TABLE IF NOT EXISTS ingestd_forward_otlp_logs (
        seq BIGSERIAL PRIMARY KEY,
        instance TEXT NOT NULL,
        log_id BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ingestd_forward_otlp_logs_instance ON ingestd_forward_otlp_logs (instance, seq)",
    "CREATE TABLE IF NOT EXISTS ingestd_forward_quic_samples (
        seq BIGSERIAL PRIMARY KEY,
        instance TEXT NOT NULL,
        series_id BIGINT NOT NULL,
        ts_ms BIGINT NOT NULL,
        value DOUBLE PRECISION NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ingestd_forward_quic_samples_instance ON ingestd_forward_quic_samples (instance, seq)",
    "CREATE TABLE IF NOT EXISTS ingestd_forward_quic_logs (
        seq BIGSERIAL PRIMARY KEY,
        instance TEXT NOT NULL,
        log_id BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ingestd_forward_quic_logs_instance ON ingestd_forward_quic_logs (instance, seq)",
];

/// ingestd's tables: what `max-bytes` bounds.
const TABLES: &[&str] = &[
    "ingestd_logs",
    "ingestd_series",
    "ingestd_samples",
    "ingestd_forward_outbox",
    "ingestd_forward_otlp_samples",
    "ingestd_forward_otlp_logs",
    "ingestd_forward_quic_samples",
    "ingestd_forward_quic_logs",
];

/// The pool, and this instance's name in the shared outbox.
#[derive(Debug, Clone)]
pub(super) struct Pg {
    pub(super) pool: PgPool,
    instance: String,
    url: String,
}

fn small(v: Option<u8>) -> Option<i16> {
    v.map(i16::from)
}

fn tiny(v: Option<i16>) -> Option<u8> {
    v.and_then(|v| u8::try_from(v).ok())
}

impl Pg {
    /// Connects and creates the schema if missing.
    pub(super) async fn open(section: &PostgresSection) -> Result<Self, super::OpenStoreError> {
        let pool = section.connect().await?;
        let url = section.display_url();
        let schema = async {
            let mut tx = pool.begin().await?;
            for stmt in SCHEMA {
                sqlx::query(*stmt).execute(&mut *tx).await?;
            }
            tx.commit().await
        };
        schema
            .await
            .map_err(|source| super::OpenStoreError::Schema {
                url: url.clone(),
                source,
            })?;
        Ok(Self {
            pool,
            instance: super::host_name(),
            url,
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("{} (instance {})", self.url, self.instance)
    }

    /// Writes every job of the batch in one transaction.
    pub(super) async fn insert(
        &self,
        jobs: &[Job],
        series_ids: &mut super::SeriesIds,
        forward: Forward,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Samples: one row per (series, timestamp), the last value wins (INSERT OR REPLACE).
        let mut latest: HashMap<(i64, i64), f64> = HashMap::new();
        let mut order: Vec<(i64, i64)> = Vec::new();
        let (mut o_ids, mut o_ts, mut o_vals) = (Vec::new(), Vec::new(), Vec::new());
        for job in jobs {
            let Payload::Samples(series) = &job.payload else {
                continue;
            };
            for s in series {
                let id = match series_ids.get(&*s.labels) {
                    Some(id) => *id,
                    None => {
                        let key = s.key();
                        let id: i64 = sqlx::query(
                            "INSERT INTO ingestd_series (name, labels) VALUES ($1, $2)
                             ON CONFLICT (labels) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                        )
                        .bind(s.name())
                        .bind(&key)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get(0)?;
                        series_ids.insert(s.labels.clone(), id);
                        id
                    }
                };
                for (ts, v) in &s.samples {
                    if latest.insert((id, *ts), *v).is_none() {
                        order.push((id, *ts));
                    }
                    if forward.remote_write || forward.otlp || forward.quic {
                        o_ids.push(id);
                        o_ts.push(*ts);
                        o_vals.push(*v);
                    }
                }
            }
        }
        if !order.is_empty() {
            let ids: Vec<i64> = order.iter().map(|k| k.0).collect();
            let ts: Vec<i64> = order.iter().map(|k| k.1).collect();
            let vals: Vec<f64> = order.iter().map(|k| latest[k]).collect();
            sqlx::query(
                "INSERT INTO ingestd_samples (series_id, ts_ms, value)
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::float8[])
                 ON CONFLICT (series_id, ts_ms) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(&ids)
            .bind(&ts)
            .bind(&vals)
            .execute(&mut *tx)
            .await?;
        }
        let outboxes = [
            (forward.remote_write, "ingestd_forward_outbox"),
            (forward.otlp, "ingestd_forward_otlp_samples"),
            (forward.quic, "ingestd_forward_quic_samples"),
        ];
        for (_, table) in outboxes.iter().filter(|o| o.0 && !o_ids.is_empty()) {
            // The table names are the constants above.
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {table} (instance, series_id, ts_ms, value)
                 SELECT $1, i, t, v FROM UNNEST($2::int8[], $3::int8[], $4::float8[])
                      WITH ORDINALITY AS u(i, t, v, n) ORDER BY n"
            )))
            .bind(&self.instance)
            .bind(&o_ids)
            .bind(&o_ts)
            .bind(&o_vals)
            .execute(&mut *tx)
            .await?;
        }
        let logs: Vec<&LogRecord> = jobs
            .iter()
            .filter_map(|j| match &j.payload {
                Payload::Logs(r) => Some(r),
                // Blocks are SQLite's: `Store::submit` encodes none for PostgreSQL.
                Payload::Blocks(_) | Payload::Samples(_) => None,
            })
            .flatten()
            .collect();
        if !logs.is_empty() {
            let col = |f: fn(&LogRecord) -> String| logs.iter().map(|r| f(r)).collect::<Vec<_>>();
            let received: Vec<i64> = logs.iter().map(|r| r.received_ns).collect();
            let timestamp: Vec<Option<i64>> = logs.iter().map(|r| r.timestamp_ns).collect();
            let ts: Vec<i64> = logs
                .iter()
                .map(|r| r.timestamp_ns.unwrap_or(r.received_ns))
                .collect();
            let facility: Vec<Option<i16>> = logs.iter().map(|r| small(r.facility)).collect();
            let severity: Vec<Option<i16>> = logs.iter().map(|r| small(r.severity)).collect();
            let parse_error: Vec<Option<String>> =
                logs.iter().map(|r| r.parse_error.clone()).collect();
            // WITH ORDINALITY: ids follow the order of arrival, as in SQLite. With OTLP
            // forwarding, the new ids go into its outbox in the same statement.
            let insert = "INSERT INTO ingestd_logs (received_ns, timestamp_ns, ts_ns, host, app, procid, msgid,
                     facility, severity, message, structured_data, format, parse_error, input, peer)
                 SELECT a, b, c, d, e, f, g, h, i, j, k, l, m, n, o
                 FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[],
                             $7::text[], $8::int2[], $9::int2[], $10::text[], $11::text[], $12::text[],
                             $13::text[], $14::text[], $15::text[])
                      WITH ORDINALITY AS u(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, ord)
                 ORDER BY ord";
            let outboxes: Vec<&str> = [
                (forward.otlp, "ingestd_forward_otlp_logs"),
                (forward.quic, "ingestd_forward_quic_logs"),
            ]
            .iter()
            .filter(|o| o.0)
            .map(|o| o.1)
            .collect();
            let sql = match outboxes.as_slice() {
                [] => insert.to_owned(),
                [one] => format!(
                    "WITH new AS ({insert} RETURNING id)
                     INSERT INTO {one} (instance, log_id) SELECT $16, id FROM new ORDER BY id"
                ),
                [one, two, ..] => format!(
                    "WITH new AS ({insert} RETURNING id),
                          first AS (INSERT INTO {one} (instance, log_id) SELECT $16, id FROM new ORDER BY id)
                     INSERT INTO {two} (instance, log_id) SELECT $16, id FROM new ORDER BY id"
                ),
            };
            // Built from the constant fragments above.
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(&received)
                .bind(&timestamp)
                .bind(&ts)
                .bind(col(|r| r.host.clone()))
                .bind(col(|r| r.app.clone()))
                .bind(col(|r| r.procid.clone()))
                .bind(col(|r| r.msgid.clone()))
                .bind(&facility)
                .bind(&severity)
                .bind(col(|r| r.message.clone()))
                .bind(col(|r| r.structured_data.clone()))
                .bind(col(|r| r.format.clone()))
                .bind(&parse_error)
                .bind(col(|r| r.input.clone()))
                .bind(col(|r| r.peer.clone()));
            if !outboxes.is_empty() {
                q = q.bind(&self.instance);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Deletes this instance's `outbox` up to `seq` (delivered).
    pub(super) async fn outbox_delivered(
        &self,
        outbox: Outbox,
        seq: i64,
    ) -> Result<(), sqlx::Error> {
        // The table name is a constant of `Outbox`.
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM ingestd_{} WHERE instance = $1 AND seq <= $2",
            outbox.table()
        )))
        .bind(&self.instance)
        .bind(seq)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// The downsampling of the SQLite store: samples before `cutoff_ms` keep only the last of
    /// each series and step.
    pub(super) async fn downsample(
        &self,
        cutoff_ms: i64,
        step_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM ingestd_samples AS s WHERE s.ts_ms < $1 AND s.ts_ms < (
                 SELECT max(s2.ts_ms) FROM ingestd_samples AS s2
                 WHERE s2.series_id = s.series_id
                   AND s2.ts_ms BETWEEN (s.ts_ms / $2) * $2 AND (s.ts_ms / $2) * $2 + $2 - 1)",
        )
        .bind(cutoff_ms)
        .bind(step_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes logs received before `cutoff_ns` and older samples; returns the records
    /// deleted and the undelivered samples dropped from the remote_write and OTLP outboxes.
    pub(super) async fn retain(&self, cutoff_ns: i64) -> Result<(u64, u64, [u64; 2]), sqlx::Error> {
        let cutoff_ms = cutoff_ns / 1_000_000;
        let logs = sqlx::query("DELETE FROM ingestd_logs WHERE received_ns < $1")
            .bind(cutoff_ns)
            .execute(&self.pool)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM ingestd_samples WHERE ts_ms < $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        let dropped =
            sqlx::query("DELETE FROM ingestd_forward_outbox WHERE instance = $1 AND ts_ms < $2")
                .bind(&self.instance)
                .bind(cutoff_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        let mut target_dropped = [0u64; 2];
        for (i, outbox) in [Outbox::OtlpSamples, Outbox::QuicSamples]
            .iter()
            .enumerate()
        {
            // The table name is a constant of `Outbox`.
            target_dropped[i] = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM ingestd_{} WHERE instance = $1 AND ts_ms < $2",
                outbox.table()
            )))
            .bind(&self.instance)
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok((logs, dropped, target_dropped))
    }

    /// Bytes on disk of ingestd's tables, their indexes and TOAST included.
    pub(super) async fn size(&self) -> Result<u64, sqlx::Error> {
        let mut sql = String::from("SELECT 0::bigint");
        for t in TABLES {
            sql.push_str(&format!(" + pg_total_relation_size('{t}')"));
        }
        // The table names are the constants above.
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes up to `n` of the oldest rows picked by `pick` (a `SELECT` of keys, `$1` the
    /// limit, `$2` this instance) in batches; returns the rows deleted.
    async fn delete_oldest(&self, delete: &'static str, n: i64) -> Result<u64, sqlx::Error> {
        let mut done = 0u64;
        let mut left = n;
        while left > 0 {
            let k = sqlx::query(delete)
                .bind(left.min(super::RETENTION_CHUNK))
                .bind(&self.instance)
                .execute(&self.pool)
                .await?
                .rows_affected();
            if k == 0 {
                break;
            }
            done += k;
            left -= i64::try_from(k).unwrap_or(i64::MAX);
        }
        Ok(done)
    }

    /// Bounds ingestd's tables to `max_bytes`: while they are larger, the same share of the
    /// oldest logs, samples and of this instance's outbox is deleted (in batches) so that the
    /// rest takes about 90 % of the bound, then `VACUUM FULL` rewrites the tables to return
    /// the space. Returns the records deleted and the undelivered outbox rows dropped.
    pub(super) async fn retain_bytes(
        &self,
        max_bytes: u64,
    ) -> Result<(u64, u64, [u64; 2]), sqlx::Error> {
        let (mut deleted, mut dropped, mut target_dropped) = (0u64, 0u64, [0u64; 2]);
        // A few passes: indexes do not shrink exactly in proportion to their tables.
        for _ in 0..4 {
            let size = self.size().await?;
            if size <= max_bytes {
                break;
            }
            let target = max_bytes / 10 * 9;
            #[expect(clippy::cast_precision_loss, reason = "a share, not an exact count")]
            let share = (size - target) as f64 / size as f64;
            let count = |table: &'static str, filter: &'static str| async move {
                let sql = format!("SELECT count(*) FROM {table} WHERE {filter}");
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                    .bind(&self.instance)
                    .fetch_one(&self.pool)
                    .await?;
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_precision_loss,
                    reason = "a row count from a share"
                )]
                let k = (n as f64 * share).ceil() as i64;
                Ok::<i64, sqlx::Error>(k)
            };
            let logs = count("ingestd_logs", "$1 = $1").await?;
            let samples = count("ingestd_samples", "$1 = $1").await?;
            let outbox = count("ingestd_forward_outbox", "instance = $1").await?;
            let otlp = count("ingestd_forward_otlp_samples", "instance = $1").await?;
            let quic = count("ingestd_forward_quic_samples", "instance = $1").await?;
            let n = self
                .delete_oldest(
                    "DELETE FROM ingestd_logs WHERE id IN
                         (SELECT id FROM ingestd_logs WHERE $2 = $2 ORDER BY id LIMIT $1)",
                    logs,
                )
                .await?
                + self
                    .delete_oldest(
                        "DELETE FROM ingestd_samples WHERE ctid IN
                         (SELECT ctid FROM ingestd_samples WHERE $2 = $2 ORDER BY ts_ms LIMIT $1)",
                        samples,
                    )
                    .await?;
            let o = self
                .delete_oldest(
                    "DELETE FROM ingestd_forward_outbox WHERE seq IN
                         (SELECT seq FROM ingestd_forward_outbox WHERE instance = $2 ORDER BY seq LIMIT $1)",
                    outbox,
                )
                .await?;
            let p = self
                .delete_oldest(
                    "DELETE FROM ingestd_forward_otlp_samples WHERE seq IN
                         (SELECT seq FROM ingestd_forward_otlp_samples WHERE instance = $2 ORDER BY seq LIMIT $1)",
                    otlp,
                )
                .await?;
            let q = self
                .delete_oldest(
                    "DELETE FROM ingestd_forward_quic_samples WHERE seq IN
                         (SELECT seq FROM ingestd_forward_quic_samples WHERE instance = $2 ORDER BY seq LIMIT $1)",
                    quic,
                )
                .await?;
            deleted += n + o + p + q;
            dropped += o;
            target_dropped[0] += p;
            target_dropped[1] += q;
            if n + o + p + q == 0 {
                break;
            }
            for t in TABLES {
                // The table names are the constants above; VACUUM runs outside a transaction.
                sqlx::raw_sql(AssertSqlSafe(format!("VACUUM FULL {t}")))
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok((deleted, dropped, target_dropped))
    }

    pub(super) async fn query(&self, q: &LogQuery) -> Result<Vec<StoredLog>, StoreError> {
        enum V {
            I(i64),
            T(String),
        }
        let mut sql = String::from(
            "SELECT id, received_ns, timestamp_ns, host, app, procid, msgid, facility, severity, message,
                    structured_data, format, parse_error, input, peer FROM ingestd_logs WHERE true",
        );
        let mut args: Vec<V> = Vec::new();
        let mut add = |cond: &str, v: V| {
            args.push(v);
            sql.push_str(&format!(" AND {cond} ${}", args.len()));
        };
        if let Some(v) = q.start_ns {
            add("ts_ns >=", V::I(v));
        }
        if let Some(v) = q.end_ns {
            add("ts_ns <", V::I(v));
        }
        if let Some(v) = &q.host {
            add("host =", V::T(v.clone()));
        }
        if let Some(v) = &q.app {
            add("app =", V::T(v.clone()));
        }
        if let Some(v) = q.max_severity {
            add("severity <=", V::I(v.into()));
        }
        if let Some(v) = q.facility {
            add("facility =", V::I(v.into()));
        }
        if let Some(v) = q.before_id {
            add("id <", V::I(v));
        }
        if let Some(v) = &q.text {
            add(
                "to_tsvector('simple', message) @@ websearch_to_tsquery('simple',",
                V::T(v.clone()),
            );
            sql.push(')');
        }
        if q.parse_errors_only {
            sql.push_str(" AND parse_error IS NOT NULL");
        }
        args.push(V::I(q.limit.into()));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
        // The SQL is built from the fixed fragments above; every value is a bind parameter.
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for a in args {
            query = match a {
                V::I(i) => query.bind(i),
                V::T(t) => query.bind(t),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(StoredLog {
                    id: r.try_get(0)?,
                    record: LogRecord {
                        received_ns: r.try_get(1)?,
                        timestamp_ns: r.try_get(2)?,
                        host: r.try_get(3)?,
                        app: r.try_get(4)?,
                        procid: r.try_get(5)?,
                        msgid: r.try_get(6)?,
                        facility: tiny(r.try_get(7)?),
                        severity: tiny(r.try_get(8)?),
                        message: r.try_get(9)?,
                        structured_data: r.try_get(10)?,
                        format: r.try_get(11)?,
                        parse_error: r.try_get(12)?,
                        input: r.try_get(13)?,
                        peer: r.try_get(14)?,
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn select_series(
        &self,
        name: &str,
        matchers: &[crate::promql::Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesSamples>, sqlx::Error> {
        let rows = sqlx::query("SELECT id, labels FROM ingestd_series WHERE name = $1")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let id: i64 = row.try_get(0)?;
            let labels = parse_labels(&row.try_get::<String, _>(1)?);
            if !matchers.iter().all(|m| m.matches(&labels)) {
                continue;
            }
            let samples = sqlx::query(
                "SELECT ts_ms, value FROM ingestd_samples
                 WHERE series_id = $1 AND ts_ms BETWEEN $2 AND $3 ORDER BY ts_ms",
            )
            .bind(id)
            .bind(start_ms)
            .bind(end_ms)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(i64, f64)>, sqlx::Error>>()?;
            out.push(SeriesSamples {
                labels: labels.into(),
                samples,
            });
        }
        Ok(out)
    }

    /// The oldest undelivered log records of this instance's `outbox` (a log outbox).
    pub(super) async fn log_outbox(
        &self,
        outbox: Outbox,
        limit: u32,
    ) -> Result<Option<LogBatch>, sqlx::Error> {
        // The table name is a constant of `Outbox`.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT o.seq, l.id, l.received_ns, l.timestamp_ns, l.host, l.app, l.procid, l.msgid,
                    l.facility, l.severity, l.message, l.structured_data, l.format, l.parse_error,
                    l.input, l.peer
             FROM ingestd_{} AS o LEFT JOIN ingestd_logs AS l ON l.id = o.log_id
             WHERE o.instance = $1 ORDER BY o.seq LIMIT $2",
            outbox.table()
        )))
        .bind(&self.instance)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut batch = LogBatch::default();
        for r in &rows {
            batch.seq = r.try_get(0)?;
            let Some(id) = r.try_get::<Option<i64>, _>(1)? else {
                batch.missing += 1;
                continue;
            };
            batch.logs.push(StoredLog {
                id,
                record: LogRecord {
                    received_ns: r.try_get(2)?,
                    timestamp_ns: r.try_get(3)?,
                    host: r.try_get(4)?,
                    app: r.try_get(5)?,
                    procid: r.try_get(6)?,
                    msgid: r.try_get(7)?,
                    facility: tiny(r.try_get(8)?),
                    severity: tiny(r.try_get(9)?),
                    message: r.try_get(10)?,
                    structured_data: r.try_get(11)?,
                    format: r.try_get(12)?,
                    parse_error: r.try_get(13)?,
                    input: r.try_get(14)?,
                    peer: r.try_get(15)?,
                },
            });
        }
        Ok((!rows.is_empty()).then_some(batch))
    }

    /// The oldest undelivered samples of this instance's `outbox`, as `(seq, labels, ts, value)`.
    pub(super) async fn outbox(
        &self,
        outbox: Outbox,
        limit: u32,
    ) -> Result<Vec<(i64, String, i64, f64)>, sqlx::Error> {
        // The table name is a constant of `Outbox`.
        sqlx::query(AssertSqlSafe(format!(
            "SELECT o.seq, s.labels, o.ts_ms, o.value FROM ingestd_{} AS o
             JOIN ingestd_series AS s ON s.id = o.series_id
             WHERE o.instance = $1 ORDER BY o.seq LIMIT $2",
            outbox.table()
        )))
        .bind(&self.instance)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect()
    }
}
