//! rookery-packetd: the packet tester of the appliance.
//!
//! Today it runs an in-kernel STAMP Session-Reflector (RFC 8762, stateless, RFC 8972 SSID) and a
//! UDP echo as one XDP program (`ebpf/packetd/packetd.bpf.c`, loaded by [`xdp`]) on the
//! interfaces listed in `packetd.toml` ([`config`]), with its counters exported as
//! `rookery_packetd_*` metrics ([`app`]). [`clock`] keeps the program's timestamps on UTC and
//! its Error Estimate honest.

pub mod allow;
pub mod app;
pub mod clock;
pub mod config;
pub mod events;
pub mod grpc;
pub mod measure;
pub mod sender;
pub mod sessions;
pub mod userspace;
pub mod wire;
pub mod xdp;

pub use config::Config;
