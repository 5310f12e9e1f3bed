//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`.
//!
//! It is built from [`ROUTES`], so every route the access table knows is in it,
//! with its minimum role, its security schemes, its request body schema (derived from the
//! same structs the handlers deserialize), its parameters, and the error responses.

use axum::Json;
use utoipa::ToSchema;
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, ObjectBuilder, OpenApi,
    OpenApiBuilder, Paths, Ref, Required, ResponseBuilder, Type,
};

use super::{Access, ROUTES, SESSION_COOKIE};

/// The DESIGN.md error body (mirror of `rookery_common::http::ApiError` for the schema).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Error {
    /// Stable machine-readable code, e.g. `forbidden`, `invalid_config`.
    pub error: String,
    /// Human text.
    pub message: String,
    /// The HTTP status.
    pub status: u16,
    /// Also in `x-request-id`.
    pub correlation_id: String,
    /// RFC 3339.
    pub timestamp: String,
}

/// The request body schema of a route, by name.
fn body_of(method: &axum::http::Method, path: &str) -> Option<&'static str> {
    Some(match (method.as_str(), path) {
        ("POST", "/api/v1/auth/login" | "/api/v1/auth/session") => "LoginRequest",
        ("POST", "/api/v1/auth/refresh" | "/api/v1/auth/logout") => "RefreshRequest",
        ("POST", "/api/v1/auth/change-password") => "ChangePasswordRequest",
        ("POST", "/api/v1/auth/totp/verify") => "CodeRequest",
        ("POST", "/api/v1/auth/totp/disable") => "DisableRequest",
        ("POST", "/api/v1/users") => "CreateUser",
        ("PATCH", "/api/v1/users/{name}") => "UpdateUser",
        ("POST", "/api/v1/api-keys") => "CreateKey",
        ("PUT", "/api/v1/licence/key") => "SetKey",
        ("PUT", "/api/v1/config/{daemon}") => "PutConfig",
        ("POST", "/api/v1/config/{daemon}/rollback") => "RollbackRequest",
        _ => return None,
    })
}

fn query_params(path: &str) -> &'static [&'static str] {
    match path {
        "/api/v1/audit" => &[
            "kind", "user", "action", "result", "since", "until", "limit", "offset",
        ],
        "/api/v1/audit/export" => &[
            "kind", "user", "action", "result", "since", "until", "format",
        ],
        "/api/v1/config/{daemon}/diff" => &["against"],
        _ => &[],
    }
}

fn success(method: &axum::http::Method, path: &str) -> (&'static str, &'static str) {
    match (method.as_str(), path) {
        ("POST", "/api/v1/users" | "/api/v1/api-keys") => ("201", "created"),
        ("DELETE", _) | ("POST", "/api/v1/auth/logout" | "/api/v1/auth/totp/disable") => {
            ("204", "done")
        }
        _ => ("200", "ok"),
    }
}

fn http_method(m: &axum::http::Method) -> HttpMethod {
    match m.as_str() {
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// Builds the document.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    let error = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build(),
            )
            .build()
    };
    for (method, path, access) in ROUTES {
        let (code, what) = success(method, path);
        let mut op = OperationBuilder::new()
            .operation_id(Some(format!(
                "{}{}",
                method.as_str().to_lowercase(),
                path.trim_start_matches("/api/v1")
                    .replace(['/', '{', '}', '-', '.'], "_")
            )))
            .response(code, ResponseBuilder::new().description(what).build())
            .response("400", error("bad input"))
            .response("404", error("no such route or object"))
            .response("413", error("body larger than [http] body-limit"))
            .response("415", error("not application/json"))
            .response("422", error("well-formed but invalid"));
        if *method != axum::http::Method::GET {
            op = op.response("409", error("conflicts with the current state"));
        }
        match access {
            Access::Public => {
                op = op
                    .summary(Some("Public."))
                    .response("401", error("wrong credentials"))
                    .response("429", error("account locked"));
            }
            Access::Min(role) => {
                op = op
                    .summary(Some(format!("Needs the {} role or higher.", role.as_str())))
                    .response("401", error("no, expired or revoked credentials"))
                    .response(
                        "403",
                        error("role too low, CSRF failed or password change required"),
                    )
                    .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
                    .security(SecurityRequirement::new("session", Vec::<String>::new()));
            }
        }
        if path.starts_with("/api/v1/config")
            || path.starts_with("/api/v1/licence")
            || *path == "/api/v1/system"
        {
            op = op.response("503", error("the daemon does not answer on its socket"));
        }
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(['{', '}']);
            let schema = if name == "daemon" {
                string_schema().enum_values(Some(super::daemons::EDITABLE))
            } else {
                string_schema()
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(schema)),
            );
        }
        for q in query_params(path) {
            let schema = match *q {
                "limit" => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(1000)),
                "offset" => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
                "since" | "until" => {
                    string_schema().format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::DateTime,
                    )))
                }
                "format" => string_schema().enum_values(Some(["csv", "json"])),
                _ => string_schema(),
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(*q)
                    .parameter_in(ParameterIn::Query)
                    .required(if *q == "against" {
                        Required::True
                    } else {
                        Required::False
                    })
                    .schema(Some(schema)),
            );
        }
        if let Some(body) = body_of(method, path) {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(body)))
                            .build(),
                    )
                    .build(),
            ));
        }
        paths.add_path_operation(*path, vec![http_method(method)], op);
    }
    let components = ComponentsBuilder::new()
        .schema_from::<Error>()
        .schema_from::<crate::store::Role>()
        .schema_from::<super::auth::LoginRequest>()
        .schema_from::<super::auth::RefreshRequest>()
        .schema_from::<super::auth::ChangePasswordRequest>()
        .schema_from::<super::totp::CodeRequest>()
        .schema_from::<super::totp::DisableRequest>()
        .schema_from::<super::users::CreateUser>()
        .schema_from::<super::users::UpdateUser>()
        .schema_from::<super::keys::CreateKey>()
        .schema_from::<super::daemons::SetKey>()
        .schema_from::<super::daemons::PutConfig>()
        .schema_from::<super::daemons::RollbackRequest>()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        )
        .security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Rookery API")
                .version(rookery_common::VERSION)
                .description(Some(
                    "Bearer: an access token from /auth/login or an API key (rk_…). \
                     Session: the cookie from /auth/session; unsafe methods also send x-csrf-token.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Json<OpenApi> {
    Json(document())
}
