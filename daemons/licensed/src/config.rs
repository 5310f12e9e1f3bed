//! `licensed.toml`: the licence key, the licence server, release mode and offline grace.
//!
//! Every field has a compiled default (`Config::default()`), documented key by key in the
//! repository's `etc/rookery/licensed.toml`. Loading, layering and error reporting are done by
//! `rookery_common::config`; this module only declares the schema and its semantic checks.

use std::path::PathBuf;
use std::time::Duration;

use rookery_common::config::{DaemonConfig, GrpcSection, Invalid, MetricsSection, StateSection};
use serde::{Deserialize, Serialize};

use crate::key::LicenceKey;

/// Default licence server of the vendor.
pub const DEFAULT_SERVER_URL: &str = "https://license.penguintech.io";
/// Product name sent to the licence server.
pub const DEFAULT_PRODUCT: &str = "rookery";
/// Keepalives report usage and refresh entitlements; hourly keeps server load low while a
/// revoked licence takes effect within the hour.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3600);
/// One HTTP request to the licence server, connect included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long cached entitlements stay valid without reaching the server: a week covers a
/// long weekend of uplink outage plus the time to notice and fix it.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);
/// Attempts per request before giving up until the next cycle (1 = no retry).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// Where an operator installs a signed offline licence for air-gapped probes.
pub const DEFAULT_OFFLINE_FILE: &str = "/etc/rookery/licence.json";
/// Loopback `/healthz` + `/metrics` port of licensed (DESIGN.md).
pub const DEFAULT_METRICS_PORT: u16 = 9114;

/// The whole `licensed.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub licence: LicenceSection,
    pub grpc: GrpcSection,
    pub metrics: MetricsSection,
    pub state: StateSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            licence: LicenceSection::default(),
            grpc: GrpcSection::for_daemon(Self::DAEMON),
            metrics: MetricsSection::loopback(DEFAULT_METRICS_PORT),
            state: StateSection::for_daemon(Self::DAEMON),
        }
    }
}

/// `[licence]`: key, server and grace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LicenceSection {
    /// Licence key `PENG-XXXX-XXXX-XXXX-XXXX-ABCD`; empty = no key (a key set through
    /// `rookeryctl licence set-key` or the API is kept in the state directory and wins).
    pub key: String,
    /// Base URL of the licence server (`/api/v2/...` is appended).
    pub server_url: String,
    /// Product name sent with every request.
    pub product: String,
    /// Off (development builds): every feature on, no check fails. On: entitlements rule.
    pub release_mode: bool,
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Attempts per request (with exponential backoff and jitter between them).
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Ed25519-signed offline licence file; used when present.
    pub offline_file: PathBuf,
    /// Extra PEM trust anchors for a private licence server; empty = system roots only.
    pub ca_file: Option<PathBuf>,
}

impl Default for LicenceSection {
    fn default() -> Self {
        Self {
            key: String::new(),
            server_url: DEFAULT_SERVER_URL.to_owned(),
            product: DEFAULT_PRODUCT.to_owned(),
            release_mode: false,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            grace_period: DEFAULT_GRACE_PERIOD,
            offline_file: PathBuf::from(DEFAULT_OFFLINE_FILE),
            ca_file: None,
        }
    }
}

impl DaemonConfig for Config {
    const DAEMON: &'static str = "licensed";

    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let l = &self.licence;
        if !l.key.is_empty()
            && let Err(err) = l.key.parse::<LicenceKey>()
        {
            out.push(Invalid::new("licence.key", err.to_string()));
        }
        match l.server_url.split_once("://") {
            Some(("https" | "http", rest)) if !rest.is_empty() => {}
            _ => out.push(Invalid::new(
                "licence.server-url",
                format!(
                    "\"{}\" is not an http(s) URL (expected e.g. \"https://licence.example.com\")",
                    l.server_url
                ),
            )),
        }
        if l.product.trim().is_empty() {
            out.push(Invalid::new("licence.product", "must not be empty"));
        }
        if l.keepalive_interval < Duration::from_secs(60) {
            out.push(Invalid::new(
                "licence.keepalive-interval",
                format!(
                    "{} is too short (expected at least \"1m\")",
                    humantime::format_duration(l.keepalive_interval)
                ),
            ));
        }
        if l.request_timeout.is_zero() || l.request_timeout > Duration::from_secs(300) {
            out.push(Invalid::new(
                "licence.request-timeout",
                format!(
                    "{} is out of range (expected between \"1s\" and \"5m\")",
                    humantime::format_duration(l.request_timeout)
                ),
            ));
        }
        if !(1..=10).contains(&l.max_attempts) {
            out.push(Invalid::new(
                "licence.max-attempts",
                format!("{} is out of range (expected 1 to 10)", l.max_attempts),
            ));
        }
        if l.grace_period < Duration::from_secs(3600) {
            out.push(Invalid::new(
                "licence.grace-period",
                format!(
                    "{} is too short (expected at least \"1h\")",
                    humantime::format_duration(l.grace_period)
                ),
            ));
        }
        out.extend(self.grpc.validate("grpc"));
        out.extend(self.metrics.validate("metrics"));
        out.extend(self.state.validate("state"));
        out
    }

    fn grpc(&self) -> &GrpcSection {
        &self.grpc
    }

    fn metrics(&self) -> &MetricsSection {
        &self.metrics
    }
}
