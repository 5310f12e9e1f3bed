//! rookery-probed: the protocol prober of the appliance.
//!
//! It probes targets on a schedule with modules in the spirit of blackbox_exporter (ICMP,
//! TCP, UDP, DNS, HTTP/1.1, HTTP/2, HTTP/3, TLS, gRPC health, SSH), keeps every result in SQLite, exports
//! `rookery_probed_*` metrics and answers blackbox-compatible `/probe?module=&target=` on its
//! loopback metrics port (127.0.0.1:9115).
//!
//! The entry point is [`app::Probed`] (run by `rookery_common::daemon`). The probe engine is
//! [`probe`] (pure of scheduling and storage); [`scheduler`] runs it per target with bounded
//! concurrency; [`store`] keeps results; [`blackbox`] renders `/probe`; [`metrics`] holds the
//! Prometheus families; [`grpc`] serves `rookery.v1.Probing`; [`tiers`] decides escalation; [`autoperf`] gates continuous mode on licensed.

pub mod app;
pub mod autoperf;
pub mod blackbox;
pub mod config;
pub mod grpc;
pub mod metrics;
pub mod probe;
pub mod scheduler;
pub mod store;
pub mod tiers;

pub use config::Config;
