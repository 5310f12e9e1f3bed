//! TCP connect, optionally with TLS, an optional message to send and an optional regular
//! expression the reply must match (banner checks, simple line protocols).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::net::{self, Stream};
use super::{Address, Failure, Phase, Prepared, Run};
use crate::config::Module;

/// Bytes of reply kept for the expect check: banners and status lines fit easily.
pub const MAX_REPLY: usize = 64 * 1024;

/// Reads from `stream` until `re` matches what arrived, the peer closes, or [`MAX_REPLY`]
/// bytes; the caller bounds it in time.
pub async fn read_until_match<S: AsyncRead + Unpin>(
    stream: &mut S,
    re: &regex::bytes::Regex,
) -> Result<(), Failure> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| net::io_failure(&e))?;
        if n == 0 {
            return Err(Failure::BodyMismatch);
        }
        buf.extend_from_slice(&chunk[..n]);
        if re.is_match(&buf) {
            return Ok(());
        }
        if buf.len() >= MAX_REPLY {
            return Err(Failure::BodyMismatch);
        }
    }
}

/// The `tcp` probe.
pub async fn probe(
    run: &mut Run,
    addr: &Address,
    module: &Module,
    prepared: &Prepared,
) -> Result<(), Failure> {
    let Address::HostPort { host, port } = addr else {
        return Err(Failure::Protocol("tcp probes need host:port".to_owned()));
    };
    let opts = module.tcp.clone().unwrap_or_default();
    let sa = net::resolve(run, host, *port, module.ip_version).await?;
    let tcp = net::connect(run, sa).await?;
    let mut stream: Box<dyn Stream> = match (&prepared.tls, opts.tls) {
        (Some(client), true) => Box::new(client.handshake(run, tcp, host, &[]).await?),
        _ => Box::new(tcp),
    };
    if opts.send.is_empty() && prepared.expect.is_none() {
        return Ok(());
    }
    let send = opts.send.as_bytes();
    let expect = prepared.expect.as_ref();
    run.phase(Phase::FirstByte, async {
        if !send.is_empty() {
            stream
                .write_all(send)
                .await
                .map_err(|e| net::io_failure(&e))?;
            stream.flush().await.map_err(|e| net::io_failure(&e))?;
        }
        match expect {
            Some(re) => read_until_match(&mut stream, re).await,
            None => Ok(()),
        }
    })
    .await?;
    let _ = stream.shutdown().await;
    Ok(())
}
