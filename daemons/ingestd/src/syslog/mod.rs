//! Syslog inputs: UDP (RFC 5426), TCP (RFC 6587) and TLS (RFC 5425).
//!
//! Parsing ([`parse`]) and stream framing ([`framing`]) are pure; this module holds the
//! sockets. UDP has no flow control, so a full write queue is a counted `queue_full`
//! rejection. TCP and TLS connections read the next chunk only after the records of the
//! previous one are committed: a slow store slows the senders (TCP backpressure) instead of
//! growing memory. Oversized messages and bad octet counts are counted rejections.

pub mod framing;
pub mod parse;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::events::Metrics;
use crate::record::{Input, LogRecord};
use crate::store::{Store, StoreError};
use framing::{Frame, Framer};

/// Shared by every syslog listener.
#[derive(Clone)]
pub struct Ctx {
    /// Where records go.
    pub store: Store,
    /// Counters.
    pub metrics: Metrics,
    /// Longest message accepted.
    pub max_message_bytes: usize,
    /// Open TCP + TLS connections allowed.
    pub connections: Arc<Semaphore>,
    /// Stops the listeners.
    pub shutdown: CancellationToken,
}

/// Receives datagrams on `socket` until shutdown.
pub async fn serve_udp(socket: UdpSocket, ctx: Ctx) {
    // One byte more than the limit tells an oversized datagram from one exactly at it.
    let mut buf = vec![0u8; ctx.max_message_bytes + 1];
    loop {
        let (n, peer) = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!(error = %err, "Syslog UDP receive failed.");
                    continue;
                }
            },
        };
        let input = Input::Udp.as_str();
        ctx.metrics.receive(input, 1);
        if n > ctx.max_message_bytes {
            ctx.metrics.reject(input, "too_long", 1);
            continue;
        }
        let rec = record(&buf[..n], Input::Udp, &peer.to_string(), &ctx.metrics);
        match ctx.store.try_submit(vec![rec]) {
            // Nobody waits for a datagram's commit; the writer counts it as stored.
            Ok(_ack) => {}
            Err(StoreError::QueueFull) => ctx.metrics.reject(input, "queue_full", 1),
            Err(_) => ctx.metrics.reject(input, "store_error", 1),
        }
    }
}

fn record(bytes: &[u8], input: Input, peer: &str, metrics: &Metrics) -> LogRecord {
    let mut rec = parse::parse(bytes, crate::now_ns(), peer);
    rec.input = input.as_str().to_owned();
    if rec.parse_error.is_some() {
        metrics
            .parse_errors
            .get_or_create(&crate::events::InputLabels {
                input: rec.input.clone(),
            })
            .inc();
    }
    rec
}

/// Accepts TCP (or, with `tls`, TLS) connections on `listener` until shutdown.
pub async fn serve_stream(listener: TcpListener, tls: Option<TlsAcceptor>, ctx: Ctx) {
    let input = if tls.is_some() {
        Input::Tls
    } else {
        Input::Tcp
    };
    loop {
        let (stream, peer) = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!(error = %err, "Syslog accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
            ctx.metrics
                .reject(input.as_str(), "too_many_connections", 1);
            drop(stream);
            continue;
        };
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            ctx.metrics.connections.inc();
            match tls {
                None => connection(stream, peer, input, &ctx).await,
                Some(acceptor) => match accept_tls(&acceptor, stream).await {
                    Ok(s) => connection(s, peer, input, &ctx).await,
                    Err(err) => {
                        ctx.metrics.reject(input.as_str(), "tls_handshake", 1);
                        tracing::debug!(peer = %peer, error = %err, "Syslog TLS handshake failed.");
                    }
                },
            }
            ctx.metrics.connections.dec();
            drop(permit);
        });
    }
}

async fn accept_tls(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    // A peer that opens a connection and never speaks must not hold a slot forever.
    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// Reads one connection: frames, parses, and commits before reading on.
async fn connection<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    input: Input,
    ctx: &Ctx,
) {
    let peer = peer.to_string();
    let name = input.as_str();
    let mut framer = Framer::new(ctx.max_message_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            r = stream.read(&mut buf) => match r {
                Ok(0) => return,
                Ok(n) => n,
                Err(err) => {
                    tracing::debug!(peer = %peer, error = %err, "Syslog connection read failed.");
                    return;
                }
            },
        };
        framer.push(&buf[..n]);
        let mut records = Vec::new();
        let mut fatal = false;
        while let Some(frame) = framer.next_frame() {
            match frame {
                Frame::Message(m) => {
                    ctx.metrics.receive(name, 1);
                    records.push(record(&m, input, &peer, &ctx.metrics));
                }
                Frame::TooLong { .. } => {
                    ctx.metrics.receive(name, 1);
                    ctx.metrics.reject(name, "too_long", 1);
                }
                Frame::BadCount(shown) => {
                    ctx.metrics.reject(name, "bad_frame", 1);
                    tracing::debug!(peer = %peer, start = %shown, "Syslog octet count is not a number; closing the connection.");
                    fatal = true;
                    break;
                }
            }
        }
        // Backpressure: the next read waits until these records are committed.
        for chunk in records.chunks(ctx.store.capacity().max(1)) {
            let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            // A failed commit is counted by the writer; a failed submission here.
            let committed = match ctx.store.submit(chunk.to_vec()).await {
                Ok(ack) => ack.committed().await,
                Err(e) => {
                    ctx.metrics.reject(name, "store_error", n);
                    Err(e)
                }
            };
            if let Err(err) = committed {
                tracing::warn!(peer = %peer, error = %err, "Syslog records not stored; closing the connection.");
                return;
            }
        }
        if fatal {
            return;
        }
    }
}
