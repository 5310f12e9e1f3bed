//! Forwarding by OTLP with an on-disk spool, over HTTP/protobuf and over gRPC: ingestd A
//! forwards every log record and metric sample it stores to ingestd B's OTLP input (the
//! listener of the protocol), B is queried back, B goes down while A keeps acknowledging and
//! A is killed with -9 meanwhile; when B is back, every record arrives exactly once
//! (`forwarding::otlp_outage_exactly_once`). OTLP/gRPC to an `https` URL verifies the
//! receiver's certificate with the trust store (`SSL_CERT_FILE`): a sender trusting the
//! receiver's CA delivers, one trusting another CA delivers nothing and keeps its spool.
//! A batch the receiver refuses as a bad request is dropped and counted, over both protocols.
//! Config errors name file:line:col and key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;
mod forwarding;

use std::sync::atomic::Ordering;

use common::{Ingestd, Licensed, free_port};
use forwarding::{
    LOGS, Otlp, PER_SERIES, SERIES, ca, count, leaf, logs_in_b, metric, otlp_outage_exactly_once,
    otlp_refused_batches_are_dropped, push_logs, push_samples, query_round_in_b, samples_in_b,
    tls_terminator, wait, write_otlp_receiver_config, write_otlp_sender_config, write_pem,
};

#[tokio::test(flavor = "multi_thread")]
async fn an_uplink_outage_and_a_kill_9_lose_no_record_forwarded_by_otlp_http() {
    otlp_outage_exactly_once(Otlp::Http).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uplink_outage_and_a_kill_9_lose_no_record_forwarded_by_otlp_grpc() {
    otlp_outage_exactly_once(Otlp::Grpc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_refused_over_otlp_http_is_dropped_and_counted() {
    otlp_refused_batches_are_dropped(Otlp::Http).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_refused_over_otlp_grpc_is_dropped_and_counted() {
    otlp_refused_batches_are_dropped(Otlp::Grpc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_grpc_forwarding_over_tls_verifies_the_receiver_certificate() {
    let (ca_cert, issuer) = ca("OTLP receiver test CA");
    let (rogue_ca, _) = ca("Someone else's CA");
    let server = leaf(&issuer, &["localhost"]);

    let b_dir = tempfile::tempdir().unwrap();
    let b_port = free_port();
    write_otlp_receiver_config(b_dir.path(), Otlp::Grpc, b_port, "");
    let b = Ingestd::start(b_dir.path()).await;
    let (tls, refused) =
        tls_terminator(&server.0, &server.1, ([127, 0, 0, 1], b_port).into()).await;
    let url = format!("https://localhost:{}", tls.port());

    // A trusts the receiver's CA (SSL_CERT_FILE replaces the system trust store).
    let a_dir = tempfile::tempdir().unwrap();
    let licensed = Licensed::start(a_dir.path(), false).await;
    let trusted = write_pem(a_dir.path(), "ca.crt", &ca_cert.pem());
    write_otlp_sender_config(a_dir.path(), Otlp::Grpc, &url, &licensed.socket);
    let a = Ingestd::start_env(a_dir.path(), &[("SSL_CERT_FILE", &trusted)]).await;
    // C trusts only another CA.
    let c_dir = tempfile::tempdir().unwrap();
    let other = write_pem(c_dir.path(), "ca.crt", &rogue_ca.pem());
    write_otlp_sender_config(c_dir.path(), Otlp::Grpc, &url, &licensed.socket);
    let c = Ingestd::start_env(c_dir.path(), &[("SSL_CERT_FILE", &other)]).await;

    push_logs(&a, 1);
    push_samples(&a, 1);
    push_logs(&c, 2);
    let per_round = i64::try_from(SERIES * PER_SERIES).unwrap();
    wait("A's records reach B through TLS", || {
        logs_in_b(b_dir.path()) == i64::try_from(LOGS).unwrap()
            && samples_in_b(b_dir.path()) == per_round
    })
    .await;
    query_round_in_b(&b, 1).await;
    wait("C's handshakes fail and are retried", || {
        refused.load(Ordering::SeqCst) >= 2
            && metric(&c, "rookery_ingestd_forward_otlp_failures_total") >= 2
    })
    .await;
    // Nothing of C's got through, nothing of it was dropped: all of it waits in its outbox.
    assert_eq!(logs_in_b(b_dir.path()), i64::try_from(LOGS).unwrap());
    assert_eq!(
        count(c_dir.path(), "SELECT count(*) FROM forward_otlp_logs"),
        i64::try_from(LOGS).unwrap()
    );
    assert_eq!(
        metric(&c, "rookery_ingestd_forward_otlp_dropped_records_total"),
        0
    );
    assert_eq!(metric(&c, "rookery_ingestd_forwarded_otlp_logs_total"), 0);
    assert_eq!(
        metric(&a, "rookery_ingestd_forwarded_otlp_logs_total"),
        LOGS as u64
    );
    drop((a, b, c));
    licensed.stop().await;
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
