//! `ingestd.toml`: the listeners (syslog UDP/TCP/TLS, HTTP log push), their limits and the
//! store (queue, batching, retention).
//!
//! Every field has a compiled default (`Config::default()`), documented key by key in the
//! repository's `etc/rookery/ingestd.toml`. Loading, layering and error reporting are done by
//! `rookery_common::config`; this module only declares the schema and its semantic checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rookery_common::config::{DaemonConfig, GrpcSection, Invalid, MetricsSection, StateSection};
use rookery_common::postgres::PostgresSection;
use serde::{Deserialize, Serialize};

/// Loopback `/healthz` + `/metrics` port of ingestd (DESIGN.md).
pub const DEFAULT_METRICS_PORT: u16 = 9112;
/// Syslog over UDP and TCP (RFC 5426, RFC 6587): the well-known port 514.
pub const DEFAULT_SYSLOG_ADDR: &str = "0.0.0.0:514";
/// Syslog over TLS (RFC 5425): port 6514.
pub const DEFAULT_SYSLOG_TLS_ADDR: &str = "0.0.0.0:6514";
/// HTTP JSON/NDJSON log push (DESIGN.md): port 8088.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8088";
/// OTLP over gRPC: the IANA port 4317.
pub const DEFAULT_OTLP_GRPC_ADDR: &str = "0.0.0.0:4317";
/// OTLP over HTTP: the IANA port 4318.
pub const DEFAULT_OTLP_HTTP_ADDR: &str = "0.0.0.0:4318";
/// Scrape interval: Prometheus' default.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(15);
/// Scrape timeout: well under the interval; loopback targets answer in milliseconds.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Samples per forwarded request: Prometheus' own max_samples_per_send default range.
pub const DEFAULT_FORWARD_BATCH: u32 = 2000;
/// Log records per forwarded OTLP request: about 1 MB of typical records.
pub const DEFAULT_FORWARD_BATCH_LOGS: u32 = 2000;
/// Timeout of one forwarded request: a slow uplink still gets a chance.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// Licence re-check of forwarding: a revoked or newly bought licence takes effect within it.
pub const DEFAULT_LICENCE_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Longest syslog message accepted: RFC 5425 requires receivers to take 2048 octets and
/// recommends 8192; 64 KiB also covers the stack traces applications put in one message.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Concurrent TCP/TLS syslog connections: bounds memory (one read buffer of at most
/// `max-message-bytes` each) while leaving room for every device of a large site.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Largest HTTP push body: 8 MiB holds thousands of lines per request and bounds memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Records waiting for the writer before inputs are held back (TCP, HTTP) or rejected (UDP):
/// about one second of a busy site, at a few hundred bytes a record a few MiB of memory.
pub const DEFAULT_QUEUE_RECORDS: usize = 20_000;
/// Records committed in one transaction at most: large enough to amortise the fsync.
pub const DEFAULT_BATCH_RECORDS: usize = 2_000;
/// Disk bound of the log store (database pages in use, WAL excluded).
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// Age bound of stored logs: a month covers an incident found late.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Labels per series: well above what exporters emit (a dozen), low enough to refuse
/// cardinality accidents such as a request ID used as a label name.
pub const DEFAULT_MAX_LABELS_PER_SERIES: usize = 64;
/// Full-resolution samples are kept for a week: recent incidents at scrape resolution.
pub const DEFAULT_DOWNSAMPLE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Older samples at 5-minute resolution: a month of a series in ~8600 points.
pub const DEFAULT_DOWNSAMPLE_STEP: Duration = Duration::from_secs(300);
/// How often retention runs.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// The whole `ingestd.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub syslog: SyslogSection,
    pub http: HttpSection,
    pub otlp: OtlpSection,
    pub quic: QuicSection,
    pub scrape: ScrapeSection,
    pub forward: ForwardSection,
    pub store: StoreSection,
    pub grpc: GrpcSection,
    pub metrics: MetricsSection,
    pub state: StateSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            syslog: SyslogSection::default(),
            http: HttpSection::default(),
            otlp: OtlpSection::default(),
            quic: QuicSection::default(),
            scrape: ScrapeSection::default(),
            forward: ForwardSection::default(),
            store: StoreSection::default(),
            grpc: GrpcSection::for_daemon(Self::DAEMON),
            metrics: MetricsSection::loopback(DEFAULT_METRICS_PORT),
            state: StateSection::for_daemon(Self::DAEMON),
        }
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse()
        .expect("compiled default listen addresses are valid socket addresses")
}

/// `[syslog]`: listeners and limits of the syslog inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SyslogSection {
    /// UDP listeners (RFC 5426); empty = off.
    pub udp: Vec<SocketAddr>,
    /// TCP listeners (RFC 6587, octet counting or LF framing, detected per message).
    pub tcp: Vec<SocketAddr>,
    /// TLS listeners (RFC 5425); need `tls-cert-file` and `tls-key-file`. Empty = off.
    pub tls: Vec<SocketAddr>,
    /// PEM certificate chain of the TLS listener.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    pub tls_key_file: Option<PathBuf>,
    /// Longest message accepted; longer ones are rejected and counted.
    pub max_message_bytes: usize,
    /// Concurrent TCP + TLS connections; more are refused and counted.
    pub max_connections: usize,
}

impl Default for SyslogSection {
    fn default() -> Self {
        Self {
            udp: vec![addr(DEFAULT_SYSLOG_ADDR)],
            tcp: vec![addr(DEFAULT_SYSLOG_ADDR)],
            tls: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `[http]`: the HTTP JSON/NDJSON log push listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpSection {
    /// Listeners of `POST /v1/logs`; empty = off.
    pub listen: Vec<SocketAddr>,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: vec![addr(DEFAULT_HTTP_ADDR)],
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// `[otlp]`: OpenTelemetry (OTLP) logs and metrics listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct OtlpSection {
    /// OTLP/gRPC listeners; empty = off.
    pub grpc: Vec<SocketAddr>,
    /// OTLP/HTTP (protobuf) listeners; empty = off.
    pub http: Vec<SocketAddr>,
}

impl Default for OtlpSection {
    fn default() -> Self {
        Self {
            grpc: vec![addr(DEFAULT_OTLP_GRPC_ADDR)],
            http: vec![addr(DEFAULT_OTLP_HTTP_ADDR)],
        }
    }
}

/// `[quic]`: the receiver of forwarding from other Rookery appliances over QUIC with mutual
/// TLS; off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuicSection {
    /// UDP listeners; empty = off.
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain of this receiver.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert-file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificate(s) that every sender's certificate must chain to.
    pub client_ca_file: Option<PathBuf>,
}

/// `[scrape]`: the `/metrics` endpoints ingestd scrapes into its metric store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScrapeSection {
    /// How often every target is scraped.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Timeout of one scrape.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Targets; empty = no scraping. A list (not a table) so that a file replaces the
    /// defaults instead of merging into them.
    pub targets: Vec<ScrapeTarget>,
}

/// One `[[scrape.targets]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScrapeTarget {
    /// The `job` label of its samples.
    pub job: String,
    /// URL of its `/metrics`.
    pub url: String,
}

impl Default for ScrapeSection {
    fn default() -> Self {
        Self {
            interval: DEFAULT_SCRAPE_INTERVAL,
            timeout: DEFAULT_SCRAPE_TIMEOUT,
            // The other daemons' loopback /metrics (DESIGN.md ports); ingestd's own too.
            targets: [
                ("packetd", 9111),
                ("ingestd", DEFAULT_METRICS_PORT),
                ("apid", 9113),
                ("licensed", 9114),
                ("probed", 9115),
            ]
            .into_iter()
            .map(|(job, port)| ScrapeTarget {
                job: job.to_owned(),
                url: format!("http://127.0.0.1:{port}/metrics"),
            })
            .collect(),
        }
    }
}

/// `[forward]`: forwarding to remote_write, OTLP (HTTP/protobuf or gRPC) and QUIC targets,
/// spooled on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ForwardSection {
    /// Prometheus remote_write URL; empty = no forwarding.
    pub remote_write_url: String,
    /// The OTLP receiver: with `otlp-protocol = "http/protobuf"` its base URL (`/v1/logs` and
    /// `/v1/metrics` are appended), with `"grpc"` its `http(s)://host:port`; empty = no OTLP
    /// forwarding.
    pub otlp_url: String,
    /// How `otlp-url` is spoken to (the values of the OTel SDKs' `OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub otlp_protocol: OtlpProtocol,
    /// Another Rookery's `[quic] listen` address, `host:port`; empty = no QUIC forwarding.
    pub quic_peer: String,
    /// Name the peer's certificate must carry; empty = the host of `quic-peer`.
    pub quic_server_name: String,
    /// PEM certificate chain this sender shows the peer.
    pub quic_cert_file: Option<PathBuf>,
    /// PEM private key of `quic-cert-file`.
    pub quic_key_file: Option<PathBuf>,
    /// PEM CA certificate(s) the peer's certificate must chain to.
    pub quic_ca_file: Option<PathBuf>,
    /// Samples per request at most.
    pub batch_samples: u32,
    /// Log records per OTLP request at most.
    pub batch_logs: u32,
    /// Timeout of one request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// licensed's socket, asked for the `central-forwarding` feature.
    pub licensed_socket: PathBuf,
    /// How often the licence is re-checked.
    #[serde(with = "humantime_serde")]
    pub licence_check_interval: Duration,
}

impl Default for ForwardSection {
    fn default() -> Self {
        Self {
            remote_write_url: String::new(),
            otlp_url: String::new(),
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            quic_peer: String::new(),
            quic_server_name: String::new(),
            quic_cert_file: None,
            quic_key_file: None,
            quic_ca_file: None,
            batch_samples: DEFAULT_FORWARD_BATCH,
            batch_logs: DEFAULT_FORWARD_BATCH_LOGS,
            timeout: DEFAULT_FORWARD_TIMEOUT,
            licensed_socket: rookery_common::grpc::socket_path("licensed"),
            licence_check_interval: DEFAULT_LICENCE_CHECK_INTERVAL,
        }
    }
}

/// The transport of OTLP forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies: `POST <otlp-url>/v1/logs` and `/v1/metrics`.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/gRPC: `LogsService/Export` and `MetricsService/Export` on `<otlp-url>`.
    #[serde(rename = "grpc")]
    Grpc,
}

/// `[store]`: the log and metric store (SQLite, or PostgreSQL for fleets), its write queue
/// and retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreSection {
    /// Where records go.
    pub backend: StoreBackend,
    /// The server of `backend = "postgres"`.
    pub postgres: PostgresSection,
    /// licensed's socket, asked at start for the `central-database` feature (PostgreSQL only).
    pub licensed_socket: PathBuf,
    /// Records queued for the writer at most.
    pub queue_records: usize,
    /// Records per transaction at most.
    pub batch_records: usize,
    /// Disk bound: the oldest logs are deleted above it.
    pub max_bytes: u64,
    /// Age bound: older logs are deleted.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How often retention runs.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Labels per remote_write series at most (`__name__` included).
    pub max_labels_per_series: usize,
    /// Metric samples older than this are downsampled.
    #[serde(with = "humantime_serde")]
    pub downsample_after: Duration,
    /// Resolution of downsampled samples: the last sample per series and step is kept.
    #[serde(with = "humantime_serde")]
    pub downsample_step: Duration,
}

/// The store's database kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    /// `logs.sqlite` (WAL, FTS5) in the state directory.
    Sqlite,
    /// A PostgreSQL server (`[store.postgres]`), e.g. a fleet's central store.
    Postgres,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sqlite,
            postgres: PostgresSection::default(),
            licensed_socket: rookery_common::grpc::socket_path("licensed"),
            queue_records: DEFAULT_QUEUE_RECORDS,
            batch_records: DEFAULT_BATCH_RECORDS,
            max_bytes: DEFAULT_MAX_BYTES,
            max_age: DEFAULT_MAX_AGE,
            retention_interval: DEFAULT_RETENTION_INTERVAL,
            max_labels_per_series: DEFAULT_MAX_LABELS_PER_SERIES,
            downsample_after: DEFAULT_DOWNSAMPLE_AFTER,
            downsample_step: DEFAULT_DOWNSAMPLE_STEP,
        }
    }
}

fn out_of_range(key: &str, value: impl std::fmt::Display, expected: &str) -> Invalid {
    Invalid::new(
        key,
        format!("{value} is out of range (expected {expected})"),
    )
}

impl DaemonConfig for Config {
    const DAEMON: &'static str = "ingestd";

    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let s = &self.syslog;
        if !(480..=16 * 1024 * 1024).contains(&s.max_message_bytes) {
            // RFC 5426: every receiver must take 480 octets.
            out.push(out_of_range(
                "syslog.max-message-bytes",
                s.max_message_bytes,
                "480 to 16777216",
            ));
        }
        if !(1..=65_536).contains(&s.max_connections) {
            out.push(out_of_range(
                "syslog.max-connections",
                s.max_connections,
                "1 to 65536",
            ));
        }
        if !s.tls.is_empty() {
            for (key, v) in [
                ("syslog.tls-cert-file", &s.tls_cert_file),
                ("syslog.tls-key-file", &s.tls_key_file),
            ] {
                match v {
                    None => out.push(Invalid::new(
                        key,
                        "is required when syslog.tls has listeners (expected a PEM file path)",
                    )),
                    Some(p) if !p.is_absolute() => out.push(Invalid::new(
                        key,
                        format!("\"{}\" is not an absolute path", p.display()),
                    )),
                    Some(_) => {}
                }
            }
        }
        if !(1024..=1024 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            out.push(out_of_range(
                "http.max-body-bytes",
                self.http.max_body_bytes,
                "1024 to 1073741824",
            ));
        }
        let st = &self.store;
        match st.backend {
            StoreBackend::Postgres => out.extend(st.postgres.validate("store.postgres")),
            StoreBackend::Sqlite if st.postgres != PostgresSection::default() => {
                out.push(Invalid::new(
                    "store.postgres",
                    "is set but store.backend is \"sqlite\" (expected store.backend = \"postgres\", or no [store.postgres])",
                ));
            }
            StoreBackend::Sqlite => {}
        }
        if !st.licensed_socket.is_absolute() {
            out.push(Invalid::new(
                "store.licensed-socket",
                format!(
                    "\"{}\" is not an absolute path",
                    st.licensed_socket.display()
                ),
            ));
        }
        if !(1..=1_000_000).contains(&st.queue_records) {
            out.push(out_of_range(
                "store.queue-records",
                st.queue_records,
                "1 to 1000000",
            ));
        }
        if !(1..=100_000).contains(&st.batch_records) {
            out.push(out_of_range(
                "store.batch-records",
                st.batch_records,
                "1 to 100000",
            ));
        }
        if st.max_bytes < 1024 * 1024 {
            out.push(out_of_range(
                "store.max-bytes",
                st.max_bytes,
                "at least 1048576",
            ));
        }
        if st.max_age < Duration::from_secs(60) {
            out.push(out_of_range(
                "store.max-age",
                humantime::format_duration(st.max_age),
                "at least \"1m\"",
            ));
        }
        if st.retention_interval < Duration::from_secs(1)
            || st.retention_interval > Duration::from_secs(24 * 3600)
        {
            out.push(out_of_range(
                "store.retention-interval",
                humantime::format_duration(st.retention_interval),
                "between \"1s\" and \"1day\"",
            ));
        }
        if !(1..=1024).contains(&st.max_labels_per_series) {
            out.push(out_of_range(
                "store.max-labels-per-series",
                st.max_labels_per_series,
                "1 to 1024",
            ));
        }
        let sc = &self.scrape;
        if sc.interval < Duration::from_secs(1) {
            out.push(out_of_range(
                "scrape.interval",
                humantime::format_duration(sc.interval),
                "at least \"1s\"",
            ));
        }
        if sc.timeout.is_zero() || sc.timeout > sc.interval {
            out.push(out_of_range(
                "scrape.timeout",
                humantime::format_duration(sc.timeout),
                "more than 0 and at most scrape.interval",
            ));
        }
        for (i, t) in sc.targets.iter().enumerate() {
            let url = &t.url;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                out.push(Invalid::new(
                    format!("scrape.targets[{i}].url"),
                    format!("\"{url}\" is not an http(s) URL (expected e.g. \"http://127.0.0.1:9115/metrics\")"),
                ));
            }
            if t.job.is_empty() || sc.targets[..i].iter().any(|o| o.job == t.job) {
                out.push(Invalid::new(
                    format!("scrape.targets[{i}].job"),
                    format!(
                        "\"{}\" is empty or used twice (expected a unique job name)",
                        t.job
                    ),
                ));
            }
        }
        if st.downsample_step < Duration::from_secs(1)
            || st.downsample_step > Duration::from_secs(24 * 3600)
        {
            out.push(out_of_range(
                "store.downsample-step",
                humantime::format_duration(st.downsample_step),
                "between \"1s\" and \"1day\"",
            ));
        }
        if st.downsample_after < st.downsample_step {
            out.push(out_of_range(
                "store.downsample-after",
                humantime::format_duration(st.downsample_after),
                "at least store.downsample-step",
            ));
        }
        let f = &self.forward;
        let url = &f.remote_write_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            out.push(Invalid::new(
                "forward.remote-write-url",
                format!(
                    "\"{}\" is not an http(s) URL (expected e.g. \"https://metrics.example.com/api/v1/write\")",
                    f.remote_write_url
                ),
            ));
        }
        let url = &f.otlp_url;
        if url.is_empty() {
            // No OTLP forwarding.
        } else if !(url.starts_with("http://") || url.starts_with("https://")) {
            let example = match f.otlp_protocol {
                OtlpProtocol::HttpProtobuf => {
                    "the receiver's base URL, e.g. \"https://otel.example.com:4318\""
                }
                OtlpProtocol::Grpc => {
                    "the receiver's gRPC URL, e.g. \"https://otel.example.com:4317\""
                }
            };
            out.push(Invalid::new(
                "forward.otlp-url",
                format!("\"{url}\" is not an http(s) URL (expected {example})"),
            ));
        } else if f.otlp_protocol == OtlpProtocol::HttpProtobuf
            && (url.ends_with("/v1/logs") || url.ends_with("/v1/metrics"))
        {
            out.push(Invalid::new(
                "forward.otlp-url",
                format!(
                    "\"{url}\" names a signal path; give the base URL (\"/v1/logs\" and \"/v1/metrics\" are appended)"
                ),
            ));
        } else if f.otlp_protocol == OtlpProtocol::Grpc {
            match url.parse::<tonic::codegen::http::Uri>() {
                Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => {
                    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
                        out.push(Invalid::new(
                            "forward.otlp-url",
                            format!(
                                "\"{url}\" has a path; with otlp-protocol = \"grpc\" give scheme, host and port only (e.g. \"https://otel.example.com:4317\")"
                            ),
                        ));
                    }
                }
                Ok(_) | Err(_) => out.push(Invalid::new(
                    "forward.otlp-url",
                    format!(
                        "\"{url}\" is not a valid URL with a host (expected e.g. \"https://otel.example.com:4317\")"
                    ),
                )),
            }
        }
        let files = |list: [(&str, &Option<PathBuf>); 3], when: &str, out: &mut Vec<Invalid>| {
            for (key, v) in list {
                match v {
                    None => out.push(Invalid::new(
                        key,
                        format!("is required when {when} (expected a PEM file path)"),
                    )),
                    Some(p) if !p.is_absolute() => out.push(Invalid::new(
                        key,
                        format!("\"{}\" is not an absolute path", p.display()),
                    )),
                    Some(_) => {}
                }
            }
        };
        if !f.quic_peer.is_empty() {
            let port = f
                .quic_peer
                .rsplit_once(':')
                .map(|(h, p)| (h, p.parse::<u16>()));
            if !matches!(port, Some((h, Ok(p))) if !h.is_empty() && p != 0) {
                out.push(Invalid::new(
                    "forward.quic-peer",
                    format!(
                        "\"{}\" is not host:port (expected e.g. \"central.example.net:4319\" or \"[fd00::1]:4319\")",
                        f.quic_peer
                    ),
                ));
            }
            files(
                [
                    ("forward.quic-cert-file", &f.quic_cert_file),
                    ("forward.quic-key-file", &f.quic_key_file),
                    ("forward.quic-ca-file", &f.quic_ca_file),
                ],
                "forward.quic-peer is set",
                &mut out,
            );
        }
        let q = &self.quic;
        if !q.listen.is_empty() {
            files(
                [
                    ("quic.cert-file", &q.cert_file),
                    ("quic.key-file", &q.key_file),
                    ("quic.client-ca-file", &q.client_ca_file),
                ],
                "quic.listen has listeners",
                &mut out,
            );
        }
        if !(1..=100_000).contains(&f.batch_logs) {
            out.push(out_of_range(
                "forward.batch-logs",
                f.batch_logs,
                "1 to 100000",
            ));
        }
        if !(1..=100_000).contains(&f.batch_samples) {
            out.push(out_of_range(
                "forward.batch-samples",
                f.batch_samples,
                "1 to 100000",
            ));
        }
        if f.timeout < Duration::from_secs(1) || f.timeout > Duration::from_secs(600) {
            out.push(out_of_range(
                "forward.timeout",
                humantime::format_duration(f.timeout),
                "between \"1s\" and \"10m\"",
            ));
        }
        if f.licence_check_interval < Duration::from_secs(1) {
            out.push(out_of_range(
                "forward.licence-check-interval",
                humantime::format_duration(f.licence_check_interval),
                "at least \"1s\"",
            ));
        }
        if !f.licensed_socket.is_absolute() {
            out.push(Invalid::new(
                "forward.licensed-socket",
                format!(
                    "\"{}\" is not an absolute path",
                    f.licensed_socket.display()
                ),
            ));
        }
        // Two listeners of one kind on the same address cannot both bind.
        for (key, list) in [
            ("syslog.udp", &s.udp),
            ("syslog.tcp", &s.tcp),
            ("syslog.tls", &s.tls),
            ("http.listen", &self.http.listen),
            ("otlp.grpc", &self.otlp.grpc),
            ("otlp.http", &self.otlp.http),
            ("quic.listen", &self.quic.listen),
        ] {
            for (i, a) in list.iter().enumerate() {
                if a.port() != 0 && list[..i].contains(a) {
                    out.push(Invalid::new(
                        format!("{key}[{i}]"),
                        format!("{a} is listed twice"),
                    ));
                }
            }
        }
        // TCP listeners of different kinds cannot share an address either.
        let tcp_kinds = [
            ("syslog.tcp", &s.tcp),
            ("syslog.tls", &s.tls),
            ("http.listen", &self.http.listen),
            ("otlp.grpc", &self.otlp.grpc),
            ("otlp.http", &self.otlp.http),
        ];
        for (k, (key, list)) in tcp_kinds.iter().enumerate() {
            for (i, a) in list.iter().enumerate() {
                if let Some((other, _)) = tcp_kinds[..k]
                    .iter()
                    .find(|(_, l)| a.port() != 0 && l.contains(a))
                {
                    out.push(Invalid::new(
                        format!("{key}[{i}]"),
                        format!("{a} is also used by {other}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Vec::new());
    }

    #[test]
    fn tls_without_cert_and_bad_limits_are_named() {
        let mut c = Config::default();
        c.syslog.tls = vec![addr(DEFAULT_SYSLOG_TLS_ADDR)];
        c.syslog.tls_key_file = Some(PathBuf::from("key.pem"));
        c.syslog.max_message_bytes = 10;
        c.store.batch_records = 0;
        c.http.listen = vec![addr(DEFAULT_SYSLOG_ADDR)];
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "syslog.max-message-bytes",
                "syslog.tls-cert-file",
                "syslog.tls-key-file",
                "store.batch-records",
                "http.listen[0]",
            ]
        );
    }
}
