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
        ("POST", "/api/v1/probes/run") => "RunRequest",
        ("POST", "/api/v1/packet/sessions") => "StartRequest",
        _ => return None,
    })
}

/// What a route's success answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// No body (204).
    Empty,
    /// JSON of this schema.
    One(&'static str),
    /// A JSON array of this schema.
    Many(&'static str),
    /// `text/plain`.
    Text,
    /// JSON array of this schema, or CSV with `format=csv`.
    Export(&'static str),
    /// `text/event-stream`: Server-Sent Events whose data is JSON of this schema.
    Events(&'static str),
}

/// The success body of a route, by schema name.
pub fn answer_of(method: &axum::http::Method, path: &str) -> Answer {
    if success(method, path).0 == "204" {
        return Answer::Empty;
    }
    match (method.as_str(), path) {
        ("GET", "/api/v1/openapi.json") => Answer::One("OpenApiDocument"),
        (
            "POST",
            "/api/v1/auth/login" | "/api/v1/auth/refresh" | "/api/v1/auth/change-password",
        ) => Answer::One("TokenResponse"),
        ("POST", "/api/v1/auth/session") => Answer::One("SessionResponse"),
        ("GET", "/api/v1/auth/me") => Answer::One("Me"),
        ("POST", "/api/v1/auth/totp/enrol") => Answer::One("Enrolment"),
        ("POST", "/api/v1/auth/totp/verify") => Answer::One("RecoveryCodes"),
        ("GET" | "PUT", "/api/v1/licence" | "/api/v1/licence/key") => Answer::One("LicenceView"),
        ("GET", "/api/v1/config/{daemon}") => Answer::One("ConfigView"),
        ("PUT", "/api/v1/config/{daemon}") | ("POST", "/api/v1/config/{daemon}/rollback") => {
            Answer::One("ApplyOutcome")
        }
        ("GET", "/api/v1/config/{daemon}/history") => Answer::Many("HistoryItem"),
        ("GET", "/api/v1/config/{daemon}/history/{id}") => Answer::One("ConfigChange"),
        ("GET", "/api/v1/config/{daemon}/diff") => Answer::Text,
        ("GET", "/api/v1/api-keys") => Answer::Many("KeyView"),
        ("POST", "/api/v1/api-keys") => Answer::One("CreatedKey"),
        ("GET", "/api/v1/system") => Answer::One("SystemView"),
        ("GET", "/api/v1/probes/targets") => Answer::Many("TargetView"),
        ("GET", "/api/v1/probes/results") => Answer::Many("ResultView"),
        ("GET", "/api/v1/probes/tier-events") => Answer::Many("TierEventView"),
        ("POST", "/api/v1/probes/run") => Answer::One("ResultView"),
        ("GET", "/api/v1/packet/sessions") => Answer::Many("SessionView"),
        ("POST", "/api/v1/packet/sessions" | "/api/v1/packet/sessions/{id}/stop")
        | ("GET", "/api/v1/packet/sessions/{id}") => Answer::One("SessionView"),
        ("GET", "/api/v1/packet/sessions/{id}/watch") => Answer::Events("SessionView"),
        ("GET", "/api/v1/logs") => Answer::One("LogPage"),
        ("GET", "/api/v1/metrics/query_range") => Answer::Many("SeriesView"),
        ("GET", "/api/v1/users") => Answer::Many("UserView"),
        ("GET" | "POST" | "PATCH", "/api/v1/users" | "/api/v1/users/{name}") => {
            Answer::One("UserView")
        }
        ("GET", "/api/v1/audit") => Answer::One("Page"),
        ("GET", "/api/v1/audit/export") => Answer::Export("AuditEntry"),
        // A route added to the table without a line here fails the unit test below.
        _ => Answer::Empty,
    }
}

/// The success response of a route.
fn success_response(method: &axum::http::Method, path: &str) -> utoipa::openapi::Response {
    let (_, what) = success(method, path);
    let json = |schema: utoipa::openapi::RefOr<utoipa::openapi::Schema>| {
        ContentBuilder::new().schema(Some(schema)).build()
    };
    let many = |name: &str| -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::ArrayBuilder::new()
            .items(Ref::from_schema_name(name))
            .build()
            .into()
    };
    let text = || {
        ContentBuilder::new()
            .schema(Some(string_schema().build()))
            .build()
    };
    let b = ResponseBuilder::new().description(what);
    match answer_of(method, path) {
        Answer::Empty => b,
        Answer::One(name) => {
            b.content("application/json", json(Ref::from_schema_name(name).into()))
        }
        Answer::Many(name) => b.content("application/json", json(many(name))),
        Answer::Text => b.content("text/plain", text()),
        Answer::Export(name) => b
            .content("application/json", json(many(name)))
            .content("text/csv", text()),
        Answer::Events(name) => b
            .description(
                "Server-Sent Events: `session` events (data: JSON of the schema) until the \
                 last, final one, then `end`; `error` (data: the error body) if the watch \
                 ends early",
            )
            .content(
                "text/event-stream",
                json(Ref::from_schema_name(name).into()),
            ),
    }
    .build()
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
        "/api/v1/probes/results" | "/api/v1/probes/tier-events" => &["target", "limit"],
        "/api/v1/packet/sessions" => &["limit"],
        "/api/v1/logs" => &[
            "since",
            "until",
            "host",
            "app",
            "severity",
            "facility",
            "q",
            "parse_errors",
            "before",
            "limit",
        ],
        "/api/v1/metrics/query_range" => &[
            "name", "match", "start_ms", "end_ms", "step_ms", "function", "range_ms", "sum", "by",
        ],
        _ => &[],
    }
}

fn success(method: &axum::http::Method, path: &str) -> (&'static str, &'static str) {
    match (method.as_str(), path) {
        ("POST", "/api/v1/users" | "/api/v1/api-keys" | "/api/v1/packet/sessions") => {
            ("201", "created")
        }
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
        let (code, _) = success(method, path);
        let mut op = OperationBuilder::new()
            .operation_id(Some(format!(
                "{}{}",
                method.as_str().to_lowercase(),
                path.trim_start_matches("/api/v1")
                    .replace(['/', '{', '}', '-', '.'], "_")
            )))
            .response(code, success_response(method, path))
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
            || path.starts_with("/api/v1/probes")
            || path.starts_with("/api/v1/packet")
            || path.starts_with("/api/v1/logs")
            || path.starts_with("/api/v1/metrics")
            || *path == "/api/v1/system"
        {
            op = op.response("503", error("the daemon does not answer on its socket"));
        }
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(['{', '}']);
            let schema = if name == "daemon" {
                string_schema().enum_values(Some(super::daemons::EDITABLE))
            } else if path.starts_with("/api/v1/packet") {
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
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
                    .maximum(Some(if path.starts_with("/api/v1/probes") {
                        super::probes::MAX_LIMIT
                    } else if *path == "/api/v1/logs" {
                        super::ingest::MAX_LOG_LIMIT
                    } else if path.starts_with("/api/v1/packet") {
                        super::packet::MAX_LIMIT
                    } else {
                        1000
                    })),
                "severity" => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(7))
                    .description(Some("Records this severe or worse (0 emergency .. 7 debug).")),
                "facility" => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(23)),
                "before" => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .description(Some("Only records with an id below this (`next_before`).")),
                "start_ms" | "end_ms" => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .description(Some("ms since the Unix epoch.")),
                "step_ms" | "range_ms" => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
                "function" => string_schema().enum_values(Some(super::ingest::FUNCTIONS)),
                "sum" | "parse_errors" => string_schema().enum_values(Some(["true", "false"])),
                "q" => string_schema().description(Some(
                    "Full-text search of the message (SQLite FTS5 syntax: words, \"phrases\", AND, OR, NOT).",
                )),
                "match" => string_schema().description(Some(
                    "Label matchers as in PromQL's braces: job=\"x\",code=~\"5..\".",
                )),
                "by" => string_schema().description(Some("Comma-separated labels to sum by (with sum=true).")),
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
                    .required(
                        if matches!(
                            (*path, *q),
                            (_, "against")
                                | (
                                    "/api/v1/metrics/query_range",
                                    "name" | "start_ms" | "end_ms" | "step_ms"
                                )
                        ) {
                            Required::True
                        } else {
                            Required::False
                        },
                    )
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
        .schema(
            "OpenApiDocument",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some("This document."))
                .required("openapi")
                .required("paths"),
        )
        .schema_from::<super::auth::TokenResponse>()
        .schema_from::<super::auth::SessionResponse>()
        .schema_from::<super::auth::Me>()
        .schema_from::<super::totp::Enrolment>()
        .schema_from::<super::totp::RecoveryCodes>()
        .schema_from::<super::daemons::LicenceView>()
        .schema_from::<super::daemons::FeatureView>()
        .schema_from::<super::daemons::ConfigView>()
        .schema_from::<super::daemons::ApplyOutcome>()
        .schema_from::<super::daemons::HistoryItem>()
        .schema_from::<crate::store::ConfigChange>()
        .schema_from::<super::keys::KeyView>()
        .schema_from::<super::keys::CreatedKey>()
        .schema_from::<super::system::SystemView>()
        .schema_from::<super::daemons::DaemonView>()
        .schema_from::<super::users::UserView>()
        .schema_from::<super::audit::Page>()
        .schema_from::<crate::store::AuditEntry>()
        .schema_from::<super::probes::RunRequest>()
        .schema_from::<super::probes::TargetView>()
        .schema_from::<super::probes::ResultView>()
        .schema_from::<super::probes::PhaseView>()
        .schema_from::<super::probes::TierEventView>()
        .schema_from::<super::packet::StartRequest>()
        .schema_from::<super::packet::SessionView>()
        .schema_from::<super::packet::SpecView>()
        .schema_from::<super::packet::StatsView>()
        .schema_from::<super::ingest::LogPage>()
        .schema_from::<super::ingest::LogView>()
        .schema_from::<super::ingest::SeriesView>()
        .schema_from::<super::ingest::PointView>()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_success_body_has_a_schema_that_exists() {
        let doc = serde_json::to_value(document()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (method, path, _) in ROUTES {
            let (code, _) = success(method, path);
            let op = &doc["paths"][*path][method.as_str().to_lowercase()];
            let content = &op["responses"][code]["content"];
            if code == "204" {
                assert!(content.is_null(), "{method} {path}: 204 with a body");
                continue;
            }
            assert!(
                answer_of(method, path) != Answer::Empty,
                "{method} {path}: no success body in answer_of"
            );
            let text = content.to_string();
            let mut refs = text.split("#/components/schemas/").skip(1).peekable();
            assert!(
                refs.peek().is_some() || content.get("text/plain").is_some(),
                "{method} {path}: no schema"
            );
            for r in refs {
                let name = r.split('"').next().unwrap();
                assert!(
                    schemas.contains_key(name),
                    "{method} {path}: {name} missing"
                );
            }
        }
        // Nested references resolve too.
        let all = doc["components"].to_string();
        for r in all.split("#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "component {name} missing");
        }
    }
}
