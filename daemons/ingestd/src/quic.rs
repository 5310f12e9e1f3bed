//! Forwarding between Rookery appliances over QUIC (quinn) with mutual TLS.
//!
//! The receiver (`[quic] listen`) accepts only clients whose certificate chains to
//! `client-ca-file`; the sender (`[forward] quic-peer`) accepts only a server whose
//! certificate chains to `quic-ca-file` and names `quic-server-name`, and shows its own
//! certificate. ALPN `rookery-forward/1`. One bidirectional stream per batch: the sender
//! writes one byte of kind (`L` logs, `M` metrics) and an OTLP export request (protobuf, the
//! same encoding as OTLP forwarding), then finishes its side; the receiver commits the
//! records like its OTLP input (input `quic`) and only then answers one status byte — 0
//! stored (followed by the OTLP export response), 1 retry later (a store error), 2 refused
//! (the batch is malformed; the sender drops it) — and a text.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::otlp::OtlpCtx;

/// ALPN protocol of Rookery-to-Rookery forwarding.
pub const ALPN: &[u8] = b"rookery-forward/1";
/// Kind byte of a log batch.
pub const KIND_LOGS: u8 = b'L';
/// Kind byte of a metric batch.
pub const KIND_METRICS: u8 = b'M';
/// Status byte: committed.
pub const STORED: u8 = 0;
/// Status byte: not committed, send again later.
pub const RETRY: u8 = 1;
/// Status byte: malformed, never send again.
pub const REFUSED: u8 = 2;
/// Input name in metrics labels and stored records.
pub const INPUT: &str = "quic";

fn certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cannot read {key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {} holds no certificate", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read {key} {}: {e}", path.display()))
}

fn roots(path: &Path, key: &str) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(path, key)? {
        roots
            .add(c)
            .map_err(|e| format!("{key} {}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    Arc::new(t)
}

/// Binds the receiver on `addr` with the server certificate and the CA of its clients.
pub fn endpoint(
    addr: SocketAddr,
    c: &crate::config::QuicSection,
) -> Result<quinn::Endpoint, String> {
    let (Some(cert), Some(key), Some(ca)) = (&c.cert_file, &c.key_file, &c.client_ca_file) else {
        return Err(
            "quic.listen needs quic.cert-file, quic.key-file and quic.client-ca-file".into(),
        );
    };
    let verifier = rustls::server::WebPkiClientVerifier::builder(roots(ca, "quic.client-ca-file")?)
        .build()
        .map_err(|e| format!("quic.client-ca-file {}: {e}", ca.display()))?;
    let mut tls = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(cert, "quic.cert-file")?,
            private_key(key, "quic.key-file")?,
        )
        .map_err(|e| format!("quic.cert-file and quic.key-file do not fit: {e}"))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| format!("QUIC server TLS: {e}"))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport());
    let socket = rookery_common::listen::udp_std(addr)
        .map_err(|e| format!("cannot listen on quic.listen {addr}: {e}"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| format!("cannot listen on quic.listen {addr}: {e}"))
}

/// Serves forwarded batches on `endpoint` until `shutdown`.
pub async fn serve(
    endpoint: quinn::Endpoint,
    ctx: OtlpCtx,
    max_bytes: usize,
    shutdown: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            match incoming.await {
                Ok(conn) => connection(conn, ctx, max_bytes, shutdown).await,
                Err(e) => {
                    ctx.metrics.reject(INPUT, "tls_handshake", 1);
                    tracing::warn!(peer = %peer, error = %e, "QUIC forwarding handshake failed.");
                }
            }
        });
    }
    endpoint.close(0u32.into(), b"shutting down");
}

async fn connection(
    conn: quinn::Connection,
    ctx: OtlpCtx,
    max_bytes: usize,
    shutdown: CancellationToken,
) {
    let peer = conn.remote_address().to_string();
    loop {
        let (send, recv) = tokio::select! {
            () = shutdown.cancelled() => return,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        tokio::spawn(batch(send, recv, ctx.clone(), max_bytes, peer.clone()));
    }
}

async fn batch(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: OtlpCtx,
    max_bytes: usize,
    peer: String,
) {
    let (status, body) = match recv.read_to_end(max_bytes + 1).await {
        Err(e) => {
            ctx.metrics.reject(INPUT, "bad_request", 1);
            (
                REFUSED,
                format!("cannot read the batch (at most {max_bytes} bytes): {e}").into_bytes(),
            )
        }
        Ok(data) => store(&ctx, &data, &peer).await,
    };
    let mut reply = vec![status];
    reply.extend_from_slice(&body);
    let _ = send.write_all(&reply).await;
    let _ = send.finish();
    let _ = send.stopped().await;
}

async fn store(ctx: &OtlpCtx, data: &[u8], peer: &str) -> (u8, Vec<u8>) {
    let Some((&kind, body)) = data.split_first() else {
        ctx.metrics.reject(INPUT, "bad_request", 1);
        return (REFUSED, b"empty batch".to_vec());
    };
    let committed = match kind {
        KIND_LOGS => {
            let req = match ExportLogsServiceRequest::decode(body) {
                Ok(r) => r,
                Err(e) => {
                    ctx.metrics.reject(INPUT, "bad_request", 1);
                    return (
                        REFUSED,
                        format!("not an ExportLogsServiceRequest: {e}").into_bytes(),
                    );
                }
            };
            let mut records = crate::otlp::logs(req, crate::now_ns(), peer);
            for r in &mut records {
                INPUT.clone_into(&mut r.input);
            }
            let n = records.len() as u64;
            ctx.metrics.receive(INPUT, n);
            commit(ctx, n, ctx.store.submit(records).await)
                .await
                .map(|()| {
                    ExportLogsServiceResponse {
                        partial_success: None,
                    }
                    .encode_to_vec()
                })
        }
        KIND_METRICS => {
            let parsed = ExportMetricsServiceRequest::decode(body)
                .map_err(|e| format!("not an ExportMetricsServiceRequest: {e}"))
                .and_then(|req| crate::otlp::series(req, ctx.max_labels));
            let (series, rejected, why) = match parsed {
                Ok(v) => v,
                Err(msg) => {
                    ctx.metrics.reject(INPUT, "bad_request", 1);
                    return (REFUSED, msg.into_bytes());
                }
            };
            if rejected > 0 {
                ctx.metrics.reject(
                    INPUT,
                    "unsupported_type",
                    u64::try_from(rejected).unwrap_or(0),
                );
            }
            let n: u64 = series.iter().map(|s| s.samples.len() as u64).sum();
            ctx.metrics.receive(INPUT, n);
            commit(ctx, n, ctx.store.submit_samples(series).await)
                .await
                .map(|()| {
                    ExportMetricsServiceResponse {
                        partial_success: (rejected > 0).then_some(ExportMetricsPartialSuccess {
                            rejected_data_points: rejected,
                            error_message: why,
                        }),
                    }
                    .encode_to_vec()
                })
        }
        other => {
            ctx.metrics.reject(INPUT, "bad_request", 1);
            return (
                REFUSED,
                format!("unknown batch kind {other:#04x}").into_bytes(),
            );
        }
    };
    match committed {
        Ok(resp) => (STORED, resp),
        Err(e) => (RETRY, e.into_bytes()),
    }
}

async fn commit(
    ctx: &OtlpCtx,
    n: u64,
    submitted: Result<crate::store::Ack, crate::store::StoreError>,
) -> Result<(), String> {
    let r = match submitted {
        Ok(ack) => ack.committed().await,
        Err(e) => Err(e),
    };
    r.map_err(|e| {
        ctx.metrics.reject(INPUT, "store_error", n);
        rookery_common::error_chain(&e)
    })
}

/// The sending side: one connection to `[forward] quic-peer`, made again after a failure.
pub struct Sender {
    peer: String,
    server_name: String,
    client: quinn::ClientConfig,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<(quinn::Endpoint, quinn::Connection)>>,
}

/// What the receiver answered.
pub enum Reply {
    /// Committed; the OTLP export response follows.
    Stored(Vec<u8>),
    /// Not committed; retry.
    Retry(String),
    /// Malformed; drop.
    Refused(String),
}

impl Sender {
    /// A sender per the `[forward]` section (`quic-peer` set).
    pub fn new(c: &crate::config::ForwardSection) -> Result<Self, String> {
        let (Some(cert), Some(key), Some(ca)) =
            (&c.quic_cert_file, &c.quic_key_file, &c.quic_ca_file)
        else {
            return Err("forward.quic-peer needs forward.quic-cert-file, forward.quic-key-file and forward.quic-ca-file".into());
        };
        let roots = roots(ca, "forward.quic-ca-file")?;
        let mut tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                certs(cert, "forward.quic-cert-file")?,
                private_key(key, "forward.quic-key-file")?,
            )
            .map_err(|e| {
                format!("forward.quic-cert-file and forward.quic-key-file do not fit: {e}")
            })?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| format!("QUIC client TLS: {e}"))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport());
        let server_name = if c.quic_server_name.is_empty() {
            c.quic_peer
                .rsplit_once(':')
                .map_or(c.quic_peer.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        } else {
            c.quic_server_name.clone()
        };
        Ok(Self {
            peer: c.quic_peer.clone(),
            server_name,
            client,
            timeout: c.timeout,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// `quic://host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("quic://{}", self.peer)
    }

    async fn connect(&self) -> Result<(quinn::Endpoint, quinn::Connection), String> {
        let addr = tokio::net::lookup_host(&self.peer)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.peer))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", self.peer))?;
        let local: SocketAddr = if addr.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let mut ep =
            quinn::Endpoint::client(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        ep.set_default_client_config(self.client.clone());
        let conn = ep
            .connect(addr, &self.server_name)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?
            .await
            .map_err(|e| {
                format!(
                    "QUIC handshake with {addr} ({}) failed: {e}",
                    self.server_name
                )
            })?;
        Ok((ep, conn))
    }

    /// Sends one batch of `kind` and waits for the receiver's answer (bounded by the
    /// forwarding timeout); a transport failure drops the connection and is an `Err`.
    pub async fn send(&self, kind: u8, body: &[u8]) -> Result<Reply, String> {
        let mut guard = self.conn.lock().await;
        let attempt = async {
            if guard
                .as_ref()
                .is_none_or(|(_, c)| c.close_reason().is_some())
            {
                *guard = Some(self.connect().await?);
            }
            let Some((_, conn)) = guard.as_ref() else {
                return Err("no connection".to_owned());
            };
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(&[kind]).await.map_err(|e| e.to_string())?;
            send.write_all(body).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            recv.read_to_end(16 * 1024 * 1024)
                .await
                .map_err(|e| e.to_string())
        };
        let reply = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                *guard = None;
                return Err(e);
            }
            Err(_) => {
                *guard = None;
                return Err(format!("no answer within {} s", self.timeout.as_secs()));
            }
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match reply.split_first() {
            Some((&STORED, rest)) => Ok(Reply::Stored(rest.to_vec())),
            Some((&RETRY, rest)) => Ok(Reply::Retry(text(rest))),
            Some((&REFUSED, rest)) => Ok(Reply::Refused(text(rest))),
            _ => {
                *guard = None;
                Err("the receiver closed the stream without an answer".to_owned())
            }
        }
    }
}
