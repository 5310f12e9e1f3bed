//! `/api/v1/audit`: query the audit table (filters, pagination) and export it as CSV or JSON.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rookery_common::http::ApiError;
use serde::{Deserialize, Serialize};

use super::Api;
use super::extract::QueryParams;
use crate::store::{AuditEntry, AuditFilter};

/// Largest page of a query.
pub const MAX_PAGE: i64 = 1000;
/// Largest export, so one request cannot hold the database for long.
pub const MAX_EXPORT: i64 = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    kind: Option<String>,
    user: Option<String>,
    action: Option<String>,
    result: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    format: Option<String>,
}

impl QueryArgs {
    fn filter(&self) -> Result<AuditFilter, ApiError> {
        for (name, v) in [("since", &self.since), ("until", &self.until)] {
            if let Some(v) = v
                && chrono::DateTime::parse_from_rfc3339(v).is_err()
            {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("{name}=\"{v}\" is not an RFC 3339 time"),
                ));
            }
        }
        let norm = |v: &Option<String>| {
            v.as_ref().map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| {
                        t.with_timezone(&chrono::Utc)
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    })
                    .unwrap_or_default()
            })
        };
        Ok(AuditFilter {
            kind: self.kind.as_ref().map(|k| k.to_ascii_uppercase()),
            user: self.user.clone(),
            action: self.action.clone(),
            result: self.result.clone(),
            since: norm(&self.since),
            until: norm(&self.until),
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page {
    items: Vec<AuditEntry>,
    total: i64,
    limit: i64,
    offset: i64,
}

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

/// `GET /api/v1/audit`: newest first.
pub async fn query(
    State(api): State<Arc<Api>>,
    QueryParams(q): QueryParams<QueryArgs>,
) -> Result<Json<Page>, ApiError> {
    if q.format.is_some() {
        return Err(bad("format is a parameter of /api/v1/audit/export".into()));
    }
    let limit = q.limit.unwrap_or(100);
    let offset = q.offset.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad(format!(
            "limit={limit} is out of range (expected 1 to {MAX_PAGE})"
        )));
    }
    if offset < 0 {
        return Err(bad(format!("offset={offset} is negative")));
    }
    let (items, total) = api
        .store
        .audit_query(&q.filter()?, limit, offset)
        .map_err(|e| ApiError::unavailable(format!("the audit store failed: {e}")))?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The audit entries as CSV (RFC 4180, header line first).
pub fn to_csv(entries: &[AuditEntry]) -> String {
    let mut out = String::from("id,ts,kind,user,action,result,source,detail\r\n");
    for e in entries {
        let fields = [
            e.id.to_string(),
            e.ts.clone(),
            e.kind.clone(),
            e.user.clone(),
            e.action.clone(),
            e.result.clone(),
            e.source.clone(),
            e.detail.clone(),
        ];
        out.push_str(
            &fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push_str("\r\n");
    }
    out
}

/// `GET /api/v1/audit/export?format=csv|json`: every matching entry (up to [`MAX_EXPORT`]).
pub async fn export(
    State(api): State<Arc<Api>>,
    QueryParams(q): QueryParams<QueryArgs>,
) -> Result<Response, ApiError> {
    if q.limit.is_some() || q.offset.is_some() {
        return Err(bad(
            "limit and offset are parameters of /api/v1/audit".into()
        ));
    }
    let format = q.format.clone().unwrap_or_else(|| "json".into());
    let (items, _) = api
        .store
        .audit_query(&q.filter()?, MAX_EXPORT, 0)
        .map_err(|e| ApiError::unavailable(format!("the audit store failed: {e}")))?;
    match format.as_str() {
        "csv" => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"rookery-audit.csv\"",
                ),
            ],
            to_csv(&items),
        )
            .into_response()),
        "json" => Ok((
            [(
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"rookery-audit.json\"",
            )],
            Json(items),
        )
            .into_response()),
        other => Err(bad(format!(
            "format=\"{other}\" is not supported (expected \"csv\" or \"json\")"
        ))),
    }
}
