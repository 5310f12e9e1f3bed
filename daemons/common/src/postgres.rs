//! The PostgreSQL connection of the daemons' optional fleet stores (probed's results,
//! ingestd's logs and metrics): the `[store.postgres]` config section, its checks, and a
//! connection pool (sqlx) with errors an operator can act on.
//!
//! The password never has to be in the daemon's config: `password-file` names a file
//! (e.g. a systemd credential) whose first line is the password; a password in the URL
//! works too. Messages show the URL with its password removed.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::Invalid;

/// Connections of one daemon's pool: its writer and a few concurrent queries.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;
/// How long connecting (and waiting for a pooled connection) may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[store.postgres]`: where the store lives when `store.backend = "postgres"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresSection {
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…]` (libpq's URL form).
    pub url: String,
    /// File whose first line is the password (overrides one in the URL).
    pub password_file: Option<PathBuf>,
    /// Most connections the daemon opens.
    pub max_connections: u32,
    /// Bound on connecting and on waiting for a free connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for PostgresSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            password_file: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Cannot reach or log in to the PostgreSQL server.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse (config checks catch this first).
    #[error("store.postgres.url \"{url}\" is not a PostgreSQL URL: {message}")]
    Url {
        /// The URL, password removed.
        url: String,
        /// Why.
        message: String,
    },
    /// The password file cannot be read.
    #[error("cannot read store.postgres.password-file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server refused, timed out or failed the login.
    #[error("cannot connect to PostgreSQL at {url}: {message}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// sqlx's reason.
        message: String,
    },
}

/// `url` with the password (if any) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (a, h),
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl PostgresSection {
    /// Checks of this section (only meaningful when the backend is PostgreSQL), with keys
    /// under `section`.
    pub fn validate(&self, section: &str) -> Vec<Invalid> {
        let mut out = Vec::new();
        if self.url.is_empty() {
            out.push(Invalid::new(
                format!("{section}.url"),
                "is required when the store backend is \"postgres\" (expected postgres://USER@HOST:PORT/DATABASE)",
            ));
        } else if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            out.push(Invalid::new(
                format!("{section}.url"),
                format!(
                    "\"{}\" is not a PostgreSQL URL (expected postgres://USER@HOST:PORT/DATABASE)",
                    redact(&self.url)
                ),
            ));
        } else if let Err(e) = PgConnectOptions::from_str(&self.url) {
            out.push(Invalid::new(
                format!("{section}.url"),
                format!("\"{}\" does not parse: {e}", redact(&self.url)),
            ));
        }
        if let Some(p) = &self.password_file
            && !p.is_absolute()
        {
            out.push(Invalid::new(
                format!("{section}.password-file"),
                format!("\"{}\" is not an absolute path", p.display()),
            ));
        }
        if !(1..=100).contains(&self.max_connections) {
            out.push(Invalid::new(
                format!("{section}.max-connections"),
                format!(
                    "{} is out of range (expected 1 to 100)",
                    self.max_connections
                ),
            ));
        }
        if self.connect_timeout < Duration::from_millis(100)
            || self.connect_timeout > Duration::from_secs(300)
        {
            out.push(Invalid::new(
                format!("{section}.connect-timeout"),
                format!(
                    "{} is out of range (expected \"100ms\" to \"5m\")",
                    humantime::format_duration(self.connect_timeout)
                ),
            ));
        }
        out
    }

    /// The URL as shown in messages and status (password removed).
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    /// Opens the pool and one connection, so a wrong URL, password or unreachable server
    /// is reported at start, not at the first write.
    pub async fn connect(&self) -> Result<PgPool, ConnectError> {
        let url = self.display_url();
        let mut options = PgConnectOptions::from_str(&self.url).map_err(|e| ConnectError::Url {
            url: url.clone(),
            message: e.to_string(),
        })?;
        if let Some(path) = &self.password_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConnectError::PasswordFile {
                    path: path.clone(),
                    source,
                })?;
            options = options.password(text.lines().next().unwrap_or_default());
        }
        options = options.application_name(&format!(
            "rookery-{}",
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "daemon".to_owned())
        ));
        let connect = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.connect_timeout)
            .connect_with(options);
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(pool)) => Ok(pool),
            Ok(Err(e)) => Err(ConnectError::Connect {
                url,
                message: e.to_string(),
            }),
            Err(_) => Err(ConnectError::Connect {
                url,
                message: format!(
                    "no answer within {}",
                    humantime::format_duration(self.connect_timeout)
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://probed:s3cret@db:5432/rookery"),
            "postgres://probed:***@db:5432/rookery"
        );
        assert_eq!(
            redact("postgres://probed@db/rookery"),
            "postgres://probed@db/rookery"
        );
    }

    #[test]
    fn checks_name_the_key() {
        let s = PostgresSection::default();
        let keys: Vec<String> = s
            .validate("store.postgres")
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(keys, ["store.postgres.url"]);
        let s = PostgresSection {
            url: "mysql://x@y/z".to_owned(),
            password_file: Some("rel".into()),
            max_connections: 0,
            connect_timeout: Duration::ZERO,
        };
        let keys: Vec<String> = s
            .validate("store.postgres")
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(
            keys,
            [
                "store.postgres.url",
                "store.postgres.password-file",
                "store.postgres.max-connections",
                "store.postgres.connect-timeout"
            ]
        );
        let ok = PostgresSection {
            url: "postgres://probed@127.0.0.1:5432/rookery?sslmode=disable".to_owned(),
            ..PostgresSection::default()
        };
        assert!(ok.validate("store.postgres").is_empty());
    }
}
