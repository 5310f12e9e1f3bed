//! `/api/v1/users`: user management (admin only, per the route table).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use rookery_common::http::ApiError;
use rookery_common::logging::AaaKind;
use serde::{Deserialize, Serialize};

use super::auth::weak;
use super::extract::JsonBody;
use super::{Api, Principal, Source, now};
use crate::crypto;
use crate::store::{Role, StoreError, User};

/// A user as the API shows it (never the hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    username: String,
    role: Role,
    must_change_password: bool,
    locked: bool,
    created_at: String,
    updated_at: String,
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            locked: u.locked_until > now(),
            username: u.username,
            role: u.role,
            must_change_password: u.must_change_password,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(pattern = "^[a-z][a-z0-9_.-]{0,31}$")]
    username: String,
    password: String,
    role: Role,
    /// Defaults to true: an admin-chosen password is changed by its owner.
    #[serde(default = "yes")]
    must_change_password: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    role: Option<Role>,
    password: Option<String>,
    must_change_password: Option<bool>,
}

fn store_err(err: &StoreError) -> ApiError {
    ApiError::unavailable(format!("the user store failed: {err}"))
}

/// Usernames: lowercase letters, digits, `_`, `.`, `-`; starts with a letter; 1 to 32.
pub fn valid_username(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

fn find(api: &Api, name: &str) -> Result<User, ApiError> {
    api.store
        .user_by_name(name)
        .map_err(|e| store_err(&e))?
        .ok_or_else(|| ApiError::not_found(format!("no user \"{name}\"")))
}

async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || crypto::hash_password(&password))
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot hash the password: {e}")))
}

/// `GET /api/v1/users`.
pub async fn list(State(api): State<Arc<Api>>) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = api.store.users().map_err(|e| store_err(&e))?;
    Ok(Json(users.into_iter().map(UserView::from).collect()))
}

/// `GET /api/v1/users/{name}`.
pub async fn get_one(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(find(&api, &name)?.into()))
}

/// `POST /api/v1/users`.
pub async fn create(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    if !valid_username(&req.username) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
            "username must be 1 to 32 of a-z 0-9 _ . - and start with a letter",
        ));
    }
    if let Some(problem) =
        crypto::password_problem(&req.password, &req.username, api.auth().min_password_length)
    {
        return Err(weak(&problem));
    }
    let hash = hash(req.password).await?;
    let created = api
        .store
        .create_user(
            &req.username,
            &hash,
            req.role,
            req.must_change_password,
            now(),
        )
        .map_err(|e| store_err(&e))?;
    let Some(user) = created else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("user \"{}\" already exists", req.username),
        ));
    };
    api.audit(
        AaaKind::Audit,
        &p.username,
        "user.create",
        "success",
        &src.0,
        &[("target", &user.username), ("role", user.role.as_str())],
    );
    Ok((StatusCode::CREATED, Json(user.into())))
}

fn last_admin(api: &Api, user: &User) -> Result<bool, ApiError> {
    Ok(user.role == Role::Admin && api.store.admin_count().map_err(|e| store_err(&e))? <= 1)
}

fn conflict_last_admin() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "last_admin",
        "the appliance must keep at least one admin",
    )
}

/// `PATCH /api/v1/users/{name}`: role, password (with `must_change_password`).
pub async fn update(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let user = find(&api, &name)?;
    if req.role.is_none() && req.password.is_none() && req.must_change_password.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "nothing to change (expected role, password or must_change_password)",
        ));
    }
    if req.must_change_password.is_some() && req.password.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "must_change_password goes with a new password",
        ));
    }
    if let Some(role) = req.role
        && role != Role::Admin
        && last_admin(&api, &user)?
    {
        return Err(conflict_last_admin());
    }
    let source = src.0;
    if let Some(password) = req.password {
        if let Some(problem) =
            crypto::password_problem(&password, &user.username, api.auth().min_password_length)
        {
            return Err(weak(&problem));
        }
        let hash = hash(password).await?;
        api.store
            .set_password(
                user.id,
                &hash,
                req.must_change_password.unwrap_or(true),
                now(),
            )
            .map_err(|e| store_err(&e))?;
        api.audit(
            AaaKind::Audit,
            &p.username,
            "user.password.set",
            "success",
            &source,
            &[("target", &user.username)],
        );
    }
    if let Some(role) = req.role {
        api.store
            .set_role(user.id, role, now())
            .map_err(|e| store_err(&e))?;
        api.audit(
            AaaKind::Audit,
            &p.username,
            "user.role.set",
            "success",
            &source,
            &[("target", &user.username), ("role", role.as_str())],
        );
    }
    Ok(Json(find(&api, &name)?.into()))
}

/// `DELETE /api/v1/users/{name}`.
pub async fn delete(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = find(&api, &name)?;
    if last_admin(&api, &user)? {
        return Err(conflict_last_admin());
    }
    api.store.delete_user(user.id).map_err(|e| store_err(&e))?;
    api.audit(
        AaaKind::Audit,
        &p.username,
        "user.delete",
        "success",
        &src.0,
        &[("target", &user.username)],
    );
    Ok(StatusCode::NO_CONTENT)
}
