//! HTTP NDJSON/JSON log push into the real `rookery-ingestd`: a batch with one bad line is
//! rejected whole with the DESIGN.md error body naming the line and the field, and nothing of
//! it is stored; the corrected batch is acknowledged (after commit) and queried back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{Ingestd, post, write_config};
use rookery_common::proto::QueryLogsRequest;

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_with_one_bad_line_is_rejected_whole_then_the_fixed_batch_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "", "");
    let d = Ingestd::start(tmp.path()).await;
    let http = d.addr("http-0");

    let bad = concat!(
        "{\"message\":\"first\",\"app\":\"pusher\",\"severity\":\"info\"}\n",
        "{\"message\":\"second\",\"app\":\"pusher\",\"severity\":\"loud\"}\n",
        "{\"message\":\"third\",\"app\":\"pusher\"}\n",
    );
    let (status, body) = post(http, "/v1/logs", "application/x-ndjson", bad.as_bytes());
    assert_eq!(status, 400, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"], "bad_request");
    assert_eq!(err["status"], 400);
    assert!(
        err["correlation_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(err["timestamp"].as_str().is_some());
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.starts_with("line 2: field `severity`: \"loud\" is not valid"),
        "{msg}"
    );
    assert!(msg.ends_with("nothing of this request was stored"), "{msg}");

    let (status, body) = post(http, "/v1/logs", "text/plain", b"x");
    assert_eq!(status, 415, "{body}");

    let good = bad.replace("\"loud\"", "\"warning\"");
    let (status, body) = post(http, "/v1/logs", "application/x-ndjson", good.as_bytes());
    assert_eq!((status, &*body), (200, "{\"accepted\":3}"));
    // Acknowledged means committed: the records are there at once, no polling.
    let got = d
        .query(QueryLogsRequest {
            app: Some("pusher".into()),
            ..QueryLogsRequest::default()
        })
        .await;
    let got: Vec<(&str, Option<u32>, &str, &str)> = got
        .iter()
        .map(|r| (&*r.message, r.severity, &*r.host, &*r.input))
        .collect();
    assert_eq!(
        got,
        [
            ("third", None, "127.0.0.1", "http"),
            ("second", Some(4), "127.0.0.1", "http"),
            ("first", Some(6), "127.0.0.1", "http"),
        ]
    );

    let json = r#"[{"message":"from json","host":"sw1","app":"j","timestamp":"2026-11-23T10:00:00Z","attributes":{"port":"ge-0/0/1"}}]"#;
    let (status, body) = post(http, "/v1/logs", "application/json", json.as_bytes());
    assert_eq!(status, 200, "{body}");
    let got = d
        .query(QueryLogsRequest {
            host: Some("sw1".into()),
            ..QueryLogsRequest::default()
        })
        .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].timestamp_unix_nanos, Some(1_795_428_000_000_000_000));
    assert_eq!(got[0].structured_data, r#"{"port":"ge-0/0/1"}"#);
    let metrics = d.metrics();
    assert!(
        metrics.contains("rookery_ingestd_rejected_total{input=\"http\",reason=\"bad_request\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rookery_ingestd_stored_records_total{input=\"http\"} 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_gets_413_with_the_error_body() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path()).unwrap();
    write_config(tmp.path(), "", "");
    let cfg = std::fs::read_to_string(tmp.path().join("ingestd.toml")).unwrap();
    std::fs::write(
        tmp.path().join("ingestd.toml"),
        cfg.replace("[http]\n", "[http]\nmax-body-bytes = 2048\n"),
    )
    .unwrap();
    let d = Ingestd::start(tmp.path()).await;
    let line = format!("{{\"message\":\"{}\"}}\n", "y".repeat(100));
    let body = line.repeat(40);
    let (status, resp) = post(
        d.addr("http-0"),
        "/v1/logs",
        "application/x-ndjson",
        body.as_bytes(),
    );
    assert_eq!(status, 413, "{resp}");
    let err: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(err["error"], "payload_too_large");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("http.max-body-bytes (2048 bytes)"),
        "{resp}"
    );
}
