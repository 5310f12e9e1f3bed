//! The HTTPS side: the server certificate (configured, or generated self-signed at first start
//! when neither file exists) and a TLS listener for `axum::serve` that handshakes each
//! connection in its own task, so one slow client cannot hold up the others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// A TLS handshake that has not finished by then is dropped (slowloris protection).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the HTTP server; beyond that, accepting pauses.
const ACCEPT_BACKLOG: usize = 64;

/// Why the certificate could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Only one of the two files exists: refuse to overwrite the other.
    #[error(
        "{present} exists but {missing} does not; install both or remove both to generate a self-signed pair"
    )]
    HalfPair {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A file could not be read or written.
    #[error("cannot access {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid PEM of the expected kind.
    #[error("{} is not a PEM {what}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// Generating the self-signed certificate failed.
    #[error("cannot generate a self-signed certificate")]
    Generate(#[source] rcgen::Error),
    /// The certificate and key do not form a usable TLS configuration.
    #[error("certificate and key are not usable together")]
    Rustls(#[source] rustls::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a self-signed certificate and its key (mode 0600) when neither file exists.
/// Returns whether it generated them.
pub fn ensure_certificate(cert: &Path, key: &Path) -> Result<bool, CertError> {
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (true, false) => {
            return Err(CertError::HalfPair {
                present: cert.to_path_buf(),
                missing: key.to_path_buf(),
            });
        }
        (false, true) => {
            return Err(CertError::HalfPair {
                present: key.to_path_buf(),
                missing: cert.to_path_buf(),
            });
        }
        (false, false) => {}
    }
    let host = nix_hostname();
    let mut names = vec!["localhost".to_owned()];
    if !host.is_empty() && host != "localhost" {
        names.push(host);
    }
    let generated = rcgen::generate_simple_self_signed(names).map_err(CertError::Generate)?;
    for (path, bytes, mode) in [
        (key, generated.signing_key.serialize_pem(), 0o600),
        (cert, generated.cert.pem(), 0o644),
    ] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        rookery_common::fsutil::write_atomic_mode(path, bytes.as_bytes(), mode)
            .map_err(io_err(path))?;
    }
    Ok(true)
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The rustls server configuration (ring provider, HTTP/1.1) of `cert` and `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|_| CertError::Pem {
            path: cert.to_path_buf(),
            what: "certificate",
        })?
        .collect::<Result<_, _>>()
        .map_err(|_| CertError::Pem {
            path: cert.to_path_buf(),
            what: "certificate",
        })?;
    if chain.is_empty() {
        return Err(CertError::Pem {
            path: cert.to_path_buf(),
            what: "certificate",
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|_| CertError::Pem {
        path: key.to_path_buf(),
        what: "private key",
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(CertError::Rustls)?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(CertError::Rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A listener of TLS connections for `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and handshakes with `config` until `shutdown`.
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => break,
                    a = tcp.accept() => a,
                };
                let Ok((stream, peer)) = accepted else {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(Self { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task ended (shutdown): wait for graceful shutdown to stop the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_a_usable_pair_once_and_refuses_half_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls/apid.crt");
        let key = dir.path().join("tls/apid.key");
        assert!(ensure_certificate(&cert, &key).unwrap());
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let before = std::fs::read(&cert).unwrap();
        assert!(!ensure_certificate(&cert, &key).unwrap());
        assert_eq!(std::fs::read(&cert).unwrap(), before);
        server_config(&cert, &key).unwrap();
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(
            ensure_certificate(&cert, &key),
            Err(CertError::HalfPair { .. })
        ));
    }
}
