//! HTTP/3 probes against an h3 server (quinn + h3, an rcgen certificate) that the test runs
//! on loopback: status, body regex, redirects, a wrong status and an untrusted certificate
//! with their reasons, and a port where nothing answers (QUIC cannot be refused) ending by
//! the deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rookery_probed::probe::{Failure, Phase};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// Starts an HTTP/3 server on 127.0.0.1; returns its port and the CA file.
fn start(dir: &std::path::Path) -> (u16, String, quinn::Endpoint) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = support::write(dir, "ca.pem", &ca.pem())
        .display()
        .to_string();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf.der().to_vec())],
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
    .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let port = endpoint.local_addr().unwrap().port();
    let server = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok(mut h3) =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3.accept().await {
                    let Ok((req, mut stream)) = resolver.resolve_request().await else {
                        break;
                    };
                    let (status, location, body) = match req.uri().path() {
                        "/ok" => (200, None, "hello over h3\n"),
                        "/redir" => (302, Some("/ok"), ""),
                        _ => (404, None, "no\n"),
                    };
                    let mut resp = http::Response::builder().status(status);
                    if let Some(l) = location {
                        resp = resp.header("location", l);
                    }
                    let _ = stream.send_response(resp.body(()).unwrap()).await;
                    let _ = stream.send_data(Bytes::from_static(body.as_bytes())).await;
                    let _ = stream.finish().await;
                }
            });
        }
    });
    (port, ca_file, endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_probes_against_an_h3_server() {
    let dir = tempfile::tempdir().unwrap();
    let (port, ca, server) = start(dir.path());
    let m = |extra: &str| {
        format!(
            "prober = \"http3\"\ntimeout = \"3s\"\n[http]\n{extra}\n[tls]\nca-file = \"{ca}\"\nserver-name = \"localhost\"\n"
        )
    };
    let base = format!("https://127.0.0.1:{port}");

    let ok = support::probe(&m("body-regex = \"hello over h3\""), &format!("{base}/ok")).await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(ok.facts.http_status, Some(200));
    assert_eq!(ok.facts.http_version, Some(3.0));
    assert_eq!(ok.facts.tls.as_ref().unwrap().version, "TLS 1.3");
    for phase in [
        Phase::Resolve,
        Phase::Tls,
        Phase::FirstByte,
        Phase::Transfer,
    ] {
        assert!(ok.phase(phase).is_some(), "{phase:?}: {ok:?}");
    }

    let redir = support::probe(&m(""), &format!("{base}/redir")).await;
    assert!(redir.success, "{redir:?}");
    assert_eq!(redir.facts.redirects, 1);

    let missing = support::probe(&m(""), &format!("{base}/missing")).await;
    assert_eq!(
        missing.failure,
        Some(Failure::UnexpectedStatus(404)),
        "{missing:?}"
    );
    let mismatch = support::probe(&m("body-regex = \"^bye\""), &format!("{base}/ok")).await;
    assert_eq!(
        mismatch.failure,
        Some(Failure::BodyMismatch),
        "{mismatch:?}"
    );

    // Without the test CA the chain is untrusted.
    let untrusted = support::probe(
        "prober = \"http3\"\ntimeout = \"3s\"\n[tls]\nserver-name = \"localhost\"\n",
        &format!("{base}/ok"),
    )
    .await;
    assert_eq!(untrusted.reason(), "cert_untrusted", "{untrusted:?}");

    // Nothing listens: QUIC gets no answer, the deadline ends the probe in the handshake.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let t0 = Instant::now();
    let out = support::probe(
        &m("").replace("timeout = \"3s\"", "timeout = \"300ms\""),
        &format!(
            "https://127.0.0.1:{}/ok",
            silent.local_addr().unwrap().port()
        ),
    )
    .await;
    assert_eq!(
        out.failure,
        Some(Failure::Timeout(Some(Phase::Tls))),
        "{out:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
    server.close(0u32.into(), b"done");
}
