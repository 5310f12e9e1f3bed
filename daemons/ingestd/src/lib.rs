//! rookery-ingestd: the log and metrics ingester of the appliance.
//!
//! Inputs: syslog (RFC 5424 and RFC 3164) over UDP, TCP (octet counting or LF framing) and
//! TLS ([`syslog`]); JSON/NDJSON logs pushed over HTTP ([`http`]); Prometheus remote_write
//! ([`remote_write`]); OTLP logs and metrics over gRPC and HTTP/protobuf ([`otlp`]); and a
//! scraper of the daemons' `/metrics` ([`scrape`]). Everything goes through one bounded write
//! queue to the SQLite store ([`store`]: WAL, FTS5 over log messages, series + samples,
//! batched commits, retention and downsampling), and is acknowledged only after the commit.
//! Queries: `rookery.v1.Logs` and `rookery.v1.Metrics` over gRPC on
//! `/run/rookery/ingestd.sock` ([`service`]) and `/api/v1/query_range` ([`promql`]).
//!
//! The entry point is [`app::Ingestd`] (the daemon) and [`run`] (in-process). Parsing,
//! framing and query evaluation are pure ([`syslog::parse`], [`syslog::framing`], [`promql`]).

pub mod app;
pub mod config;
pub mod events;
pub mod forward;
pub mod http;
pub mod otlp;
pub mod promql;
pub mod quic;
pub mod record;
pub mod remote_write;
pub mod scrape;
pub mod service;
pub mod store;
pub mod syslog;

pub use app::run;
pub use config::Config;

/// Now, in ns since the Unix epoch (0 if the clock is before 1970, saturating in 2262).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
