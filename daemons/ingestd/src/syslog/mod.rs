//! Syslog inputs: UDP (RFC 5426), TCP (RFC 6587) and TLS (RFC 5425).
//!
//! Parsing ([`parse`]) and stream framing ([`framing`]) are pure; this module holds the
//! sockets. UDP has no flow control, so a full write queue is a counted `queue_full`
//! rejection. TCP and TLS connections have at most one submission in the store at a time and
//! read at most `READ_AHEAD_BYTES` (256 KiB) ahead of it (parsed while it commits, submitted
//! together once it has): a slow store slows the senders (TCP backpressure) instead of growing
//! memory.
//! Oversized messages and bad octet counts are counted rejections.

pub mod framing;
pub mod parse;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
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

/// A submission's commit, awaited while the connection reads on.
type Commit = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// Input read ahead of the commit on one connection, in bytes: while the previous records
/// commit, the connection reads and parses up to this much more, then waits.
const READ_AHEAD_BYTES: usize = 256 * 1024;

/// Reads one connection: frames, parses, and commits; reads ahead of the commit in flight by
/// at most [`READ_AHEAD_BYTES`] of input, so a slow store slows the sender.
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
    // Parsed, not yet submitted; the bytes they were read from.
    let mut records = Vec::new();
    let mut ahead = 0usize;
    // The commit in flight (at most one per connection).
    let mut pending: Option<Commit> = None;
    // No more reads: end of stream, read error or a fatal framing error.
    let mut done = false;
    let limit = ctx.store.capacity().max(1);
    loop {
        if pending.is_none() && !records.is_empty() {
            let take = records.len().min(limit);
            let chunk: Vec<LogRecord> = records.drain(..take).collect();
            if records.is_empty() {
                ahead = 0;
            }
            let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            match ctx.store.submit(chunk).await {
                Ok(ack) => pending = Some(Box::pin(ack.committed())),
                Err(err) => {
                    ctx.metrics.reject(name, "store_error", n);
                    tracing::warn!(peer = %peer, error = %err, "Syslog records not stored; closing the connection.");
                    return;
                }
            }
        }
        if pending.is_none() && records.is_empty() {
            if done {
                return;
            }
            // Nothing outstanding: bytes that gave no record (oversized messages skipped, a
            // long message still incomplete) must not stop the reads.
            ahead = 0;
        }
        let room = !done && ahead < READ_AHEAD_BYTES;
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            r = async { match pending.as_mut() { Some(p) => p.await, None => std::future::pending().await } }, if pending.is_some() => {
                pending = None;
                // A failed commit is counted by the writer.
                if let Err(err) = r {
                    tracing::warn!(peer = %peer, error = %err, "Syslog records not stored; closing the connection.");
                    return;
                }
            }
            r = stream.read(&mut buf), if room => match r {
                Ok(0) => done = true,
                Ok(n) => {
                    ahead += n;
                    framer.push(&buf[..n]);
                    let mut received = 0;
                    while let Some(frame) = framer.next_frame() {
                        match frame {
                            Frame::Message(m) => {
                                received += 1;
                                records.push(record(&m, input, &peer, &ctx.metrics));
                            }
                            Frame::TooLong { .. } => {
                                received += 1;
                                ctx.metrics.reject(name, "too_long", 1);
                            }
                            Frame::BadCount(shown) => {
                                ctx.metrics.reject(name, "bad_frame", 1);
                                tracing::debug!(peer = %peer, start = %shown, "Syslog octet count is not a number; closing the connection.");
                                done = true;
                                break;
                            }
                        }
                    }
                    ctx.metrics.receive(name, received);
                }
                Err(err) => {
                    tracing::debug!(peer = %peer, error = %err, "Syslog connection read failed.");
                    done = true;
                }
            },
        }
    }
}
