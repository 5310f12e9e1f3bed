//! rookery-licensed: the licensing agent of the appliance.
//!
//! It validates the licence key against the licence server (or a signed offline licence
//! file), caches the entitlements durably for an offline grace period, sends keepalives with
//! the usage counts other daemons push, and answers `CheckFeature` / `GetEntitlements` over
//! gRPC on `/run/rookery/licensed.sock`. With release mode off (the default) every feature is
//! on and no check fails.
//!
//! The entry point is [`run`]; `main.rs` only parses the command line. Domain logic lives in
//! [`manager`] (state machine and keepalive loop) on top of pure modules ([`key`], [`grace`],
//! [`offline`], [`features`]) and the HTTP client ([`client`]).

pub mod app;
pub mod cache;
pub mod client;
pub mod config;
pub mod features;
pub mod grace;
pub mod key;
pub mod manager;
pub mod offline;
pub mod protocol;
#[cfg(feature = "test-support")]
pub mod refserver;
pub mod service;

pub use app::run;
pub use config::Config;
