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
use super::{Api, Principal, Source, now};
use crate::crypto::{self, Claims};
use crate::store::{RefreshOutcome, User};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

/// What login, refresh and change-password return.
#[derive(Debug, Serialize)]
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

/// `POST /api/v1/auth/login`.
pub async fn login(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Json<TokenResponse>, Response> {
    let source = src.0;
    let fail = |api: &Api, reason: &str| {
        api.audit(
            AaaKind::Auth,
            &req.username,
            "login",
            "failure",
            &source,
            &[("reason", reason)],
        );
    };
    if req.username.len() > 64 || req.password.len() > crypto::MAX_PASSWORD_LENGTH {
        fail(&api, "oversized");
        return Err(invalid_credentials().into_response());
    }
    let user = api
        .store
        .user_by_name(&req.username)
        .map_err(|e| store_err(&e).into_response())?;
    let Some(user) = user else {
        let _ = verify(req.password.clone(), dummy_hash().to_owned()).await;
        fail(&api, "unknown_user");
        return Err(invalid_credentials().into_response());
    };
    let now = now();
    if user.locked_until > now {
        fail(&api, "locked");
        return Err(locked(user.locked_until - now));
    }
    if !verify(req.password.clone(), user.password_hash.clone()).await {
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
        fail(&api, "wrong_password");
        if until > 0 {
            api.audit(
                AaaKind::Auth,
                &user.username,
                "lockout",
                "locked",
                &source,
                &[
                    ("failures", &failures.to_string()),
                    ("seconds", &(until - now).to_string()),
                ],
            );
        }
        return Err(invalid_credentials().into_response());
    }
    api.store
        .login_succeeded(user.id)
        .map_err(|e| store_err(&e).into_response())?;
    let tokens = issue(&api, &user, None).map_err(IntoResponse::into_response)?;
    api.audit(
        AaaKind::Auth,
        &user.username,
        "login",
        "success",
        &source,
        &[],
    );
    Ok(Json(tokens))
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

/// `GET /api/v1/auth/me`.
pub async fn me(Extension(p): Extension<Principal>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "username": p.username, "role": p.role.as_str() }))
}

/// `POST /api/v1/auth/change-password`: the only route open to a user who must change it.
pub async fn change_password(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let source = src.0;
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
