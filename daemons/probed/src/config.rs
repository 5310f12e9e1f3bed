//! `probed.toml`: modules (a named probe type with its options and assertions, in the spirit of
//! blackbox_exporter's modules), targets (what to probe, with which module, how often) and the
//! scheduler, store, gRPC and metrics sections.
//!
//! Every field has a compiled default (`Config::default()`), documented key by key in the
//! repository's `etc/rookery/probed.toml`. Loading, layering and error reporting are done by
//! `rookery_common::config`; this module only declares the schema and its semantic checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rookery_common::config::{DaemonConfig, GrpcSection, Invalid, MetricsSection, StateSection};
use rookery_common::postgres::PostgresSection;
use serde::{Deserialize, Serialize};

use crate::probe::address;

/// Loopback `/healthz`, `/metrics` and `/probe` port of probed (DESIGN.md, blackbox's 9115).
pub const DEFAULT_METRICS_PORT: u16 = 9115;
/// Probes in flight at once: bounds sockets and memory on a two-core box while thousands of
/// targets at a 30 s interval still average well under this many concurrent probes.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 256;
/// Interval of a target that sets none: blackbox's usual Prometheus scrape interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Timeout of a module that sets none (blackbox's default scrape timeout is close to this).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long results stay in the local store: a week of history covers a weekend incident.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Echo requests per ICMP probe: three give min/avg/max and a coarse loss figure quickly.
pub const DEFAULT_ICMP_COUNT: u32 = 3;
/// Gap between echo requests of one ICMP probe.
pub const DEFAULT_ICMP_INTERVAL: Duration = Duration::from_millis(200);
/// ICMP payload bytes: 56, like ping(8), for an 84-byte IPv4 packet.
pub const DEFAULT_ICMP_PAYLOAD: usize = 56;
/// Redirects an HTTP probe follows before failing (browsers allow about 20; 10 is plenty).
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;

/// Shortest interval a target may have: probing faster is load testing, not monitoring.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest timeout of a probe.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// The whole `probed.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// What to probe: `[[targets]]`. Shared: the scheduler and the metrics hold these same
    /// targets rather than copies (thousands of targets are megabytes).
    #[serde(with = "shared_targets")]
    pub targets: Vec<Arc<Target>>,
    /// How to probe: `[modules.<name>]`.
    pub modules: BTreeMap<String, Module>,
    pub scheduler: SchedulerSection,
    pub autoperf: AutoperfSection,
    pub store: StoreSection,
    pub grpc: GrpcSection,
    pub metrics: MetricsSection,
    pub state: StateSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            modules: BTreeMap::new(),
            scheduler: SchedulerSection::default(),
            autoperf: AutoperfSection::default(),
            store: StoreSection::default(),
            grpc: GrpcSection::for_daemon(Self::DAEMON),
            metrics: MetricsSection::loopback(DEFAULT_METRICS_PORT),
            state: StateSection::for_daemon(Self::DAEMON),
        }
    }
}

/// `[scheduler]`: how scheduled probes share the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SchedulerSection {
    /// Probes in flight at once (scheduled, `/probe` and `RunNow` together).
    pub max_concurrency: u32,
    /// Interval of targets that set none.
    #[serde(with = "humantime_serde")]
    pub default_interval: Duration,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        Self {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            default_interval: DEFAULT_INTERVAL,
        }
    }
}

/// `[autoperf]`: continuous mode over a set of targets, gated by licensed's `autoperf`
/// feature (always on while licensed's release mode is off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AutoperfSection {
    /// Run the listed targets continuously.
    pub enabled: bool,
    /// Names of `[[targets]]` to run continuously.
    pub targets: Vec<String>,
    /// Interval of those targets while AutoPerf runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// licensed's gRPC socket, asked for the `autoperf` feature.
    pub licensed_socket: PathBuf,
    /// How often the feature is asked again (an unreachable licensed keeps the last answer).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

/// Interval of AutoPerf targets: one probe a second per target is "continuous" at a cost a
/// two-core probe can carry for dozens of targets.
pub const DEFAULT_AUTOPERF_INTERVAL: Duration = Duration::from_secs(1);
/// How often AutoPerf asks licensed: a revoked entitlement stops it within minutes.
pub const DEFAULT_AUTOPERF_CHECK: Duration = Duration::from_secs(300);

impl Default for AutoperfSection {
    fn default() -> Self {
        Self {
            enabled: false,
            targets: Vec::new(),
            interval: DEFAULT_AUTOPERF_INTERVAL,
            licensed_socket: GrpcSection::for_daemon("licensed").socket,
            check_interval: DEFAULT_AUTOPERF_CHECK,
        }
    }
}

/// `[store]`: the results database: local SQLite (`results.sqlite` in the state directory)
/// or, for fleets, a PostgreSQL server (`[store.postgres]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreSection {
    /// Where results go.
    pub backend: StoreBackend,
    /// Results older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// The server of `backend = "postgres"`.
    pub postgres: PostgresSection,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sqlite,
            retention: DEFAULT_RETENTION,
            postgres: PostgresSection::default(),
        }
    }
}

/// The results database kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    /// `results.sqlite` (WAL) in the state directory.
    Sqlite,
    /// A PostgreSQL server shared by a fleet of probes (`[store.postgres]`).
    Postgres,
}

/// The kind of probe a module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prober {
    Icmp,
    Tcp,
    Udp,
    Dns,
    Http,
    Tls,
    Ssh,
    Grpc,
    Http3,
}

impl Prober {
    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Icmp => "icmp",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Dns => "dns",
            Self::Http => "http",
            Self::Tls => "tls",
            Self::Ssh => "ssh",
            Self::Grpc => "grpc",
            Self::Http3 => "http3",
        }
    }
}

/// `[modules.<name>]`: a probe type with its options and assertions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Module {
    /// Which probe: `icmp`, `tcp`, `udp`, `dns`, `http`, `http3`, `tls`, `grpc`, `ssh`.
    pub prober: Prober,
    /// Whole-probe timeout (resolve to last byte); targets may override it.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Address family when a name resolves to both.
    #[serde(default)]
    pub ip_version: IpVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpModule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpModule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpModule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsModule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsModule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpModule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcModule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshModule>,
}

impl Module {
    /// A module of `prober` with `timeout` and every option at its default (the ad-hoc checks
    /// of tier 2 diagnostics fill in the one section they need).
    pub fn bare(prober: Prober, timeout: Duration) -> Self {
        Self {
            prober,
            timeout,
            ip_version: IpVersion::Any,
            tcp: None,
            udp: None,
            http: None,
            tls: None,
            dns: None,
            icmp: None,
            grpc: None,
            ssh: None,
        }
    }
}

/// `[modules.<name>.ssh]`: banner and key exchange; the target is `host[:port]` (port 22).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SshModule {
    /// Host key fingerprint the server must present, as `ssh-keygen -lf` prints it
    /// (`SHA256:…`); empty = any key.
    pub expected_fingerprint: String,
    /// Regular expression the server's banner must match; empty = no check.
    pub banner_regex: String,
}

/// `[modules.<name>.grpc]`: a `grpc.health.v1.Health/Check` call; the target is `host:port`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GrpcModule {
    /// Service name to check; empty = the server as a whole.
    pub service: String,
    /// Use TLS (options in `[modules.<name>.tls]`); off = cleartext HTTP/2.
    pub tls: bool,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// Preferred address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpVersion {
    /// The first address the resolver returns.
    #[default]
    Any,
    /// IPv4 only.
    Ip4,
    /// IPv6 only.
    Ip6,
}

/// `[modules.<name>.tcp]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TcpModule {
    /// Start TLS right after connecting (options in `[modules.<name>.tls]`).
    pub tls: bool,
    /// Sent after connecting (TOML escapes like `\r\n` work); empty = send nothing.
    pub send: String,
    /// Regular expression the received bytes must match; empty = connecting is enough.
    pub expect: String,
}

/// `[modules.<name>.udp]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct UdpModule {
    /// The datagram to send (must not be empty).
    pub send: String,
    /// Regular expression the reply must match; empty = any reply.
    pub expect: String,
}

/// `[modules.<name>.http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpModule {
    /// Request method.
    pub method: String,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: String,
    /// Statuses that count as success; empty = any 2xx.
    pub valid_status_codes: Vec<u16>,
    /// Regular expression the body must match; empty = no check.
    pub body_regex: String,
    /// Follow 3xx redirects.
    pub follow_redirects: bool,
    /// Redirects followed before the probe fails.
    pub max_redirects: u32,
    /// `auto` (HTTP/2 when the server offers it over TLS), `http1` or `http2`.
    pub version: HttpVersion,
}

impl Default for HttpModule {
    fn default() -> Self {
        Self {
            method: "GET".to_owned(),
            headers: BTreeMap::new(),
            body: String::new(),
            valid_status_codes: Vec::new(),
            body_regex: String::new(),
            follow_redirects: true,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            version: HttpVersion::Auto,
        }
    }
}

/// HTTP version an HTTP probe speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpVersion {
    /// HTTP/2 if ALPN agrees, else HTTP/1.1; cleartext is HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (prior knowledge over cleartext).
    Http2,
}

/// `[modules.<name>.tls]`: TLS options of `tls`, `http` (https) and `tcp` (with `tls = true`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsModule {
    /// Extra PEM trust anchors; when set, only these are trusted (not the system roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Name to send (SNI) and verify instead of the target's host.
    pub server_name: String,
    /// Complete the handshake even if the chain does not verify (the failure is still
    /// reported as a fact, not as the probe's result).
    pub insecure_skip_verify: bool,
    /// Fail when the earliest expiry in the chain is fewer than this many days away.
    pub min_days_valid: u32,
}

/// `[modules.<name>.dns]`: the target is the DNS server (`host` or `host:port`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DnsModule {
    /// Name to query.
    pub query_name: String,
    /// Record type: A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, CAA.
    pub query_type: String,
    /// `udp` or `tcp`.
    pub transport: DnsTransport,
    /// Set the RD (recursion desired) bit.
    pub recursion_desired: bool,
    /// Expected response code: NOERROR, NXDOMAIN, SERVFAIL, REFUSED, …
    pub expect_rcode: String,
    /// Values that must all be among the answers (e.g. "192.0.2.1" for A); empty = no check.
    pub expect_answers: Vec<String>,
}

impl Default for DnsModule {
    fn default() -> Self {
        Self {
            query_name: String::new(),
            query_type: "A".to_owned(),
            transport: DnsTransport::Udp,
            recursion_desired: true,
            expect_rcode: "NOERROR".to_owned(),
            expect_answers: Vec::new(),
        }
    }
}

/// DNS transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsTransport {
    #[default]
    Udp,
    Tcp,
}

/// `[modules.<name>.icmp]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct IcmpModule {
    /// Echo requests per probe.
    pub count: u32,
    /// Gap between echo requests.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Payload bytes per request.
    pub payload_size: usize,
    /// `auto` (unprivileged ICMP socket when `net.ipv4.ping_group_range` allows, else raw),
    /// `unprivileged` or `raw` (needs CAP_NET_RAW).
    pub socket: IcmpSocket,
}

impl Default for IcmpModule {
    fn default() -> Self {
        Self {
            count: DEFAULT_ICMP_COUNT,
            interval: DEFAULT_ICMP_INTERVAL,
            payload_size: DEFAULT_ICMP_PAYLOAD,
            socket: IcmpSocket::Auto,
        }
    }
}

/// Which kind of ICMP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IcmpSocket {
    #[default]
    Auto,
    Unprivileged,
    Raw,
}

/// `[[targets]]`: one thing to probe on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Target {
    /// Unique name (the `target` label of the metrics).
    pub name: String,
    /// Name of a `[modules.<name>]`.
    pub module: String,
    /// What to probe: a URL for http, `host:port` for tcp/udp/tls, `host[:port]` of the
    /// server for dns, a host for icmp.
    pub address: String,
    /// Time between probes; default `[scheduler] default-interval`.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// Overrides the module's timeout.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Extra labels on this target's metrics.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Tiered escalation; absent = tier 1 only. Boxed: most targets have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Box<TierPolicy>>,
}

/// `[[targets]]` as a list of shared targets, exactly sized.
mod shared_targets {
    use std::fmt;
    use std::sync::Arc;

    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use super::Target;

    pub fn serialize<S: Serializer>(targets: &[Arc<Target>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(targets.iter().map(|t| &**t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Arc<Target>>, D::Error> {
        struct Targets;
        impl<'de> Visitor<'de> for Targets {
            type Value = Vec<Arc<Target>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // The hint is bounded: it comes from the file.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(t) = seq.next_element::<Target>()? {
                    out.push(Arc::new(t));
                }
                out.shrink_to_fit();
                Ok(out)
            }
        }
        d.deserialize_seq(Targets)
    }
}

/// `tiers = { … }` of a target: when it escalates to tier 2 and 3 and when it returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TierPolicy {
    /// Tier 2 when this many of the last `window` probes breached.
    pub failures: u32,
    /// How many recent probes are judged.
    pub window: u32,
    /// Tier 3 (critical) when this many of the last `window` probes breached.
    pub critical_failures: u32,
    /// A successful probe slower than this breaches; "0s" = no latency threshold.
    #[serde(with = "humantime_serde")]
    pub max_latency: Duration,
    /// An ICMP probe losing more than this fraction breaches (0 to 1).
    pub max_loss: f64,
    /// Probe interval while escalated (never longer than the target's interval).
    #[serde(with = "humantime_serde")]
    pub escalated_interval: Duration,
    /// Healthy probes in a row that return the target to tier 1.
    pub recover_after: u32,
    /// Tier 2 diagnostics: DNS servers (`host[:port]`) asked for the target's name, to tell
    /// a local resolver problem from a real one.
    pub resolvers: Vec<String>,
    /// Tier 2 diagnostics: other TCP ports of the target's host to try (is the host up at
    /// all, or only this service down?).
    pub alternate_ports: Vec<u16>,
}

impl Default for TierPolicy {
    fn default() -> Self {
        // 3 of 5 rides out a single lost packet or restart; 5 of 5 is an outage.
        Self {
            failures: 3,
            window: 5,
            critical_failures: 5,
            max_latency: Duration::ZERO,
            max_loss: 0.5,
            escalated_interval: Duration::from_secs(10),
            recover_after: 3,
            resolvers: Vec::new(),
            alternate_ports: Vec::new(),
        }
    }
}

fn validate_tiers(key: &dyn Fn(&str) -> String, p: &TierPolicy, out: &mut Vec<Invalid>) {
    if !(1..=100).contains(&p.window) {
        out.push(Invalid::new(
            key("tiers.window"),
            format!("{} is out of range (expected 1 to 100)", p.window),
        ));
    }
    if p.failures == 0 || p.failures > p.window {
        out.push(Invalid::new(
            key("tiers.failures"),
            format!(
                "{} is out of range (expected 1 to window = {})",
                p.failures, p.window
            ),
        ));
    }
    if p.critical_failures < p.failures || p.critical_failures > p.window {
        out.push(Invalid::new(
            key("tiers.critical-failures"),
            format!(
                "{} is out of range (expected failures = {} to window = {})",
                p.critical_failures, p.failures, p.window
            ),
        ));
    }
    if !(0.0..=1.0).contains(&p.max_loss) {
        out.push(Invalid::new(
            key("tiers.max-loss"),
            format!("{} is out of range (expected 0 to 1)", p.max_loss),
        ));
    }
    if p.escalated_interval < MIN_INTERVAL {
        out.push(Invalid::new(
            key("tiers.escalated-interval"),
            format!(
                "{} is too short (expected at least \"1s\")",
                fmt_duration(p.escalated_interval)
            ),
        ));
    }
    for (i, r) in p.resolvers.iter().enumerate() {
        if let Err(e) = address::parse(Prober::Dns, r) {
            out.push(Invalid::new(
                key(&format!("tiers.resolvers[{i}]")),
                e.to_string(),
            ));
        }
    }
    if p.alternate_ports.contains(&0) {
        out.push(Invalid::new(
            key("tiers.alternate-ports"),
            "0 is not a port (expected 1 to 65535)",
        ));
    }
    if p.resolvers.len() > 8 || p.alternate_ports.len() > 8 {
        out.push(Invalid::new(
            key("tiers"),
            "at most 8 resolvers and 8 alternate ports (diagnostics must stay quick)",
        ));
    }
    if !(1..=100).contains(&p.recover_after) {
        out.push(Invalid::new(
            key("tiers.recover-after"),
            format!("{} is out of range (expected 1 to 100)", p.recover_after),
        ));
    }
}

impl Config {
    /// The effective interval of `target`.
    pub fn interval_of(&self, target: &Target) -> Duration {
        target.interval.unwrap_or(self.scheduler.default_interval)
    }

    /// The effective timeout of `target` (its own, else its module's).
    pub fn timeout_of(&self, target: &Target) -> Duration {
        target.timeout.unwrap_or_else(|| {
            self.modules
                .get(&target.module)
                .map_or(DEFAULT_TIMEOUT, |m| m.timeout)
        })
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Labels probed sets itself; a target may not set them.
const RESERVED_LABELS: [&str; 6] = ["target", "module", "phase", "result", "stat", "to"];

fn check_timeout(out: &mut Vec<Invalid>, key: String, timeout: Duration) {
    if timeout < Duration::from_millis(10) || timeout > MAX_TIMEOUT {
        out.push(Invalid::new(
            key,
            format!(
                "{} is out of range (expected between \"10ms\" and \"5m\")",
                fmt_duration(timeout)
            ),
        ));
    }
}

fn check_regex(out: &mut Vec<Invalid>, key: String, re: &str) {
    if !re.is_empty()
        && let Err(err) = regex::bytes::Regex::new(re)
    {
        let first = err.to_string();
        let line = first.lines().last().unwrap_or("invalid").trim().to_owned();
        out.push(Invalid::new(
            key,
            format!("is not a valid regular expression: {line}"),
        ));
    }
}

fn validate_module(name: &str, m: &Module, out: &mut Vec<Invalid>) {
    let key = |k: &str| format!("modules.{name}.{k}");
    if !valid_name(name) {
        out.push(Invalid::new(
            format!("modules.{name}"),
            "module names use letters, digits, '_', '-' and '.' (at most 128)",
        ));
    }
    check_timeout(out, key("timeout"), m.timeout);
    // Each option section belongs to one prober (tls also to http and tcp).
    let sections: [(&str, bool, &[Prober]); 8] = [
        ("tcp", m.tcp.is_some(), &[Prober::Tcp]),
        ("udp", m.udp.is_some(), &[Prober::Udp]),
        ("http", m.http.is_some(), &[Prober::Http, Prober::Http3]),
        (
            "tls",
            m.tls.is_some(),
            &[
                Prober::Tls,
                Prober::Http,
                Prober::Http3,
                Prober::Tcp,
                Prober::Grpc,
            ],
        ),
        ("grpc", m.grpc.is_some(), &[Prober::Grpc]),
        ("ssh", m.ssh.is_some(), &[Prober::Ssh]),
        ("dns", m.dns.is_some(), &[Prober::Dns]),
        ("icmp", m.icmp.is_some(), &[Prober::Icmp]),
    ];
    for (section, present, allowed) in sections {
        if present && !allowed.contains(&m.prober) {
            out.push(Invalid::new(
                key(section),
                format!(
                    "has no effect with prober \"{}\" (remove it or change the prober)",
                    m.prober.as_str()
                ),
            ));
        }
    }
    if let Some(tcp) = &m.tcp {
        check_regex(out, key("tcp.expect"), &tcp.expect);
    }
    if let Some(ssh) = &m.ssh {
        check_regex(out, key("ssh.banner-regex"), &ssh.banner_regex);
        let fp = &ssh.expected_fingerprint;
        if !fp.is_empty() && (!fp.starts_with("SHA256:") || fp.len() != 50) {
            out.push(Invalid::new(
                key("ssh.expected-fingerprint"),
                format!(
                    "\"{fp}\" is not a SHA-256 fingerprint (expected \"SHA256:\" and 43 base64 characters, as ssh-keygen -lf prints)"
                ),
            ));
        }
    }
    match (&m.prober, &m.udp) {
        (Prober::Udp, None) => out.push(Invalid::new(
            key("udp"),
            "is required by prober \"udp\" (expected at least send = \"…\")",
        )),
        (_, Some(udp)) => {
            if udp.send.is_empty() {
                out.push(Invalid::new(
                    key("udp.send"),
                    "must not be empty (a UDP probe needs a datagram to send)",
                ));
            }
            check_regex(out, key("udp.expect"), &udp.expect);
        }
        _ => {}
    }
    if let Some(http) = &m.http {
        if http::Method::from_bytes(http.method.as_bytes()).is_err() || http.method.is_empty() {
            out.push(Invalid::new(
                key("http.method"),
                format!("\"{}\" is not an HTTP method", http.method),
            ));
        }
        for (h, v) in &http.headers {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                out.push(Invalid::new(
                    key(&format!("http.headers.{h}")),
                    "is not a valid header name",
                ));
            } else if http::HeaderValue::from_str(v).is_err() {
                out.push(Invalid::new(
                    key(&format!("http.headers.{h}")),
                    "is not a valid header value",
                ));
            }
        }
        for code in &http.valid_status_codes {
            if !(100..=599).contains(code) {
                out.push(Invalid::new(
                    key("http.valid-status-codes"),
                    format!("{code} is not an HTTP status (expected 100 to 599)"),
                ));
            }
        }
        check_regex(out, key("http.body-regex"), &http.body_regex);
        if http.max_redirects > 100 {
            out.push(Invalid::new(
                key("http.max-redirects"),
                format!("{} is out of range (expected 0 to 100)", http.max_redirects),
            ));
        }
    }
    if let Some(tls) = &m.tls
        && let Some(ca) = &tls.ca_file
        && !ca.is_absolute()
    {
        out.push(Invalid::new(
            key("tls.ca-file"),
            format!("\"{}\" is not an absolute path", ca.display()),
        ));
    }
    match (&m.prober, &m.dns) {
        (Prober::Dns, None) => out.push(Invalid::new(
            key("dns"),
            "is required by prober \"dns\" (expected at least query-name = \"…\")",
        )),
        (_, Some(dns)) => {
            if hickory_proto::rr::Name::from_ascii(&dns.query_name).is_err()
                || dns.query_name.is_empty()
            {
                out.push(Invalid::new(
                    key("dns.query-name"),
                    format!("\"{}\" is not a domain name", dns.query_name),
                ));
            }
            if crate::probe::dns::parse_type(&dns.query_type).is_none() {
                out.push(Invalid::new(
                    key("dns.query-type"),
                    format!(
                        "\"{}\" is not a supported record type (expected one of {})",
                        dns.query_type,
                        crate::probe::dns::SUPPORTED_TYPES.join(", ")
                    ),
                ));
            }
            if crate::probe::dns::parse_rcode(&dns.expect_rcode).is_none() {
                out.push(Invalid::new(
                    key("dns.expect-rcode"),
                    format!(
                        "\"{}\" is not a response code (expected e.g. NOERROR, NXDOMAIN, SERVFAIL, REFUSED)",
                        dns.expect_rcode
                    ),
                ));
            }
        }
        _ => {}
    }
    if let Some(icmp) = &m.icmp {
        if !(1..=100).contains(&icmp.count) {
            out.push(Invalid::new(
                key("icmp.count"),
                format!("{} is out of range (expected 1 to 100)", icmp.count),
            ));
        }
        if icmp.interval < Duration::from_millis(10) {
            out.push(Invalid::new(
                key("icmp.interval"),
                format!(
                    "{} is too short (expected at least \"10ms\")",
                    fmt_duration(icmp.interval)
                ),
            ));
        }
        if icmp.payload_size > 1400 {
            out.push(Invalid::new(
                key("icmp.payload-size"),
                format!(
                    "{} is too large (expected at most 1400, below a 1500-byte MTU)",
                    icmp.payload_size
                ),
            ));
        }
        let spent = icmp.interval.saturating_mul(icmp.count.saturating_sub(1));
        if spent >= m.timeout {
            out.push(Invalid::new(
                key("icmp.interval"),
                format!(
                    "{} requests {} apart take longer than the timeout {} (expected fewer or faster requests)",
                    icmp.count,
                    fmt_duration(icmp.interval),
                    fmt_duration(m.timeout)
                ),
            ));
        }
    }
}

impl DaemonConfig for Config {
    const DAEMON: &'static str = "probed";

    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        if !(1..=65_536).contains(&self.scheduler.max_concurrency) {
            out.push(Invalid::new(
                "scheduler.max-concurrency",
                format!(
                    "{} is out of range (expected 1 to 65536)",
                    self.scheduler.max_concurrency
                ),
            ));
        }
        if self.scheduler.default_interval < MIN_INTERVAL {
            out.push(Invalid::new(
                "scheduler.default-interval",
                format!(
                    "{} is too short (expected at least \"1s\")",
                    fmt_duration(self.scheduler.default_interval)
                ),
            ));
        }
        if self.store.retention < Duration::from_secs(60) {
            out.push(Invalid::new(
                "store.retention",
                format!(
                    "{} is too short (expected at least \"1m\")",
                    fmt_duration(self.store.retention)
                ),
            ));
        }
        match self.store.backend {
            StoreBackend::Postgres => out.extend(self.store.postgres.validate("store.postgres")),
            StoreBackend::Sqlite if self.store.postgres != PostgresSection::default() => {
                out.push(Invalid::new(
                    "store.postgres",
                    "is set but store.backend is \"sqlite\" (expected store.backend = \"postgres\", or no [store.postgres])",
                ));
            }
            StoreBackend::Sqlite => {}
        }
        for (name, module) in &self.modules {
            validate_module(name, module, &mut out);
        }
        let ap = &self.autoperf;
        if ap.interval < Duration::from_millis(100) {
            out.push(Invalid::new(
                "autoperf.interval",
                format!(
                    "{} is too short (expected at least \"100ms\")",
                    fmt_duration(ap.interval)
                ),
            ));
        }
        if ap.check_interval < MIN_INTERVAL {
            out.push(Invalid::new(
                "autoperf.check-interval",
                format!(
                    "{} is too short (expected at least \"1s\")",
                    fmt_duration(ap.check_interval)
                ),
            ));
        }
        if !ap.licensed_socket.is_absolute() {
            out.push(Invalid::new(
                "autoperf.licensed-socket",
                format!(
                    "\"{}\" is not an absolute path",
                    ap.licensed_socket.display()
                ),
            ));
        }
        for name in &ap.targets {
            if !self.targets.iter().any(|t| &t.name == name) {
                out.push(Invalid::new(
                    "autoperf.targets",
                    format!("no target \"{name}\" (expected names of [[targets]])"),
                ));
            }
        }
        let mut names = BTreeSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let key = |k: &str| format!("targets[{i}].{k}");
            if !valid_name(&t.name) {
                out.push(Invalid::new(
                    key("name"),
                    format!(
                        "\"{}\" is not a valid name (letters, digits, '_', '-' and '.', at most 128)",
                        t.name
                    ),
                ));
            } else if !names.insert(t.name.as_str()) {
                out.push(Invalid::new(
                    key("name"),
                    format!(
                        "\"{}\" is used by another target (names are unique)",
                        t.name
                    ),
                ));
            }
            let interval = self.interval_of(t);
            if let Some(iv) = t.interval
                && iv < MIN_INTERVAL
            {
                out.push(Invalid::new(
                    key("interval"),
                    format!(
                        "{} is too short (expected at least \"1s\")",
                        fmt_duration(iv)
                    ),
                ));
            }
            if let Some(to) = t.timeout {
                check_timeout(&mut out, key("timeout"), to);
            }
            match self.modules.get(&t.module) {
                None => out.push(Invalid::new(
                    key("module"),
                    format!(
                        "no module \"{}\" (expected one of: {})",
                        t.module,
                        self.modules
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
                Some(m) => {
                    if let Err(err) = address::parse(m.prober, &t.address) {
                        out.push(Invalid::new(key("address"), err.to_string()));
                    }
                    let timeout = self.timeout_of(t);
                    if timeout > interval && interval >= MIN_INTERVAL {
                        out.push(Invalid::new(
                            if t.timeout.is_some() {
                                key("timeout")
                            } else {
                                key("interval")
                            },
                            format!(
                                "timeout {} is longer than interval {} (expected timeout <= interval)",
                                fmt_duration(timeout),
                                fmt_duration(interval)
                            ),
                        ));
                    }
                }
            }
            if let Some(p) = &t.tiers {
                validate_tiers(&key, p, &mut out);
            }
            for label in t.labels.keys() {
                if !valid_label_name(label) || RESERVED_LABELS.contains(&label.as_str()) {
                    out.push(Invalid::new(
                        key(&format!("labels.{label}")),
                        format!(
                            "\"{label}\" is not a usable label name (expected [a-zA-Z_][a-zA-Z0-9_]*, not one of {})",
                            RESERVED_LABELS.join(", ")
                        ),
                    ));
                }
            }
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
