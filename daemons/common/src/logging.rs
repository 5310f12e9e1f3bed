//! Logging: `tracing` everywhere; the journal under systemd (through the `log` crate and
//! systemd-journal-logger, so aya-log's messages share the funnel), readable stderr otherwise.
//! Also the AAA event lines of DESIGN.md: `AUTH|AUTHZ|AUDIT|ERROR|SYSTEM … user=… action=…
//! result=…`, built by [`aaa_line`] and logged by [`aaa`].
//!
//! The level comes from `ROOKERY_LOG` (e.g. `debug`, `info,rookery_licensed=trace`), default
//! `info`.

use std::fmt;

use tracing_subscriber::EnvFilter;

/// Environment variable with the log filter.
pub const LOG_ENV: &str = "ROOKERY_LOG";

/// Installs the logger of daemon `daemon` (syslog identifier `rookery-<daemon>`). Call once,
/// first thing in `main`.
pub fn init(daemon: &str) {
    let filter = std::env::var(LOG_ENV).unwrap_or_else(|_| "info".to_owned());
    if systemd_journal_logger::connected_to_journal()
        && let Ok(journal) = systemd_journal_logger::JournalLog::new()
    {
        let journal = journal.with_syslog_identifier(format!("rookery-{daemon}"));
        if journal.install().is_ok() {
            log::set_max_level(parse_level(&filter));
            return;
        }
    }
    let env = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Most verbose level named in a filter like `info,rookery_licensed=debug`.
fn parse_level(filter: &str) -> log::LevelFilter {
    filter
        .split(',')
        .filter_map(|part| {
            part.rsplit('=')
                .next()?
                .trim()
                .parse::<log::LevelFilter>()
                .ok()
        })
        .max()
        .unwrap_or(log::LevelFilter::Info)
}

/// Kind of an AAA event line (DESIGN.md "Audit").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AaaKind {
    /// Authentication: logins, logouts, token and key use.
    Auth,
    /// Authorisation decisions.
    Authz,
    /// Changes: who changed what.
    Audit,
    /// Failures an operator should see next to the above.
    Error,
    /// Lifecycle of the system itself: start, stop, reload, licence state.
    System,
}

impl AaaKind {
    /// The line's first word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "AUTH",
            Self::Authz => "AUTHZ",
            Self::Audit => "AUDIT",
            Self::Error => "ERROR",
            Self::System => "SYSTEM",
        }
    }
}

impl fmt::Display for AaaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds an AAA line: `KIND user=U action=A result=R k=v …`. Values with spaces, quotes or
/// `=` are double-quoted with escapes, so the line always splits back into the same fields.
pub fn aaa_line(
    kind: AaaKind,
    user: &str,
    action: &str,
    result: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut line = String::from(kind.as_str());
    for (k, v) in [("user", user), ("action", action), ("result", result)]
        .iter()
        .chain(extra)
    {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(&quote(v));
    }
    line
}

fn quote(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control())
    {
        return v.to_owned();
    }
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Logs an AAA line: `ERROR` and failed results at WARN or above, the rest at INFO.
pub fn aaa(kind: AaaKind, user: &str, action: &str, result: &str, extra: &[(&str, &str)]) {
    let line = aaa_line(kind, user, action, result, extra);
    let failed = matches!(result, "failure" | "denied" | "error" | "rejected");
    match kind {
        AaaKind::Error => tracing::error!(target: "rookery::aaa", "{line}"),
        _ if failed => tracing::warn!(target: "rookery::aaa", "{line}"),
        _ => tracing::info!(target: "rookery::aaa", "{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aaa_line_has_the_design_shape() {
        assert_eq!(
            aaa_line(
                AaaKind::Auth,
                "alice",
                "login",
                "success",
                &[("src", "10.0.0.5")]
            ),
            "AUTH user=alice action=login result=success src=10.0.0.5"
        );
    }

    #[test]
    fn aaa_values_that_would_split_are_quoted() {
        assert_eq!(
            aaa_line(
                AaaKind::Audit,
                "bob smith",
                "config.put",
                "success",
                &[("why", "a=\"b\"\n")]
            ),
            "AUDIT user=\"bob smith\" action=config.put result=success why=\"a=\\\"b\\\"\\n\""
        );
        assert_eq!(
            aaa_line(AaaKind::System, "", "reload", "ok", &[]),
            "SYSTEM user=\"\" action=reload result=ok"
        );
    }

    #[test]
    fn level_is_the_most_verbose_named() {
        assert_eq!(
            parse_level("info,rookery_licensed=debug"),
            log::LevelFilter::Debug
        );
        assert_eq!(parse_level("warn"), log::LevelFilter::Warn);
        assert_eq!(parse_level("nonsense"), log::LevelFilter::Info);
    }
}
