//! Forwarding out with an on-disk spool: Prometheus remote_write, OTLP (HTTP/protobuf or
//! gRPC) and QUIC to another Rookery.
//!
//! When `[forward] remote-write-url` is set, the writer copies every committed sample into the
//! `forward_outbox` table in the same transaction, so the spool is as durable as the store.
//! This task sends the outbox in sequence order (snappy + protobuf, remote_write 1.0) and
//! deletes what the remote acknowledged with 2xx. A network error, 5xx or 429 keeps the batch
//! and retries with backoff: an uplink outage loses nothing (up to the retention bounds, past
//! which samples are dropped and counted). A 4xx other than 429 means the remote will never
//! take the batch: it is dropped and counted, so one bad batch cannot block the spool.
//!
//! The OTLP target (`otlp-url`, spoken per `otlp-protocol`: HTTP/protobuf, or gRPC with the
//! `opentelemetry-proto` clients over one tonic channel) and the QUIC target follow the same
//! design with outboxes of their own; a gRPC status is read the way an HTTP status is (see
//! `grpc_outcome`).
//!
//! Forwarding is the enterprise feature `central-forwarding`: licensed is asked at start and
//! every `licence-check-interval`. Until it says yes (always, with release mode off) the
//! samples stay spooled; an unreachable licensed keeps the last answer (DESIGN.md).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::events::Metrics;
use crate::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use crate::store::{Outbox, SeriesSamples, Store, StoredLog};

/// Idle poll of an empty outbox.
const IDLE: Duration = Duration::from_millis(500);
/// Backoff bounds after a failed attempt.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Encodes series as a snappy-compressed remote_write body.
pub fn encode(series: &[SeriesSamples]) -> Vec<u8> {
    let req = WriteRequest {
        timeseries: series
            .iter()
            .map(|s| TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(name, value)| Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|(timestamp, value)| Sample {
                        value: *value,
                        timestamp: *timestamp,
                    })
                    .collect(),
            })
            .collect(),
    };
    // Compressing a buffer we just encoded cannot fail (only oversized input can).
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap_or_default()
}

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// Syslog severity (0..=7) to the OTel severity number and text.
pub fn otel_severity(s: u8) -> (i32, &'static str) {
    match s {
        0 => (24, "emerg"),
        1 => (22, "alert"),
        2 => (21, "crit"),
        3 => (17, "err"),
        4 => (13, "warning"),
        5 => (10, "notice"),
        6 => (9, "info"),
        _ => (5, "debug"),
    }
}

fn ns_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Log records as one OTLP export request: one resource per (host, app) with `host.name`
/// and `service.name`; body = message, time = the sender's timestamp, observed time = the
/// receive time; attributes = the record's JSON attributes (HTTP, OTLP), else its syslog
/// structured data as `syslog.structured_data`, plus `syslog.facility`, `syslog.procid`,
/// `syslog.msgid` when set and `rookery.record_id` = `<sender>/<id>`.
pub fn otlp_logs(sender: &str, logs: &[StoredLog]) -> ExportLogsServiceRequest {
    let mut by_source: std::collections::BTreeMap<(&str, &str), Vec<LogRecord>> =
        std::collections::BTreeMap::new();
    for l in logs {
        let r = &l.record;
        let mut attributes = Vec::new();
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&r.structured_data)
        {
            Ok(map) => {
                for (k, v) in map {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    attributes.push(text(&k, v));
                }
            }
            Err(_) if r.structured_data.is_empty() => {}
            Err(_) => attributes.push(text("syslog.structured_data", r.structured_data.clone())),
        }
        if let Some(f) = r.facility {
            attributes.push(text("syslog.facility", f.to_string()));
        }
        if !r.procid.is_empty() {
            attributes.push(text("syslog.procid", r.procid.clone()));
        }
        if !r.msgid.is_empty() {
            attributes.push(text("syslog.msgid", r.msgid.clone()));
        }
        if let Some(e) = &r.parse_error {
            attributes.push(text("rookery.parse_error", e.clone()));
        }
        attributes.push(text("rookery.record_id", format!("{sender}/{}", l.id)));
        let (severity_number, severity_text) = r.severity.map_or((0, ""), otel_severity);
        by_source
            .entry((r.host.as_str(), r.app.as_str()))
            .or_default()
            .push(LogRecord {
                time_unix_nano: r.timestamp_ns.map_or(0, ns_u64),
                observed_time_unix_nano: ns_u64(r.received_ns),
                severity_number,
                severity_text: severity_text.to_owned(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(r.message.clone())),
                }),
                attributes,
                ..LogRecord::default()
            });
    }
    ExportLogsServiceRequest {
        resource_logs: by_source
            .into_iter()
            .map(|((host, app), log_records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![text("host.name", host), text("service.name", app)],
                    ..Resource::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            })
            .collect(),
    }
}

/// Series as one OTLP export request: one resource per `job` label (`service.name`), the
/// metric named after `__name__`, the other labels as data point attributes. A name ending
/// in `_total` is a monotonic cumulative sum, anything else a gauge (remote_write and the
/// store keep no type).
pub fn otlp_metrics(series: &[SeriesSamples]) -> ExportMetricsServiceRequest {
    let mut by_job: std::collections::BTreeMap<&str, Vec<Metric>> =
        std::collections::BTreeMap::new();
    for s in series {
        let name = s.name();
        let job = s
            .labels
            .iter()
            .find(|(k, _)| k == "job")
            .map_or("", |(_, v)| v.as_str());
        let attributes: Vec<KeyValue> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "__name__" && k != "job")
            .map(|(k, v)| text(k, v.clone()))
            .collect();
        let data_points: Vec<NumberDataPoint> = s
            .samples
            .iter()
            .map(|(ts, v)| NumberDataPoint {
                attributes: attributes.clone(),
                time_unix_nano: ns_u64(ts.saturating_mul(1_000_000)),
                value: Some(number_data_point::Value::AsDouble(*v)),
                ..NumberDataPoint::default()
            })
            .collect();
        let data = if name.ends_with("_total") {
            metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })
        } else {
            metric::Data::Gauge(Gauge { data_points })
        };
        by_job.entry(job).or_default().push(Metric {
            name: name.to_owned(),
            data: Some(data),
            ..Metric::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: by_job
            .into_iter()
            .map(|(job, metrics)| ResourceMetrics {
                resource: Some(Resource {
                    attributes: if job.is_empty() {
                        Vec::new()
                    } else {
                        vec![text("service.name", job)]
                    },
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            })
            .collect(),
    }
}

enum Outcome {
    /// 2xx, with the response body.
    Delivered(bytes::Bytes),
    Refused(String),
    Retry(String),
}

async fn post(req: reqwest::RequestBuilder) -> Outcome {
    match req.send().await {
        Err(e) => Outcome::Retry(rookery_common::error_chain(&e)),
        Ok(r) if r.status().is_success() => match r.bytes().await {
            Ok(b) => Outcome::Delivered(b),
            // The remote committed (2xx) but the body was cut: do not resend.
            Err(_) => Outcome::Delivered(bytes::Bytes::new()),
        },
        Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            Outcome::Refused(format!("{status}: {text}"))
        }
        Ok(r) => Outcome::Retry(format!("HTTP {}", r.status())),
    }
}

async fn send(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Outcome {
    let req = client
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body);
    post(req).await
}

async fn send_otlp(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Outcome {
    let req = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .body(body);
    post(req).await
}

/// What one pass over a target's outboxes did.
enum Step {
    /// Nothing to send.
    Idle,
    /// Something was sent (or dropped); go on at once.
    Sent,
    /// The remote is unreachable or failing: retry after a backoff.
    Failed(String),
}

/// Name of the licensed feature that gates forwarding.
pub const FEATURE: &str = "central-forwarding";

/// Name of the licensed feature that gates the PostgreSQL store.
pub const DATABASE_FEATURE: &str = "central-database";

/// How long the start waits for licensed to answer about the PostgreSQL store (licensed may
/// be starting at the same time at boot).
const GATE_WAIT: Duration = Duration::from_secs(10);

/// Asks licensed over `socket` whether `feature` is enabled: `Some((enabled, reason))`, or
/// `None` if it is unreachable.
pub async fn ask(socket: &std::path::Path, feature: &str) -> Option<(bool, String)> {
    use rookery_common::proto::CheckFeatureRequest;
    use rookery_common::proto::licensing_client::LicensingClient;
    let channel = rookery_common::grpc::connect(socket).await.ok()?;
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        LicensingClient::new(channel).check_feature(CheckFeatureRequest {
            name: feature.to_owned(),
        }),
    )
    .await
    .ok()?
    .ok()?
    .into_inner();
    Some((reply.enabled, reply.reason))
}

/// The start gate of the PostgreSQL store: licensed at `socket` must grant
/// [`DATABASE_FEATURE`] (it always does with its release mode off). Waits up to 10 s for an
/// answer; a refusal or no answer is an error naming the feature, so the start fails rather
/// than writing to a store the licence does not cover (or silently elsewhere).
pub async fn require_central_database(socket: &std::path::Path) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + GATE_WAIT;
    loop {
        match ask(socket, DATABASE_FEATURE).await {
            Some((true, reason)) => return Ok(reason),
            Some((false, reason)) => {
                return Err(format!(
                    "store.backend = \"postgres\" needs licensed's feature \"{DATABASE_FEATURE}\", which is off ({reason}); \
                     install a licence that grants it, or set store.backend = \"sqlite\""
                ));
            }
            None if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "store.backend = \"postgres\" needs licensed's feature \"{DATABASE_FEATURE}\", but licensed did not answer on {} within {} s",
                    socket.display(),
                    GATE_WAIT.as_secs()
                ));
            }
            None => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Sends the remote_write outbox per `cfg` until `shutdown`.
pub async fn run(
    store: Store,
    metrics: Metrics,
    cfg: crate::config::ForwardSection,
    shutdown: CancellationToken,
) {
    let Some(client) = client(&cfg) else { return };
    let url = cfg.remote_write_url.clone();
    let batch = cfg.batch_samples;
    let m = metrics.clone();
    let failures = metrics.forward_failures.clone();
    drive(&cfg, metrics, failures, shutdown, move || {
        let (store, client, url, metrics) = (store.clone(), client.clone(), url.clone(), m.clone());
        async move {
            match store.outbox(batch).await {
                Ok(None) => Step::Idle,
                Ok(Some((seq, series))) => {
                    let n: usize = series.iter().map(|s| s.samples.len()).sum();
                    match send(&client, &url, encode(&series)).await {
                        Outcome::Delivered(_) => {
                            metrics.forwarded.inc_by(n as u64);
                            delivered(&store, Outbox::RemoteWrite, seq).await
                        }
                        Outcome::Refused(why) => {
                            metrics.forward_dropped.inc_by(n as u64);
                            tracing::error!(url = %url, samples = n, reason = %why, "The remote refused forwarded samples; they are dropped.");
                            delivered(&store, Outbox::RemoteWrite, seq).await
                        }
                        Outcome::Retry(why) => Step::Failed(format!("{url}: {why}")),
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "Cannot read the forwarding outbox.");
                    Step::Idle
                }
            }
        }
    })
    .await;
}

/// The clients of an OTLP/gRPC target, sharing one channel.
struct GrpcClients {
    url: String,
    logs: LogsServiceClient<Channel>,
    metrics: MetricsServiceClient<Channel>,
}

/// One OTLP export request of either signal.
enum Export {
    Logs(ExportLogsServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

impl Export {
    fn is_logs(&self) -> bool {
        matches!(self, Self::Logs(_))
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Self::Logs(r) => r.encode_to_vec(),
            Self::Metrics(r) => r.encode_to_vec(),
        }
    }
}

/// How a target ships OTLP batches.
enum Transport {
    /// OTLP/HTTP protobuf.
    Http {
        client: reqwest::Client,
        logs_url: String,
        metrics_url: String,
    },
    /// OTLP/gRPC (`LogsService/Export`, `MetricsService/Export`) over one HTTP/2 channel.
    Grpc(Box<GrpcClients>),
    /// Another Rookery over QUIC.
    Quic(Arc<crate::quic::Sender>),
}

impl Transport {
    fn describe(&self, logs: bool) -> String {
        match self {
            Self::Http {
                logs_url,
                metrics_url,
                ..
            } => if logs { logs_url } else { metrics_url }.clone(),
            Self::Grpc(g) => {
                let service = if logs {
                    "LogsService"
                } else {
                    "MetricsService"
                };
                format!("{} ({service}/Export)", g.url)
            }
            Self::Quic(q) => q.describe(),
        }
    }

    async fn send(&self, req: Export) -> Outcome {
        let logs = req.is_logs();
        match self {
            Self::Http {
                client,
                logs_url,
                metrics_url,
            } => {
                let url = if logs { logs_url } else { metrics_url };
                send_otlp(client, url, req.encode()).await
            }
            Self::Grpc(g) => {
                // The response is re-encoded so every transport reports partial success alike.
                let reply = match req {
                    Export::Logs(r) => g
                        .logs
                        .clone()
                        .export(r)
                        .await
                        .map(|r| r.into_inner().encode_to_vec()),
                    Export::Metrics(r) => g
                        .metrics
                        .clone()
                        .export(r)
                        .await
                        .map(|r| r.into_inner().encode_to_vec()),
                };
                match reply {
                    Ok(body) => Outcome::Delivered(body.into()),
                    Err(status) => grpc_outcome(&status),
                }
            }
            Self::Quic(q) => {
                let kind = if logs {
                    crate::quic::KIND_LOGS
                } else {
                    crate::quic::KIND_METRICS
                };
                match q.send(kind, &req.encode()).await {
                    Ok(crate::quic::Reply::Stored(resp)) => Outcome::Delivered(resp.into()),
                    Ok(crate::quic::Reply::Retry(why)) => Outcome::Retry(why),
                    Ok(crate::quic::Reply::Refused(why)) => Outcome::Refused(why),
                    Err(why) => Outcome::Retry(why),
                }
            }
        }
    }
}

/// `google.rpc.Status`, as far as the retry decision needs it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(message, repeated, tag = "3")]
    details: Vec<RpcAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// Whether the status details carry a `google.rpc.RetryInfo`: OTLP's signal that a
/// RESOURCE_EXHAUSTED receiver will recover (throttling), rather than never take the batch.
fn has_retry_info(details: &[u8]) -> bool {
    RpcStatus::decode(details).is_ok_and(|s| {
        s.details
            .iter()
            .any(|a| a.type_url.ends_with("/google.rpc.RetryInfo"))
    })
}

/// What a failed gRPC export means, the way the OTLP/HTTP forwarder reads HTTP statuses: the
/// codes of a request the receiver will never take (OTLP's non-retryable codes, the analogues
/// of HTTP 4xx, and OUT_OF_RANGE, which tonic receivers return for a message over their size
/// limit) drop the batch, counted; RESOURCE_EXHAUSTED is retried when the receiver says it
/// will recover (`RetryInfo`, like HTTP 429) and dropped otherwise (a batch over the
/// receiver's bounds, like HTTP 413); everything else (UNAVAILABLE, DEADLINE_EXCEEDED,
/// CANCELLED, ABORTED, DATA_LOSS, INTERNAL, UNKNOWN and transport errors) is retried.
fn grpc_outcome(status: &tonic::Status) -> Outcome {
    use tonic::Code;
    let why = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument
        | Code::OutOfRange
        | Code::FailedPrecondition
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unimplemented => Outcome::Refused(why),
        Code::ResourceExhausted if !has_retry_info(status.details()) => Outcome::Refused(why),
        _ => Outcome::Retry(why),
    }
}

/// The gRPC channel to `cfg.otlp_url`: lazy (an unreachable receiver is a retried failure,
/// not a start error), TLS with the system's trust store when the URL is `https`.
fn grpc_channel(cfg: &crate::config::ForwardSection) -> Result<Channel, String> {
    let url = cfg.otlp_url.trim_end_matches('/');
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("forward.otlp-url \"{url}\": {e}"))?
        .connect_timeout(cfg.timeout)
        .timeout(cfg.timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if url.starts_with("https://") {
        ep = ep
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(|e| format!("TLS to {url}: {}", rookery_common::error_chain(&e)))?;
    }
    Ok(ep.connect_lazy())
}

/// A target of log records and samples: its transport, outboxes and counters.
struct Target {
    transport: Transport,
    logs: Outbox,
    samples: Outbox,
    metrics: crate::events::TargetMetrics,
    batch_logs: u32,
    batch_samples: u32,
    sender: String,
}

/// Sends the OTLP outboxes per `cfg` until `shutdown`: with `otlp-protocol =
/// "http/protobuf"` logs to `<otlp-url>/v1/logs` and samples to `/v1/metrics`, with `"grpc"`
/// to `LogsService/Export` and `MetricsService/Export` at `<otlp-url>`.
pub async fn run_otlp(
    store: Store,
    metrics: Metrics,
    cfg: crate::config::ForwardSection,
    shutdown: CancellationToken,
) {
    let transport = match cfg.otlp_protocol {
        crate::config::OtlpProtocol::HttpProtobuf => {
            let Some(client) = client(&cfg) else { return };
            let base = cfg.otlp_url.trim_end_matches('/').to_owned();
            Transport::Http {
                client,
                logs_url: format!("{base}/v1/logs"),
                metrics_url: format!("{base}/v1/metrics"),
            }
        }
        crate::config::OtlpProtocol::Grpc => match grpc_channel(&cfg) {
            Ok(channel) => Transport::Grpc(Box::new(GrpcClients {
                url: cfg.otlp_url.trim_end_matches('/').to_owned(),
                logs: LogsServiceClient::new(channel.clone()),
                metrics: MetricsServiceClient::new(channel),
            })),
            Err(why) => {
                tracing::error!(error = %why, "Cannot set up OTLP/gRPC forwarding; forwarding is off.");
                return;
            }
        },
    };
    let target = Target {
        transport,
        logs: Outbox::OtlpLogs,
        samples: Outbox::OtlpSamples,
        metrics: metrics.otlp.clone(),
        batch_logs: cfg.batch_logs,
        batch_samples: cfg.batch_samples,
        sender: crate::store::host_name(),
    };
    run_target(store, metrics, cfg, target, shutdown).await;
}

/// Sends the QUIC outboxes to `[forward] quic-peer` with `sender` until `shutdown`.
pub async fn run_quic(
    store: Store,
    metrics: Metrics,
    cfg: crate::config::ForwardSection,
    sender: crate::quic::Sender,
    shutdown: CancellationToken,
) {
    let target = Target {
        transport: Transport::Quic(Arc::new(sender)),
        logs: Outbox::QuicLogs,
        samples: Outbox::QuicSamples,
        metrics: metrics.quic.clone(),
        batch_logs: cfg.batch_logs,
        batch_samples: cfg.batch_samples,
        sender: crate::store::host_name(),
    };
    run_target(store, metrics, cfg, target, shutdown).await;
}

async fn run_target(
    store: Store,
    metrics: Metrics,
    cfg: crate::config::ForwardSection,
    target: Target,
    shutdown: CancellationToken,
) {
    let target = Arc::new(target);
    let failures = target.metrics.failures.clone();
    drive(&cfg, metrics, failures, shutdown, move || {
        let (store, target) = (store.clone(), target.clone());
        async move {
            let logs = log_step(&store, &target);
            let samples = sample_step(&store, &target);
            match (logs.await, samples.await) {
                (Step::Failed(why), _) | (_, Step::Failed(why)) => Step::Failed(why),
                (Step::Idle, Step::Idle) => Step::Idle,
                _ => Step::Sent,
            }
        }
    })
    .await;
}

async fn log_step(store: &Store, t: &Target) -> Step {
    let url = t.transport.describe(true);
    let batch = match store.log_outbox(t.logs, t.batch_logs).await {
        Ok(Some(b)) => b,
        Ok(None) => return Step::Idle,
        Err(err) => {
            tracing::error!(error = %err, outbox = ?t.logs, "Cannot read the log outbox.");
            return Step::Idle;
        }
    };
    if batch.missing > 0 {
        t.metrics.dropped.inc_by(batch.missing);
        tracing::warn!(url = %url, records = batch.missing, "Retention deleted log records before they were forwarded; they are dropped.");
    }
    if batch.logs.is_empty() {
        return delivered(store, t.logs, batch.seq).await;
    }
    let n = batch.logs.len() as u64;
    let req = Export::Logs(otlp_logs(&t.sender, &batch.logs));
    match t.transport.send(req).await {
        Outcome::Delivered(resp) => {
            let rejected = ExportLogsServiceResponse::decode(resp)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0));
            if rejected > 0 {
                t.metrics.dropped.inc_by(rejected);
                tracing::warn!(url = %url, records = rejected, "The receiver rejected some forwarded log records.");
            }
            t.metrics.logs.inc_by(n - rejected.min(n));
            delivered(store, t.logs, batch.seq).await
        }
        Outcome::Refused(why) => {
            t.metrics.dropped.inc_by(n);
            tracing::error!(url = %url, records = n, reason = %why, "The receiver refused forwarded log records; they are dropped.");
            delivered(store, t.logs, batch.seq).await
        }
        Outcome::Retry(why) => Step::Failed(format!("{url}: {why}")),
    }
}

async fn sample_step(store: &Store, t: &Target) -> Step {
    let url = t.transport.describe(false);
    let (seq, series) = match store.sample_outbox(t.samples, t.batch_samples).await {
        Ok(Some(b)) => b,
        Ok(None) => return Step::Idle,
        Err(err) => {
            tracing::error!(error = %err, outbox = ?t.samples, "Cannot read the sample outbox.");
            return Step::Idle;
        }
    };
    let n: u64 = series.iter().map(|s| s.samples.len() as u64).sum();
    let req = Export::Metrics(otlp_metrics(&series));
    match t.transport.send(req).await {
        Outcome::Delivered(resp) => {
            let rejected = ExportMetricsServiceResponse::decode(resp)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| u64::try_from(p.rejected_data_points).unwrap_or(0));
            if rejected > 0 {
                t.metrics.dropped.inc_by(rejected);
                tracing::warn!(url = %url, samples = rejected, "The receiver rejected some forwarded samples.");
            }
            t.metrics.samples.inc_by(n - rejected.min(n));
            delivered(store, t.samples, seq).await
        }
        Outcome::Refused(why) => {
            t.metrics.dropped.inc_by(n);
            tracing::error!(url = %url, samples = n, reason = %why, "The receiver refused forwarded samples; they are dropped.");
            delivered(store, t.samples, seq).await
        }
        Outcome::Retry(why) => Step::Failed(format!("{url}: {why}")),
    }
}

async fn delivered(store: &Store, outbox: Outbox, seq: i64) -> Step {
    match store.delivered(outbox, seq).await {
        Ok(()) => Step::Sent,
        Err(err) => {
            tracing::error!(error = %err, ?outbox, "Cannot mark forwarded records as delivered.");
            Step::Idle
        }
    }
}

fn client(cfg: &crate::config::ForwardSection) -> Option<reqwest::Client> {
    match reqwest::Client::builder().timeout(cfg.timeout).build() {
        Ok(c) => Some(c),
        Err(err) => {
            tracing::error!(error = %err, "Cannot build the forwarding HTTP client; forwarding is off.");
            None
        }
    }
}

/// The loop every target shares: asks licensed for `central-forwarding` at start and every
/// `licence-check-interval` (an unreachable licensed keeps the last answer), runs `once`
/// while it is granted, polls an empty outbox every 0.5 s and backs off after failures
/// (0.5 s doubling to 30 s, counted in `failures`).
async fn drive<F, Fut>(
    cfg: &crate::config::ForwardSection,
    metrics: Metrics,
    failures: prometheus_client::metrics::counter::Counter,
    shutdown: CancellationToken,
    mut once: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Step>,
{
    let mut backoff = BACKOFF_MIN;
    let mut licensed: Option<bool> = None;
    let mut next_check = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_check {
            next_check = tokio::time::Instant::now() + cfg.licence_check_interval;
            match ask(&cfg.licensed_socket, FEATURE).await {
                Some((enabled, reason)) => {
                    if licensed != Some(enabled) {
                        tracing::info!(feature = FEATURE, enabled, reason = %reason, "Forwarding licence answer.");
                    }
                    licensed = Some(enabled);
                }
                // Unreachable: keep the last answer.
                None if licensed.is_none() => {
                    tracing::warn!(socket = %cfg.licensed_socket.display(), "licensed not reachable; records stay spooled until it answers.");
                }
                None => {}
            }
            metrics
                .forward_licensed
                .set(i64::from(licensed == Some(true)));
        }
        if licensed != Some(true) {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next_check) => continue,
            }
        }
        let wait = match once().await {
            Step::Idle => IDLE,
            Step::Sent => {
                backoff = BACKOFF_MIN;
                Duration::ZERO
            }
            Step::Failed(why) => {
                failures.inc();
                tracing::warn!(reason = %why, "Forwarding failed; retrying.");
                let w = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                w
            }
        };
        if wait.is_zero() {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(s: &tonic::Status) -> &'static str {
        match grpc_outcome(s) {
            Outcome::Delivered(_) => "delivered",
            Outcome::Refused(_) => "refused",
            Outcome::Retry(_) => "retry",
        }
    }

    #[test]
    fn grpc_statuses_are_retried_or_dropped_like_http_ones() {
        use tonic::Status;
        for s in [
            Status::unavailable("down"),
            Status::deadline_exceeded("slow"),
            Status::cancelled("timeout"),
            Status::aborted("conflict"),
            Status::internal("bug"),
            Status::unknown("h2 reset"),
            Status::data_loss("torn"),
        ] {
            assert_eq!(verdict(&s), "retry", "{s:?}");
        }
        for s in [
            Status::invalid_argument("bad"),
            Status::out_of_range("message too large"),
            Status::failed_precondition("no"),
            Status::unauthenticated("who"),
            Status::permission_denied("no"),
            Status::not_found("no"),
            Status::already_exists("dup"),
            Status::unimplemented("no logs service"),
            Status::resource_exhausted("batch over the queue capacity"),
        ] {
            assert_eq!(verdict(&s), "refused", "{s:?}");
        }
        let throttled = RpcStatus {
            details: vec![RpcAny {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: Vec::new(),
            }],
        };
        let s = Status::with_details(
            tonic::Code::ResourceExhausted,
            "slow down",
            throttled.encode_to_vec().into(),
        );
        assert_eq!(verdict(&s), "retry");
        let why = match grpc_outcome(&Status::invalid_argument("too many labels")) {
            Outcome::Refused(why) => why,
            _ => String::new(),
        };
        assert_eq!(why, "gRPC InvalidArgument: too many labels");
    }
}
