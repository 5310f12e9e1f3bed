//! The REST API `/api/v1`: router, the request pipeline every route shares, and the route
//! table that is the single source of who may call what.
//!
//! The pipeline, outermost first: `context` gives each request its ID (`x-request-id`,
//! `correlation_id`), adds the security headers and turns every error response into the
//! DESIGN.md error body; a body-size limit; then, once the route is matched, `authorize`
//! looks the route up in [`ROUTES`] and checks the caller's token and role. The entry point is
//! [`router`].

mod audit;
mod auth;
mod daemons;
mod extract;
mod ingest;
mod keys;
pub mod openapi;
mod packet;
mod probes;
mod system;
mod totp;
mod users;

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rookery_common::http::ApiError;
use rookery_common::logging::{AaaKind, aaa};

use crate::config::{AuthSection, DaemonsSection};
use crate::crypto::{self, TokenError};
use crate::store::{Role, Store};

pub use extract::Peer;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, no token (login, refresh, logout).
    Public,
    /// A signed-in user with at least this role.
    Min(Role),
}

/// Path of the one route a user who must change their password may call.
pub const CHANGE_PASSWORD: &str = "/api/v1/auth/change-password";

/// Every route and its minimum role; `authorize` refuses routes missing here (fail closed).
pub const ROUTES: &[(Method, &str, Access)] = &[
    (Method::GET, "/api/v1/openapi.json", Access::Public),
    (Method::POST, "/api/v1/auth/login", Access::Public),
    (Method::POST, "/api/v1/auth/refresh", Access::Public),
    (Method::POST, "/api/v1/auth/logout", Access::Public),
    (Method::GET, "/api/v1/auth/me", Access::Min(Role::Viewer)),
    (Method::POST, CHANGE_PASSWORD, Access::Min(Role::Viewer)),
    (Method::POST, "/api/v1/auth/session", Access::Public),
    (
        Method::DELETE,
        "/api/v1/auth/session",
        Access::Min(Role::Viewer),
    ),
    (
        Method::POST,
        "/api/v1/auth/totp/enrol",
        Access::Min(Role::Viewer),
    ),
    (
        Method::POST,
        "/api/v1/auth/totp/verify",
        Access::Min(Role::Viewer),
    ),
    (
        Method::POST,
        "/api/v1/auth/totp/disable",
        Access::Min(Role::Viewer),
    ),
    (Method::GET, "/api/v1/licence", Access::Min(Role::Viewer)),
    (Method::PUT, "/api/v1/licence/key", Access::Min(Role::Admin)),
    (
        Method::GET,
        "/api/v1/config/{daemon}",
        Access::Min(Role::Viewer),
    ),
    (
        Method::PUT,
        "/api/v1/config/{daemon}",
        Access::Min(Role::Maintainer),
    ),
    (
        Method::GET,
        "/api/v1/config/{daemon}/history",
        Access::Min(Role::Viewer),
    ),
    (
        Method::GET,
        "/api/v1/config/{daemon}/history/{id}",
        Access::Min(Role::Viewer),
    ),
    (
        Method::GET,
        "/api/v1/config/{daemon}/diff",
        Access::Min(Role::Viewer),
    ),
    (
        Method::POST,
        "/api/v1/config/{daemon}/rollback",
        Access::Min(Role::Maintainer),
    ),
    (Method::GET, "/api/v1/api-keys", Access::Min(Role::Viewer)),
    (Method::POST, "/api/v1/api-keys", Access::Min(Role::Viewer)),
    (
        Method::DELETE,
        "/api/v1/api-keys/{id}",
        Access::Min(Role::Viewer),
    ),
    (Method::GET, "/api/v1/system", Access::Min(Role::Viewer)),
    (
        Method::GET,
        "/api/v1/probes/targets",
        Access::Min(Role::Viewer),
    ),
    (
        Method::GET,
        "/api/v1/probes/results",
        Access::Min(Role::Viewer),
    ),
    (
        Method::GET,
        "/api/v1/probes/tier-events",
        Access::Min(Role::Viewer),
    ),
    (
        Method::POST,
        "/api/v1/probes/run",
        Access::Min(Role::Maintainer),
    ),
    (
        Method::GET,
        "/api/v1/packet/sessions",
        Access::Min(Role::Viewer),
    ),
    (
        Method::POST,
        "/api/v1/packet/sessions",
        Access::Min(Role::Maintainer),
    ),
    (
        Method::GET,
        "/api/v1/packet/sessions/{id}",
        Access::Min(Role::Viewer),
    ),
    (
        Method::POST,
        "/api/v1/packet/sessions/{id}/stop",
        Access::Min(Role::Maintainer),
    ),
    (
        Method::GET,
        "/api/v1/packet/sessions/{id}/watch",
        Access::Min(Role::Viewer),
    ),
    (Method::GET, "/api/v1/logs", Access::Min(Role::Viewer)),
    (
        Method::GET,
        "/api/v1/metrics/query_range",
        Access::Min(Role::Viewer),
    ),
    (Method::GET, "/api/v1/users", Access::Min(Role::Admin)),
    (Method::POST, "/api/v1/users", Access::Min(Role::Admin)),
    (
        Method::GET,
        "/api/v1/users/{name}",
        Access::Min(Role::Admin),
    ),
    (
        Method::PATCH,
        "/api/v1/users/{name}",
        Access::Min(Role::Admin),
    ),
    (
        Method::DELETE,
        "/api/v1/users/{name}",
        Access::Min(Role::Admin),
    ),
    (Method::GET, "/api/v1/audit", Access::Min(Role::Admin)),
    (
        Method::GET,
        "/api/v1/audit/export",
        Access::Min(Role::Admin),
    ),
];

/// The signed-in caller, put into the request by `authorize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: i64,
    pub username: String,
    /// The effective role (an API key's role is capped by its owner's).
    pub role: Role,
    /// How the caller proved who they are.
    pub via: Via,
}

/// The credential of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <access token>`.
    Token,
    /// `Authorization: Bearer rk_…` (an API key).
    ApiKey,
    /// The browser session cookie (unsafe methods also need `x-csrf-token`).
    Session,
}

impl Via {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::ApiKey => "api_key",
            Self::Session => "session",
        }
    }
}

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "rookery_session";
/// Header carrying the CSRF token of a session on unsafe methods.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// API keys start with this, so they are told apart from access tokens.
pub const API_KEY_PREFIX: &str = "rk_";

/// The client's IP address (empty if unknown), put into the request by `context`.
#[derive(Debug, Clone)]
pub struct Source(pub String);

/// The request's ID, put into the request by `context`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Label of [`Metrics::requests`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ClassLabel {
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub class: String,
}

/// Label of [`Metrics::logins`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ResultLabel {
    /// `success` or `failure`.
    pub result: String,
}

/// apid's own metrics (`rookery_apid_…` once registered).
#[derive(Clone, Default)]
pub struct Metrics {
    /// Responses by status class.
    pub requests: prometheus_client::metrics::family::Family<
        ClassLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Logins (token and session) by result.
    pub logins: prometheus_client::metrics::family::Family<
        ResultLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl Metrics {
    /// Registers into the daemon's registry.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "rookery_apid_http_requests",
            "HTTPS API responses by status class",
            self.requests.clone(),
        );
        registry.register(
            "rookery_apid_logins",
            "Logins by result",
            self.logins.clone(),
        );
    }

    /// Counts a login outcome.
    pub fn login(&self, ok: bool) {
        self.logins
            .get_or_create(&ResultLabel {
                result: if ok { "success" } else { "failure" }.into(),
            })
            .inc();
    }
}

/// Shared state of all handlers.
pub struct Api {
    /// apid's own metrics.
    pub metrics: Metrics,
    pub store: Store,
    signing_key: Vec<u8>,
    auth: RwLock<AuthSection>,
    daemons: DaemonsSection,
    /// Failed logins per client address: (count, start of window).
    ip_failures: std::sync::Mutex<std::collections::HashMap<String, (u32, Instant)>>,
    /// Serialises config writes, so history and files never interleave.
    config_lock: tokio::sync::Mutex<()>,
    started: Instant,
    started_at: SystemTime,
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Api {
    /// State over `store`, signing access tokens with `signing_key`.
    pub fn new(
        store: Store,
        signing_key: Vec<u8>,
        auth: AuthSection,
        daemons: DaemonsSection,
    ) -> Self {
        Self {
            metrics: Metrics::default(),
            store,
            signing_key,
            auth: RwLock::new(auth),
            daemons,
            ip_failures: std::sync::Mutex::default(),
            config_lock: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            started_at: SystemTime::now(),
        }
    }

    /// The current `[auth]` section.
    pub fn auth(&self) -> AuthSection {
        self.auth
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether `source` has used up its failed logins for the window.
    pub fn ip_blocked(&self, source: &str) -> bool {
        let limit = self.auth().ip_failure_limit;
        let map = self
            .ip_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(source)
            .is_some_and(|(n, since)| since.elapsed() < crate::config::IP_WINDOW && *n >= limit)
    }

    /// Counts a failed login from `source`.
    pub fn ip_failed(&self, source: &str) {
        let mut map = self
            .ip_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Bounded: forget finished windows once the map grows.
        if map.len() > 10_000 {
            map.retain(|_, (_, since)| since.elapsed() < crate::config::IP_WINDOW);
        }
        let e = map.entry(source.to_owned()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= crate::config::IP_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    /// Applies a reloaded `[auth]` section (TTLs, lockout, policy; key paths need a restart).
    pub fn set_auth(&self, auth: AuthSection) {
        *self.auth.write().unwrap_or_else(PoisonError::into_inner) = auth;
    }

    /// The CSRF token bound to a session: HMAC of the session secret, so nothing is stored.
    pub fn csrf_token(&self, session: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.signing_key);
        hex::encode(ring::hmac::sign(&key, format!("csrf:{session}").as_bytes()).as_ref())
    }

    /// Logs an AAA line to the journal and appends it to the audit table.
    pub fn audit(
        &self,
        kind: AaaKind,
        user: &str,
        action: &str,
        result: &str,
        source: &str,
        extra: &[(&str, &str)],
    ) {
        let mut fields: Vec<(&str, &str)> = Vec::with_capacity(extra.len() + 1);
        if !source.is_empty() {
            fields.push(("source", source));
        }
        fields.extend_from_slice(extra);
        aaa(kind, user, action, result, &fields);
        let detail = extra
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if let Err(err) =
            self.store
                .audit(&ts, kind.as_str(), user, action, result, source, &detail)
        {
            tracing::error!(error = %err, action, "Cannot write the audit entry.");
        }
    }
}

/// Whether a request path belongs to the API (everything else is the web console).
fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The `/api/v1` router over `api`, with bodies limited to `body_limit` bytes; other paths
/// serve the web console built into `webui` ([`crate::webui`]).
pub fn router(api: Arc<Api>, body_limit: usize, webui: std::path::PathBuf) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/me", get(auth::me))
        .route(CHANGE_PASSWORD, post(auth::change_password))
        .route(
            "/api/v1/auth/session",
            post(auth::session_login).delete(auth::session_logout),
        )
        .route("/api/v1/auth/totp/enrol", post(totp::enrol))
        .route("/api/v1/auth/totp/verify", post(totp::verify))
        .route("/api/v1/auth/totp/disable", post(totp::disable))
        .route("/api/v1/licence", get(daemons::licence))
        .route(
            "/api/v1/licence/key",
            axum::routing::put(daemons::set_licence_key),
        )
        .route(
            "/api/v1/config/{daemon}",
            get(daemons::get_config).put(daemons::put_config),
        )
        .route("/api/v1/config/{daemon}/history", get(daemons::history))
        .route(
            "/api/v1/config/{daemon}/history/{id}",
            get(daemons::history_entry),
        )
        .route("/api/v1/config/{daemon}/diff", get(daemons::diff))
        .route("/api/v1/config/{daemon}/rollback", post(daemons::rollback))
        .route("/api/v1/api-keys", get(keys::list).post(keys::create))
        .route("/api/v1/api-keys/{id}", axum::routing::delete(keys::revoke))
        .route("/api/v1/system", get(system::system))
        .route("/api/v1/probes/targets", get(probes::targets))
        .route("/api/v1/probes/results", get(probes::results))
        .route("/api/v1/probes/tier-events", get(probes::tier_events))
        .route("/api/v1/probes/run", post(probes::run))
        .route(
            "/api/v1/packet/sessions",
            get(packet::list).post(packet::start),
        )
        .route("/api/v1/packet/sessions/{id}", get(packet::get_one))
        .route("/api/v1/packet/sessions/{id}/stop", post(packet::stop))
        .route("/api/v1/packet/sessions/{id}/watch", get(packet::watch))
        .route("/api/v1/logs", get(ingest::logs))
        .route("/api/v1/metrics/query_range", get(ingest::query_range))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{name}",
            get(users::get_one)
                .patch(users::update)
                .delete(users::delete),
        )
        .route("/api/v1/audit", get(audit::query))
        .route("/api/v1/audit/export", get(audit::export))
        .route_layer(middleware::from_fn_with_state(api.clone(), authorize))
        .fallback(move |method: Method, uri: axum::http::Uri| async move {
            if is_api(uri.path()) {
                ApiError::not_found("no such route").into_response()
            } else {
                crate::webui::serve(webui, method, uri.path().to_owned()).await
            }
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(api.clone(), context))
        .with_state(api)
}

/// The largest error body `context` rewrites; error bodies are small JSON documents.
const MAX_ERROR_BODY: usize = 64 * 1024;

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map_or_else(rookery_common::http::new_correlation_id, str::to_owned)
}

fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        429 => "too_many_requests",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

/// Request ID, security headers, and the DESIGN.md body on every error response.
async fn context(State(api): State<Arc<Api>>, mut req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    let console = !is_api(req.uri().path());
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|p| p.0.0.ip().to_string())
        .unwrap_or_default();
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(Source(source));
    let resp = next.run(req).await;
    let class = format!("{}xx", resp.status().as_u16() / 100);
    api.metrics
        .requests
        .get_or_create(&ClassLabel { class })
        .inc();
    let (mut parts, body) = resp.into_parts();
    let mut resp = if parts.status.is_client_error() || parts.status.is_server_error() {
        let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let parsed = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .filter(|v| serde_json::from_value::<ApiError>(v.clone()).is_ok());
        let err = match parsed {
            // Ours already (possibly with extra fields such as `issues`): set the ID.
            Some(mut v) => {
                v["correlation_id"] = serde_json::Value::String(id.clone());
                v
            }
            None => {
                let text = String::from_utf8_lossy(&bytes).trim().to_owned();
                let message = if text.is_empty() {
                    parts
                        .status
                        .canonical_reason()
                        .unwrap_or("error")
                        .to_lowercase()
                } else {
                    text
                };
                serde_json::to_value(
                    ApiError::new(parts.status, code_for(parts.status), message)
                        .with_correlation_id(id.clone()),
                )
                .unwrap_or_default()
            }
        };
        if parts.status.is_server_error() {
            tracing::warn!(correlation_id = %id, status = %parts.status, error = %err, "Request failed.");
        }
        let body = serde_json::to_vec(&err).unwrap_or_default();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(body))
    } else {
        Response::from_parts(parts, body)
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(HeaderName::from_static("x-request-id"), v);
    }
    for (name, value) in SECURITY_HEADERS {
        let value = match name {
            // The console's pages load their own scripts and styles and call the API.
            "content-security-policy" if console => crate::webui::CONSOLE_CSP,
            // Console files set their own caching (hashed assets are immutable).
            "cache-control" if console && h.contains_key(header::CACHE_CONTROL) => continue,
            _ => value,
        };
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    resp
}

/// Sent on every response. No `Access-Control-*` header is ever sent: CORS stays closed, so
/// browsers refuse cross-origin reads.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("strict-transport-security", "max-age=31536000"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Checks the caller against [`ROUTES`] and puts the [`Principal`] into the request.
async fn authorize(
    State(api): State<Arc<Api>>,
    matched: Option<MatchedPath>,
    Extension(Source(source)): Extension<Source>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = matched.as_ref().map_or("", |m| m.as_str()).to_owned();
    // HEAD is answered by the GET route, so it needs what GET needs.
    let method = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    let access = ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, a)| *a);
    let action = format!("{} {path}", req.method());
    let min = match access {
        Some(Access::Public) => return next.run(req).await,
        Some(Access::Min(role)) => role,
        None => {
            api.audit(
                AaaKind::Authz,
                "",
                &action,
                "denied",
                &source,
                &[("reason", "unlisted")],
            );
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "route is not in the access table",
            )
            .into_response();
        }
    };
    let (user, role, via) = match authenticate(&api, &req, &source) {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    if user.must_change_password && path != CHANGE_PASSWORD {
        api.audit(
            AaaKind::Authz,
            &user.username,
            &action,
            "denied",
            &source,
            &[("reason", "password_change_required")],
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "password_change_required",
            format!("change the password first: POST {CHANGE_PASSWORD}"),
        )
        .into_response();
    }
    if role < min {
        api.audit(
            AaaKind::Authz,
            &user.username,
            &action,
            "denied",
            &source,
            &[
                ("role", role.as_str()),
                ("required", min.as_str()),
                ("via", via.as_str()),
            ],
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this route needs the {} role", min.as_str()),
        )
        .into_response();
    }
    req.extensions_mut().insert(Principal {
        id: user.id,
        username: user.username,
        role,
        via,
    });
    next.run(req).await
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

/// Finds the caller's user, effective role and credential, or the 401/403 to send.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response, built once per refused request"
)]
fn authenticate(
    api: &Api,
    req: &Request,
    source: &str,
) -> Result<(crate::store::User, Role, Via), Response> {
    let store_failed = |err: crate::store::StoreError| {
        ApiError::unavailable(format!("cannot read the user store: {err}")).into_response()
    };
    if let Some(token) = bearer(req.headers()) {
        if token.starts_with(API_KEY_PREFIX) {
            let key = api
                .store
                .use_api_key(&crypto::sha256_hex(token), now())
                .map_err(store_failed)?;
            let Some(key) = key else {
                api.audit(AaaKind::Auth, "", "api_key", "failure", source, &[]);
                return Err(unauthorized(
                    "invalid_api_key",
                    "the API key is unknown, revoked or expired",
                ));
            };
            let user = api
                .store
                .user_by_id(key.user_id)
                .map_err(store_failed)?
                .ok_or_else(|| unauthorized("invalid_api_key", "the key's owner is gone"))?;
            let role = key.role.min(user.role);
            return Ok((user, role, Via::ApiKey));
        }
        let claims = match crypto::verify_token(&api.signing_key, token, now()) {
            Ok(c) => c,
            Err(TokenError::Expired) => {
                return Err(unauthorized(
                    "token_expired",
                    "the access token has expired; refresh it",
                ));
            }
            Err(TokenError::Invalid) => {
                return Err(unauthorized(
                    "invalid_token",
                    "the access token is not valid",
                ));
            }
        };
        return match api.store.user_by_id(claims.sub).map_err(store_failed)? {
            Some(u) if u.token_generation == claims.r#gen => {
                let role = u.role;
                Ok((u, role, Via::Token))
            }
            _ => Err(unauthorized(
                "invalid_token",
                "the access token was revoked",
            )),
        };
    }
    if let Some(cookie) = session_cookie(req.headers()) {
        let user_id = api
            .store
            .session_user(&crypto::sha256_hex(cookie), now())
            .map_err(store_failed)?
            .ok_or_else(|| {
                unauthorized("invalid_session", "the session has ended; log in again")
            })?;
        let user = api
            .store
            .user_by_id(user_id)
            .map_err(store_failed)?
            .ok_or_else(|| unauthorized("invalid_session", "the session's user is gone"))?;
        let safe = matches!(*req.method(), Method::GET | Method::HEAD);
        if !safe {
            let sent = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !crypto::constant_time_eq(sent.as_bytes(), api.csrf_token(cookie).as_bytes()) {
                api.audit(
                    AaaKind::Authz,
                    &user.username,
                    &format!("{} {}", req.method(), req.uri().path()),
                    "denied",
                    source,
                    &[("reason", "csrf")],
                );
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    format!("a session request that changes something needs the {CSRF_HEADER} header from login"),
                )
                .into_response());
            }
        }
        let role = user.role;
        return Ok((user, role, Via::Session));
    }
    Err(unauthorized(
        "missing_token",
        "this route needs an Authorization: Bearer token, an API key or a session cookie",
    ))
}

fn unauthorized(code: &str, message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"rookery\""),
    );
    resp
}

/// Reads or creates the access-token signing key (32 random bytes, mode 0600).
pub fn load_signing_key(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(key) if key.len() >= 32 => Ok(key),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} holds fewer than 32 bytes", path.display()),
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            rookery_common::fsutil::write_atomic_mode(path, &key, 0o600)?;
            Ok(key.to_vec())
        }
        Err(err) => Err(err),
    }
}
