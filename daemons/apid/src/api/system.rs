//! `/api/v1/system`: version and uptime of the API, and every daemon's health and status.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::Api;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SystemView {
    version: &'static str,
    started_at: String,
    uptime_seconds: u64,
    /// Each daemon's `Admin.Status` over its socket, or why it is unavailable.
    daemons: Vec<super::daemons::DaemonView>,
}

/// `GET /api/v1/system`.
pub async fn system(State(api): State<Arc<Api>>) -> Json<SystemView> {
    Json(SystemView {
        version: rookery_common::VERSION,
        started_at: chrono::DateTime::<chrono::Utc>::from(api.started_at)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        uptime_seconds: api.started.elapsed().as_secs(),
        daemons: super::daemons::daemon_views(&api).await,
    })
}
