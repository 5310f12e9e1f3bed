//! `apid.toml`: the HTTPS listener, TLS files, authentication policy, and the usual `[grpc]`,
//! `[metrics]` and `[state]` sections.
//!
//! Every field has a compiled default (`Config::default()`), documented key by key in the
//! repository's `etc/rookery/apid.toml`. Loading, layering and error reporting are done by
//! `rookery_common::config`; this module only declares the schema and its semantic checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rookery_common::config::{DaemonConfig, GrpcSection, Invalid, MetricsSection, StateSection};
use serde::{Deserialize, Serialize};

/// HTTPS on the standard port: the console is opened by typing the appliance's address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:443";
/// Plain HTTP only to redirect browsers to HTTPS.
pub const DEFAULT_REDIRECT_LISTEN: &str = "0.0.0.0:80";
/// Certificate presented by the API (PEM); generated self-signed at first start if missing.
pub const DEFAULT_TLS_CERT: &str = "/etc/rookery/tls/apid.crt";
/// Private key of the certificate (PEM, mode 0600).
pub const DEFAULT_TLS_KEY: &str = "/etc/rookery/tls/apid.key";
/// Largest request body: config files and JSON bodies are far smaller; 1 MiB stops abuse.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Access tokens are short-lived so a leaked one is useless soon; clients refresh.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// A refresh token keeps a session for a working week without a new login.
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// HMAC key of the access tokens; generated at first start if missing.
pub const DEFAULT_SIGNING_KEY: &str = "/var/lib/rookery/apid/token-signing.key";
/// Written by the image's first boot; read once when there are no users.
pub const DEFAULT_INITIAL_ADMIN: &str = "/run/rookery/initial-admin";
/// Failed logins in a row before the account is locked.
pub const DEFAULT_LOCKOUT_THRESHOLD: u32 = 5;
/// First lockout; doubles with each further failure.
pub const DEFAULT_LOCKOUT_BASE: Duration = Duration::from_secs(30);
/// Longest lockout, so that an attacker cannot lock an admin out for days.
pub const DEFAULT_LOCKOUT_MAX: Duration = Duration::from_secs(15 * 60);
/// Failed logins from one address within [`IP_WINDOW`] before it must wait: enough for
/// people mistyping, far too few for guessing or for spending the CPU on argon2.
pub const DEFAULT_IP_FAILURE_LIMIT: u32 = 20;
/// Window of the per-address failure count.
pub const IP_WINDOW: Duration = Duration::from_secs(300);
/// NIST SP 800-63B asks for at least 8; 12 keeps argon2id guesses out of reach.
pub const DEFAULT_MIN_PASSWORD_LENGTH: usize = 12;
/// Loopback `/healthz` + `/metrics` port of apid (DESIGN.md).
pub const DEFAULT_METRICS_PORT: u16 = 9113;

/// The whole `apid.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub http: HttpSection,
    pub tls: TlsSection,
    pub auth: AuthSection,
    pub daemons: DaemonsSection,
    pub webui: WebuiSection,
    pub grpc: GrpcSection,
    pub metrics: MetricsSection,
    pub state: StateSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpSection::default(),
            tls: TlsSection::default(),
            auth: AuthSection::default(),
            daemons: DaemonsSection::default(),
            webui: WebuiSection::default(),
            grpc: GrpcSection::for_daemon(Self::DAEMON),
            metrics: MetricsSection::loopback(DEFAULT_METRICS_PORT),
            state: StateSection::for_daemon(Self::DAEMON),
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("the DEFAULT_* listen addresses are valid")
}

/// `[http]`: listeners and request limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpSection {
    /// HTTPS listener of `/api/v1`.
    pub listen: SocketAddr,
    /// Whether to listen on plain HTTP to redirect to HTTPS.
    pub redirect: bool,
    /// Plain HTTP listener answering 308 to the HTTPS URL.
    pub redirect_listen: SocketAddr,
    /// Largest request body in bytes; larger ones get 413.
    pub body_limit: usize,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: addr(DEFAULT_LISTEN),
            redirect: true,
            redirect_listen: addr(DEFAULT_REDIRECT_LISTEN),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// `[tls]`: the server certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSection {
    /// PEM certificate chain; when both files are missing a self-signed pair is generated.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert: PathBuf::from(DEFAULT_TLS_CERT),
            key: PathBuf::from(DEFAULT_TLS_KEY),
        }
    }
}

/// `[auth]`: tokens, lockout and password policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthSection {
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// HMAC-SHA256 key of the access tokens (32 random bytes, generated if missing).
    pub signing_key: PathBuf,
    /// One-time admin password file written at first boot.
    pub initial_admin: PathBuf,
    pub lockout_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub lockout_base: Duration,
    #[serde(with = "humantime_serde")]
    pub lockout_max: Duration,
    /// Failed logins per client address within 5 minutes before it gets 429.
    pub ip_failure_limit: u32,
    pub min_password_length: usize,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
            refresh_token_ttl: DEFAULT_REFRESH_TOKEN_TTL,
            signing_key: PathBuf::from(DEFAULT_SIGNING_KEY),
            initial_admin: PathBuf::from(DEFAULT_INITIAL_ADMIN),
            lockout_threshold: DEFAULT_LOCKOUT_THRESHOLD,
            lockout_base: DEFAULT_LOCKOUT_BASE,
            lockout_max: DEFAULT_LOCKOUT_MAX,
            ip_failure_limit: DEFAULT_IP_FAILURE_LIMIT,
            min_password_length: DEFAULT_MIN_PASSWORD_LENGTH,
        }
    }
}

/// A daemon answers its Admin calls in milliseconds; 5 s covers a loaded box.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// `[daemons]`: where apid finds the other daemons and their config files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonsSection {
    /// Directory of the daemons' gRPC sockets (`<daemon>.sock`).
    pub run_dir: PathBuf,
    /// Directory of the daemons' config files (`<daemon>.toml`), which apid writes.
    pub config_dir: PathBuf,
    /// Timeout of one call to a daemon.
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
}

impl Default for DaemonsSection {
    fn default() -> Self {
        Self {
            run_dir: PathBuf::from(rookery_common::RUN_DIR),
            config_dir: PathBuf::from(rookery_common::CONFIG_DIR),
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
        }
    }
}

/// `[webui]`: the web console apid serves outside `/api/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebuiSection {
    /// Directory of the built console (`index.html` and `assets/`); when it is missing,
    /// console paths answer 404 saying so and the API is unaffected.
    pub directory: PathBuf,
}

impl Default for WebuiSection {
    fn default() -> Self {
        Self {
            directory: PathBuf::from(crate::webui::DEFAULT_DIRECTORY),
        }
    }
}

fn range(out: &mut Vec<Invalid>, key: &str, d: Duration, min: Duration, max: Duration) {
    if d < min || d > max {
        out.push(Invalid::new(
            key,
            format!(
                "{} is out of range (expected between \"{}\" and \"{}\")",
                humantime::format_duration(d),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
}

fn absolute(out: &mut Vec<Invalid>, key: &str, p: &std::path::Path) {
    if !p.is_absolute() {
        out.push(Invalid::new(
            key,
            format!("\"{}\" is not an absolute path", p.display()),
        ));
    }
}

impl DaemonConfig for Config {
    const DAEMON: &'static str = "apid";

    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        if self.http.redirect
            && self.http.redirect_listen == self.http.listen
            && self.http.listen.port() != 0
        {
            out.push(Invalid::new(
                "http.redirect-listen",
                format!(
                    "{} is also [http].listen (expected another port, usually 80)",
                    self.http.redirect_listen
                ),
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.http.body_limit) {
            out.push(Invalid::new(
                "http.body-limit",
                format!(
                    "{} is out of range (expected 1024 to 67108864 bytes)",
                    self.http.body_limit
                ),
            ));
        }
        absolute(&mut out, "tls.cert", &self.tls.cert);
        absolute(&mut out, "tls.key", &self.tls.key);
        let a = &self.auth;
        range(
            &mut out,
            "auth.access-token-ttl",
            a.access_token_ttl,
            Duration::from_secs(10),
            Duration::from_secs(24 * 3600),
        );
        range(
            &mut out,
            "auth.refresh-token-ttl",
            a.refresh_token_ttl,
            Duration::from_secs(60),
            Duration::from_secs(90 * 24 * 3600),
        );
        if a.refresh_token_ttl < a.access_token_ttl {
            out.push(Invalid::new(
                "auth.refresh-token-ttl",
                "is shorter than auth.access-token-ttl (expected at least as long)",
            ));
        }
        absolute(&mut out, "auth.signing-key", &a.signing_key);
        absolute(&mut out, "auth.initial-admin", &a.initial_admin);
        if !(1..=100).contains(&a.lockout_threshold) {
            out.push(Invalid::new(
                "auth.lockout-threshold",
                format!(
                    "{} is out of range (expected 1 to 100)",
                    a.lockout_threshold
                ),
            ));
        }
        range(
            &mut out,
            "auth.lockout-base",
            a.lockout_base,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        range(
            &mut out,
            "auth.lockout-max",
            a.lockout_max,
            a.lockout_base,
            Duration::from_secs(24 * 3600),
        );
        if !(1..=10_000).contains(&a.ip_failure_limit) {
            out.push(Invalid::new(
                "auth.ip-failure-limit",
                format!(
                    "{} is out of range (expected 1 to 10000)",
                    a.ip_failure_limit
                ),
            ));
        }
        if !(8..=128).contains(&a.min_password_length) {
            out.push(Invalid::new(
                "auth.min-password-length",
                format!(
                    "{} is out of range (expected 8 to 128)",
                    a.min_password_length
                ),
            ));
        }
        absolute(&mut out, "daemons.run-dir", &self.daemons.run_dir);
        absolute(&mut out, "daemons.config-dir", &self.daemons.config_dir);
        range(
            &mut out,
            "daemons.rpc-timeout",
            self.daemons.rpc_timeout,
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        absolute(&mut out, "webui.directory", &self.webui.directory);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        assert!(Config::default().validate().is_empty());
        let mut c = Config::default();
        c.auth.min_password_length = 4;
        c.auth.access_token_ttl = Duration::from_secs(1);
        c.tls.cert = PathBuf::from("apid.crt");
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "tls.cert",
                "auth.access-token-ttl",
                "auth.min-password-length"
            ]
        );
    }
}
