//! `/api/v1/logs` and `/api/v1/metrics/query_range`: stored log records and metric series,
//! through ingestd's `rookery.v1.Logs` and `rookery.v1.Metrics` services on `ingestd.sock`.
//! Without ingestd the routes answer 503 `daemon_unavailable` naming it and its socket.
//!
//! Every query parameter is parsed here, so a bad one is a 400 `invalid_query` naming it;
//! what only ingestd can judge (an FTS5 query, a regex) is its 422 `invalid_argument`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rookery_common::http::ApiError;
use rookery_common::proto;
use rookery_common::proto::logs_client::LogsClient;
use rookery_common::proto::metrics_client::MetricsClient;
use serde::{Deserialize, Serialize};

use super::Api;
use super::extract::QueryParams;

const INGESTD: &str = "ingestd";
/// Most records one page holds (ingestd's own cap).
pub const MAX_LOG_LIMIT: u32 = 10_000;
/// Most points of one series (ingestd's own cap).
pub const MAX_POINTS: i64 = 11_000;

fn bad(name: &str, value: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        format!("{name}=\"{value}\": {why}"),
    )
}

/// Parses an optional number parameter within `lo..=hi`.
fn number<T>(name: &str, v: Option<&str>, lo: T, hi: T) -> Result<Option<T>, ApiError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(v) = v else { return Ok(None) };
    match v.parse::<T>() {
        Ok(n) if n >= lo && n <= hi => Ok(Some(n)),
        _ => Err(bad(
            name,
            v,
            &format!("expected an integer from {lo} to {hi}"),
        )),
    }
}

/// An RFC 3339 time as ns since the epoch.
fn time_ns(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map(Some)
        .ok_or_else(|| {
            bad(
                name,
                v,
                "expected an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
            )
        })
}

/// An empty parameter is an absent one (HTML forms send empty fields).
fn given(v: Option<&String>) -> Option<&str> {
    v.map(String::as_str).filter(|s| !s.is_empty())
}

/// ingestd's 422 for a field of the request becomes a 400 naming the REST parameter.
fn rename(e: ApiError, field: &str, param: &str) -> ApiError {
    if e.status == StatusCode::UNPROCESSABLE_ENTITY.as_u16()
        && e.message.starts_with(&format!("{INGESTD}: {field}"))
    {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{param}: {}", e.message),
        )
    } else {
        e
    }
}

/// `?since=&until=&host=&app=&severity=&facility=&q=&parse_errors=&before=&limit=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogArgs {
    since: Option<String>,
    until: Option<String>,
    host: Option<String>,
    app: Option<String>,
    severity: Option<String>,
    facility: Option<String>,
    q: Option<String>,
    parse_errors: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

impl LogArgs {
    fn request(&self) -> Result<proto::QueryLogsRequest, ApiError> {
        let start = time_ns("since", given(self.since.as_ref()))?;
        let end = time_ns("until", given(self.until.as_ref()))?;
        if let (Some(s), Some(e)) = (start, end)
            && e < s
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "until is before since",
            ));
        }
        let parse_errors = match given(self.parse_errors.as_ref()) {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => return Err(bad("parse_errors", v, "expected true or false")),
        };
        Ok(proto::QueryLogsRequest {
            start_unix_nanos: start,
            end_unix_nanos: end,
            host: given(self.host.as_ref()).map(str::to_owned),
            app: given(self.app.as_ref()).map(str::to_owned),
            max_severity: number("severity", given(self.severity.as_ref()), 0, 7)?,
            facility: number("facility", given(self.facility.as_ref()), 0, 23)?,
            text: match self.q.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(q) => Some(q.to_owned()),
            },
            parse_errors_only: parse_errors,
            before_id: number("before", given(self.before.as_ref()), 1, i64::MAX)?,
            limit: number("limit", given(self.limit.as_ref()), 1, MAX_LOG_LIMIT)?.unwrap_or(0),
        })
    }
}

/// One stored log record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogView {
    /// Increasing with arrival; pass the last one of a page as `before` for the next.
    id: i64,
    /// RFC 3339 (ns) receive time.
    received: String,
    /// RFC 3339 (ns) time the sender stamped, when it did.
    timestamp: Option<String>,
    host: String,
    app: String,
    procid: String,
    msgid: String,
    /// 0..23.
    facility: Option<u32>,
    /// 0 (emergency) .. 7 (debug).
    severity: Option<u32>,
    message: String,
    /// RFC 5424 STRUCTURED-DATA as sent, or the JSON attributes of an HTTP record.
    structured_data: String,
    /// `rfc5424`, `rfc3164`, `json` or `raw` (did not parse).
    format: String,
    /// Why the record did not parse; its raw text is then `message`.
    parse_error: Option<String>,
    /// `udp`, `tcp`, `tls` or `http`.
    input: String,
    /// Sender address.
    peer: String,
}

fn rfc3339_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl From<proto::LogRecord> for LogView {
    fn from(r: proto::LogRecord) -> Self {
        Self {
            id: r.id,
            received: rfc3339_ns(r.received_unix_nanos),
            timestamp: r.timestamp_unix_nanos.map(rfc3339_ns),
            host: r.host,
            app: r.app,
            procid: r.procid,
            msgid: r.msgid,
            facility: r.facility,
            severity: r.severity,
            message: r.message,
            structured_data: r.structured_data,
            format: r.format,
            parse_error: r.parse_error,
            input: r.input,
            peer: r.peer,
        }
    }
}

/// One page of log records, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogPage {
    records: Vec<LogView>,
    /// `before` of the next (older) page; absent on the last page.
    next_before: Option<i64>,
}

/// `GET /api/v1/logs`: stored records matching every given filter, newest first.
pub async fn logs(
    State(api): State<Arc<Api>>,
    QueryParams(q): QueryParams<LogArgs>,
) -> Result<Json<LogPage>, ApiError> {
    let req = q.request()?;
    let limit = if req.limit == 0 { 100 } else { req.limit };
    let mut c = LogsClient::new(api.channel(INGESTD).await?);
    let r = api
        .call(INGESTD, c.query_logs(req))
        .await
        .map_err(|e| rename(e, "text", "q"))?;
    let full = r.records.len() >= usize::try_from(limit).unwrap_or(usize::MAX);
    let next_before = if full {
        r.records.last().map(|l| l.id)
    } else {
        None
    };
    Ok(Json(LogPage {
        records: r.records.into_iter().map(LogView::from).collect(),
        next_before,
    }))
}

/// `?name=&match=&start_ms=&end_ms=&step_ms=&function=&range_ms=&sum=&by=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeArgs {
    name: Option<String>,
    #[serde(rename = "match")]
    matchers: Option<String>,
    start_ms: Option<String>,
    end_ms: Option<String>,
    step_ms: Option<String>,
    function: Option<String>,
    range_ms: Option<String>,
    sum: Option<String>,
    by: Option<String>,
}

/// The functions of `function=`, as the OpenAPI enum lists them.
pub const FUNCTIONS: [&str; 5] = [
    "last",
    "rate",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
];

/// Parses `match=`: `label="value"` pairs joined by commas, with `=`, `!=`, `=~` or `!~`
/// (PromQL's selector syntax inside the braces; `\"` and `\\` escape within a value).
pub fn parse_matchers(s: &str) -> Result<Vec<proto::LabelMatcher>, String> {
    use proto::label_matcher::Op;
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("expected a label name at \"{rest}\""));
        }
        rest = rest[name_end..].trim_start();
        let (op, len) = if rest.starts_with("=~") {
            (Op::Re, 2)
        } else if rest.starts_with("!~") {
            (Op::NotRe, 2)
        } else if rest.starts_with("!=") {
            (Op::Ne, 2)
        } else if rest.starts_with('=') {
            (Op::Eq, 1)
        } else {
            return Err(format!("expected =, !=, =~ or !~ after {name}"));
        };
        rest = rest[len..].trim_start();
        let Some(body) = rest.strip_prefix('"') else {
            return Err(format!("expected a double-quoted value after {name}"));
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => value.push(e),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err(format!("bad escape in the value of {name}")),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let Some(end) = end else {
            return Err(format!("unterminated value of {name}"));
        };
        out.push(proto::LabelMatcher {
            name: name.to_owned(),
            op: op.into(),
            value,
        });
        rest = body[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected , after the value of {name}"));
        }
    }
    Ok(out)
}

impl RangeArgs {
    fn request(&self) -> Result<proto::QueryMetricsRequest, ApiError> {
        let name = given(self.name.as_ref()).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "name: the metric name is required",
            )
        })?;
        let matchers = match given(self.matchers.as_ref()) {
            None => Vec::new(),
            Some(m) => parse_matchers(m).map_err(|e| bad("match", m, &e))?,
        };
        let required = |n: &str, v: Option<&String>| {
            number(n, given(v), 0, i64::MAX)?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("{n}: required (ms since the Unix epoch)"),
                )
            })
        };
        let start = required("start_ms", self.start_ms.as_ref())?;
        let end = required("end_ms", self.end_ms.as_ref())?;
        if end < start {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "end_ms is before start_ms",
            ));
        }
        let step =
            number("step_ms", given(self.step_ms.as_ref()), 1, i64::MAX)?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "step_ms: required (at least 1)",
                )
            })?;
        if (end - start) / step + 1 > MAX_POINTS {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!(
                    "step_ms={step}: (end_ms - start_ms) / step_ms + 1 is over {MAX_POINTS} points"
                ),
            ));
        }
        let function = match given(self.function.as_ref()) {
            None | Some("last") => proto::MetricFunction::Last,
            Some("rate") => proto::MetricFunction::Rate,
            Some("avg_over_time") => proto::MetricFunction::AvgOverTime,
            Some("min_over_time") => proto::MetricFunction::MinOverTime,
            Some("max_over_time") => proto::MetricFunction::MaxOverTime,
            Some(f) => {
                return Err(bad(
                    "function",
                    f,
                    &format!("expected one of {}", FUNCTIONS.join(", ")),
                ));
            }
        };
        let sum = match given(self.sum.as_ref()) {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => return Err(bad("sum", v, "expected true or false")),
        };
        let by: Vec<String> = given(self.by.as_ref())
            .map(|b| {
                b.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if !by.is_empty() && !sum {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "by: only with sum=true",
            ));
        }
        Ok(proto::QueryMetricsRequest {
            name: name.to_owned(),
            matchers,
            start_unix_ms: start,
            end_unix_ms: end,
            step_ms: step,
            function: function.into(),
            range_ms: number("range_ms", given(self.range_ms.as_ref()), 1, i64::MAX)?.unwrap_or(0),
            sum,
            sum_by: by,
        })
    }
}

/// One point of a series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PointView {
    unix_ms: i64,
    value: f64,
}

/// One series: its labels and its points in time order (steps without a value are left out).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesView {
    labels: BTreeMap<String, String>,
    points: Vec<PointView>,
}

/// `GET /api/v1/metrics/query_range`: a metric over a range with a step.
pub async fn query_range(
    State(api): State<Arc<Api>>,
    QueryParams(q): QueryParams<RangeArgs>,
) -> Result<Json<Vec<SeriesView>>, ApiError> {
    let req = q.request()?;
    let mut c = MetricsClient::new(api.channel(INGESTD).await?);
    let r = api
        .call(INGESTD, c.query_metrics(req))
        .await
        .map_err(|e| rename(e, "matchers", "match"))?;
    Ok(Json(
        r.series
            .into_iter()
            .map(|s| SeriesView {
                labels: s.labels.into_iter().collect(),
                points: s
                    .points
                    .into_iter()
                    .filter(|p| p.value.is_finite())
                    .map(|p| PointView {
                        unix_ms: p.unix_ms,
                        value: p.value,
                    })
                    .collect(),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::label_matcher::Op;

    #[test]
    fn matchers_parse_every_operator_and_escapes() {
        let m = parse_matchers(r#"job="self", code=~"5..",a!="x\"y,z" ,b!~"\\d""#).unwrap();
        let got: Vec<_> = m
            .iter()
            .map(|m| (m.name.as_str(), m.op, m.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("job", Op::Eq as i32, "self"),
                ("code", Op::Re as i32, "5.."),
                ("a", Op::Ne as i32, "x\"y,z"),
                ("b", Op::NotRe as i32, "\\d"),
            ]
        );
        assert!(parse_matchers("").unwrap().is_empty());
    }

    #[test]
    fn bad_matchers_say_what_is_wrong() {
        for (s, want) in [
            ("job", "expected =, !=, =~ or !~ after job"),
            ("job=self", "double-quoted value after job"),
            ("job=\"self", "unterminated value of job"),
            ("job=\"a\" x=\"b\"", "expected , after the value of job"),
            ("=\"a\"", "expected a label name"),
        ] {
            let e = parse_matchers(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
