//! TLS: the handshake shared by the `tls` prober, https and TCP with TLS, and the `tls` probe
//! itself (connect, handshake, report chain validity, days to expiry, version and cipher).
//!
//! The chain is checked by rustls' webpki verifier (ring provider, decision 0002), wrapped in
//! a verifier that also keeps the presented chain and the verification error, so a failed
//! probe still says *why* (expired, untrusted, wrong name) and when the chain expires.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Address, Failure, Phase, Prepared, Run, TlsFacts, net};
use crate::config::{Module, TlsModule};

/// TLS client settings of one module.
#[derive(Debug)]
pub struct Client {
    provider: Arc<CryptoProvider>,
    verifier: Arc<WebPkiServerVerifier>,
    server_name: String,
    insecure: bool,
    min_days_valid: u32,
}

/// TLS settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file cannot be read or holds no certificate.
    #[error("cannot load CA certificates from {}: {reason}", .path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No trust anchors at all (no CA file and no system roots).
    #[error("no trust anchors: the system has no CA certificates and no ca-file is set")]
    NoRoots,
    /// rustls rejected the verifier setup.
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(String),
}

/// The system's trust anchors, loaded once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            let _ = store.add_parsable_certificates(loaded.certs);
            Arc::new(store)
        })
        .clone()
}

fn load_ca_file(path: &Path) -> Result<RootCertStore, ClientError> {
    let fail = |reason: String| ClientError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| fail(e.to_string()))?;
        store.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(fail("no certificate in the file".to_owned()));
    }
    Ok(store)
}

impl Client {
    /// Builds the client of a module's `[tls]` options.
    pub fn new(opts: &TlsModule) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &opts.ca_file {
            Some(path) => Arc::new(load_ca_file(path)?),
            None => system_roots(),
        };
        if roots.is_empty() {
            return Err(ClientError::NoRoots);
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| ClientError::Verifier(e.to_string()))?;
        Ok(Self {
            provider,
            verifier,
            server_name: opts.server_name.clone(),
            insecure: opts.insecure_skip_verify,
            min_days_valid: opts.min_days_valid,
        })
    }

    /// A rustls client config for one handshake with `host` (or `server-name`), offering
    /// `alpn`, TLS 1.3 only when `tls13_only` (QUIC), with a verifier that records the chain.
    pub fn prepare(
        &self,
        host: &str,
        alpn: &[&[u8]],
        tls13_only: bool,
    ) -> Result<Handshake, Failure> {
        let name = if self.server_name.is_empty() {
            host
        } else {
            &self.server_name
        };
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| Failure::Tls(format!("\"{name}\" is not a valid server name")))?;
        let recorder = Arc::new(Recorder {
            inner: self.verifier.clone(),
            insecure: self.insecure,
            seen: Mutex::new(Seen::default()),
        });
        let builder = rustls::ClientConfig::builder_with_provider(self.provider.clone());
        let builder = if tls13_only {
            builder.with_protocol_versions(&[&rustls::version::TLS13])
        } else {
            builder.with_safe_default_protocol_versions()
        }
        .map_err(|e| Failure::Tls(e.to_string()))?;
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Handshake {
            config,
            server_name,
            recorder,
        })
    }

    /// Records the TLS facts of a handshake made with `prepared` (`negotiated` = version and
    /// cipher on success, or the handshake's failure) and decides the probe's TLS verdict:
    /// the verifier's specific reason beats the generic alert, `min-days-valid` applies.
    pub fn conclude(
        &self,
        run: &mut Run,
        prepared: &Handshake,
        negotiated: Result<(String, String), Failure>,
    ) -> Result<(), Failure> {
        let seen = std::mem::take(
            &mut *prepared
                .recorder
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut facts = chain_facts(&seen.chain);
        let verify_failure = seen.error.as_ref().map(rustls_failure);
        match negotiated {
            Ok((version, cipher)) => {
                facts.version = version;
                facts.cipher = cipher;
                facts.verify_error = verify_failure.as_ref().map(ToString::to_string);
                let days = facts.days_left;
                run.facts.tls = Some(Box::new(facts));
                match days {
                    Some(days) if days < i64::from(self.min_days_valid) => {
                        Err(Failure::CertExpiresSoon { days })
                    }
                    _ => Ok(()),
                }
            }
            Err(err) => {
                run.facts.tls = Some(Box::new(facts));
                Err(verify_failure.unwrap_or(err))
            }
        }
    }

    /// Runs the handshake over `stream` as the `tls` phase, offering `alpn`, and records
    /// the TLS facts. `host` is the name to verify unless `server-name` overrides it.
    pub async fn handshake(
        &self,
        run: &mut Run,
        stream: TcpStream,
        host: &str,
        alpn: &[&[u8]],
    ) -> Result<TlsStream<TcpStream>, Failure> {
        let prepared = self.prepare(host, alpn, false)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(prepared.config.clone()));
        let name = prepared.server_name.clone();
        let result = run
            .phase(Phase::Tls, async {
                connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| handshake_failure(&e))
            })
            .await;
        match result {
            Ok(stream) => {
                let (_, conn) = stream.get_ref();
                let version = conn
                    .protocol_version()
                    .map(version_name)
                    .unwrap_or_default();
                let cipher = conn
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default();
                self.conclude(run, &prepared, Ok((version, cipher)))?;
                Ok(stream)
            }
            // `conclude` of a failed handshake always returns the (most specific) failure.
            Err(err) => Err(self
                .conclude(run, &prepared, Err(err.clone()))
                .err()
                .unwrap_or(err)),
        }
    }
}

/// One handshake's rustls config, server name and chain recorder.
#[derive(Debug)]
pub struct Handshake {
    /// The client config (verifier included).
    pub config: rustls::ClientConfig,
    /// The name to verify and send as SNI.
    pub server_name: ServerName<'static>,
    recorder: Arc<Recorder>,
}

fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_owned(),
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Earliest expiry, days left, chain length and leaf subject of `chain` (leaf first).
fn chain_facts(chain: &[CertificateDer<'static>]) -> TlsFacts {
    let mut facts = TlsFacts {
        chain_len: chain.len(),
        ..TlsFacts::default()
    };
    for (i, der) in chain.iter().enumerate() {
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) {
            let not_after = cert.validity().not_after.timestamp();
            facts.earliest_expiry = Some(
                facts
                    .earliest_expiry
                    .map_or(not_after, |e| e.min(not_after)),
            );
            if i == 0 {
                facts.subject = cert.subject().to_string();
            }
        }
    }
    if let Some(exp) = facts.earliest_expiry {
        let now = chrono::Utc::now().timestamp();
        facts.days_left = Some((exp - now).div_euclid(86_400));
    }
    facts
}

/// Maps a rustls error (from the verifier or the handshake) to a reason.
fn rustls_failure(err: &rustls::Error) -> Failure {
    match err {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                Failure::CertExpired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Failure::CertNotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Failure::CertNameMismatch
            }
            CertificateError::UnknownIssuer => Failure::CertUntrusted("unknown issuer".to_owned()),
            other => Failure::CertUntrusted(format!("{other:?}")),
        },
        other => Failure::Tls(other.to_string()),
    }
}

fn handshake_failure(err: &std::io::Error) -> Failure {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(e) => rustls_failure(e),
        None => net::io_failure(err),
    }
}

#[derive(Debug, Default)]
struct Seen {
    chain: Vec<CertificateDer<'static>>,
    error: Option<rustls::Error>,
}

/// Delegates to webpki, remembering the chain and the verdict (and accepting a bad chain
/// when `insecure-skip-verify` is set).
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    insecure: bool,
    seen: Mutex<Seen>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        match verdict {
            Ok(v) => Ok(v),
            Err(e) => {
                seen.error = Some(e.clone());
                if self.insecure {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The `tls` probe: resolve, connect, handshake; the chain must verify (unless skipped) and
/// stay valid for `min-days-valid`.
pub async fn probe(
    run: &mut Run,
    addr: &Address,
    module: &Module,
    prepared: &Prepared,
) -> Result<(), Failure> {
    let Address::HostPort { host, port } = addr else {
        return Err(Failure::Protocol("tls probes need host:port".to_owned()));
    };
    let client = prepared
        .tls
        .as_ref()
        .ok_or_else(|| Failure::Protocol("module has no TLS settings".to_owned()))?;
    let sa = net::resolve(run, host, *port, module.ip_version).await?;
    let stream = net::connect(run, sa).await?;
    let _tls = client.handshake(run, stream, host, &[]).await?;
    Ok(())
}
