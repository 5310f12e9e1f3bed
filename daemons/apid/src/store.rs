//! apid's SQLite state (`apid.db` in the state directory, WAL mode): users, refresh tokens and
//! the audit log. Migrations are ordered SQL scripts tracked by `PRAGMA user_version`.
//!
//! Every method takes the clock as a parameter (`now`, Unix seconds) so the policy can be
//! tested without waiting.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "apid.db";

/// Migration scripts; index + 1 is the `user_version` after running it. Never edit one that
/// has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'maintainer', 'viewer')),
    must_change_password INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0,
    token_generation INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE refresh_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    family TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit(ts);
",
    r"
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'maintainer', 'viewer')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL DEFAULT 0,
    last_used_at INTEGER NOT NULL DEFAULT 0,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
ALTER TABLE users ADD COLUMN totp_secret TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN totp_pending TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;
CREATE TABLE recovery_codes (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
",
    r"
CREATE TABLE config_history (
    id INTEGER PRIMARY KEY,
    daemon TEXT NOT NULL,
    ts TEXT NOT NULL,
    user TEXT NOT NULL,
    kind TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL
);
CREATE INDEX config_history_daemon ON config_history(daemon, id);
",
];

/// A role, from least to most privileged.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Read and write resources; no user management.
    Maintainer,
    /// Everything.
    Admin,
}

impl Role {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Maintainer => "maintainer",
            Self::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "admin" => Self::Admin,
            "maintainer" => Self::Maintainer,
            // The CHECK constraint admits nothing else; least privilege if it ever did.
            _ => Self::Viewer,
        }
    }
}

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub must_change_password: bool,
    pub failed_logins: u32,
    pub locked_until: i64,
    pub token_generation: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Base32 TOTP secret once enrolled and verified; empty = no second factor.
    pub totp_secret: String,
    /// Base32 secret awaiting its first code.
    pub totp_pending: String,
    /// Last TOTP time step accepted (replay protection).
    pub totp_last_step: i64,
}

/// An API key row (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub created_at: i64,
    /// 0 = never.
    pub expires_at: i64,
    /// 0 = never used.
    pub last_used_at: i64,
    pub revoked: bool,
}

/// One change of a daemon's config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ConfigChange {
    pub id: i64,
    pub daemon: String,
    /// RFC 3339 UTC.
    pub ts: String,
    pub user: String,
    /// `apply`, `try`, `rollback`, `revert` (reload refused) or `auto-revert` (try timed out).
    pub kind: String,
    /// The file before the change (empty = absent).
    pub before: String,
    /// The file after the change.
    pub after: String,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// RFC 3339 UTC.
    pub ts: String,
    /// `AUTH`, `AUTHZ`, `AUDIT`, `ERROR` or `SYSTEM`.
    pub kind: String,
    pub user: String,
    pub action: String,
    pub result: String,
    /// Client address, empty for internal events.
    pub source: String,
    /// Extra `key=value` facts.
    pub detail: String,
}

/// Filters of an audit query; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    pub kind: Option<String>,
    pub user: Option<String>,
    pub action: Option<String>,
    pub result: Option<String>,
    /// Inclusive lower bound, RFC 3339.
    pub since: Option<String>,
    /// Exclusive upper bound, RFC 3339.
    pub until: Option<String>,
}

/// What the refresh of a token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Valid: the old token is now revoked; here are its user and family.
    Rotated { user_id: i64, family: String },
    /// An already rotated token came back: the whole family was revoked (theft signal).
    Reused { user_id: i64 },
    /// Unknown or expired.
    Invalid,
}

/// The database, behind a mutex (SQLite serialises writers anyway).
pub struct Store {
    conn: Mutex<Connection>,
}

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The database is from a newer apid.
    #[error("database schema version {found} is newer than this apid knows ({known})")]
    TooNew {
        /// Found in the file.
        found: i64,
        /// Known to this binary.
        known: i64,
    },
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        password_hash: r.get(2)?,
        role: Role::parse(&r.get::<_, String>(3)?),
        must_change_password: r.get(4)?,
        failed_logins: r.get(5)?,
        locked_until: r.get(6)?,
        token_generation: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        totp_secret: r.get(10)?,
        totp_pending: r.get(11)?,
        totp_last_step: r.get(12)?,
    })
}

const USER_COLS: &str = "id, username, password_hash, role, must_change_password, failed_logins, locked_until, token_generation, created_at, updated_at, totp_secret, totp_pending, totp_last_step";

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        role: Role::parse(&r.get::<_, String>(4)?),
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        last_used_at: r.get(7)?,
        revoked: r.get(8)?,
    })
}

const KEY_COLS: &str =
    "id, user_id, name, prefix, role, created_at, expires_at, last_used_at, revoked";

impl Store {
    /// Opens (creating if needed) `apid.db` in `dir` and migrates it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(dir.join(DB_FILE))?;
        Self::init(conn)
    }

    /// An in-memory store (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of users.
    pub fn user_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .db()
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
    }

    /// Number of admins.
    pub fn admin_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .db()
            .query_row("SELECT count(*) FROM users WHERE role = 'admin'", [], |r| {
                r.get(0)
            })?)
    }

    /// Creates a user; `Ok(None)` if the name is taken.
    pub fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        must_change_password: bool,
        now: i64,
    ) -> Result<Option<User>, StoreError> {
        let db = self.db();
        let n = db.execute(
            "INSERT INTO users (username, password_hash, role, must_change_password, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(username) DO NOTHING",
            params![username, password_hash, role.as_str(), must_change_password, now],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let id = db.last_insert_rowid();
        drop(db);
        self.user_by_id(id)
    }

    /// The user `id`.
    pub fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )
            .optional()?)
    }

    /// The user named `username`.
    pub fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE username = ?1"),
                [username],
                user_from_row,
            )
            .optional()?)
    }

    /// All users, by name.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY username"))?;
        let rows = stmt.query_map([], user_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a failed login; returns the new `(failed_logins, locked_until)`.
    /// From `threshold` failures on, the account locks for `base · 2^(failures − threshold)`
    /// seconds, at most `max`.
    pub fn login_failed(
        &self,
        id: i64,
        threshold: u32,
        base: i64,
        max: i64,
        now: i64,
    ) -> Result<(u32, i64), StoreError> {
        let db = self.db();
        let failed: u32 = db.query_row(
            "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ?1 RETURNING failed_logins",
            [id],
            |r| r.get(0),
        )?;
        let mut until = 0;
        if failed >= threshold {
            let exp = (failed - threshold).min(30);
            let secs = base.saturating_mul(1i64 << exp).min(max);
            until = now + secs;
            db.execute(
                "UPDATE users SET locked_until = ?2 WHERE id = ?1",
                params![id, until],
            )?;
        }
        Ok((failed, until))
    }

    /// Clears the failure counter after a successful login.
    pub fn login_succeeded(&self, id: i64) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE users SET failed_logins = 0, locked_until = 0 WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Sets a new password hash and `must_change_password`, clears lockout, voids access
    /// tokens (generation bump) and revokes refresh tokens.
    pub fn set_password(
        &self,
        id: i64,
        password_hash: &str,
        must_change_password: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let db = self.db();
        let n = db.execute(
            "UPDATE users SET password_hash = ?2, must_change_password = ?3, failed_logins = 0,
             locked_until = 0, token_generation = token_generation + 1, updated_at = ?4 WHERE id = ?1",
            params![id, password_hash, must_change_password, now],
        )?;
        db.execute(
            "UPDATE refresh_tokens SET revoked = 1 WHERE user_id = ?1",
            [id],
        )?;
        db.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        Ok(n == 1)
    }

    /// Changes a user's role (and voids their tokens so it applies at once).
    pub fn set_role(&self, id: i64, role: Role, now: i64) -> Result<bool, StoreError> {
        let n = self.db().execute(
            "UPDATE users SET role = ?2, token_generation = token_generation + 1, updated_at = ?3 WHERE id = ?1",
            params![id, role.as_str(), now],
        )?;
        Ok(n == 1)
    }

    /// Deletes a user (their refresh tokens go with them).
    pub fn delete_user(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.db().execute("DELETE FROM users WHERE id = ?1", [id])? == 1)
    }

    /// Stores a refresh token (by hash) in `family`.
    pub fn add_refresh_token(
        &self,
        user_id: i64,
        token_hash: &str,
        family: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO refresh_tokens (user_id, token_hash, family, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user_id, token_hash, family, now, expires_at],
        )?;
        Ok(())
    }

    /// Consumes a refresh token: a valid one is revoked (the caller issues its successor in
    /// the same family); a revoked one revokes its whole family.
    pub fn use_refresh_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let db = self.db();
        let row: Option<(i64, i64, String, i64, bool)> = db
            .query_row(
                "SELECT id, user_id, family, expires_at, revoked FROM refresh_tokens WHERE token_hash = ?1",
                [token_hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((id, user_id, family, expires_at, revoked)) = row else {
            return Ok(RefreshOutcome::Invalid);
        };
        if revoked {
            db.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
                [&family],
            )?;
            return Ok(RefreshOutcome::Reused { user_id });
        }
        if expires_at <= now {
            return Ok(RefreshOutcome::Invalid);
        }
        db.execute("UPDATE refresh_tokens SET revoked = 1 WHERE id = ?1", [id])?;
        Ok(RefreshOutcome::Rotated { user_id, family })
    }

    /// Revokes the family of a refresh token (logout); returns its user, if it existed.
    pub fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<i64>, StoreError> {
        let db = self.db();
        let row: Option<(i64, String)> = db
            .query_row(
                "SELECT user_id, family FROM refresh_tokens WHERE token_hash = ?1",
                [token_hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((user_id, family)) = row else {
            return Ok(None);
        };
        db.execute(
            "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
            [&family],
        )?;
        Ok(Some(user_id))
    }

    /// Stores a new API key (by hash).
    #[allow(clippy::too_many_arguments, reason = "one column each")]
    pub fn add_api_key(
        &self,
        user_id: i64,
        name: &str,
        prefix: &str,
        key_hash: &str,
        role: Role,
        now: i64,
        expires_at: i64,
    ) -> Result<ApiKey, StoreError> {
        let db = self.db();
        db.execute(
            "INSERT INTO api_keys (user_id, name, prefix, key_hash, role, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                user_id,
                name,
                prefix,
                key_hash,
                role.as_str(),
                now,
                expires_at
            ],
        )?;
        let id = db.last_insert_rowid();
        Ok(db.query_row(
            &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?1"),
            [id],
            key_from_row,
        )?)
    }

    /// API keys of `user_id`, or of everyone when `None`.
    pub fn api_keys(&self, user_id: Option<i64>) -> Result<Vec<ApiKey>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([user_id], key_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The key with this ID.
    pub fn api_key(&self, id: i64) -> Result<Option<ApiKey>, StoreError> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?1"),
                [id],
                key_from_row,
            )
            .optional()?)
    }

    /// The usable (not revoked, not expired) key with this hash; records its use.
    pub fn use_api_key(&self, key_hash: &str, now: i64) -> Result<Option<ApiKey>, StoreError> {
        let db = self.db();
        let key = db
            .query_row(
                &format!(
                    "SELECT {KEY_COLS} FROM api_keys WHERE key_hash = ?1 AND revoked = 0
                     AND (expires_at = 0 OR expires_at > ?2)"
                ),
                params![key_hash, now],
                key_from_row,
            )
            .optional()?;
        if let Some(k) = &key {
            db.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
                params![k.id, now],
            )?;
        }
        Ok(key)
    }

    /// Revokes a key.
    pub fn revoke_api_key(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self
            .db()
            .execute("UPDATE api_keys SET revoked = 1 WHERE id = ?1", [id])?
            == 1)
    }

    /// Stores a browser session (by hash).
    pub fn add_session(
        &self,
        user_id: i64,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO sessions (user_id, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![user_id, token_hash, now, expires_at],
        )?;
        Ok(())
    }

    /// The user of a live session.
    pub fn session_user(&self, token_hash: &str, now: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT user_id FROM sessions WHERE token_hash = ?1 AND expires_at > ?2",
                params![token_hash, now],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Ends a session.
    pub fn delete_session(&self, token_hash: &str) -> Result<bool, StoreError> {
        Ok(self
            .db()
            .execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?
            == 1)
    }

    /// Sets the pending TOTP secret (enrolment started).
    pub fn set_totp_pending(&self, id: i64, secret: &str) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE users SET totp_pending = ?2 WHERE id = ?1",
            params![id, secret],
        )?;
        Ok(())
    }

    /// Activates the pending secret with its recovery code hashes.
    pub fn enable_totp(
        &self,
        id: i64,
        step: i64,
        code_hashes: &[String],
    ) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE users SET totp_secret = totp_pending, totp_pending = '', totp_last_step = ?2 WHERE id = ?1",
            params![id, step],
        )?;
        tx.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [id])?;
        for h in code_hashes {
            tx.execute(
                "INSERT INTO recovery_codes (user_id, code_hash) VALUES (?1, ?2)",
                params![id, h],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes the second factor and its recovery codes.
    pub fn disable_totp(&self, id: i64) -> Result<(), StoreError> {
        let db = self.db();
        db.execute(
            "UPDATE users SET totp_secret = '', totp_pending = '', totp_last_step = 0 WHERE id = ?1",
            [id],
        )?;
        db.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [id])?;
        Ok(())
    }

    /// Records an accepted TOTP step unless an equal or later one was accepted already
    /// (a replayed code). Returns whether it was accepted.
    pub fn accept_totp_step(&self, id: i64, step: i64) -> Result<bool, StoreError> {
        Ok(self.db().execute(
            "UPDATE users SET totp_last_step = ?2 WHERE id = ?1 AND totp_last_step < ?2",
            params![id, step],
        )? == 1)
    }

    /// Spends a recovery code; returns whether it was valid and unused.
    pub fn use_recovery_code(&self, id: i64, code_hash: &str) -> Result<bool, StoreError> {
        Ok(self.db().execute(
            "UPDATE recovery_codes SET used = 1 WHERE user_id = ?1 AND code_hash = ?2 AND used = 0",
            params![id, code_hash],
        )? == 1)
    }

    /// Unused recovery codes of a user.
    pub fn recovery_codes_left(&self, id: i64) -> Result<i64, StoreError> {
        Ok(self.db().query_row(
            "SELECT count(*) FROM recovery_codes WHERE user_id = ?1 AND used = 0",
            [id],
            |r| r.get(0),
        )?)
    }

    /// Records a config change; returns its ID.
    pub fn add_config_change(
        &self,
        daemon: &str,
        ts: &str,
        user: &str,
        kind: &str,
        before: &str,
        after: &str,
    ) -> Result<i64, StoreError> {
        let db = self.db();
        db.execute(
            "INSERT INTO config_history (daemon, ts, user, kind, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![daemon, ts, user, kind, before, after],
        )?;
        Ok(db.last_insert_rowid())
    }

    /// The config history of `daemon`, newest first.
    pub fn config_history(&self, daemon: &str) -> Result<Vec<ConfigChange>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, daemon, ts, user, kind, before, after FROM config_history
             WHERE daemon = ?1 ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([daemon], |r| {
            Ok(ConfigChange {
                id: r.get(0)?,
                daemon: r.get(1)?,
                ts: r.get(2)?,
                user: r.get(3)?,
                kind: r.get(4)?,
                before: r.get(5)?,
                after: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends an audit entry.
    #[allow(clippy::too_many_arguments, reason = "one column each")]
    pub fn audit(
        &self,
        ts: &str,
        kind: &str,
        user: &str,
        action: &str,
        result: &str,
        source: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO audit (ts, kind, user, action, result, source, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![ts, kind, user, action, result, source, detail],
        )?;
        Ok(())
    }

    /// Audit entries matching `f`, newest first: `(entries, total matching)`.
    pub fn audit_query(
        &self,
        f: &AuditFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AuditEntry>, i64), StoreError> {
        let mut clauses = Vec::new();
        let mut args: Vec<String> = Vec::new();
        for (col, op, val) in [
            ("kind", "=", &f.kind),
            ("user", "=", &f.user),
            ("action", "=", &f.action),
            ("result", "=", &f.result),
            ("ts", ">=", &f.since),
            ("ts", "<", &f.until),
        ] {
            if let Some(v) = val {
                args.push(v.clone());
                clauses.push(format!("{col} {op} ?{}", args.len()));
            }
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let db = self.db();
        let total: i64 = db.query_row(
            &format!("SELECT count(*) FROM audit {filter}"),
            rusqlite::params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        let mut stmt = db.prepare(&format!(
            "SELECT id, ts, kind, user, action, result, source, detail FROM audit {filter}
             ORDER BY id DESC LIMIT {limit} OFFSET {offset}"
        ))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                ts: r.get(1)?,
                kind: r.get(2)?,
                user: r.get(3)?,
                action: r.get(4)?,
                result: r.get(5)?,
                source: r.get(6)?,
                detail: r.get(7)?,
            })
        })?;
        Ok((rows.collect::<Result<_, _>>()?, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_backs_off_exponentially_up_to_the_cap() {
        let s = Store::open_in_memory().unwrap();
        let u = s
            .create_user("ann", "h", Role::Viewer, false, 0)
            .unwrap()
            .unwrap();
        assert!(
            s.create_user("ann", "h", Role::Viewer, false, 0)
                .unwrap()
                .is_none()
        );
        let mut locks = Vec::new();
        for _ in 0..7 {
            locks.push(s.login_failed(u.id, 3, 30, 100, 1000).unwrap());
        }
        assert_eq!(
            locks,
            [
                (1, 0),
                (2, 0),
                (3, 1030),
                (4, 1060),
                (5, 1100),
                (6, 1100),
                (7, 1100)
            ]
        );
        s.login_succeeded(u.id).unwrap();
        let u = s.user_by_id(u.id).unwrap().unwrap();
        assert_eq!((u.failed_logins, u.locked_until), (0, 0));
    }

    #[test]
    fn refresh_rotation_and_reuse_revokes_the_family() {
        let s = Store::open_in_memory().unwrap();
        let u = s
            .create_user("ann", "h", Role::Viewer, false, 0)
            .unwrap()
            .unwrap();
        s.add_refresh_token(u.id, "t1", "f", 0, 100).unwrap();
        assert_eq!(
            s.use_refresh_token("t1", 10).unwrap(),
            RefreshOutcome::Rotated {
                user_id: u.id,
                family: "f".into()
            }
        );
        s.add_refresh_token(u.id, "t2", "f", 10, 100).unwrap();
        assert_eq!(
            s.use_refresh_token("t1", 11).unwrap(),
            RefreshOutcome::Reused { user_id: u.id }
        );
        assert!(matches!(
            s.use_refresh_token("t2", 12).unwrap(),
            RefreshOutcome::Reused { .. }
        ));
        s.add_refresh_token(u.id, "t3", "g", 0, 100).unwrap();
        assert_eq!(
            s.use_refresh_token("t3", 100).unwrap(),
            RefreshOutcome::Invalid
        );
        assert_eq!(
            s.use_refresh_token("nope", 1).unwrap(),
            RefreshOutcome::Invalid
        );
    }

    #[test]
    fn migrations_are_idempotent_and_audit_filters() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let s = Store::open(dir.path()).unwrap();
        s.audit(
            "2026-01-01T00:00:00Z",
            "AUTH",
            "ann",
            "login",
            "success",
            "1.2.3.4",
            "",
        )
        .unwrap();
        s.audit(
            "2026-01-02T00:00:00Z",
            "AUTH",
            "bob",
            "login",
            "failure",
            "1.2.3.4",
            "",
        )
        .unwrap();
        s.audit(
            "2026-01-03T00:00:00Z",
            "AUDIT",
            "ann",
            "user.create",
            "success",
            "",
            "",
        )
        .unwrap();
        let f = AuditFilter {
            user: Some("ann".into()),
            ..AuditFilter::default()
        };
        let (items, total) = s.audit_query(&f, 10, 0).unwrap();
        assert_eq!(total, 2);
        assert_eq!(items[0].action, "user.create");
        let f = AuditFilter {
            since: Some("2026-01-02T00:00:00Z".into()),
            ..AuditFilter::default()
        };
        let (items, total) = s.audit_query(&f, 1, 1).unwrap();
        assert_eq!(total, 2);
        assert_eq!(items[0].user, "bob");
    }
}
