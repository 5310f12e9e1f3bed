//! rookery-packetd: the packet tester of the appliance.
//!
//! It answers STAMP (RFC 8762, stateless, RFC 8972 SSID) and UDP echo from one XDP program
//! (`ebpf/packetd/packetd.bpf.c`, loaded by [`xdp`]) or, where XDP cannot attach, from the
//! [`userspace`] reflector with the same wire rules ([`wire`]), answering only the sources of
//! the [`allow`]list; [`clock`] keeps the timestamps on UTC and the Error Estimate honest.
//! The STAMP Session-Sender ([`sender`], [`measure`]) and the raw rate [`generator`] (AF_XDP
//! through [`afxdp`] where it can, sockets otherwise) run
//! [`sessions`] started over gRPC ([`grpc`]) and stores them in SQLite. [`config`] is `packetd.toml`; [`app`] wires it all
//! into the shared daemon runner. See `docs/packetd.md`.

pub mod afxdp;
pub mod allow;
pub mod app;
pub mod clock;
pub mod config;
pub mod events;
pub mod generator;
pub mod grpc;
pub mod measure;
pub mod sender;
pub mod sessions;
pub mod userspace;
pub mod wire;
pub mod xdp;

pub use config::Config;
