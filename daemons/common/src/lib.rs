//! rookery-common: the shared core of every Rookery daemon.
//!
//! Five daemons are written at different times; this crate is what makes them one appliance.
//! Each daemon's `main.rs` hands its config type and a [`daemon::Daemon`] implementation to
//! [`daemon::main`], which provides the command line (`run`, `check-config`, `print-config`),
//! config loading with `file:line:col` errors ([`config`]), logging into the journal
//! ([`logging`]), the systemd protocol ([`notify`]), SIGHUP reload and SIGTERM drain, the gRPC
//! server on `/run/rookery/<daemon>.sock` with health and `Admin` ([`grpc`]) and the loopback
//! `/healthz` + `/metrics` server ([`http`]). [`listen`] binds configured addresses before
//! the network is up. [`netlink`] lists network interfaces and their
//! addresses and reports their changes; [`netns`] makes network namespaces for privileged tests.
#![warn(missing_docs)]

pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod logging;
pub mod netlink;
pub mod netns;
pub mod notify;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod proto;

/// Product version, from the repository's `.version` file (e.g. `v0.1.0`).
pub const VERSION: &str = include_str!("../../../.version").trim_ascii();

/// Directory of the daemons' gRPC sockets (DESIGN.md).
pub const RUN_DIR: &str = "/run/rookery";
/// Directory of the daemons' config files (DESIGN.md).
pub const CONFIG_DIR: &str = "/etc/rookery";
/// Parent of the daemons' state directories (DESIGN.md).
pub const STATE_DIR: &str = "/var/lib/rookery";

/// The five daemons, in the order operators usually read them.
pub const DAEMONS: [&str; 5] = ["packetd", "probed", "ingestd", "apid", "licensed"];

/// An error and its sources on one line, `outer: inner: root`, the way operators read them.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
