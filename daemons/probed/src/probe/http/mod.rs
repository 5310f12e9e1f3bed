//! HTTP/1.1 and HTTP/2 probes on hyper's connection API, so every phase is timed on its own:
//! resolve, connect, TLS (ALPN picks h2 or http/1.1), first byte (request sent until the
//! response head) and transfer (body). Checks the status and an optional body regex, and
//! follows redirects (each hop on a fresh connection; phases are summed over hops).

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::address::uri_host;
use super::net::{self, Stream};
use super::{Address, Failure, Phase, Prepared, Run};
use crate::config::{HttpModule, HttpVersion, Module, Prober};

/// Largest body kept for a `body-regex` check: bigger bodies fail the probe rather than eat
/// memory (256 concurrent probes × 2 MiB stays well inside the appliance's RAM). Without a
/// regex, bodies of any size are counted and dropped as they arrive.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// The `http` probe.
pub async fn probe(
    run: &mut Run,
    addr: &Address,
    module: &Module,
    prepared: &Prepared,
) -> Result<(), Failure> {
    let Address::Url(url) = addr else {
        return Err(Failure::Protocol("http probes need a URL".to_owned()));
    };
    static DEFAULT: LazyLock<HttpModule> = LazyLock::new(HttpModule::default);
    let opts = module.http.as_ref().unwrap_or(&DEFAULT);
    let mut url = url.clone();
    let mut method = Method::from_bytes(opts.method.as_bytes())
        .map_err(|_| Failure::Protocol(format!("bad method {}", opts.method)))?;
    let mut body = Bytes::from(opts.body.clone().into_bytes());
    loop {
        // Boxed: an HTTP/1.1 or HTTP/2 probe in flight does not carry HTTP/3's state.
        let (status, location, resp_body) = if module.prober == Prober::Http3 {
            Box::pin(super::http3::exchange(
                run,
                &url,
                &method,
                body.clone(),
                opts,
                module,
                prepared,
            ))
            .await?
        } else {
            Box::pin(exchange(
                run,
                &url,
                &method,
                body.clone(),
                opts,
                module,
                prepared,
            ))
            .await?
        };
        run.facts.http_status = Some(status);
        let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
        if redirect && opts.follow_redirects {
            let Some(location) = location else {
                return Err(Failure::Protocol(format!(
                    "redirect {status} without Location"
                )));
            };
            if run.facts.redirects >= opts.max_redirects {
                return Err(Failure::TooManyRedirects);
            }
            run.facts.redirects += 1;
            url = join(&url, &location)
                .ok_or_else(|| Failure::Protocol(format!("bad Location \"{location}\"")))?;
            if status == 303 || ((status == 301 || status == 302) && method == Method::POST) {
                method = Method::GET;
                body = Bytes::new();
            }
            continue;
        }
        let ok = if opts.valid_status_codes.is_empty() {
            (200..300).contains(&status)
        } else {
            opts.valid_status_codes.contains(&status)
        };
        if !ok {
            return Err(Failure::UnexpectedStatus(status));
        }
        if let Some(re) = &prepared.expect
            && !re.is_match(&resp_body)
        {
            return Err(Failure::BodyMismatch);
        }
        return Ok(());
    }
}

/// Resolves `location` against `base` (absolute URL, absolute path or relative path).
fn join(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let path = if location.starts_with('/') {
        location.to_owned()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    format!("{scheme}://{authority}{path}").parse().ok()
}

/// One request on a fresh connection: returns status, Location and body.
async fn exchange(
    run: &mut Run,
    url: &Uri,
    method: &Method,
    body: Bytes,
    opts: &HttpModule,
    module: &Module,
    prepared: &Prepared,
) -> Result<(u16, Option<String>, Bytes), Failure> {
    let https = url.scheme_str() == Some("https");
    let host = uri_host(url).to_owned();
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let sa = net::resolve(run, &host, port, module.ip_version).await?;
    let tcp = net::connect(run, sa).await?;
    let (stream, h2): (Box<dyn Stream>, bool) = if https {
        let client = prepared
            .tls
            .as_ref()
            .ok_or_else(|| Failure::Protocol("module has no TLS settings".to_owned()))?;
        let alpn: &[&[u8]] = match opts.version {
            HttpVersion::Auto => &[b"h2", b"http/1.1"],
            HttpVersion::Http1 => &[b"http/1.1"],
            HttpVersion::Http2 => &[b"h2"],
        };
        let tls = client.handshake(run, tcp, &host, alpn).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        if opts.version == HttpVersion::Http2 && !h2 {
            return Err(Failure::Protocol(
                "server did not agree to HTTP/2 (ALPN)".to_owned(),
            ));
        }
        (Box::new(tls), h2)
    } else {
        (Box::new(tcp), opts.version == HttpVersion::Http2)
    };

    let authority = url
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let target = if h2 {
        url.clone()
    } else {
        url.path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|_| Failure::Protocol("bad request path".to_owned()))?
    };
    let mut req = Request::builder().method(method.clone()).uri(target);
    if !h2 {
        req = req.header(http::header::HOST, authority);
    }
    req = req.header(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("rookery-probed/", env!("CARGO_PKG_VERSION"))),
    );
    for (k, v) in &opts.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| Failure::Protocol(format!("cannot build request: {e}")))?;

    let io = TokioIo::new(stream);
    let (resp, conn_task) = run
        .phase(Phase::FirstByte, async {
            let proto = |e: hyper::Error| Failure::Protocol(e.to_string());
            if h2 {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(proto)?;
                let task = tokio::spawn(conn);
                let resp = sender.send_request(req).await.map_err(hyper_failure)?;
                Ok((resp, task))
            } else {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(proto)?;
                let task = tokio::spawn(conn);
                let resp = sender.send_request(req).await.map_err(hyper_failure)?;
                Ok((resp, task))
            }
        })
        .await?;
    let status = resp.status().as_u16();
    run.facts.http_version = Some(match resp.version() {
        http::Version::HTTP_2 => 2.0,
        http::Version::HTTP_10 => 1.0,
        _ => 1.1,
    });
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let keep = prepared.expect.is_some();
    let result = run
        .phase(Phase::Transfer, async {
            let mut body = resp.into_body();
            let mut kept = Vec::new();
            let mut total = 0u64;
            // Bounded by the deadline; only a body regex needs the bytes kept.
            while let Some(frame) = body.frame().await {
                let frame =
                    frame.map_err(|e| Failure::Protocol(format!("cannot read body: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    total += data.len() as u64;
                    if keep {
                        if kept.len() + data.len() > MAX_BODY {
                            return Err(Failure::Protocol(format!(
                                "body larger than {MAX_BODY} bytes, too large for body-regex"
                            )));
                        }
                        kept.extend_from_slice(&data);
                    }
                }
            }
            Ok((total, Bytes::from(kept)))
        })
        .await;
    conn_task.abort();
    let (total, bytes) = result?;
    run.facts.body_bytes = Some(total);
    Ok((status, location, bytes))
}

fn hyper_failure(err: hyper::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return net::io_failure(io);
        }
        source = s.source();
    }
    if err.is_incomplete_message() || err.is_canceled() {
        return Failure::Reset;
    }
    Failure::Protocol(err.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn redirect_locations_resolve_against_the_base() {
        let base: Uri = "http://h:8080/a/b?q=1".parse().unwrap();
        assert_eq!(join(&base, "/x").unwrap(), "http://h:8080/x");
        assert_eq!(join(&base, "c").unwrap(), "http://h:8080/a/c");
        assert_eq!(join(&base, "https://other/").unwrap(), "https://other/");
    }
}
