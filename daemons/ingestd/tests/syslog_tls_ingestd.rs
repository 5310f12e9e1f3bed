//! Syslog over TLS (RFC 5425, octet counting) into the real `rookery-ingestd`: a rustls client
//! that trusts the configured certificate sends two messages; both are queried back. A peer
//! that does not speak TLS is a counted handshake rejection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::io::Write;
use std::sync::Arc;

use common::{Ingestd, write_config};
use rookery_common::proto::QueryLogsRequest;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread")]
async fn tls_syslog_is_stored_and_a_plaintext_peer_is_counted() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    write_config(
        tmp.path(),
        &format!(
            "tls = [\"127.0.0.1:0\"]\ntls-cert-file = \"{}\"\ntls-key-file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        "",
    );
    let d = Ingestd::start(tmp.path()).await;
    let addr = d.addr("syslog-tls-0");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    for msg in [
        "<38>1 2026-11-23T10:00:00Z fw1 sshd 9 - - accepted key",
        "<11>1 - fw1 kernel - - - oops",
    ] {
        tls.write_all(format!("{} {msg}", msg.len()).as_bytes())
            .await
            .unwrap();
    }
    tls.shutdown().await.unwrap();

    let got = d
        .wait_for(
            QueryLogsRequest {
                host: Some("fw1".into()),
                ..QueryLogsRequest::default()
            },
            2,
        )
        .await;
    let got: Vec<(&str, &str, &str, Option<u32>)> = got
        .iter()
        .map(|r| (&*r.input, &*r.app, &*r.message, r.severity))
        .collect();
    assert_eq!(
        got,
        [
            ("tls", "kernel", "oops", Some(3)),
            ("tls", "sshd", "accepted key", Some(6)),
        ]
    );

    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain.write_all(b"<13>1 - h a - - - not tls\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let m = d.metrics();
        if m.contains("rookery_ingestd_rejected_total{input=\"tls\",reason=\"tls_handshake\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
