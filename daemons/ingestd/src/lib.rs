//! rookery-ingestd: the log ingester of the appliance.
//!
//! It receives syslog (RFC 5424 and RFC 3164) over UDP, TCP (octet counting or LF framing)
//! and TLS, and JSON/NDJSON logs pushed over HTTP, stores them in SQLite (WAL, FTS5 index of
//! the message text) with batched commits and acknowledges only after the commit, bounds its
//! memory with a write queue (backpressure for TCP and HTTP, counted rejections for UDP) and
//! its disk with retention (max bytes, max age), and answers log queries over gRPC
//! (`rookery.v1.Logs`) on `/run/rookery/ingestd.sock`.
//!
//! The entry point is [`app::Ingestd`] (the daemon) and [`run`] (in-process, for tests).
//! Parsing and framing are pure ([`syslog::parse`], [`syslog::framing`]); sockets live in
//! [`syslog`] and [`http`], SQLite in [`store`].

pub mod app;
pub mod config;
pub mod events;
pub mod http;
pub mod otlp;
pub mod promql;
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
