//! SSH: connect, read the server's identification banner, run the key exchange (russh, ring
//! provider) and report the host key's algorithm and SHA-256 fingerprint, the negotiated kex
//! and cipher. An expected fingerprint that differs fails with `host_key_mismatch`; a banner
//! regex that does not match fails with `body_mismatch`. No authentication is attempted.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use russh::keys::{HashAlg, PublicKeyOrCertificate};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Address, Failure, Phase, Prepared, Run, SshFacts, net};
use crate::config::Module;

/// Bytes of the server's first output kept to find the banner (RFC 4253 §4.2: at most 255
/// per line, and a server may send other lines before it).
const BANNER_CAPTURE: usize = 4096;

/// A stream that keeps a copy of the first bytes it reads.
struct Tee<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tee<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let room = BANNER_CAPTURE.saturating_sub(seen.len());
            let new = &buf.filled()[before..];
            seen.extend_from_slice(&new[..new.len().min(room)]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tee<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The banner line (`SSH-2.0-…`) in what the server sent first.
pub fn banner(first_bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(first_bytes)
        .split("\r\n")
        .flat_map(|l| l.split('\n'))
        .find(|l| l.starts_with("SSH-"))
        .map(|l| l.trim_end().to_owned())
}

#[derive(Debug, Default)]
struct Seen {
    facts: SshFacts,
    mismatch: bool,
}

/// russh client handler that records the host key and negotiated algorithms.
struct Observer {
    seen: Arc<Mutex<Seen>>,
    expected: String,
}

impl russh::client::Handler for Observer {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let (algorithm, fingerprint) = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => (
                key.algorithm().as_str().to_owned(),
                key.fingerprint(HashAlg::Sha256).to_string(),
            ),
            PublicKeyOrCertificate::Certificate(cert) => (
                cert.algorithm().as_str().to_owned(),
                cert.public_key().fingerprint(HashAlg::Sha256).to_string(),
            ),
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.facts.key_algorithm = algorithm;
        seen.mismatch = !self.expected.is_empty() && self.expected != fingerprint;
        seen.facts.fingerprint = fingerprint;
        Ok(!seen.mismatch)
    }

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        names: &russh::Names,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.facts.kex = names.kex.as_ref().to_owned();
        seen.facts.cipher = names.cipher.as_ref().to_owned();
        Ok(())
    }
}

/// The `ssh` probe.
pub async fn probe(
    run: &mut Run,
    addr: &Address,
    module: &Module,
    prepared: &Prepared,
) -> Result<(), Failure> {
    let Address::HostPort { host, port } = addr else {
        return Err(Failure::Protocol("ssh probes need host[:port]".to_owned()));
    };
    let opts = module.ssh.clone().unwrap_or_default();
    let sa = net::resolve(run, host, *port, module.ip_version).await?;
    let tcp = net::connect(run, sa).await?;
    let first = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stream = Tee {
        inner: tcp,
        seen: first.clone(),
    };
    let handler = Observer {
        seen: seen.clone(),
        expected: opts.expected_fingerprint.clone(),
    };
    let config = Arc::new(russh::client::Config::default());
    let result = run
        .phase(Phase::Kex, async {
            russh::client::connect_stream(config, stream, handler)
                .await
                .map_err(|e| match e {
                    russh::Error::IO(io) => net::io_failure(&io),
                    russh::Error::Disconnect => Failure::Reset,
                    other => Failure::Protocol(other.to_string()),
                })
        })
        .await;
    let banner_line = banner(&first.lock().unwrap_or_else(PoisonError::into_inner));
    let (mut facts, mismatch) = {
        let s = seen.lock().unwrap_or_else(PoisonError::into_inner);
        (s.facts.clone(), s.mismatch)
    };
    facts.banner = banner_line.clone().unwrap_or_default();
    let got = facts.fingerprint.clone();
    run.facts.ssh = Some(Box::new(facts));
    if mismatch {
        return Err(Failure::HostKeyMismatch(got));
    }
    let handle = match (result, &banner_line) {
        (Ok(h), _) => h,
        (Err(e), None) => {
            return Err(match e {
                Failure::Protocol(m) => Failure::Protocol(format!("no SSH banner: {m}")),
                other => other,
            });
        }
        (Err(e), Some(_)) => return Err(e),
    };
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    if let (Some(re), Some(b)) = (&prepared.expect, &banner_line)
        && !re.is_match(b.as_bytes())
    {
        return Err(Failure::BodyMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_is_the_first_ssh_line() {
        assert_eq!(
            banner(b"hello\r\nSSH-2.0-OpenSSH_9.2p1 Debian\r\n\x00\x00"),
            Some("SSH-2.0-OpenSSH_9.2p1 Debian".to_owned())
        );
        assert_eq!(banner(b"HTTP/1.1 400 Bad Request\r\n"), None);
    }
}
