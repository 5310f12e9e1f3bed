//! The PostgreSQL backend of the results store (fleets): the same rows and queries as the
//! SQLite file, in `probed_results` and `probed_tier_events`, each row tagged with the
//! probe (host name) that wrote it. A fleet shares the tables; each probe reads, and prunes
//! to its own retention, only its own rows.
//!
//! A batch is one `INSERT … SELECT FROM UNNEST(arrays)`: one round trip however many rows,
//! which matters when the server is across a WAN.

use std::time::Duration;

use rookery_common::postgres::PostgresSection;
use sqlx::Row as _;
use sqlx::postgres::PgPool;

use super::{OpenStoreError, Row, TierEvent, decode_facts, encode_facts};

/// Tries of a batch write before it is given up (a server restart or a network blip).
const WRITE_TRIES: u32 = 3;
/// Pause between those tries.
const WRITE_RETRY: Duration = Duration::from_secs(1);

const SCHEMA: &[&str] = &[
    // Several probes may start at once against an empty database: one creates the schema.
    "SELECT pg_advisory_xact_lock(hashtext('rookery-probed-schema'))",
    "CREATE TABLE IF NOT EXISTS probed_results (
        id BIGSERIAL PRIMARY KEY,
        probe TEXT NOT NULL,
        target TEXT NOT NULL,
        module TEXT NOT NULL,
        started_ms BIGINT NOT NULL,
        success BOOLEAN NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        total_s DOUBLE PRECISION NOT NULL,
        phases TEXT NOT NULL,
        facts TEXT NOT NULL DEFAULT ''
    )",
    "CREATE INDEX IF NOT EXISTS probed_results_target_time ON probed_results (probe, target, started_ms)",
    "CREATE INDEX IF NOT EXISTS probed_results_time ON probed_results (probe, started_ms)",
    "CREATE TABLE IF NOT EXISTS probed_tier_events (
        id BIGSERIAL PRIMARY KEY,
        probe TEXT NOT NULL,
        target TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        from_tier SMALLINT NOT NULL,
        to_tier SMALLINT NOT NULL,
        reason TEXT NOT NULL,
        diagnostics TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS probed_tier_events_target_time ON probed_tier_events (probe, target, at_ms)",
];

/// The pool and this probe's name in the shared tables.
#[derive(Debug, Clone)]
pub(super) struct Pg {
    pool: PgPool,
    probe: String,
    url: String,
}

/// This machine's host name (the probe's identity in a fleet's tables).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Pg {
    pub(super) async fn open(section: &PostgresSection) -> Result<Self, OpenStoreError> {
        let pool = section.connect().await?;
        let url = section.display_url();
        let schema = async {
            let mut tx = pool.begin().await?;
            for stmt in SCHEMA {
                sqlx::query(*stmt).execute(&mut *tx).await?;
            }
            tx.commit().await
        };
        schema.await.map_err(|source| OpenStoreError::Schema {
            url: url.clone(),
            source,
        })?;
        Ok(Self {
            pool,
            probe: host_name(),
            url,
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("{} (probe {})", self.url, self.probe)
    }

    pub(super) async fn write(&self, batch: &[Row]) -> Result<(), sqlx::Error> {
        let mut targets = Vec::with_capacity(batch.len());
        let mut modules = Vec::with_capacity(batch.len());
        let mut started = Vec::with_capacity(batch.len());
        let mut success = Vec::with_capacity(batch.len());
        let mut reasons = Vec::with_capacity(batch.len());
        let mut details = Vec::with_capacity(batch.len());
        let mut totals = Vec::with_capacity(batch.len());
        let mut phases = Vec::with_capacity(batch.len());
        let mut facts = Vec::with_capacity(batch.len());
        for r in batch {
            targets.push(r.target.clone());
            modules.push(r.module.clone());
            started.push(r.started_ms);
            success.push(r.success);
            reasons.push(r.reason.clone());
            details.push(r.detail.clone());
            totals.push(r.total_s);
            phases.push(r.phases.clone());
            facts.push(encode_facts(&r.facts));
        }
        let mut tries = 0;
        loop {
            tries += 1;
            // WITH ORDINALITY keeps the batch's order in the ids (ties of started_ms).
            let result = sqlx::query(
                "INSERT INTO probed_results
                     (probe, target, module, started_ms, success, reason, detail, total_s, phases, facts)
                 SELECT $1, t, m, s, ok, r, d, tot, p, f
                 FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::bool[], $6::text[], $7::text[],
                             $8::float8[], $9::text[], $10::text[])
                      WITH ORDINALITY AS u(t, m, s, ok, r, d, tot, p, f, n)
                 ORDER BY n",
            )
            .bind(&self.probe)
            .bind(&targets)
            .bind(&modules)
            .bind(&started)
            .bind(&success)
            .bind(&reasons)
            .bind(&details)
            .bind(&totals)
            .bind(&phases)
            .bind(&facts)
            .execute(&self.pool)
            .await;
            match result {
                Ok(_) => return Ok(()),
                Err(err) if tries < WRITE_TRIES => {
                    tracing::warn!(error = %err, try_number = tries, "PostgreSQL write failed, retrying.");
                    tokio::time::sleep(WRITE_RETRY).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    pub(super) async fn prune(&self, cutoff_ms: i64) -> Result<usize, sqlx::Error> {
        sqlx::query("DELETE FROM probed_tier_events WHERE probe = $1 AND at_ms < $2")
            .bind(&self.probe)
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        let done = sqlx::query("DELETE FROM probed_results WHERE probe = $1 AND started_ms < $2")
            .bind(&self.probe)
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    pub(super) async fn recent(
        &self,
        target: Option<String>,
        limit: i64,
    ) -> Result<Vec<Row>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT target, module, started_ms, success, reason, detail, total_s, phases, facts
             FROM probed_results WHERE probe = $1 AND ($2::text IS NULL OR target = $2)
             ORDER BY started_ms DESC, id DESC LIMIT $3",
        )
        .bind(&self.probe)
        .bind(target)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Row {
                    target: r.try_get(0)?,
                    module: r.try_get(1)?,
                    started_ms: r.try_get(2)?,
                    success: r.try_get(3)?,
                    reason: r.try_get(4)?,
                    detail: r.try_get(5)?,
                    total_s: r.try_get(6)?,
                    phases: r.try_get(7)?,
                    facts: decode_facts(&r.try_get::<String, _>(8)?),
                })
            })
            .collect()
    }

    pub(super) async fn record_tier_event(&self, e: &TierEvent) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO probed_tier_events (probe, target, at_ms, from_tier, to_tier, reason, diagnostics)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&self.probe)
        .bind(&e.target)
        .bind(e.at_ms)
        .bind(i16::from(e.from_tier))
        .bind(i16::from(e.to_tier))
        .bind(&e.reason)
        .bind(&e.diagnostics)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    pub(super) async fn tier_events(
        &self,
        target: Option<String>,
        limit: i64,
    ) -> Result<Vec<TierEvent>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT target, at_ms, from_tier, to_tier, reason, diagnostics FROM probed_tier_events
             WHERE probe = $1 AND ($2::text IS NULL OR target = $2)
             ORDER BY at_ms DESC, id DESC LIMIT $3",
        )
        .bind(&self.probe)
        .bind(target)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let tier = |v: i16| u8::try_from(v).unwrap_or(0);
        rows.iter()
            .map(|r| {
                Ok(TierEvent {
                    target: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    from_tier: tier(r.try_get(2)?),
                    to_tier: tier(r.try_get(3)?),
                    reason: r.try_get(4)?,
                    diagnostics: r.try_get(5)?,
                })
            })
            .collect()
    }
}
