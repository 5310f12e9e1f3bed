//! Request and response bodies of the licence server API (`POST {server-url}/api/v2/...`),
//! JSON with snake_case fields. `docs/licensing.md` is the reference for both sides; the
//! reference server (`refserver`) implements it for the tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Path of the validate endpoint.
pub const VALIDATE: &str = "/api/v2/validate";
/// Path of the features endpoint.
pub const FEATURES: &str = "/api/v2/features";
/// Path of the keepalive endpoint.
pub const KEEPALIVE: &str = "/api/v2/keepalive";

/// Who is asking: sent with every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Product name from `[licence] product`.
    pub product: String,
    /// The licence key.
    pub license_key: String,
    /// `/etc/machine-id` of the appliance (empty when unknown).
    pub machine_id: String,
    /// Appliance version, e.g. `v0.1.0`.
    pub version: String,
}

/// Body of `POST /api/v2/validate` and `POST /api/v2/features`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateRequest {
    /// Who is asking.
    #[serde(flatten)]
    pub identity: Identity,
}

/// One feature as granted by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedFeature {
    /// Feature name (see `features::CATALOGUE`).
    pub name: String,
    /// Whether it is granted.
    pub enabled: bool,
}

/// 200 answer of validate and features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateResponse {
    /// Always true in a 200 answer.
    pub valid: bool,
    /// Licensee.
    #[serde(default)]
    pub customer: String,
    /// `community`, `professional`, `enterprise`, ...
    #[serde(default)]
    pub tier: String,
    /// Licence expiry, seconds since the Unix epoch; absent = perpetual.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Granted features.
    #[serde(default)]
    pub features: Vec<GrantedFeature>,
}

/// Body of `POST /api/v2/keepalive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepaliveRequest {
    /// Who is asking.
    #[serde(flatten)]
    pub identity: Identity,
    /// Usage counts pushed by the daemons: daemon → counter → value.
    pub usage: BTreeMap<String, BTreeMap<String, u64>>,
    /// Seconds since licensed started.
    pub uptime_seconds: u64,
}

/// 200 answer of keepalive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepaliveResponse {
    /// Always true in a 200 answer.
    pub ok: bool,
}

/// Body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `invalid_key` (401), `forbidden` (403), `expired` (403), `product_mismatch` (403), ...
    pub error: String,
    /// Human text.
    #[serde(default)]
    pub message: String,
    /// For `expired`: when it expired, seconds since the Unix epoch.
    #[serde(default)]
    pub expires_at: Option<i64>,
}
