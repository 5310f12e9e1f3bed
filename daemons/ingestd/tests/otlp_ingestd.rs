//! OTLP into the real `rookery-ingestd`: logs and metrics exported over gRPC (tonic clients of
//! the `opentelemetry-proto` crate) and over HTTP/protobuf; each is queried back. A histogram
//! is reported as rejected in `partial_success`, never silently dropped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{Ingestd, write_config};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use rookery_common::proto::metrics_client::MetricsClient;
use rookery_common::proto::{QueryLogsRequest, QueryMetricsRequest};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..KeyValue::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", service), kv("host.name", "otel-host")],
        ..Resource::default()
    })
}

fn logs_req(service: &str, body: &str, sev: i32, t: u64) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: t,
                    severity_number: sev,
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(body.into())),
                    }),
                    attributes: vec![kv("user", "alice")],
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn now_ns() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

fn metrics_req(service: &str, name: &str, value: f64, t: u64) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: name.into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![kv("queue", "q1")],
                                time_unix_nano: t,
                                value: Some(number_data_point::Value::AsDouble(value)),
                                ..NumberDataPoint::default()
                            }],
                        })),
                        ..Metric::default()
                    },
                    Metric {
                        name: "latency".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint::default()],
                            aggregation_temporality: 2,
                        })),
                        ..Metric::default()
                    },
                ],
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

fn post_proto(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    (status, out[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_logs_and_metrics_over_grpc_and_http_are_queried_back() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "", "");
    let d = Ingestd::start(tmp.path()).await;
    let grpc = format!("http://{}", d.addr("otlp-grpc-0"));
    let http = d.addr("otlp-http-0");
    let t = now_ns();

    let mut logs = LogsServiceClient::connect(grpc.clone()).await.unwrap();
    logs.export(logs_req("checkout", "payment declined", 17, t))
        .await
        .unwrap();
    let (status, _) = post_proto(
        http,
        "/v1/logs",
        &logs_req("billing", "invoice sent", 9, t).encode_to_vec(),
    );
    assert_eq!(status, 200);
    let got = d
        .query(QueryLogsRequest {
            host: Some("otel-host".into()),
            ..QueryLogsRequest::default()
        })
        .await;
    type Row<'a> = (&'a str, &'a str, Option<u32>, &'a str, Option<i64>);
    let got: Vec<Row> = got
        .iter()
        .map(|r| {
            (
                &*r.app,
                &*r.message,
                r.severity,
                &*r.structured_data,
                r.timestamp_unix_nanos,
            )
        })
        .collect();
    let t = i64::try_from(t).unwrap();
    assert_eq!(
        got,
        [
            (
                "billing",
                "invoice sent",
                Some(6),
                r#"{"user":"alice"}"#,
                Some(t)
            ),
            (
                "checkout",
                "payment declined",
                Some(3),
                r#"{"user":"alice"}"#,
                Some(t)
            ),
        ]
    );

    let mut metrics = MetricsServiceClient::connect(grpc).await.unwrap();
    let resp = metrics
        .export(metrics_req(
            "checkout",
            "queue.depth",
            7.0,
            u64::try_from(t).unwrap(),
        ))
        .await
        .unwrap()
        .into_inner();
    let partial = resp.partial_success.expect("the histogram is reported");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial.error_message.contains("latency"),
        "{}",
        partial.error_message
    );
    let (status, _) = post_proto(
        http,
        "/v1/metrics",
        &metrics_req("billing", "queue.depth", 9.0, u64::try_from(t).unwrap()).encode_to_vec(),
    );
    assert_eq!(status, 200);
    let ch = rookery_common::grpc::connect(&d.socket()).await.unwrap();
    let ms = t / 1_000_000;
    let resp = MetricsClient::new(ch)
        .query_metrics(QueryMetricsRequest {
            name: "queue_depth".into(),
            start_unix_ms: ms,
            end_unix_ms: ms,
            step_ms: 1000,
            ..QueryMetricsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got: Vec<(String, String, f64)> = resp
        .series
        .iter()
        .map(|s| {
            (
                s.labels["job"].clone(),
                s.labels["queue"].clone(),
                s.points[0].value,
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("billing".into(), "q1".into(), 9.0),
            ("checkout".into(), "q1".into(), 7.0)
        ]
    );
    let m = d.metrics();
    assert!(
        m.contains("rookery_ingestd_rejected_total{input=\"otlp\",reason=\"unsupported_type\"} 2"),
        "{m}"
    );
}

/// The Python virtualenv with the OpenTelemetry SDK (scripts/install-ingestd-test-deps.sh).
const VENV_PYTHON: &str = "/opt/rookery-test-venv/bin/python3";

#[tokio::test(flavor = "multi_thread")]
async fn the_opentelemetry_python_sdk_exports_logs_and_metrics_over_otlp_http() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "", "");
    let d = Ingestd::start(tmp.path()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/otlp_python.py");
    let url = format!("http://{}", d.addr("otlp-http-0"));
    // The daemon runs in its own process: blocking here only waits for the client.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(VENV_PYTHON)
            .arg(script)
            .arg(url)
            .output()
            .expect("the OpenTelemetry venv is installed by scripts/install-ingestd-test-deps.sh")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = d
        .query(QueryLogsRequest {
            app: Some("pyapp".into()),
            ..QueryLogsRequest::default()
        })
        .await;
    assert_eq!(logs.len(), 1, "{logs:?}");
    let r = &logs[0];
    assert_eq!(
        (&*r.host, &*r.message, r.severity, &*r.input),
        ("pyhost", "cache miss ratio high", Some(4), "otlp")
    );
    assert!(
        r.structured_data.contains("\"cache\":\"sessions\""),
        "{}",
        r.structured_data
    );
    let ch = rookery_common::grpc::connect(&d.socket()).await.unwrap();
    let mut client = MetricsClient::new(ch);
    let now = i64::try_from(now_ns() / 1_000_000).unwrap();
    for (name, label, value) in [
        ("jobs_done", ("queue", "q1"), 5.0),
        ("temperature", ("room", "lab"), 21.5),
    ] {
        let resp = client
            .query_metrics(QueryMetricsRequest {
                name: name.into(),
                start_unix_ms: now,
                end_unix_ms: now,
                step_ms: 1000,
                ..QueryMetricsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.series.len(), 1, "{name}: {resp:?}");
        let s = &resp.series[0];
        assert_eq!(s.labels["job"], "pyapp");
        assert_eq!(s.labels[label.0], label.1);
        assert_eq!(s.points[0].value, value);
    }
}
