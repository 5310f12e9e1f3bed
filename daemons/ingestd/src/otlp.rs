//! OTLP logs and metrics in: gRPC (`LogsService/Export`, `MetricsService/Export`, tonic) and
//! HTTP/protobuf (`POST /v1/logs`, `POST /v1/metrics`), answered only after the commit.
//!
//! Logs become log records (`format = "otlp"`): `service.name` is the app, `host.name` the
//! host, the OTel severity number maps onto syslog severities, attributes go to
//! `structured_data` as JSON. Gauges and sums become series (`job` = `service.name`, plus the
//! data point attributes). Histograms, exponential histograms and summaries are not stored:
//! they are counted as rejected (`unsupported_type`) and reported in `partial_success`.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;

use crate::events::Metrics;
use crate::record::LogRecord;
use crate::store::{SeriesSamples, Store, StoreError};

/// Input name in metrics labels and stored records.
pub const INPUT: &str = "otlp";

/// Shared by the OTLP servers.
#[derive(Clone)]
pub struct OtlpCtx {
    /// Where records go.
    pub store: Store,
    /// Counters.
    pub metrics: Metrics,
    /// Labels per series at most.
    pub max_labels: usize,
}

fn any_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn attrs_json(kvs: &[KeyValue]) -> String {
    if kvs.is_empty() {
        return String::new();
    }
    let map: serde_json::Map<String, serde_json::Value> = kvs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                serde_json::Value::String(kv.value.as_ref().map(any_text).unwrap_or_default()),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// OTel severity number (1..=24) to syslog severity (0..=7).
pub fn syslog_severity(n: i32) -> Option<u8> {
    match n {
        1..=8 => Some(7),   // TRACE, DEBUG
        9..=12 => Some(6),  // INFO
        13..=16 => Some(4), // WARN
        17..=20 => Some(3), // ERROR
        21..=24 => Some(2), // FATAL
        _ => None,
    }
}

fn ns(v: u64) -> Option<i64> {
    i64::try_from(v).ok().filter(|v| *v > 0)
}

/// Log records of an export request.
pub fn logs(req: ExportLogsServiceRequest, received_ns: i64, peer: &str) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for rl in req.resource_logs {
        let res = rl.resource.map(|r| r.attributes).unwrap_or_default();
        let app = attr(&res, "service.name").map(any_text).unwrap_or_default();
        let host = attr(&res, "host.name").map(any_text);
        for sl in rl.scope_logs {
            for lr in sl.log_records {
                out.push(LogRecord {
                    received_ns,
                    timestamp_ns: ns(lr.time_unix_nano).or(ns(lr.observed_time_unix_nano)),
                    host: host.clone().unwrap_or_else(|| {
                        peer.parse::<SocketAddr>()
                            .map_or_else(|_| peer.to_owned(), |a| a.ip().to_string())
                    }),
                    app: app.clone(),
                    procid: String::new(),
                    msgid: String::new(),
                    facility: None,
                    severity: syslog_severity(lr.severity_number),
                    message: lr.body.as_ref().map(any_text).unwrap_or_default(),
                    structured_data: attrs_json(&lr.attributes),
                    format: "otlp".to_owned(),
                    parse_error: None,
                    input: INPUT.to_owned(),
                    peer: peer.to_owned(),
                });
            }
        }
    }
    out
}

/// Series of an export request, and (rejected data points, why) for unsupported types.
pub fn series(
    req: ExportMetricsServiceRequest,
    max_labels: usize,
) -> Result<(Vec<SeriesSamples>, i64, String), String> {
    let mut out = Vec::new();
    let (mut rejected, mut why) = (0i64, String::new());
    for rm in req.resource_metrics {
        let res = rm.resource.map(|r| r.attributes).unwrap_or_default();
        let job = attr(&res, "service.name").map(any_text);
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                let points = match m.data {
                    Some(metric::Data::Gauge(g)) => g.data_points,
                    Some(metric::Data::Sum(s)) => s.data_points,
                    Some(other) => {
                        let n = match &other {
                            metric::Data::Histogram(h) => h.data_points.len(),
                            metric::Data::ExponentialHistogram(h) => h.data_points.len(),
                            metric::Data::Summary(s) => s.data_points.len(),
                            _ => 0,
                        };
                        rejected += i64::try_from(n).unwrap_or(i64::MAX);
                        why = format!("metric {}: histograms and summaries are not stored", m.name);
                        continue;
                    }
                    None => continue,
                };
                for p in points {
                    let mut labels: Vec<(String, String)> = p
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.replace('.', "_"),
                                kv.value.as_ref().map(any_text).unwrap_or_default(),
                            )
                        })
                        .collect();
                    labels.push(("__name__".into(), m.name.replace('.', "_")));
                    if let Some(job) = &job {
                        labels.push(("job".into(), job.clone()));
                    }
                    labels.sort();
                    labels.dedup_by(|a, b| a.0 == b.0);
                    if labels.len() > max_labels {
                        return Err(format!(
                            "metric {}: {} labels exceed store.max-labels-per-series ({max_labels})",
                            m.name,
                            labels.len()
                        ));
                    }
                    let value = match p.value {
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        #[allow(
                            clippy::cast_precision_loss,
                            reason = "OTLP ints as Prometheus floats"
                        )]
                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                        None => continue,
                    };
                    let ts_ms = i64::try_from(p.time_unix_nano / 1_000_000).unwrap_or(i64::MAX);
                    out.push(SeriesSamples {
                        labels: labels.into(),
                        samples: vec![(ts_ms, value)],
                    });
                }
            }
        }
    }
    Ok((out, rejected, why))
}

async fn store_logs(ctx: &OtlpCtx, records: Vec<LogRecord>) -> Result<(), StoreError> {
    let n = records.len() as u64;
    ctx.metrics.receive(INPUT, n);
    if records.is_empty() {
        return Ok(());
    }
    match ctx.store.submit(records).await {
        Ok(ack) => ack.committed().await,
        Err(e) => {
            ctx.metrics.reject(INPUT, "store_error", n);
            Err(e)
        }
    }
}

async fn store_series(
    ctx: &OtlpCtx,
    series: Vec<SeriesSamples>,
    rejected: i64,
) -> Result<(), StoreError> {
    if rejected > 0 {
        ctx.metrics.reject(
            INPUT,
            "unsupported_type",
            u64::try_from(rejected).unwrap_or(0),
        );
    }
    let n: usize = series.iter().map(|s| s.samples.len()).sum();
    ctx.metrics.receive(INPUT, n as u64);
    if n == 0 {
        return Ok(());
    }
    match ctx.store.submit_samples(series).await {
        Ok(ack) => ack.committed().await,
        Err(e) => {
            ctx.metrics.reject(INPUT, "store_error", n as u64);
            Err(e)
        }
    }
}

fn status(e: &StoreError) -> tonic::Status {
    match e {
        StoreError::TooLarge(..) => tonic::Status::resource_exhausted(e.to_string()),
        // UNAVAILABLE is retryable for OTLP exporters: nothing is lost.
        _ => tonic::Status::unavailable(rookery_common::error_chain(e)),
    }
}

/// The OTLP gRPC services.
#[derive(Clone)]
pub struct Grpc(OtlpCtx);

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let records = logs(req.into_inner(), crate::now_ns(), &peer);
        store_logs(&self.0, records).await.map_err(|e| status(&e))?;
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let (s, rejected, why) =
            series(req.into_inner(), self.0.max_labels).map_err(tonic::Status::invalid_argument)?;
        store_series(&self.0, s, rejected)
            .await
            .map_err(|e| status(&e))?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: (rejected > 0).then_some(ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message: why,
            }),
        }))
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown`.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    ctx: OtlpCtx,
    max_message_bytes: usize,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let svc = Grpc(ctx);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    if let Err(err) = tonic::transport::Server::builder()
        .add_service(
            LogsServiceServer::new(svc.clone()).max_decoding_message_size(max_message_bytes),
        )
        .add_service(MetricsServiceServer::new(svc).max_decoding_message_size(max_message_bytes))
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %err, "OTLP gRPC server failed.");
    }
}

fn protobuf(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        body,
    )
        .into_response()
}

fn http_error(status: StatusCode, msg: String) -> Response {
    // OTLP/HTTP errors carry a google.rpc.Status; its message (field 2) is what clients log.
    let code: i32 = if status.is_client_error() { 3 } else { 14 };
    let mut body = Vec::new();
    prost::encoding::int32::encode(1, &code, &mut body);
    prost::encoding::string::encode(2, &msg, &mut body);
    protobuf(status, body)
}

fn check_type(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/x-protobuf") {
        Ok(())
    } else {
        Err(Box::new(http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type \"{ct}\" is not accepted (expected application/x-protobuf; OTLP/JSON is not supported)"
            ),
        )))
    }
}

fn store_failed(e: &StoreError) -> Response {
    let code = if matches!(e, StoreError::TooLarge(..)) {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    http_error(code, rookery_common::error_chain(e))
}

async fn http_logs(
    State(ctx): State<OtlpCtx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_type(&headers) {
        ctx.metrics.reject(INPUT, "bad_request", 1);
        return *r;
    }
    let req = match ExportLogsServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.reject(INPUT, "bad_request", 1);
            return http_error(
                StatusCode::BAD_REQUEST,
                format!("body is not an ExportLogsServiceRequest: {e}"),
            );
        }
    };
    let records = logs(req, crate::now_ns(), &peer.to_string());
    match store_logs(&ctx, records).await {
        Ok(()) => protobuf(
            StatusCode::OK,
            ExportLogsServiceResponse {
                partial_success: None::<ExportLogsPartialSuccess>,
            }
            .encode_to_vec(),
        ),
        Err(e) => store_failed(&e),
    }
}

async fn http_metrics(State(ctx): State<OtlpCtx>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = check_type(&headers) {
        ctx.metrics.reject(INPUT, "bad_request", 1);
        return *r;
    }
    let parsed = ExportMetricsServiceRequest::decode(body)
        .map_err(|e| format!("body is not an ExportMetricsServiceRequest: {e}"))
        .and_then(|req| series(req, ctx.max_labels));
    let (s, rejected, why) = match parsed {
        Ok(v) => v,
        Err(msg) => {
            ctx.metrics.reject(INPUT, "bad_request", 1);
            return http_error(StatusCode::BAD_REQUEST, msg);
        }
    };
    match store_series(&ctx, s, rejected).await {
        Ok(()) => protobuf(
            StatusCode::OK,
            ExportMetricsServiceResponse {
                partial_success: (rejected > 0).then_some(ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: why,
                }),
            }
            .encode_to_vec(),
        ),
        Err(e) => store_failed(&e),
    }
}

/// The OTLP/HTTP router (`/v1/logs`, `/v1/metrics`).
pub fn http_router(ctx: OtlpCtx, max_body_bytes: usize) -> axum::Router {
    axum::Router::new()
        .route("/v1/logs", axum::routing::post(http_logs))
        .route("/v1/metrics", axum::routing::post(http_metrics))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .with_state(ctx)
}
