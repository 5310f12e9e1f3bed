//! `/api/v1/auth/*`: login, refresh (rotating), logout, who am I, change password.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rookery_common::http::ApiError;
use rookery_common::logging::AaaKind;
use serde::{Deserialize, Serialize};

use super::extract::JsonBody;
use super::{Api, Principal, SESSION_COOKIE, Source, Via, now};
use crate::crypto::{self, Claims};
use crate::store::{RefreshOutcome, Role, User};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
    /// The current 6-digit code, for users with a second factor.
    #[serde(default)]
    totp_code: Option<String>,
    /// A one-time recovery code instead of the TOTP code.
    #[serde(default)]
    recovery_code: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

/// What login, refresh and change-password return.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
    refresh_expires_in: u64,
    username: String,
    role: &'static str,
    must_change_password: bool,
}

/// Verifies against a fixed hash when the user does not exist, so that a missing user takes
/// as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| crypto::hash_password("rookery timing equaliser"))
}

async fn verify(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || crypto::verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

fn store_err(err: &crate::store::StoreError) -> ApiError {
    ApiError::unavailable(format!("the user store failed: {err}"))
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "wrong username or password",
    )
}

/// Issues an access token and a refresh token in `family` (a new family if `None`).
pub(super) fn issue(
    api: &Api,
    user: &User,
    family: Option<String>,
) -> Result<TokenResponse, ApiError> {
    let auth = api.auth();
    let now = now();
    let access_ttl = auth.access_token_ttl.as_secs();
    let refresh_ttl = auth.refresh_token_ttl.as_secs();
    let claims = Claims {
        sub: user.id,
        name: user.username.clone(),
        r#gen: user.token_generation,
        iat: now,
        exp: now + i64::try_from(access_ttl).unwrap_or(i64::MAX / 2),
    };
    let access = crypto::sign_token(&api.signing_key, &claims);
    let refresh = crypto::random_token(32);
    let family = family.unwrap_or_else(|| crypto::random_token(12));
    api.store
        .add_refresh_token(
            user.id,
            &crypto::sha256_hex(&refresh),
            &family,
            now,
            now + i64::try_from(refresh_ttl).unwrap_or(i64::MAX / 2),
        )
        .map_err(|e| store_err(&e))?;
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: access_ttl,
        refresh_token: refresh,
        refresh_expires_in: refresh_ttl,
        username: user.username.clone(),
        role: user.role.as_str(),
        must_change_password: user.must_change_password,
    })
}

/// Checks password, lockout and second factor; records failures. `Err` is the answer.
async fn check_credentials(api: &Api, req: &LoginRequest, source: &str) -> Result<User, Response> {
    let fail = |reason: &str| {
        if reason != "address_throttled" && reason != "totp_required" {
            api.ip_failed(source);
        }
        api.audit(
            AaaKind::Auth,
            &req.username,
            "login",
            "failure",
            source,
            &[("reason", reason)],
        );
    };
    if api.ip_blocked(source) {
        fail("address_throttled");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed logins from this address; wait a few minutes",
        )
        .into_response());
    }
    if req.username.len() > 64 || req.password.len() > crypto::MAX_PASSWORD_LENGTH {
        fail("oversized");
        return Err(invalid_credentials().into_response());
    }
    let user = api
        .store
        .user_by_name(&req.username)
        .map_err(|e| store_err(&e).into_response())?;
    let Some(user) = user else {
        let _ = verify(req.password.clone(), dummy_hash().to_owned()).await;
        fail("unknown_user");
        return Err(invalid_credentials().into_response());
    };
    let now = now();
    if user.locked_until > now {
        fail("locked");
        return Err(locked(user.locked_until - now));
    }
    #[allow(
        clippy::result_large_err,
        reason = "the error is the response, built once per failed login"
    )]
    let failed = |reason: &'static str| {
        let auth = api.auth();
        let (failures, until) = api
            .store
            .login_failed(
                user.id,
                auth.lockout_threshold,
                i64::try_from(auth.lockout_base.as_secs()).unwrap_or(i64::MAX),
                i64::try_from(auth.lockout_max.as_secs()).unwrap_or(i64::MAX),
                now,
            )
            .map_err(|e| store_err(&e).into_response())?;
        fail(reason);
        if until > 0 {
            api.audit(
                AaaKind::Auth,
                &user.username,
                "lockout",
                "locked",
                source,
                &[
                    ("failures", &failures.to_string()),
                    ("seconds", &(until - now).to_string()),
                ],
            );
        }
        Ok::<(), Response>(())
    };
    if !verify(req.password.clone(), user.password_hash.clone()).await {
        failed("wrong_password")?;
        return Err(invalid_credentials().into_response());
    }
    if !user.totp_secret.is_empty() {
        let secret = crypto::base32_decode(&user.totp_secret).unwrap_or_default();
        let ok = if let Some(code) = &req.totp_code {
            match crypto::totp_match(&secret, code, now) {
                Some(step) => api
                    .store
                    .accept_totp_step(user.id, step)
                    .map_err(|e| store_err(&e).into_response())?,
                None => false,
            }
        } else if let Some(code) = &req.recovery_code {
            api.store
                .use_recovery_code(user.id, &crypto::sha256_hex(&normalise_recovery(code)))
                .map_err(|e| store_err(&e).into_response())?
        } else {
            fail("totp_required");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "totp_required",
                "this account has a second factor: send totp_code (or recovery_code)",
            )
            .into_response());
        };
        if !ok {
            failed("wrong_totp")?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_totp",
                "the code is wrong, expired or already used",
            )
            .into_response());
        }
        if req.recovery_code.is_some() {
            api.audit(
                AaaKind::Auth,
                &user.username,
                "recovery_code.use",
                "success",
                source,
                &[],
            );
        }
    }
    api.store
        .login_succeeded(user.id)
        .map_err(|e| store_err(&e).into_response())?;
    Ok(user)
}

/// Recovery codes are compared without dashes, spaces or case.
pub(super) fn normalise_recovery(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `POST /api/v1/auth/login`: tokens for API clients.
pub async fn login(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Json<TokenResponse>, Response> {
    let user = check_credentials(&api, &req, &src.0).await;
    api.metrics.login(user.is_ok());
    let user = user?;
    let tokens = issue(&api, &user, None).map_err(IntoResponse::into_response)?;
    api.audit(
        AaaKind::Auth,
        &user.username,
        "login",
        "success",
        &src.0,
        &[("via", "token")],
    );
    Ok(Json(tokens))
}

/// What a browser login returns (the session itself is the cookie).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionResponse {
    csrf_token: String,
    username: String,
    role: &'static str,
    must_change_password: bool,
    expires_in: u64,
}

/// `POST /api/v1/auth/session`: browser login; sets the HttpOnly, Secure, SameSite=Strict
/// session cookie and returns the CSRF token that unsafe requests must echo.
pub async fn session_login(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, Response> {
    let user = check_credentials(&api, &req, &src.0).await;
    api.metrics.login(user.is_ok());
    let user = user?;
    let ttl = api.auth().refresh_token_ttl.as_secs();
    let session = crypto::random_token(32);
    let now = now();
    api.store
        .add_session(
            user.id,
            &crypto::sha256_hex(&session),
            now,
            now + i64::try_from(ttl).unwrap_or(i64::MAX / 2),
        )
        .map_err(|e| store_err(&e).into_response())?;
    api.audit(
        AaaKind::Auth,
        &user.username,
        "login",
        "success",
        &src.0,
        &[("via", "session")],
    );
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/api/v1; Max-Age={ttl}; HttpOnly; Secure; SameSite=Strict"
    );
    let mut resp = Json(SessionResponse {
        csrf_token: api.csrf_token(&session),
        username: user.username,
        role: user.role.as_str(),
        must_change_password: user.must_change_password,
        expires_in: ttl,
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `DELETE /api/v1/auth/session`: ends the browser session and clears the cookie.
pub async fn session_logout(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if p.via != Via::Session {
        return Err(ApiError::bad_request(
            "no session cookie; token clients log out with POST /api/v1/auth/logout",
        ));
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default();
    api.store
        .delete_session(&crypto::sha256_hex(&cookie))
        .map_err(|e| store_err(&e))?;
    api.audit(
        AaaKind::Auth,
        &p.username,
        "logout",
        "success",
        &src.0,
        &[("via", "session")],
    );
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "rookery_session=; Path=/api/v1; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        ),
    );
    Ok(resp)
}

fn locked(seconds: i64) -> Response {
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "account_locked",
        format!("too many failed logins; try again in {seconds} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// `POST /api/v1/auth/refresh`: the old refresh token is spent; a reused one revokes its family.
pub async fn refresh(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let source = src.0;
    let hash = crypto::sha256_hex(&req.refresh_token);
    let outcome = api
        .store
        .use_refresh_token(&hash, now())
        .map_err(|e| store_err(&e))?;
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the refresh token is not valid; log in again",
        )
    };
    match outcome {
        RefreshOutcome::Rotated { user_id, family } => {
            let user = api
                .store
                .user_by_id(user_id)
                .map_err(|e| store_err(&e))?
                .ok_or_else(invalid)?;
            let tokens = issue(&api, &user, Some(family))?;
            api.audit(
                AaaKind::Auth,
                &user.username,
                "refresh",
                "success",
                &source,
                &[],
            );
            Ok(Json(tokens))
        }
        RefreshOutcome::Reused { user_id } => {
            let name = api
                .store
                .user_by_id(user_id)
                .ok()
                .flatten()
                .map(|u| u.username)
                .unwrap_or_default();
            api.audit(
                AaaKind::Auth,
                &name,
                "refresh",
                "failure",
                &source,
                &[("reason", "reused_token_family_revoked")],
            );
            Err(invalid())
        }
        RefreshOutcome::Invalid => {
            api.audit(
                AaaKind::Auth,
                "",
                "refresh",
                "failure",
                &source,
                &[("reason", "invalid")],
            );
            Err(invalid())
        }
    }
}

/// `POST /api/v1/auth/logout`: revokes the refresh token's whole session.
pub async fn logout(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let source = src.0;
    let user = api
        .store
        .revoke_refresh_family(&crypto::sha256_hex(&req.refresh_token))
        .map_err(|e| store_err(&e))?;
    let name = user
        .and_then(|id| api.store.user_by_id(id).ok().flatten())
        .map(|u| u.username)
        .unwrap_or_default();
    api.audit(
        AaaKind::Auth,
        &name,
        "logout",
        if user.is_some() { "success" } else { "failure" },
        &source,
        &[],
    );
    Ok(StatusCode::NO_CONTENT)
}

/// What `GET /api/v1/auth/me` returns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    username: String,
    /// The effective role (an API key's is capped by its owner's).
    role: Role,
}

/// `GET /api/v1/auth/me`.
pub async fn me(Extension(p): Extension<Principal>) -> Json<Me> {
    Json(Me {
        username: p.username,
        role: p.role,
    })
}

/// `POST /api/v1/auth/change-password`: the only route open to a user who must change it.
pub async fn change_password(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let source = src.0;
    if p.via == Via::ApiKey {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an API key cannot change its owner's password",
        ));
    }
    let user = api
        .store
        .user_by_id(p.id)
        .map_err(|e| store_err(&e))?
        .ok_or_else(|| ApiError::not_found("the user no longer exists"))?;
    if req.current_password.len() > crypto::MAX_PASSWORD_LENGTH
        || !verify(req.current_password.clone(), user.password_hash.clone()).await
    {
        api.audit(
            AaaKind::Audit,
            &p.username,
            "password.change",
            "failure",
            &source,
            &[("reason", "wrong_current_password")],
        );
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_credentials",
            "the current password is wrong",
        ));
    }
    if req.new_password == req.current_password {
        return Err(weak("the new password must differ from the current one"));
    }
    if let Some(problem) = crypto::password_problem(
        &req.new_password,
        &p.username,
        api.auth().min_password_length,
    ) {
        return Err(weak(&problem));
    }
    let new = req.new_password.clone();
    let hash = tokio::task::spawn_blocking(move || crypto::hash_password(&new))
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot hash the password: {e}")))?;
    api.store
        .set_password(p.id, &hash, false, now())
        .map_err(|e| store_err(&e))?;
    api.audit(
        AaaKind::Audit,
        &p.username,
        "password.change",
        "success",
        &source,
        &[],
    );
    let user = api
        .store
        .user_by_id(p.id)
        .map_err(|e| store_err(&e))?
        .ok_or_else(|| ApiError::not_found("the user no longer exists"))?;
    Ok(Json(issue(&api, &user, None)?))
}

/// 422 `weak_password`.
pub(super) fn weak(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", message)
}
