//! Prometheus remote_write 1.0 in (`POST /api/v1/write` on the HTTP ingest listener: snappy
//! block-compressed protobuf `prometheus.WriteRequest`), acknowledged with 204 after the
//! commit; and the Prometheus-compatible `GET|POST /api/v1/query_range` (the [`crate::promql`]
//! subset) on the loopback metrics listener, so Grafana can use ingestd as a data source.

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rookery_common::http::ApiError;
use serde::Deserialize;

use crate::events::Metrics;
use crate::store::{SeriesSamples, Store, StoreError};

/// `prometheus.WriteRequest` (remote.proto); metadata (field 3) is not kept.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`; exemplars and histograms are not kept.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Decodes a remote_write body into series; the error names what is wrong.
pub fn decode(body: &[u8], max_labels: usize) -> Result<Vec<SeriesSamples>, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("body is not snappy block-compressed: {e}"))?;
    let req = <WriteRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| format!("body is not a prometheus.WriteRequest: {e}"))?;
    let mut out = Vec::with_capacity(req.timeseries.len());
    for (i, ts) in req.timeseries.into_iter().enumerate() {
        if ts.labels.len() > max_labels {
            return Err(format!(
                "timeseries {i}: {} labels exceed store.max-labels-per-series ({max_labels})",
                ts.labels.len()
            ));
        }
        let mut labels: Vec<(String, String)> =
            ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
        labels.sort();
        let mut seen = HashSet::new();
        for (k, _) in &labels {
            if !seen.insert(k.as_str()) {
                return Err(format!("timeseries {i}: label {k} appears twice"));
            }
        }
        if !labels.iter().any(|(k, v)| k == "__name__" && !v.is_empty()) {
            return Err(format!("timeseries {i}: no __name__ label"));
        }
        if ts.samples.is_empty() {
            continue;
        }
        let mut samples: Vec<(i64, f64)> = ts
            .samples
            .into_iter()
            .map(|s| (s.timestamp, s.value))
            .collect();
        samples.sort_by_key(|s| s.0);
        out.push(SeriesSamples { labels, samples });
    }
    Ok(out)
}

/// State of the remote_write route.
#[derive(Clone)]
pub struct WriteCtx {
    /// Where samples go.
    pub store: Store,
    /// Counters.
    pub metrics: Metrics,
    /// Labels per series at most.
    pub max_labels: usize,
}

/// `POST /api/v1/write`.
pub async fn write(State(ctx): State<WriteCtx>, headers: HeaderMap, body: Bytes) -> Response {
    const INPUT: &str = "remote_write";
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !enc.eq_ignore_ascii_case("snappy") {
        ctx.metrics.reject(INPUT, "bad_request", 1);
        return ApiError::bad_request(format!(
            "Content-Encoding \"{enc}\" is not accepted (expected snappy)"
        ))
        .into_response();
    }
    let series = match decode(&body, ctx.max_labels) {
        Ok(s) => s,
        Err(msg) => {
            ctx.metrics.reject(INPUT, "bad_request", 1);
            return ApiError::bad_request(format!("{msg}; nothing of this request was stored"))
                .into_response();
        }
    };
    let n: usize = series.iter().map(|s| s.samples.len()).sum();
    ctx.metrics.receive(INPUT, n as u64);
    if n == 0 {
        return StatusCode::NO_CONTENT.into_response();
    }
    let result = match ctx.store.submit_samples(series).await {
        Ok(ack) => ack.committed().await,
        Err(e) => {
            ctx.metrics.reject(INPUT, "store_error", n as u64);
            Err(e)
        }
    };
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e @ StoreError::TooLarge(..)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{e}; lower queue_config.max_samples_per_send"),
        )
        .into_response(),
        // 5xx: Prometheus retries, so nothing is lost.
        Err(e) => ApiError::unavailable(format!("samples not stored: {e}")).into_response(),
    }
}

/// Parameters of `query_range`.
#[derive(Debug, Deserialize)]
pub struct RangeParams {
    query: String,
    start: String,
    end: String,
    step: String,
}

/// A Prometheus time parameter: RFC 3339 or (fractional) Unix seconds, in ms.
fn time_ms(v: &str, name: &str) -> Result<i64, String> {
    if let Ok(secs) = v.parse::<f64>() {
        #[allow(clippy::cast_possible_truncation, reason = "Unix ms fit in i64")]
        return Ok((secs * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            format!("invalid parameter \"{name}\": \"{v}\" is not RFC 3339 or Unix seconds")
        })
}

fn step_ms(v: &str) -> Result<i64, String> {
    if let Ok(secs) = v.parse::<f64>() {
        #[allow(clippy::cast_possible_truncation, reason = "steps in ms fit in i64")]
        return Ok((secs * 1000.0).round() as i64);
    }
    crate::promql::parse_range(v).map_err(|e| format!("invalid parameter \"step\": {e}"))
}

fn prom_error(status: StatusCode, kind: &str, msg: String) -> Response {
    (
        status,
        Json(serde_json::json!({"status": "error", "errorType": kind, "error": msg})),
    )
        .into_response()
}

/// `GET /api/v1/query_range` (Prometheus HTTP API, the [`crate::promql`] subset).
pub async fn query_range(State(store): State<Store>, Query(p): Query<RangeParams>) -> Response {
    let parsed = (|| {
        let q = crate::promql::parse(&p.query)?;
        Ok::<_, String>((
            q,
            time_ms(&p.start, "start")?,
            time_ms(&p.end, "end")?,
            step_ms(&p.step)?,
        ))
    })();
    let (q, start, end, step) = match parsed {
        Ok(v) => v,
        Err(e) => return prom_error(StatusCode::BAD_REQUEST, "bad_data", e),
    };
    let series = match store
        .select_series(q.name.clone(), q.matchers.clone(), start - q.range_ms, end)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return prom_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                rookery_common::error_chain(&e),
            );
        }
    };
    match crate::promql::eval(&q, &series, start, end, step) {
        Ok(out) => {
            let result: Vec<serde_json::Value> = out
                .into_iter()
                .map(|o| {
                    let metric: serde_json::Map<String, serde_json::Value> = o
                        .labels
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect();
                    #[allow(clippy::cast_precision_loss, reason = "Unix ms fit in f64")]
                    let values: Vec<serde_json::Value> = o
                        .points
                        .into_iter()
                        .map(|(t, v)| serde_json::json!([t as f64 / 1000.0, v.to_string()]))
                        .collect();
                    serde_json::json!({"metric": metric, "values": values})
                })
                .collect();
            Json(serde_json::json!({
                "status": "success",
                "data": {"resultType": "matrix", "result": result}
            }))
            .into_response()
        }
        Err(e) => prom_error(StatusCode::BAD_REQUEST, "bad_data", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(req: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(req))
            .unwrap()
    }

    fn series(labels: &[(&str, &str)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            samples: vec![Sample {
                value: 1.5,
                timestamp: 1000,
            }],
        }
    }

    #[test]
    fn decodes_and_checks_series() {
        let ok = WriteRequest {
            timeseries: vec![series(&[("job", "a"), ("__name__", "up")])],
        };
        let got = decode(&body(&ok), 8).unwrap();
        assert_eq!(got[0].name(), "up");
        assert_eq!(got[0].labels[0].0, "__name__");
        assert_eq!(got[0].samples, [(1000, 1.5)]);
        let many = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "up")]),
                series(&[("__name__", "x"), ("a", "1"), ("b", "2")]),
            ],
        };
        assert_eq!(
            decode(&body(&many), 2).unwrap_err(),
            "timeseries 1: 3 labels exceed store.max-labels-per-series (2)"
        );
        let noname = WriteRequest {
            timeseries: vec![series(&[("job", "a")])],
        };
        assert_eq!(
            decode(&body(&noname), 8).unwrap_err(),
            "timeseries 0: no __name__ label"
        );
        assert!(
            decode(b"not snappy", 8)
                .unwrap_err()
                .starts_with("body is not snappy")
        );
    }
}
