//! Forwarding by OTLP with an on-disk spool, over HTTP/protobuf and over gRPC: ingestd A
//! forwards every log record and metric sample it stores to ingestd B's OTLP input (the
//! listener of the protocol), B is queried back, B goes down while A keeps acknowledging and
//! A is killed with -9 meanwhile; when B is back, every record arrives exactly once
//! (`forwarding::otlp_outage_exactly_once`). Config errors name file:line:col and key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;
mod forwarding;

use forwarding::{Otlp, otlp_outage_exactly_once};

#[tokio::test(flavor = "multi_thread")]
async fn an_uplink_outage_and_a_kill_9_lose_no_record_forwarded_by_otlp_http() {
    otlp_outage_exactly_once(Otlp::Http).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uplink_outage_and_a_kill_9_lose_no_record_forwarded_by_otlp_grpc() {
    otlp_outage_exactly_once(Otlp::Grpc).await;
}

#[test]
fn forward_otlp_config_errors_name_file_line_col_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingestd.toml");
    let check = |text: &str| -> Vec<String> {
        std::fs::write(&path, text).unwrap();
        rookery_common::config::load::<rookery_ingestd::config::Config>(
            &rookery_common::config::Sources::new("ingestd", Some(&path), Vec::new()),
        )
        .expect_err("config must be rejected")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
    };
    let p = path.display().to_string();
    assert_eq!(
        check("[forward]\notlp-url = \"otel:4318\"\nbatch-logs = 0\n"),
        [
            format!(
                "{p}:2:12: forward.otlp-url: \"otel:4318\" is not an http(s) URL (expected the receiver's base URL, e.g. \"https://otel.example.com:4318\")"
            ),
            format!("{p}:3:14: forward.batch-logs: 0 is out of range (expected 1 to 100000)"),
        ]
    );
    assert_eq!(
        check("[forward]\notlp-url = \"http://otel:4318/v1/logs\"\n"),
        [format!(
            "{p}:2:12: forward.otlp-url: \"http://otel:4318/v1/logs\" names a signal path; give the base URL (\"/v1/logs\" and \"/v1/metrics\" are appended)"
        )]
    );
    assert_eq!(
        check("[forward]\notlp-protocol = \"grpc\"\notlp-url = \"https://otel:4317/v1/logs\"\n"),
        [format!(
            "{p}:3:12: forward.otlp-url: \"https://otel:4317/v1/logs\" has a path; with otlp-protocol = \"grpc\" give scheme, host and port only (e.g. \"https://otel.example.com:4317\")"
        )]
    );
    assert_eq!(
        check("[forward]\notlp-url = \"otel:4317\"\notlp-protocol = \"grpc\"\n"),
        [format!(
            "{p}:2:12: forward.otlp-url: \"otel:4317\" is not an http(s) URL (expected the receiver's gRPC URL, e.g. \"https://otel.example.com:4317\")"
        )]
    );
    let unknown =
        check("[forward]\notlp-url = \"http://otel:4317\"\notlp-protocol = \"grpc/json\"\n");
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(
        unknown[0].starts_with(&format!("{p}:3:17: forward.otlp-protocol: "))
            && unknown[0].contains("grpc/json")
            && unknown[0].contains("http/protobuf"),
        "{unknown:?}"
    );
}
