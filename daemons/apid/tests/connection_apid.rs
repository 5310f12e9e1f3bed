//! Keep-alive connections survive requests that apid refuses before reading their body
//! (401 anonymous, 405 wrong method, 404 no route): the body is read first, so the connection
//! stays usable for the next request. Before, hyper closed such a connection right after the
//! answer without saying so, and a client that had already sent its next request on it saw
//! a reset (schemathesis' "EOF occurred in violation of protocol"). A body over the limit is
//! refused with `Connection: close`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;
use std::time::Duration;

use rookery_apid::app::Running;
use rookery_apid::config::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const LIMIT: usize = 4096;

/// One answer: the status line, its headers (lowercase), and its body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

/// Reads one HTTP/1.1 answer with a Content-Length body; `None` on a closed connection.
async fn read_answer<S: AsyncReadExt + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<Answer> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < end + len {
        let mut chunk = [0; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[end..end + len]).into_owned();
    buf.drain(..end + len);
    Some(Answer {
        status: head[9..12].parse().unwrap(),
        headers: head,
        body,
    })
}

#[tokio::test]
async fn refused_requests_leave_the_connection_usable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.redirect_listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.body_limit = LIMIT;
    cfg.tls.cert = dir.path().join("tls/apid.crt");
    cfg.tls.key = dir.path().join("tls/apid.key");
    cfg.auth.signing_key = dir.path().join("state/token-signing.key");
    cfg.auth.initial_admin = dir.path().join("initial-admin");
    cfg.state.directory = dir.path().join("state");
    cfg.daemons.run_dir = dir.path().join("run");
    cfg.daemons.config_dir = dir.path().join("etc");
    let stop = CancellationToken::new();
    let running = Running::start(&cfg, stop.clone()).await.unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&cfg.tls.cert).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(running.https).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut buf = Vec::new();
    let body = br#"{"username":"x","password":"y","role":"viewer"}"#;
    // Each refused request sends its head first and its body a moment later, as clients that
    // write them separately do: the refusal is decided before the body arrives.
    for (method, path, status) in [
        ("POST", "/api/v1/users", 401),
        ("OPTIONS", "/api/v1/licence/key", 405),
        ("POST", "/api/v1/nothing-here", 404),
    ] {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        tls.write_all(body).await.unwrap();
        tls.flush().await.unwrap();
        let a = read_answer(&mut tls, &mut buf)
            .await
            .unwrap_or_else(|| panic!("{method} {path}: connection closed"));
        assert_eq!(a.status, status, "{method} {path}: {}", a.body);
        assert!(!a.headers.contains("connection: close"), "{}", a.headers);
        // The next request on the same connection is answered.
        tls.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let next = read_answer(&mut tls, &mut buf)
            .await
            .unwrap_or_else(|| panic!("after {method} {path}: the connection was closed"));
        assert_eq!(next.status, 200);
    }

    // Over the limit: refused at once, in the error JSON, and the connection is closed.
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        LIMIT + 1
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let a = read_answer(&mut tls, &mut buf).await.unwrap();
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.headers.contains("connection: close"), "{}", a.headers);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["error"], "payload_too_large", "{v}");
    assert!(read_answer(&mut tls, &mut buf).await.is_none());
    stop.cancel();
}
