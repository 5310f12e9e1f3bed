//! The probe engine: one folder per probe type, each a function that takes a parsed address
//! and its module options and returns an [`Outcome`]: success, a timing breakdown by
//! [`Phase`], the facts it learned (status, TLS chain, DNS answers, ICMP RTTs) and, on
//! failure, a specific [`Failure`].
//!
//! Probes know nothing about scheduling, storage or metrics. Every phase runs under the
//! probe's deadline ([`Run::phase`]), so a timeout names the phase it hit. The entry point is
//! [`run`]; [`Prepared`] is a module compiled once per configuration (regexes, TLS roots).

pub mod address;
pub mod dns;
pub mod grpc;
pub mod http;
pub mod http3;
pub mod icmp;
pub mod net;
pub mod ssh;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod udp;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Module, Prober};

pub use address::Address;

/// A timed part of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Name resolution.
    Resolve,
    /// TCP connect (or UDP/ICMP socket setup).
    Connect,
    /// TLS handshake.
    Tls,
    /// SSH banner exchange and key exchange.
    Kex,
    /// Request sent until the first byte of the answer (HTTP headers, DNS reply, UDP reply,
    /// TCP expect).
    FirstByte,
    /// Rest of the answer (HTTP body).
    Transfer,
}

impl Phase {
    /// Label value (`phase="…"`), as blackbox names its HTTP phases where they match.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolve => "resolve",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Kex => "kex",
            Self::FirstByte => "processing",
            Self::Transfer => "transfer",
        }
    }

    /// All phases, in order.
    pub const ALL: [Phase; 6] = [
        Self::Resolve,
        Self::Connect,
        Self::Tls,
        Self::Kex,
        Self::FirstByte,
        Self::Transfer,
    ];
}

/// Why a probe failed. [`Failure::code`] is the stable machine-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The deadline passed during this phase.
    Timeout(Option<Phase>),
    /// The name does not exist (NXDOMAIN).
    Nxdomain,
    /// Resolution failed otherwise (no server, SERVFAIL, no address of the wanted family).
    Resolve(String),
    /// The peer refused the connection (TCP RST, ICMP port unreachable for UDP).
    Refused,
    /// No route to the host or network.
    Unreachable,
    /// The connection was reset or closed early.
    Reset,
    /// The certificate chain has expired.
    CertExpired,
    /// The certificate is not valid yet.
    CertNotYetValid,
    /// The chain does not lead to a trusted root.
    CertUntrusted(String),
    /// The certificate is not valid for the name.
    CertNameMismatch,
    /// The chain verifies but expires sooner than `min-days-valid`.
    CertExpiresSoon {
        /// Whole days left.
        days: i64,
    },
    /// The TLS handshake failed for another reason (protocol, alert).
    Tls(String),
    /// The HTTP status is not one of the expected ones.
    UnexpectedStatus(u16),
    /// The body (or TCP/UDP reply) does not match the expected pattern.
    BodyMismatch,
    /// More redirects than allowed.
    TooManyRedirects,
    /// The DNS response code is not the expected one.
    DnsRcode(String),
    /// An expected DNS answer is missing.
    DnsAnswerMissing(String),
    /// The SSH host key's fingerprint is not the expected one (the one seen is given).
    HostKeyMismatch(String),
    /// The gRPC health check answered with a status other than SERVING.
    GrpcNotServing(String),
    /// The gRPC call failed with this status code.
    GrpcStatus(String),
    /// No ICMP echo reply came back.
    PacketLoss,
    /// No permission for the socket (ICMP without CAP_NET_RAW or ping group).
    Permission(String),
    /// The peer spoke the protocol wrongly.
    Protocol(String),
    /// Any other I/O error.
    Io(String),
}

impl Failure {
    /// Stable reason code, used as a label, in the store and over gRPC.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Nxdomain => "nxdomain",
            Self::Resolve(_) => "resolve_failed",
            Self::Refused => "refused",
            Self::Unreachable => "unreachable",
            Self::Reset => "reset",
            Self::CertExpired => "cert_expired",
            Self::CertNotYetValid => "cert_not_yet_valid",
            Self::CertUntrusted(_) => "cert_untrusted",
            Self::CertNameMismatch => "cert_name_mismatch",
            Self::CertExpiresSoon { .. } => "cert_expires_soon",
            Self::Tls(_) => "tls_failed",
            Self::UnexpectedStatus(_) => "unexpected_status",
            Self::BodyMismatch => "body_mismatch",
            Self::TooManyRedirects => "too_many_redirects",
            Self::DnsRcode(_) => "dns_rcode",
            Self::DnsAnswerMissing(_) => "dns_answer_missing",
            Self::HostKeyMismatch(_) => "host_key_mismatch",
            Self::GrpcNotServing(_) => "grpc_not_serving",
            Self::GrpcStatus(_) => "grpc_status",
            Self::PacketLoss => "packet_loss",
            Self::Permission(_) => "permission_denied",
            Self::Protocol(_) => "protocol_error",
            Self::Io(_) => "io_error",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(Some(p)) => write!(f, "timed out during {}", p.as_str()),
            Self::Timeout(None) => write!(f, "timed out"),
            Self::Nxdomain => write!(f, "name does not exist (NXDOMAIN)"),
            Self::Resolve(m) => write!(f, "cannot resolve: {m}"),
            Self::Refused => write!(f, "connection refused"),
            Self::Unreachable => write!(f, "host or network unreachable"),
            Self::Reset => write!(f, "connection reset or closed early"),
            Self::CertExpired => write!(f, "certificate expired"),
            Self::CertNotYetValid => write!(f, "certificate not valid yet"),
            Self::CertUntrusted(m) => write!(f, "certificate not trusted: {m}"),
            Self::CertNameMismatch => write!(f, "certificate not valid for the name"),
            Self::CertExpiresSoon { days } => write!(f, "certificate expires in {days} days"),
            Self::Tls(m) => write!(f, "TLS handshake failed: {m}"),
            Self::UnexpectedStatus(s) => write!(f, "unexpected HTTP status {s}"),
            Self::BodyMismatch => write!(f, "response does not match the expected pattern"),
            Self::TooManyRedirects => write!(f, "too many redirects"),
            Self::DnsRcode(r) => write!(f, "unexpected DNS response code {r}"),
            Self::DnsAnswerMissing(a) => write!(f, "expected DNS answer {a} is missing"),
            Self::HostKeyMismatch(got) => {
                write!(f, "host key fingerprint {got} is not the expected one")
            }
            Self::GrpcNotServing(s) => write!(f, "gRPC health status {s}"),
            Self::GrpcStatus(s) => write!(f, "gRPC call failed: {s}"),
            Self::PacketLoss => write!(f, "no echo reply (100% loss)"),
            Self::Permission(m) => write!(f, "permission denied: {m}"),
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
            Self::Io(m) => write!(f, "I/O error: {m}"),
        }
    }
}

/// What the TLS handshake showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsFacts {
    /// `TLS 1.2` or `TLS 1.3`.
    pub version: String,
    /// IANA-style cipher suite name.
    pub cipher: String,
    /// Earliest `notAfter` of the presented chain (Unix seconds).
    pub earliest_expiry: Option<i64>,
    /// Whole days until then (negative once expired).
    pub days_left: Option<i64>,
    /// Certificates presented.
    pub chain_len: usize,
    /// Subject of the leaf certificate.
    pub subject: String,
    /// Why the chain did not verify, when verification was skipped on purpose.
    pub verify_error: Option<String>,
}

/// What a DNS probe saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsFacts {
    /// Response code, e.g. `NOERROR`.
    pub rcode: String,
    /// Answer values as text (`192.0.2.1`, `mail.example.com.`, …).
    pub answers: Vec<String>,
    /// Records in the answer, authority and additional sections.
    pub counts: [usize; 3],
}

/// What an SSH probe saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SshFacts {
    /// The server's identification line, e.g. `SSH-2.0-OpenSSH_9.2p1`.
    pub banner: String,
    /// Host key algorithm, e.g. `ssh-ed25519`.
    pub key_algorithm: String,
    /// Host key fingerprint as OpenSSH prints it: `SHA256:…`.
    pub fingerprint: String,
    /// Negotiated key exchange.
    pub kex: String,
    /// Negotiated cipher.
    pub cipher: String,
}

/// ICMP round-trip statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IcmpFacts {
    /// Echo requests sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// Round-trip times of the replies.
    pub rtts: Vec<Duration>,
    /// Whether a raw socket was used (else an unprivileged ICMP socket).
    pub raw_socket: bool,
}

impl IcmpFacts {
    /// Loss as a fraction (0.0 to 1.0).
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - f64::from(self.received) / f64::from(self.sent)
    }

    /// Median RTT in seconds (robust to a few outliers, as SmokePing reports it).
    pub fn median(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.rtts.iter().map(Duration::as_secs_f64).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    /// min, avg, max, population stddev of the RTTs in seconds.
    pub fn stats(&self) -> Option<(f64, f64, f64, f64)> {
        if self.rtts.is_empty() {
            return None;
        }
        let v: Vec<f64> = self.rtts.iter().map(Duration::as_secs_f64).collect();
        let n = v.len() as f64;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        let avg = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - avg).powi(2)).sum::<f64>() / n;
        Some((min, avg, max, var.sqrt()))
    }
}

/// Everything a probe learned besides timing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// The address that was probed.
    pub ip: Option<IpAddr>,
    /// Final HTTP status.
    pub http_status: Option<u16>,
    /// HTTP version of the final response (1.1 or 2.0).
    pub http_version: Option<f64>,
    /// Redirects followed.
    pub redirects: u32,
    /// Body bytes received.
    pub body_bytes: Option<u64>,
    /// TLS facts (https, tls, tcp with TLS). The per-protocol facts are boxed: most probes
    /// have none or one of them, and the latest outcome of every target is kept.
    pub tls: Option<Box<TlsFacts>>,
    /// DNS facts.
    pub dns: Option<Box<DnsFacts>>,
    /// ICMP facts.
    pub icmp: Option<Box<IcmpFacts>>,
    /// SSH facts.
    pub ssh: Option<Box<SshFacts>>,
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// When it started.
    pub started: SystemTime,
    /// Whether every assertion held.
    pub success: bool,
    /// Why not, if not.
    pub failure: Option<Failure>,
    /// Time per phase (phases repeated by redirects are summed), in order of first use.
    pub phases: Vec<(Phase, Duration)>,
    /// Wall time of the whole probe.
    pub total: Duration,
    /// What was learned.
    pub facts: Facts,
}

impl Outcome {
    /// Time spent in `phase`, if it ran.
    pub fn phase(&self, phase: Phase) -> Option<Duration> {
        self.phases
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, d)| *d)
    }

    /// Failure reason code, or `ok`.
    pub fn reason(&self) -> &'static str {
        self.failure.as_ref().map_or("ok", Failure::code)
    }

    /// The facts as flat `key → value` text (gRPC `ProbeResult.facts`, the store).
    pub fn fact_map(&self) -> BTreeMap<String, String> {
        let f = &self.facts;
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_owned(), v);
        };
        if let Some(ip) = f.ip {
            put("ip", ip.to_string());
        }
        if let Some(s) = f.http_status {
            put("http_status", s.to_string());
        }
        if let Some(v) = f.http_version {
            put("http_version", format!("{v:.1}"));
        }
        if f.redirects > 0 {
            put("http_redirects", f.redirects.to_string());
        }
        if let Some(t) = &f.tls {
            if !t.version.is_empty() {
                put("tls_version", t.version.clone());
            }
            if !t.cipher.is_empty() {
                put("tls_cipher", t.cipher.clone());
            }
            if let Some(e) = t.earliest_expiry {
                put("tls_earliest_expiry_unix", e.to_string());
            }
            if let Some(d) = t.days_left {
                put("tls_days_left", d.to_string());
            }
            if !t.subject.is_empty() {
                put("tls_subject", t.subject.clone());
            }
            if let Some(e) = &t.verify_error {
                put("tls_verify_error", e.clone());
            }
        }
        if let Some(d) = &f.dns {
            put("dns_rcode", d.rcode.clone());
            put("dns_answers", d.answers.join(","));
        }
        if let Some(s) = &f.ssh {
            put("ssh_banner", s.banner.clone());
            put("ssh_key_algorithm", s.key_algorithm.clone());
            put("ssh_fingerprint", s.fingerprint.clone());
            put("ssh_kex", s.kex.clone());
            put("ssh_cipher", s.cipher.clone());
        }
        if let Some(i) = &f.icmp {
            put("icmp_sent", i.sent.to_string());
            put("icmp_received", i.received.to_string());
            put("icmp_loss", format!("{:.4}", i.loss()));
            if let Some((min, avg, max, sd)) = i.stats() {
                put("icmp_rtt_min_seconds", format!("{min:.6}"));
                put("icmp_rtt_avg_seconds", format!("{avg:.6}"));
                put("icmp_rtt_max_seconds", format!("{max:.6}"));
                put("icmp_rtt_stddev_seconds", format!("{sd:.6}"));
            }
            if let Some(median) = i.median() {
                put("icmp_rtt_median_seconds", format!("{median:.6}"));
            }
        }
        m
    }
}

/// One probe in progress: its deadline, phase timings and facts.
#[derive(Debug)]
pub struct Run {
    started: SystemTime,
    start: Instant,
    deadline: tokio::time::Instant,
    phases: Vec<(Phase, Duration)>,
    /// What the probe has learned so far.
    pub facts: Facts,
}

impl Run {
    /// A probe that must finish within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let start = Instant::now();
        Self {
            started: SystemTime::now(),
            start,
            deadline: tokio::time::Instant::from_std(start + timeout),
            phases: Vec::new(),
            facts: Facts::default(),
        }
    }

    /// The deadline.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Adds `d` to `phase`.
    pub fn add(&mut self, phase: Phase, d: Duration) {
        match self.phases.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, t)) => *t += d,
            None => self.phases.push((phase, d)),
        }
    }

    /// Runs `fut` as `phase`, bounded by the deadline; a timeout names the phase.
    pub async fn phase<T>(
        &mut self,
        phase: Phase,
        fut: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let t0 = Instant::now();
        let r = tokio::time::timeout_at(self.deadline, fut).await;
        self.add(phase, t0.elapsed());
        match r {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout(Some(phase))),
        }
    }

    /// The outcome of this run.
    pub fn finish(self, result: Result<(), Failure>) -> Outcome {
        Outcome {
            started: self.started,
            success: result.is_ok(),
            failure: result.err(),
            phases: self.phases,
            total: self.start.elapsed(),
            facts: self.facts,
        }
    }
}

/// A module compiled for probing: regexes built and TLS roots loaded once per configuration.
#[derive(Debug)]
pub struct Prepared {
    /// The module as configured.
    pub module: Module,
    /// Regex of `tcp.expect`, `udp.expect` or `http.body-regex`.
    pub expect: Option<regex::bytes::Regex>,
    /// TLS client settings (tls, http, tcp with TLS).
    pub tls: Option<Arc<tls::Client>>,
}

/// A module that cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A regular expression does not compile.
    #[error("invalid regular expression")]
    Regex(#[source] regex::Error),
    /// The TLS settings cannot be used (CA file).
    #[error(transparent)]
    Tls(#[from] tls::ClientError),
}

impl Prepared {
    /// Compiles `module`.
    pub fn new(module: &Module) -> Result<Self, PrepareError> {
        let pattern = match module.prober {
            Prober::Tcp => module.tcp.as_ref().map(|t| t.expect.as_str()),
            Prober::Udp => module.udp.as_ref().map(|u| u.expect.as_str()),
            Prober::Http | Prober::Http3 => module.http.as_ref().map(|h| h.body_regex.as_str()),
            Prober::Ssh => module.ssh.as_ref().map(|h| h.banner_regex.as_str()),
            _ => None,
        };
        let expect = match pattern {
            Some(p) if !p.is_empty() => {
                Some(regex::bytes::Regex::new(p).map_err(PrepareError::Regex)?)
            }
            _ => None,
        };
        let needs_tls = match module.prober {
            Prober::Tls | Prober::Http | Prober::Http3 => true,
            Prober::Tcp => module.tcp.as_ref().is_some_and(|t| t.tls),
            Prober::Grpc => module.grpc.as_ref().is_some_and(|g| g.tls),
            _ => false,
        };
        let tls = if needs_tls {
            let opts = module.tls.clone().unwrap_or_default();
            Some(Arc::new(tls::Client::new(&opts)?))
        } else {
            None
        };
        Ok(Self {
            module: module.clone(),
            expect,
            tls,
        })
    }
}

/// Runs one probe of `address` with `prepared`, finishing within `timeout` whatever happens.
pub async fn run(prepared: &Prepared, address: &str, timeout: Duration) -> Outcome {
    let mut run = Run::new(timeout);
    let addr = match address::parse(prepared.module.prober, address) {
        Ok(a) => a,
        Err(err) => return run.finish(Err(Failure::Resolve(err.to_string()))),
    };
    let deadline = run.deadline();
    // Each phase is bounded already; this outer bound also covers work between phases.
    let result = tokio::time::timeout_at(deadline, dispatch(prepared, &addr, &mut run)).await;
    let result = result.unwrap_or(Err(Failure::Timeout(None)));
    run.finish(result)
}

/// Runs the prober of `prepared`. Each prober's future is boxed: unboxed, every probe's
/// future would be as large as the largest prober's (SSH, HTTP/3), and a probe in flight
/// holds it; boxed, it holds only its own prober's state.
async fn dispatch(prepared: &Prepared, addr: &Address, run: &mut Run) -> Result<(), Failure> {
    let m = &prepared.module;
    match m.prober {
        Prober::Tcp => Box::pin(tcp::probe(run, addr, m, prepared)).await,
        Prober::Udp => Box::pin(udp::probe(run, addr, m, prepared)).await,
        Prober::Tls => Box::pin(tls::probe(run, addr, m, prepared)).await,
        Prober::Http | Prober::Http3 => Box::pin(http::probe(run, addr, m, prepared)).await,
        Prober::Dns => Box::pin(dns::probe(run, addr, m)).await,
        Prober::Icmp => Box::pin(icmp::probe(run, addr, m)).await,
        Prober::Grpc => Box::pin(grpc::probe(run, addr, m, prepared)).await,
        Prober::Ssh => Box::pin(ssh::probe(run, addr, m, prepared)).await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    /// What a probe in flight holds before its prober's own state: the run (timings, facts)
    /// and the parsed address, not the largest prober's state. Thousands of probes can be in
    /// flight at once.
    #[test]
    fn a_probe_in_flight_holds_only_its_own_probers_state() {
        for prober in [Prober::Http, Prober::Ssh, Prober::Http3, Prober::Grpc] {
            let module = Module::bare(prober, Duration::from_secs(1));
            let prepared = Prepared::new(&module).unwrap();
            let probe = run(&prepared, "http://127.0.0.1:1/", Duration::from_secs(1));
            let size = std::mem::size_of_val(&probe);
            eprintln!("{prober:?}: {size} bytes");
            assert!(size <= 1024, "{prober:?}: {size} bytes");
        }
    }
}
