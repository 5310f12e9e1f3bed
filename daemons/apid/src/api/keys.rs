//! `/api/v1/api-keys`: keys for automation. A key is shown once at creation, stored as a
//! SHA-256 hash with its prefix visible, carries a role no higher than its owner's (and is
//! capped by the owner's current role at each use), may expire, records its last use and
//! can be revoked.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use rookery_common::http::ApiError;
use rookery_common::logging::AaaKind;
use serde::{Deserialize, Serialize};

use super::extract::JsonBody;
use super::{API_KEY_PREFIX, Api, Principal, Source, Via, now};
use crate::crypto;
use crate::store::{ApiKey, Role, StoreError};

/// Longest key lifetime that can be asked for: keys should be rotated at least yearly.
pub const MAX_EXPIRY_DAYS: u32 = 366;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    role: Role,
    /// Days until it expires; absent = never.
    #[schema(minimum = 1, maximum = 366)]
    expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    id: i64,
    name: String,
    prefix: String,
    role: Role,
    owner: String,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    revoked: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key itself; shown only in this answer.
    key: String,
    #[serde(flatten)]
    view: KeyView,
}

fn time(t: i64) -> Option<String> {
    (t > 0).then(|| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
}

fn view(api: &Api, k: ApiKey) -> KeyView {
    let owner = api
        .store
        .user_by_id(k.user_id)
        .ok()
        .flatten()
        .map(|u| u.username)
        .unwrap_or_default();
    KeyView {
        id: k.id,
        name: k.name,
        prefix: k.prefix,
        role: k.role,
        owner,
        created_at: time(k.created_at).unwrap_or_default(),
        expires_at: time(k.expires_at),
        last_used_at: time(k.last_used_at),
        revoked: k.revoked,
    }
}

fn store_err(err: &StoreError) -> ApiError {
    ApiError::unavailable(format!("the key store failed: {err}"))
}

/// `GET /api/v1/api-keys`: the caller's keys (an admin sees everyone's).
pub async fn list(
    State(api): State<Arc<Api>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    let owner = (p.role != Role::Admin).then_some(p.id);
    let keys = api.store.api_keys(owner).map_err(|e| store_err(&e))?;
    Ok(Json(keys.into_iter().map(|k| view(&api, k)).collect()))
}

/// `POST /api/v1/api-keys`.
pub async fn create(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    if p.via == Via::ApiKey {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an API key cannot create API keys",
        ));
    }
    let name = req.name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "name must be 1 to 64 printable characters",
        ));
    }
    if req.role > p.role {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "a {} cannot create a key with the {} role",
                p.role.as_str(),
                req.role.as_str()
            ),
        ));
    }
    let now = now();
    let expires_at = match req.expires_in_days {
        None => 0,
        Some(d) if (1..=MAX_EXPIRY_DAYS).contains(&d) => now + i64::from(d) * 86_400,
        Some(d) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("expires_in_days={d} is out of range (expected 1 to {MAX_EXPIRY_DAYS})"),
            ));
        }
    };
    let prefix = hex::encode(rand::random::<[u8; 4]>());
    let key = format!("{API_KEY_PREFIX}{prefix}_{}", crypto::random_token(32));
    let row = api
        .store
        .add_api_key(
            p.id,
            name,
            &prefix,
            &crypto::sha256_hex(&key),
            req.role,
            now,
            expires_at,
        )
        .map_err(|e| store_err(&e))?;
    api.audit(
        AaaKind::Audit,
        &p.username,
        "api_key.create",
        "success",
        &src.0,
        &[("prefix", &prefix), ("role", req.role.as_str())],
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key,
            view: view(&api, row),
        }),
    ))
}

/// `DELETE /api/v1/api-keys/{id}`: the owner or an admin revokes a key.
pub async fn revoke(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::not_found(format!("no API key {id}"));
    let key_id: i64 = id.parse().map_err(|_| not_found())?;
    let key = api
        .store
        .api_key(key_id)
        .map_err(|e| store_err(&e))?
        .filter(|k| k.user_id == p.id || p.role == Role::Admin)
        .ok_or_else(not_found)?;
    api.store
        .revoke_api_key(key.id)
        .map_err(|e| store_err(&e))?;
    api.audit(
        AaaKind::Audit,
        &p.username,
        "api_key.revoke",
        "success",
        &src.0,
        &[("prefix", &key.prefix)],
    );
    Ok(StatusCode::NO_CONTENT)
}
