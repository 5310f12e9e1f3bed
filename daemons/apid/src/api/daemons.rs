//! Resources behind the other daemons' gRPC sockets: their `grpc.health.v1` answer and `Admin.Status`
//! (`/api/v1/system`), the licence (`/api/v1/licence`), and their config files
//! (`/api/v1/config/{daemon}`): read, validated write with history and reload, diff,
//! rollback, and try-mode. A daemon whose socket does not answer gets 503
//! `daemon_unavailable` naming it and its socket.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rookery_common::http::ApiError;
use rookery_common::logging::AaaKind;
use rookery_common::proto;
use rookery_common::proto::admin_client::AdminClient;
use rookery_common::proto::licensing_client::LicensingClient;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::extract::{JsonBody, QueryParams};
use super::{Api, Principal, Source};
use crate::store::ConfigChange;

/// Daemons whose config apid edits (apid's own file is edited on the box: a broken one
/// would lock everybody out of the API).
pub const EDITABLE: [&str; 4] = ["packetd", "probed", "ingestd", "licensed"];
/// Longest try-mode window.
pub const MAX_TRY_SECONDS: u32 = 600;
/// How often try-mode asks the daemon whether it is healthy.
const TRY_POLL: Duration = Duration::from_millis(200);

impl Api {
    fn socket(&self, daemon: &str) -> PathBuf {
        self.daemons.run_dir.join(format!("{daemon}.sock"))
    }

    fn config_path(&self, daemon: &str) -> PathBuf {
        self.daemons.config_dir.join(format!("{daemon}.toml"))
    }

    pub(super) async fn channel(&self, daemon: &str) -> Result<Channel, ApiError> {
        let socket = self.socket(daemon);
        let connect = rookery_common::grpc::connect(&socket);
        match tokio::time::timeout(self.daemons.rpc_timeout, connect).await {
            Ok(Ok(ch)) => Ok(ch),
            Ok(Err(err)) => Err(unavailable(
                daemon,
                &socket,
                &rookery_common::error_chain(&err),
            )),
            Err(_) => Err(unavailable(daemon, &socket, "connect timed out")),
        }
    }

    pub(super) async fn call<T, F>(&self, daemon: &str, fut: F) -> Result<T, ApiError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let socket = self.socket(daemon);
        match tokio::time::timeout(self.daemons.rpc_timeout, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => Err(ApiError::not_found(
                format!("{daemon}: {}", status.message()),
            )),
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_argument",
                format!("{daemon}: {}", status.message()),
            )),
            Ok(Err(status)) => Err(unavailable(daemon, &socket, status.message())),
            Err(_) => Err(unavailable(daemon, &socket, "the call timed out")),
        }
    }

    async fn status(&self, daemon: &str) -> Result<proto::StatusResponse, ApiError> {
        let mut c = AdminClient::new(self.channel(daemon).await?);
        self.call(daemon, c.status(proto::StatusRequest {})).await
    }

    /// The daemon's `grpc.health.v1` answer for the whole server: `serving`, `not_serving`,
    /// `unknown`, or `unavailable` when it does not answer.
    async fn health(&self, daemon: &str) -> &'static str {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_check_response::ServingStatus;
        let Ok(channel) = self.channel(daemon).await else {
            return "unavailable";
        };
        let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
        let req = HealthCheckRequest {
            service: String::new(),
        };
        match self.call(daemon, c.check(req)).await {
            Ok(r) => match ServingStatus::try_from(r.status) {
                Ok(ServingStatus::Serving) => "serving",
                Ok(ServingStatus::NotServing) => "not_serving",
                _ => "unknown",
            },
            Err(_) => "unavailable",
        }
    }
}

/// 503 `daemon_unavailable`, naming the daemon and its socket.
fn unavailable(daemon: &str, socket: &std::path::Path, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "daemon_unavailable",
        format!(
            "rookery-{daemon} does not answer on {}: {why}",
            socket.display()
        ),
    )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DaemonView {
    name: &'static str,
    socket: String,
    /// `ready`, `starting`, `reloading`, `stopping`, or `unavailable`.
    state: String,
    /// The `grpc.health.v1` status: `serving`, `not_serving`, `unknown` or `unavailable`.
    health: &'static str,
    version: String,
    uptime_seconds: u64,
    status_text: String,
    config_digest: String,
    last_reload_error: String,
    /// Why it is unavailable.
    error: String,
}

/// Every daemon's `Admin.Status` (apid's own socket included).
pub async fn daemon_views(api: &Api) -> Vec<DaemonView> {
    let mut out = Vec::new();
    for name in rookery_common::DAEMONS {
        let socket = api.socket(name).display().to_string();
        out.push(match api.status(name).await {
            Ok(s) => DaemonView {
                name,
                socket,
                state: s.state,
                health: api.health(name).await,
                version: s.version,
                uptime_seconds: s.uptime_seconds,
                status_text: s.status_text,
                config_digest: s.config_digest,
                last_reload_error: s.last_reload_error,
                error: String::new(),
            },
            Err(e) => DaemonView {
                name,
                socket,
                state: "unavailable".into(),
                health: "unavailable",
                version: String::new(),
                uptime_seconds: 0,
                status_text: String::new(),
                config_digest: String::new(),
                last_reload_error: String::new(),
                error: e.message,
            },
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// Licence.

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LicenceView {
    state: String,
    release_mode: bool,
    key_masked: String,
    product: String,
    customer: String,
    tier: String,
    expires_unix: i64,
    last_validated_unix: i64,
    grace_until_unix: i64,
    source: String,
    last_error: String,
    features: Vec<FeatureView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeatureView {
    name: String,
    enabled: bool,
    tier: String,
}

impl From<proto::LicenseStatus> for LicenceView {
    fn from(s: proto::LicenseStatus) -> Self {
        let state = proto::LicenseState::try_from(s.state)
            .map(|st| {
                st.as_str_name()
                    .trim_start_matches("LICENSE_STATE_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|_| "unspecified".into());
        Self {
            state,
            release_mode: s.release_mode,
            key_masked: s.key_masked,
            product: s.product,
            customer: s.customer,
            tier: s.tier,
            expires_unix: s.expires_unix,
            last_validated_unix: s.last_validated_unix,
            grace_until_unix: s.grace_until_unix,
            source: s.source,
            last_error: s.last_error,
            features: s
                .features
                .into_iter()
                .map(|f| FeatureView {
                    name: f.name,
                    enabled: f.enabled,
                    tier: f.tier,
                })
                .collect(),
        }
    }
}

/// `GET /api/v1/licence`.
pub async fn licence(State(api): State<Arc<Api>>) -> Result<Json<LicenceView>, ApiError> {
    let mut c = LicensingClient::new(api.channel("licensed").await?);
    let s = api
        .call("licensed", c.get_license(proto::GetLicenseRequest {}))
        .await?;
    Ok(Json(s.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetKey {
    #[schema(pattern = "^PENG(-[0-9A-Z]{4}){5}$")]
    key: String,
}

/// `PUT /api/v1/licence/key`.
pub async fn set_licence_key(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<SetKey>,
) -> Result<Json<LicenceView>, ApiError> {
    let mut c = LicensingClient::new(api.channel("licensed").await?);
    let result = api
        .call("licensed", c.set_key(proto::SetKeyRequest { key: req.key }))
        .await;
    let outcome = if result.is_ok() { "success" } else { "failure" };
    api.audit(
        AaaKind::Audit,
        &p.username,
        "licence.set-key",
        outcome,
        &src.0,
        &[],
    );
    Ok(Json(result?.into()))
}

// ---------------------------------------------------------------------------------------
// Config files.

fn editable(daemon: &str) -> Result<&'static str, ApiError> {
    EDITABLE
        .iter()
        .find(|d| **d == daemon)
        .copied()
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no editable config \"{daemon}\" (expected one of {})",
                EDITABLE.join(", ")
            ))
        })
}

fn read_file(path: &std::path::Path) -> Result<Option<String>, ApiError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ApiError::unavailable(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigView {
    daemon: &'static str,
    path: String,
    /// Whether the file exists (absent = compiled defaults).
    exists: bool,
    text: String,
    /// The file as JSON; null if it does not parse as TOML.
    #[schema(value_type = Option<Object>)]
    parsed: Option<serde_json::Value>,
}

/// `GET /api/v1/config/{daemon}`: the file's text and its parsed form.
pub async fn get_config(
    State(api): State<Arc<Api>>,
    Path(daemon): Path<String>,
) -> Result<Json<ConfigView>, ApiError> {
    let daemon = editable(&daemon)?;
    let path = api.config_path(daemon);
    let text = read_file(&path)?;
    let parsed = text
        .as_deref()
        .and_then(|t| toml::from_str::<toml::Table>(t).ok())
        .and_then(|t| serde_json::to_value(t).ok());
    Ok(Json(ConfigView {
        daemon,
        path: path.display().to_string(),
        exists: text.is_some(),
        text: text.unwrap_or_default(),
        parsed,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutConfig {
    text: String,
    /// Try-mode: revert unless the daemon is healthy on the new config within this many seconds.
    #[schema(minimum = 1, maximum = 600)]
    try_seconds: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApplyOutcome {
    daemon: &'static str,
    /// The history entry of this change.
    history_id: i64,
    /// Whether the new file is in place and running.
    applied: bool,
    /// Whether try-mode put the previous file back.
    reverted: bool,
    config_digest: String,
    message: String,
}

#[derive(Debug, Serialize)]
struct IssueView {
    location: String,
    line: u32,
    column: u32,
    key: String,
    message: String,
    rendered: String,
}

fn issues_body(
    status: StatusCode,
    code: &str,
    message: String,
    issues: Vec<proto::ConfigIssue>,
) -> Response {
    let err = ApiError::new(status, code, message);
    let mut v = serde_json::to_value(&err).unwrap_or_default();
    let issues: Vec<IssueView> = issues
        .into_iter()
        .map(|i| IssueView {
            location: i.location,
            line: i.line,
            column: i.column,
            key: i.key,
            message: i.message,
            rendered: i.rendered,
        })
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "issues".into(),
            serde_json::to_value(issues).unwrap_or_default(),
        );
    }
    (status, Json(v)).into_response()
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn write_config(path: &std::path::Path, text: &str) -> Result<(), ApiError> {
    // 0640: readable by the daemons through group rookery (the directory is setgid rookery).
    rookery_common::fsutil::write_atomic_mode(path, text.as_bytes(), 0o640)
        .map_err(|e| ApiError::unavailable(format!("cannot write {}: {e}", path.display())))
}

/// Validate with the daemon, write atomically, record history, reload; a refused reload puts
/// the previous file back. With `try_for`, also revert unless the daemon reports healthy on
/// the new config in time.
async fn apply(
    api: &Api,
    p: &Principal,
    source: &str,
    daemon: &'static str,
    text: String,
    kind: &str,
    try_for: Option<Duration>,
) -> Result<Response, ApiError> {
    let _serial = api.config_lock.lock().await;
    let channel = api.channel(daemon).await?;
    let mut admin = AdminClient::new(channel);
    let v = api
        .call(
            daemon,
            admin.validate_config(proto::ValidateConfigRequest { text: text.clone() }),
        )
        .await?;
    let action = format!("config.{daemon}.{kind}");
    if !v.ok {
        api.audit(
            AaaKind::Audit,
            &p.username,
            &action,
            "rejected",
            source,
            &[],
        );
        let n = v.issues.len();
        return Ok(issues_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            format!(
                "rookery-{daemon} rejects this config ({n} problem{})",
                if n == 1 { "" } else { "s" }
            ),
            v.issues,
        ));
    }
    let path = api.config_path(daemon);
    let before = read_file(&path)?.unwrap_or_default();
    write_config(&path, &text)?;
    let ts = now_rfc3339();
    let history_id = api
        .store
        .add_config_change(daemon, &ts, &p.username, kind, &before, &text)
        .map_err(|e| ApiError::unavailable(format!("cannot record the history: {e}")))?;
    let reload = api
        .call(daemon, admin.reload(proto::ReloadRequest {}))
        .await;
    let reload = match reload {
        Ok(r) if r.applied => r,
        other => {
            write_config(&path, &before)?;
            let _ = api
                .call(daemon, admin.reload(proto::ReloadRequest {}))
                .await;
            let _ = api.store.add_config_change(
                daemon,
                &now_rfc3339(),
                &p.username,
                "revert",
                &text,
                &before,
            );
            api.audit(
                AaaKind::Audit,
                &p.username,
                &action,
                "reverted",
                source,
                &[],
            );
            return Ok(match other {
                Ok(r) => issues_body(
                    StatusCode::CONFLICT,
                    "reload_rejected",
                    format!(
                        "rookery-{daemon} refused the reload ({}); the previous file is back",
                        r.error
                    ),
                    r.issues,
                ),
                Err(e) => e.into_response(),
            });
        }
    };
    if let Some(window) = try_for
        && !healthy_within(api, daemon, &reload.config_digest, window).await
    {
        write_config(&path, &before)?;
        let digest = match api
            .call(daemon, admin.reload(proto::ReloadRequest {}))
            .await
        {
            Ok(r) => r.config_digest,
            Err(_) => String::new(),
        };
        let _ = api.store.add_config_change(
            daemon,
            &now_rfc3339(),
            &p.username,
            "auto-revert",
            &text,
            &before,
        );
        api.audit(
            AaaKind::Audit,
            &p.username,
            &action,
            "auto-reverted",
            source,
            &[],
        );
        return Ok(Json(ApplyOutcome {
            daemon,
            history_id,
            applied: false,
            reverted: true,
            config_digest: digest,
            message: format!(
                "rookery-{daemon} was not healthy within {} s; the previous file is back",
                window.as_secs()
            ),
        })
        .into_response());
    }
    api.audit(
        AaaKind::Audit,
        &p.username,
        &action,
        "success",
        source,
        &[("digest", &reload.config_digest)],
    );
    Ok(Json(ApplyOutcome {
        daemon,
        history_id,
        applied: true,
        reverted: false,
        config_digest: reload.config_digest,
        message: "written and reloaded".into(),
    })
    .into_response())
}

/// Whether the daemon reports `ready`, no reload error, and the new digest within `window`.
async fn healthy_within(api: &Api, daemon: &str, digest: &str, window: Duration) -> bool {
    let deadline = Instant::now() + window;
    loop {
        if let Ok(s) = api.status(daemon).await
            && s.state == "ready"
            && s.last_reload_error.is_empty()
            && s.config_digest == digest
        {
            return true;
        }
        if Instant::now() + TRY_POLL > deadline {
            return false;
        }
        tokio::time::sleep(TRY_POLL).await;
    }
}

/// `PUT /api/v1/config/{daemon}`.
pub async fn put_config(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    Path(daemon): Path<String>,
    JsonBody(req): JsonBody<PutConfig>,
) -> Result<Response, ApiError> {
    let daemon = editable(&daemon)?;
    let try_for = match req.try_seconds {
        None => None,
        Some(s) if (1..=MAX_TRY_SECONDS).contains(&s) => Some(Duration::from_secs(u64::from(s))),
        Some(s) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("try_seconds={s} is out of range (expected 1 to {MAX_TRY_SECONDS})"),
            ));
        }
    };
    let kind = if try_for.is_some() { "try" } else { "apply" };
    apply(&api, &p, &src.0, daemon, req.text, kind, try_for).await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryItem {
    id: i64,
    ts: String,
    user: String,
    kind: String,
}

/// `GET /api/v1/config/{daemon}/history`: newest first.
pub async fn history(
    State(api): State<Arc<Api>>,
    Path(daemon): Path<String>,
) -> Result<Json<Vec<HistoryItem>>, ApiError> {
    let daemon = editable(&daemon)?;
    let items = api
        .store
        .config_history(daemon)
        .map_err(|e| ApiError::unavailable(format!("cannot read the history: {e}")))?;
    Ok(Json(
        items
            .into_iter()
            .map(|c| HistoryItem {
                id: c.id,
                ts: c.ts,
                user: c.user,
                kind: c.kind,
            })
            .collect(),
    ))
}

fn entry(api: &Api, daemon: &str, id: &str) -> Result<ConfigChange, ApiError> {
    let not_found = || ApiError::not_found(format!("no history entry {id} for {daemon}"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    api.store
        .config_history(daemon)
        .map_err(|e| ApiError::unavailable(format!("cannot read the history: {e}")))?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(not_found)
}

/// `GET /api/v1/config/{daemon}/history/{id}`: one change with both texts.
pub async fn history_entry(
    State(api): State<Arc<Api>>,
    Path((daemon, id)): Path<(String, String)>,
) -> Result<Json<ConfigChange>, ApiError> {
    let daemon = editable(&daemon)?;
    Ok(Json(entry(&api, daemon, &id)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffArgs {
    /// History entry whose `before` text is compared with the current file.
    against: String,
}

/// `GET /api/v1/config/{daemon}/diff?against={id}`: line diff from the version before that
/// change to the current file (`-` old, `+` new, ` ` same).
pub async fn diff(
    State(api): State<Arc<Api>>,
    Path(daemon): Path<String>,
    QueryParams(q): QueryParams<DiffArgs>,
) -> Result<Response, ApiError> {
    let daemon = editable(&daemon)?;
    let old = entry(&api, daemon, &q.against)?.before;
    let new = read_file(&api.config_path(daemon))?.unwrap_or_default();
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        line_diff(&old, &new),
    )
        .into_response())
}

/// Largest side compared line by line (LCS is quadratic; config files are far smaller).
const MAX_DIFF_LINES: usize = 5000;

/// A full-context line diff.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() > MAX_DIFF_LINES || b.len() > MAX_DIFF_LINES {
        return format!(
            "files too large to diff ({} and {} lines)\n",
            a.len(),
            b.len()
        );
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!(" {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Restore the file as it was before this history entry.
    history_id: i64,
}

/// `POST /api/v1/config/{daemon}/rollback`: validated, written and reloaded like a PUT.
pub async fn rollback(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    Path(daemon): Path<String>,
    JsonBody(req): JsonBody<RollbackRequest>,
) -> Result<Response, ApiError> {
    let daemon = editable(&daemon)?;
    let old = entry(&api, daemon, &req.history_id.to_string())?.before;
    apply(&api, &p, &src.0, daemon, old, "rollback", None).await
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn diff_marks_changed_lines() {
        assert_eq!(
            line_diff("a\nb\nc\n", "a\nB\nc\nd\n"),
            " a\n-b\n+B\n c\n+d\n"
        );
        assert_eq!(line_diff("", "x\n"), "+x\n");
    }
}
