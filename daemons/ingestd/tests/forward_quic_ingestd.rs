//! Forwarding to another Rookery over QUIC with mutual TLS (certificates made by rcgen):
//! ingestd A forwards every log record and sample to ingestd B's `[quic]` listener. B goes
//! down while A acknowledges HTTP log pushes and remote_write bodies, A is killed with -9
//! meanwhile; when B is back every record arrives exactly once (by `rookery.record_id`).
//! A sender whose certificate is from another CA gets nothing through and keeps its spool.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;
mod forwarding;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{Ingestd, Licensed, write_config};
use forwarding::{
    LOGS, PER_SERIES, SERIES, ca, count, fwd_logs, leaf, logs_in_b, metric, push_logs,
    push_samples, samples_in_b, wait, write_pem,
};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    rogue_client: (String, String),
}

fn pki() -> Pki {
    let (ca_cert, issuer) = ca("Rookery fleet test CA");
    let (_, rogue) = ca("Someone else's CA");
    Pki {
        ca: ca_cert.pem(),
        server: leaf(&issuer, &["localhost"]),
        client: leaf(&issuer, &["probe-a.example"]),
        rogue_client: leaf(&rogue, &["probe-c.example"]),
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sender forwarding to `port` with `client` (cert, key) and the fleet CA.
async fn sender(
    dir: &Path,
    port: u16,
    client: &(String, String),
    ca_pem: &str,
    licensed: &Licensed,
) -> Ingestd {
    write_config(dir, "", "");
    let cfg = std::fs::read_to_string(dir.join("ingestd.toml")).unwrap();
    let cert = write_pem(dir, "client.crt", &client.0);
    let key = write_pem(dir, "client.key", &client.1);
    let ca = write_pem(dir, "ca.crt", ca_pem);
    std::fs::write(
        dir.join("ingestd.toml"),
        format!(
            "{cfg}\n[forward]\nquic-peer = \"127.0.0.1:{port}\"\nquic-server-name = \"localhost\"\n\
             quic-cert-file = \"{cert}\"\nquic-key-file = \"{key}\"\nquic-ca-file = \"{ca}\"\n\
             batch-logs = 15\nbatch-samples = 30\ntimeout = \"5s\"\n\
             licensed-socket = \"{}\"\nlicence-check-interval = \"1s\"\n",
            licensed.socket.display()
        ),
    )
    .unwrap();
    Ingestd::start(dir).await
}

#[tokio::test(flavor = "multi_thread")]
async fn quic_forwarding_with_mutual_tls_loses_nothing_in_an_outage() {
    let pki = pki();
    let b_dir = tempfile::tempdir().unwrap();
    write_config(b_dir.path(), "", "");
    let port = free_udp_port();
    let cfg = std::fs::read_to_string(b_dir.path().join("ingestd.toml")).unwrap();
    let cert = write_pem(b_dir.path(), "server.crt", &pki.server.0);
    let key = write_pem(b_dir.path(), "server.key", &pki.server.1);
    let ca = write_pem(b_dir.path(), "ca.crt", &pki.ca);
    std::fs::write(
        b_dir.path().join("ingestd.toml"),
        format!(
            "{cfg}\n[quic]\nlisten = [\"127.0.0.1:{port}\"]\ncert-file = \"{cert}\"\nkey-file = \"{key}\"\nclient-ca-file = \"{ca}\"\n"
        ),
    )
    .unwrap();
    let mut b = Ingestd::start(b_dir.path()).await;
    assert_eq!(b.addrs["quic-0"], format!("127.0.0.1:{port}"));

    let a_dir = tempfile::tempdir().unwrap();
    let licensed = Licensed::start(a_dir.path(), false).await;
    let mut a = sender(a_dir.path(), port, &pki.client, &pki.ca, &licensed).await;

    push_logs(&a, 1);
    push_samples(&a, 1);
    let per_round = i64::try_from(SERIES * PER_SERIES).unwrap();
    let logs_round = i64::try_from(LOGS).unwrap();
    wait("round 1 reaches B over QUIC", || {
        logs_in_b(b_dir.path()) == logs_round && samples_in_b(b_dir.path()) == per_round
    })
    .await;

    // Outage: B stops; A acknowledges and spools, and is killed with -9 meanwhile.
    b.stop();
    push_logs(&a, 2);
    push_samples(&a, 2);
    wait("A notices the outage", || {
        metric(&a, "rookery_ingestd_forward_quic_failures_total") > 0
    })
    .await;
    a.kill9();
    let a = Ingestd::start(a_dir.path()).await;
    push_logs(&a, 3);
    assert_eq!(logs_in_b(b_dir.path()), logs_round, "B was down");

    let b = Ingestd::start(b_dir.path()).await;
    wait("every spooled record reaches B", || {
        logs_in_b(b_dir.path()) >= 3 * logs_round && samples_in_b(b_dir.path()) == 2 * per_round
    })
    .await;
    wait("A's QUIC outboxes drain", || {
        count(a_dir.path(), "SELECT count(*) FROM forward_quic_logs") == 0
            && count(a_dir.path(), "SELECT count(*) FROM forward_quic_samples") == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Exactly once, by record id, each from A's store, stored as input "quic".
    let rows: Vec<(String, String, String, String, Option<u8>)> = fwd_logs(b_dir.path())
        .into_iter()
        .map(|l| {
            let r = l.record;
            (r.message, r.structured_data, r.input, r.host, r.severity)
        })
        .collect();
    assert_eq!(rows.len(), 3 * LOGS, "each record exactly once");
    let mut ids = BTreeMap::new();
    for (message, sd, input, host, sev) in &rows {
        assert_eq!(
            (input.as_str(), host.as_str(), *sev),
            ("quic", "dev-a", Some(4))
        );
        let attrs: serde_json::Map<String, serde_json::Value> = serde_json::from_str(sd).unwrap();
        let id = attrs["rookery.record_id"].as_str().unwrap().to_owned();
        assert!(
            ids.insert(id, message.clone()).is_none(),
            "repeated {message}"
        );
    }
    for round in 1..=3 {
        for i in 0..LOGS {
            let m = format!("fwd round {round} line {i}");
            assert!(ids.values().any(|v| *v == m), "missing {m}");
        }
    }
    assert_eq!(samples_in_b(b_dir.path()), 2 * per_round);
    assert_eq!(
        metric(&a, "rookery_ingestd_forward_quic_dropped_records_total"),
        0
    );

    // Mutual TLS: a sender whose certificate is from another CA gets nothing through.
    let c_dir = tempfile::tempdir().unwrap();
    let c = sender(c_dir.path(), port, &pki.rogue_client, &pki.ca, &licensed).await;
    push_logs(&c, 9);
    wait("C's attempts fail", || {
        metric(&c, "rookery_ingestd_forward_quic_failures_total") >= 2
    })
    .await;
    assert_eq!(logs_in_b(b_dir.path()), 3 * logs_round, "nothing from C");
    assert_eq!(
        count(c_dir.path(), "SELECT count(*) FROM forward_quic_logs"),
        logs_round,
        "C keeps its records spooled"
    );
    assert!(
        b.metrics()
            .contains("rookery_ingestd_rejected_total{input=\"quic\",reason=\"tls_handshake\"}"),
        "the refused handshake is counted"
    );
    drop((a, b, c));
    licensed.stop().await;
}

#[test]
fn quic_config_errors_name_file_line_col_and_key() {
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
    let got = check(
        "[forward]\nquic-peer = \"central\"\nquic-cert-file = \"a.crt\"\n[quic]\nlisten = [\"0.0.0.0:4319\"]\n",
    );
    for w in [
        format!(
            "{p}:2:13: forward.quic-peer: \"central\" is not host:port (expected e.g. \"central.example.net:4319\" or \"[fd00::1]:4319\")"
        ),
        format!("{p}:3:18: forward.quic-cert-file: \"a.crt\" is not an absolute path"),
    ] {
        assert!(got.contains(&w), "want {w}\ngot {got:#?}");
    }
    let missing = |tail: &str| {
        got.iter()
            .any(|g| g.starts_with(&format!("{p}:")) && g.ends_with(tail))
    };
    assert!(
        missing(
            "forward.quic-key-file: is required when forward.quic-peer is set (expected a PEM file path)"
        ),
        "{got:#?}"
    );
    assert!(
        missing(
            "quic.client-ca-file: is required when quic.listen has listeners (expected a PEM file path)"
        ),
        "{got:#?}"
    );
}
