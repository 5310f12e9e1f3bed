//! HTTP/3: one request over QUIC (quinn, rustls with ring) with h3. The module's `[http]`
//! options apply as for HTTP/1.1 and HTTP/2 (the request/redirect loop is shared with
//! [`super::http`]); this module is one exchange: resolve, QUIC + TLS 1.3 handshake (the
//! `tls` phase, ALPN h3), request until the response head (`processing`) and body
//! (`transfer`). A QUIC peer that never answers is a `timeout`: QUIC has no refusal.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{Method, Request, Uri};

use super::address::uri_host;
use super::http::MAX_BODY;
use super::{Failure, Phase, Prepared, Run, net};
use crate::config::{HttpModule, Module};

/// One HTTP/3 request on a fresh QUIC connection: returns status, Location and body.
pub async fn exchange(
    run: &mut Run,
    url: &Uri,
    method: &Method,
    body: Bytes,
    opts: &HttpModule,
    module: &Module,
    prepared: &Prepared,
) -> Result<(u16, Option<String>, Bytes), Failure> {
    if url.scheme_str() != Some("https") {
        return Err(Failure::Protocol("HTTP/3 needs an https URL".to_owned()));
    }
    let host = uri_host(url).to_owned();
    let port = url.port_u16().unwrap_or(443);
    let client = prepared
        .tls
        .as_ref()
        .ok_or_else(|| Failure::Protocol("module has no TLS settings".to_owned()))?;
    let sa = net::resolve(run, &host, port, module.ip_version).await?;
    let endpoint = run
        .phase(Phase::Connect, async {
            let local: SocketAddr = if sa.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            quinn::Endpoint::client(local).map_err(|e| net::io_failure(&e))
        })
        .await?;
    let hs = client.prepare(&host, &[b"h3"], true)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(hs.config.clone())
        .map_err(|e| Failure::Tls(format!("cannot use the TLS settings for QUIC: {e}")))?;
    let config = quinn::ClientConfig::new(Arc::new(quic));
    let server_name = hs.server_name.to_str().into_owned();
    let connecting = endpoint
        .connect_with(config, sa, &server_name)
        .map_err(|e| Failure::Protocol(format!("cannot start QUIC: {e}")))?;
    let conn = run
        .phase(Phase::Tls, async {
            connecting.await.map_err(|e| match e {
                quinn::ConnectionError::TimedOut => Failure::Timeout(Some(Phase::Tls)),
                quinn::ConnectionError::Reset => Failure::Reset,
                other => Failure::Tls(other.to_string()),
            })
        })
        .await;
    let conn = match conn {
        Ok(c) => {
            client.conclude(run, &hs, Ok(("TLS 1.3".to_owned(), String::new())))?;
            c
        }
        Err(e) => {
            return Err(client.conclude(run, &hs, Err(e.clone())).err().unwrap_or(e));
        }
    };

    let mut req = Request::builder().method(method.clone()).uri(url.clone());
    req = req.header(
        http::header::USER_AGENT,
        concat!("rookery-probed/", env!("CARGO_PKG_VERSION")),
    );
    for (k, v) in &opts.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(())
        .map_err(|e| Failure::Protocol(format!("cannot build request: {e}")))?;
    let h3_err = |e: &dyn std::fmt::Display| Failure::Protocol(format!("HTTP/3: {e}"));
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .map_err(|e| h3_err(&e))?;
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let result = async {
        let (resp, mut stream) = run
            .phase(Phase::FirstByte, async {
                let mut stream = sender.send_request(req).await.map_err(|e| h3_err(&e))?;
                // A server may answer and stop reading before our side is finished (it sends
                // STOP_SENDING); then these fail although the response is on its way, so
                // only the response decides.
                if !body.is_empty() {
                    let _ = stream.send_data(body).await;
                }
                let _ = stream.finish().await;
                let resp = stream.recv_response().await.map_err(|e| h3_err(&e))?;
                Ok((resp, stream))
            })
            .await?;
        let status = resp.status().as_u16();
        run.facts.http_version = Some(3.0);
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let keep = prepared.expect.is_some();
        let (total, bytes) = run
            .phase(Phase::Transfer, async {
                let mut out = Vec::new();
                let mut total = 0u64;
                while let Some(mut chunk) = stream.recv_data().await.map_err(|e| h3_err(&e))? {
                    total += chunk.remaining() as u64;
                    if keep && out.len() + chunk.remaining() > MAX_BODY {
                        return Err(Failure::Protocol(format!(
                            "body larger than {MAX_BODY} bytes, too large for body-regex"
                        )));
                    }
                    while chunk.has_remaining() {
                        let part = chunk.chunk();
                        if keep {
                            out.extend_from_slice(part);
                        }
                        let n = part.len();
                        chunk.advance(n);
                    }
                }
                Ok((total, Bytes::from(out)))
            })
            .await?;
        Ok((status, location, total, bytes))
    }
    .await;
    conn.close(0u32.into(), b"done");
    drive.abort();
    endpoint.close(0u32.into(), b"done");
    let (status, location, total, bytes) = result?;
    run.facts.body_bytes = Some(total);
    Ok((status, location, bytes))
}
