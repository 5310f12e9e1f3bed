//! HTTP log push: `POST /v1/logs` with a JSON array (or one object) of records
//! (`Content-Type: application/json`) or one record per line (`application/x-ndjson`).
//!
//! A request is all or nothing: one bad record rejects the whole request with 400 and the
//! DESIGN.md error body naming the line (NDJSON) or record index (JSON array) and the field,
//! and nothing of it is stored, so a client can fix and resend without duplicates. 200 comes
//! only after the records are committed.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rookery_common::http::ApiError;
use serde::Deserialize;

use crate::events::Metrics;
use crate::record::{Input, LogRecord};
use crate::store::{Store, StoreError};

/// State of the HTTP ingest routes.
#[derive(Clone)]
pub struct HttpCtx {
    /// Where records go.
    pub store: Store,
    /// Counters.
    pub metrics: Metrics,
    /// Largest body.
    pub max_body_bytes: usize,
}

/// The ingest router.
pub fn router(ctx: HttpCtx) -> axum::Router {
    axum::Router::new()
        .route("/v1/logs", post(push))
        .with_state(ctx)
}

/// One pushed record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRecord {
    message: String,
    /// RFC 3339.
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    procid: Option<String>,
    #[serde(default)]
    severity: Option<Level>,
    #[serde(default)]
    facility: Option<Level>,
    #[serde(default)]
    attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A severity or facility: its number or its syslog name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Level {
    Number(u64),
    Name(String),
}

const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

fn level(v: &Level, names: &[&str], field: &str) -> Result<u8, String> {
    let found = match v {
        Level::Number(n) => usize::try_from(*n).ok().filter(|n| *n < names.len()),
        Level::Name(s) => {
            let s = s.to_ascii_lowercase();
            let alias = match s.as_str() {
                "error" => "err",
                "warn" => "warning",
                "emergency" => "emerg",
                "critical" => "crit",
                other => other,
            };
            names.iter().position(|n| *n == alias)
        }
    };
    found.and_then(|i| u8::try_from(i).ok()).ok_or_else(|| {
        let shown = match v {
            Level::Number(n) => n.to_string(),
            Level::Name(s) => format!("\"{s}\""),
        };
        format!(
            "field `{field}`: {shown} is not valid (expected 0 to {} or one of {})",
            names.len() - 1,
            names.join(", ")
        )
    })
}

fn convert(p: PushRecord, received_ns: i64, peer: &SocketAddr) -> Result<LogRecord, String> {
    let timestamp_ns = match &p.timestamp {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .ok_or_else(|| {
                    format!("field `timestamp`: \"{t}\" is not an RFC 3339 time (expected e.g. \"2026-11-23T10:00:00Z\")")
                })?,
        ),
    };
    let severity = p
        .severity
        .as_ref()
        .map(|s| level(s, &SEVERITIES, "severity"))
        .transpose()?;
    let facility = p
        .facility
        .as_ref()
        .map(|s| level(s, &FACILITIES, "facility"))
        .transpose()?;
    Ok(LogRecord {
        received_ns,
        timestamp_ns,
        host: p.host.unwrap_or_else(|| peer.ip().to_string()),
        app: p.app.unwrap_or_default(),
        procid: p.procid.unwrap_or_default(),
        msgid: String::new(),
        facility,
        severity,
        message: p.message,
        structured_data: p
            .attributes
            .map(|a| serde_json::Value::Object(a).to_string())
            .unwrap_or_default(),
        format: "json".to_owned(),
        parse_error: None,
        input: Input::Http.as_str().to_owned(),
        peer: peer.to_string(),
    })
}

/// Parses a body into records; the error names the line or record and the field.
pub fn parse_body(
    body: &[u8],
    ndjson: bool,
    received_ns: i64,
    peer: &SocketAddr,
) -> Result<Vec<LogRecord>, String> {
    let mut out = Vec::new();
    if ndjson {
        let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let rec = serde_json::from_str::<PushRecord>(line)
                .map_err(|e| format!("line {}: {e}", i + 1))
                .and_then(|p| {
                    convert(p, received_ns, peer).map_err(|e| format!("line {}: {e}", i + 1))
                })?;
            out.push(rec);
        }
    } else {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let items = match value {
            serde_json::Value::Array(items) => items,
            obj @ serde_json::Value::Object(_) => vec![obj],
            _ => return Err("body must be a JSON object or an array of objects".to_owned()),
        };
        for (i, item) in items.into_iter().enumerate() {
            let rec = serde_json::from_value::<PushRecord>(item)
                .map_err(|e| format!("record {i}: {e}"))
                .and_then(|p| {
                    convert(p, received_ns, peer).map_err(|e| format!("record {i}: {e}"))
                })?;
            out.push(rec);
        }
    }
    if out.is_empty() {
        return Err("no records in the body".to_owned());
    }
    Ok(out)
}

async fn push(
    State(ctx): State<HttpCtx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let name = Input::Http.as_str();
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ndjson = match ctype.as_str() {
        "application/json" => false,
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => true,
        other => {
            ctx.metrics.reject(name, "bad_request", 1);
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("Content-Type \"{other}\" is not accepted (expected application/json or application/x-ndjson)"),
            )
            .into_response();
        }
    };
    let body = match axum::body::to_bytes(req.into_body(), ctx.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            ctx.metrics.reject(name, "body_too_large", 1);
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body is larger than http.max-body-bytes ({} bytes); split the batch",
                    ctx.max_body_bytes
                ),
            )
            .into_response();
        }
    };
    let records = match parse_body(&body, ndjson, crate::now_ns(), &peer) {
        Ok(r) => r,
        Err(msg) => {
            ctx.metrics.reject(name, "bad_request", 1);
            return ApiError::bad_request(format!("{msg}; nothing of this request was stored"))
                .into_response();
        }
    };
    let n = records.len();
    ctx.metrics.receive(name, n as u64);
    let result = match ctx.store.submit(records).await {
        Ok(ack) => ack.committed().await,
        Err(e) => {
            let reason = if matches!(e, StoreError::TooLarge(..)) {
                "too_many_records"
            } else {
                "store_error"
            };
            ctx.metrics.reject(name, reason, n as u64);
            Err(e)
        }
    };
    match result {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "accepted": n }))).into_response(),
        Err(e @ StoreError::TooLarge(..)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{e}; split the batch"),
        )
        .into_response(),
        Err(e) => ApiError::unavailable(format!("records not stored: {e}")).into_response(),
    }
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let svc = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(err) = axum::serve(listener, svc)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %err, "HTTP log ingest server failed.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.5:4000".parse().unwrap()
    }

    #[test]
    fn ndjson_errors_name_the_line_and_field() {
        let body = b"{\"message\":\"a\"}\n\n{\"message\":\"b\",\"severity\":9}\n";
        let err = parse_body(body, true, 0, &peer()).unwrap_err();
        assert!(
            err.starts_with("line 3: field `severity`: 9 is not valid"),
            "{err}"
        );
        let err = parse_body(b"{\"message\":\"a\",\"sevrity\":1}", true, 0, &peer()).unwrap_err();
        assert!(err.starts_with("line 1: unknown field `sevrity`"), "{err}");
        let err = parse_body(b"[{\"message\":\"a\"},{\"msg\":1}]", false, 0, &peer()).unwrap_err();
        assert!(err.starts_with("record 1: unknown field `msg`"), "{err}");
    }

    #[test]
    fn json_fields_map_onto_the_record() {
        let body = br#"{"message":"disk full","timestamp":"2026-11-23T10:00:00Z","app":"df","severity":"warn","facility":"local3","attributes":{"mount":"/"}}"#;
        let r = parse_body(body, false, 7, &peer()).unwrap();
        let r = &r[0];
        assert_eq!(
            (&*r.host, &*r.app, r.severity, r.facility),
            ("10.0.0.5", "df", Some(4), Some(19))
        );
        assert_eq!(r.timestamp_ns, Some(1_795_428_000_000_000_000));
        assert_eq!(r.structured_data, r#"{"mount":"/"}"#);
        assert_eq!(r.received_ns, 7);
    }
}
