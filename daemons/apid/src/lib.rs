//! rookery-apid: the appliance's REST API, the only process that talks to users.
//!
//! It serves `/api/v1` over HTTPS (rustls with ring; the certificate is configured or
//! generated self-signed at first start) and redirects plain HTTP to it. Users sign in with
//! a password (argon2id, lockout with backoff), get a short-lived HS256 access token and a
//! rotating refresh token stored hashed; one table of route → minimum role
//! ([`api::ROUTES`]) decides who may call what. Every authentication, authorisation decision
//! and change is written to the journal and to the audit table in SQLite.
//!
//! The entry point is [`app::Apid`] (the daemon) and [`app::Running`] (the listeners, which
//! tests start directly); [`bootstrap`] holds the first-boot admin and the console reset;
//! [`webui`] serves the built web console on every path outside `/api/`.

pub mod api;
pub mod app;
pub mod bootstrap;
pub mod config;
pub mod crypto;
pub mod store;
pub mod tls;
pub mod webui;

pub use config::Config;
