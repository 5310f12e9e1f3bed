//! `/api/v1/auth/totp/*`: the optional second factor. Enrol gives a secret (and its
//! `otpauth://` URI for the QR code); verify with a first code turns it on and returns ten
//! one-time recovery codes (stored hashed); disable needs the password again.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use rookery_common::http::ApiError;
use rookery_common::logging::AaaKind;
use serde::{Deserialize, Serialize};

use super::auth::normalise_recovery;
use super::extract::JsonBody;
use super::{Api, Principal, Source, Via, now};
use crate::crypto;
use crate::store::{StoreError, User};

/// Recovery codes handed out at enrolment.
pub const RECOVERY_CODES: usize = 10;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Enrolment {
    /// Base32 secret for manual entry.
    secret: String,
    /// `otpauth://totp/…` for a QR code.
    otpauth_uri: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    #[schema(pattern = "^[0-9]{6}$")]
    code: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    recovery_codes: Vec<String>,
}

fn store_err(err: &StoreError) -> ApiError {
    ApiError::unavailable(format!("the user store failed: {err}"))
}

fn user(api: &Api, p: &Principal) -> Result<User, ApiError> {
    if p.via == Via::ApiKey {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an API key cannot manage its owner's second factor",
        ));
    }
    api.store
        .user_by_id(p.id)
        .map_err(|e| store_err(&e))?
        .ok_or_else(|| ApiError::not_found("the user no longer exists"))
}

fn conflict(message: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}

/// `POST /api/v1/auth/totp/enrol`.
pub async fn enrol(
    State(api): State<Arc<Api>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Enrolment>, ApiError> {
    let u = user(&api, &p)?;
    if !u.totp_secret.is_empty() {
        return Err(conflict(
            "a second factor is already enabled; disable it first",
        ));
    }
    // 160 bits, the HMAC-SHA1 block-friendly size RFC 4226 recommends.
    let secret = crypto::base32_encode(&rand::random::<[u8; 20]>());
    api.store
        .set_totp_pending(u.id, &secret)
        .map_err(|e| store_err(&e))?;
    Ok(Json(Enrolment {
        otpauth_uri: format!(
            "otpauth://totp/Rookery:{}?secret={secret}&issuer=Rookery&algorithm=SHA1&digits=6&period={}",
            u.username,
            crypto::TOTP_STEP
        ),
        secret,
    }))
}

/// `POST /api/v1/auth/totp/verify`: the first code turns the second factor on.
pub async fn verify(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<CodeRequest>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let u = user(&api, &p)?;
    if u.totp_pending.is_empty() {
        return Err(conflict(
            "no enrolment in progress; POST /api/v1/auth/totp/enrol first",
        ));
    }
    let secret = crypto::base32_decode(&u.totp_pending).unwrap_or_default();
    let Some(step) = crypto::totp_match(&secret, &req.code, now()) else {
        api.audit(
            AaaKind::Audit,
            &p.username,
            "totp.enable",
            "failure",
            &src.0,
            &[],
        );
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_totp",
            "the code does not match; check the phone's clock",
        ));
    };
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let raw = hex::encode(rand::random::<[u8; 5]>());
            format!("{}-{}", &raw[..5], &raw[5..])
        })
        .collect();
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| crypto::sha256_hex(&normalise_recovery(c)))
        .collect();
    api.store
        .enable_totp(u.id, step, &hashes)
        .map_err(|e| store_err(&e))?;
    api.audit(
        AaaKind::Audit,
        &p.username,
        "totp.enable",
        "success",
        &src.0,
        &[],
    );
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

/// `POST /api/v1/auth/totp/disable`: needs the password again.
pub async fn disable(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<DisableRequest>,
) -> Result<StatusCode, ApiError> {
    let u = user(&api, &p)?;
    let (pw, phc) = (req.password, u.password_hash.clone());
    let ok = pw.len() <= crypto::MAX_PASSWORD_LENGTH
        && tokio::task::spawn_blocking(move || crypto::verify_password(&pw, &phc))
            .await
            .unwrap_or(false);
    if !ok {
        api.audit(
            AaaKind::Audit,
            &p.username,
            "totp.disable",
            "failure",
            &src.0,
            &[],
        );
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_credentials",
            "the password is wrong",
        ));
    }
    api.store.disable_totp(u.id).map_err(|e| store_err(&e))?;
    api.audit(
        AaaKind::Audit,
        &p.username,
        "totp.disable",
        "success",
        &src.0,
        &[],
    );
    Ok(StatusCode::NO_CONTENT)
}
