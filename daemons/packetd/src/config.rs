//! `packetd.toml`: the interfaces the XDP reflector attaches to, its attach mode and ports.
//!
//! Every field has a compiled default (`Config::default()`), documented key by key in the
//! repository's `etc/rookery/packetd.toml`. Loading, layering and error reporting are done by
//! `rookery_common::config`; this module only declares the schema and its semantic checks.

use std::collections::BTreeSet;

use rookery_common::config::{DaemonConfig, GrpcSection, Invalid, MetricsSection, StateSection};
use serde::{Deserialize, Serialize};

use crate::allow::Prefix;
use crate::xdp::{ALLOW_MAX, ModePolicy};

/// STAMP's well-known port (RFC 8762 §4.1).
pub const DEFAULT_STAMP_PORT: u16 = 862;
/// UDP echo port of the appliance (DESIGN.md).
pub const DEFAULT_ECHO_PORT: u16 = 2000;
/// Default per-source reply bound (replies per second per source address).
pub const DEFAULT_MAX_PPS_PER_SOURCE: u32 = 10_000;
/// Loopback `/healthz` + `/metrics` port of packetd (DESIGN.md).
pub const DEFAULT_METRICS_PORT: u16 = 9111;

/// The whole `packetd.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub xdp: XdpSection,
    pub sessions: SessionsSection,
    pub generator: GeneratorSection,
    pub grpc: GrpcSection,
    pub metrics: MetricsSection,
    pub state: StateSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            xdp: XdpSection::default(),
            sessions: SessionsSection::default(),
            generator: GeneratorSection::default(),
            grpc: GrpcSection::for_daemon(Self::DAEMON),
            metrics: MetricsSection::loopback(DEFAULT_METRICS_PORT),
            state: StateSection::for_daemon(Self::DAEMON),
        }
    }
}

/// Attach mode of the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Driver mode only; an interface without native XDP is an error.
    Native,
    /// Generic (skb) mode only: works on every interface, slower.
    Skb,
    /// Native, falling back to generic, then to the userspace reflector, with the reason logged.
    Auto,
    /// The userspace reflector on UDP sockets only (no XDP).
    Userspace,
}

impl Mode {
    /// The loader's policy for this mode (`None`: no XDP at all).
    pub fn policy(self) -> Option<ModePolicy> {
        match self {
            Self::Native => Some(ModePolicy::Native),
            Self::Skb => Some(ModePolicy::Skb),
            Self::Auto => Some(ModePolicy::Auto),
            Self::Userspace => None,
        }
    }
}

/// `[xdp]`: where and how the in-kernel STAMP reflector and echo run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct XdpSection {
    /// Interfaces to attach to; empty = the reflector is off (nothing is answered).
    pub interfaces: Vec<String>,
    /// `native`, `skb` or `auto`.
    pub mode: Mode,
    /// UDP port of the STAMP Session-Reflector.
    pub stamp_port: u16,
    /// UDP port of the echo service; 0 = echo off.
    pub echo_port: u16,
    /// Source prefixes answered; empty = the on-link prefixes of `interfaces`.
    pub allow_sources: Vec<Prefix>,
    /// Replies per source address per second; 0 = unbounded.
    pub max_pps_per_source: u32,
}

impl Default for XdpSection {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            mode: Mode::Auto,
            stamp_port: DEFAULT_STAMP_PORT,
            echo_port: DEFAULT_ECHO_PORT,
            allow_sources: Vec::new(),
            max_pps_per_source: DEFAULT_MAX_PPS_PER_SOURCE,
        }
    }
}

/// `[sessions]`: limits of the STAMP Session-Sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SessionsSection {
    /// Most packets per second one session may send.
    pub max_pps: u32,
    /// Most sessions running at once.
    pub max_concurrent: u32,
    /// Finished sessions kept in the store (the newest).
    pub max_stored: u32,
}

impl Default for SessionsSection {
    fn default() -> Self {
        Self {
            max_pps: 10_000,
            max_concurrent: 4,
            max_stored: 1000,
        }
    }
}

/// How raw rate generator sessions send (`[generator] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// AF_XDP where it can be used, else the socket path, with the reason logged.
    #[default]
    Auto,
    /// AF_XDP only: a session that cannot use it fails, naming why.
    AfXdp,
    /// The socket path (`sendmmsg`) only.
    Socket,
}

/// `[generator]`: the transmit path of raw rate generator sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GeneratorSection {
    /// `auto`, `af-xdp` or `socket`.
    pub backend: Backend,
    /// The egress interface's queue the AF_XDP socket binds to (the next free one when
    /// another session holds it).
    pub queue: u32,
    /// Let the kernel use zero-copy AF_XDP where the driver supports it (else copy mode);
    /// false: copy mode always.
    pub zero_copy: bool,
}

impl Default for GeneratorSection {
    fn default() -> Self {
        Self {
            backend: Backend::Auto,
            queue: 0,
            zero_copy: true,
        }
    }
}

/// Linux interface names: 1 to 15 bytes, no `/`, whitespace or NUL (`dev_valid_name`).
fn interface_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        Some("must be 1 to 15 bytes long")
    } else if name == "." || name == ".." {
        Some("is not a valid interface name")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Some("must not contain '/', ':', whitespace or NUL")
    } else {
        None
    }
}

impl DaemonConfig for Config {
    const DAEMON: &'static str = "packetd";

    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let x = &self.xdp;
        let mut seen = BTreeSet::new();
        for (i, name) in x.interfaces.iter().enumerate() {
            if let Some(problem) = interface_name_problem(name) {
                out.push(Invalid::new(
                    format!("xdp.interfaces[{i}]"),
                    format!("\"{name}\" {problem} (expected an interface name like \"eth0\")"),
                ));
            } else if !seen.insert(name.as_str()) {
                out.push(Invalid::new(
                    format!("xdp.interfaces[{i}]"),
                    format!("\"{name}\" is listed twice"),
                ));
            }
        }
        if x.stamp_port == 0 {
            out.push(Invalid::new(
                "xdp.stamp-port",
                "must not be 0 (expected 1 to 65535, usually 862)",
            ));
        }
        if x.echo_port != 0 && x.echo_port == x.stamp_port {
            out.push(Invalid::new(
                "xdp.echo-port",
                format!(
                    "{} is also the stamp-port (expected another port, or 0 for no echo)",
                    x.echo_port
                ),
            ));
        }
        if x.allow_sources.len() > ALLOW_MAX {
            out.push(Invalid::new(
                "xdp.allow-sources",
                format!(
                    "{} prefixes (expected at most {ALLOW_MAX}; merge them into shorter prefixes)",
                    x.allow_sources.len()
                ),
            ));
        }
        let se = &self.sessions;
        for (key, v, max) in [
            ("sessions.max-pps", se.max_pps, 1_000_000),
            ("sessions.max-concurrent", se.max_concurrent, 64),
            ("sessions.max-stored", se.max_stored, 1_000_000),
        ] {
            if v == 0 || v > max {
                out.push(Invalid::new(key, format!("{v} (expected 1 to {max})")));
            }
        }
        if self.generator.queue > 1023 {
            out.push(Invalid::new(
                "generator.queue",
                format!(
                    "{} (expected a queue index, 0 to 1023)",
                    self.generator.queue
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(Config::default().validate().is_empty());
        let mut c = Config::default();
        c.xdp.interfaces = vec![
            "eth0".into(),
            "eth0".into(),
            "a/b".into(),
            "waytoolonginterface".into(),
        ];
        c.xdp.stamp_port = 2000;
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "xdp.interfaces[1]",
                "xdp.interfaces[2]",
                "xdp.interfaces[3]",
                "xdp.echo-port"
            ]
        );
        c = Config::default();
        c.xdp.stamp_port = 0;
        assert_eq!(c.validate()[0].key, "xdp.stamp-port");
        c = Config::default();
        c.generator.queue = 5000;
        assert_eq!(c.validate()[0].key, "generator.queue");
    }

    #[test]
    fn a_bad_generator_backend_is_named_with_its_position() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("packetd.toml");
        let sources = rookery_common::config::Sources::new("packetd", Some(&path), []);
        let text = "[generator]\nqueue = 1\nbackend = \"xdp\"\n";
        let err = rookery_common::config::load_candidate::<Config>(&sources, text)
            .err()
            .unwrap_or_else(|| panic!("backend = \"xdp\" was accepted"));
        let all = err
            .0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("packetd.toml:3:11"), "{all}");
        assert!(all.contains("generator.backend"), "{all}");
        for good in ["auto", "af-xdp", "socket"] {
            let text = format!("[generator]\nbackend = \"{good}\"\n");
            let loaded = rookery_common::config::load_candidate::<Config>(&sources, &text)
                .unwrap_or_else(|e| panic!("{good}: {e:?}"));
            assert_eq!(
                loaded.config.generator.backend,
                match good {
                    "auto" => Backend::Auto,
                    "af-xdp" => Backend::AfXdp,
                    _ => Backend::Socket,
                }
            );
        }
    }
}
